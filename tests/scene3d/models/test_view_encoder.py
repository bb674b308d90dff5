"""View encoders and multi-view fusion: shapes, invalid views ignored, gradients, local weights, bad input."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from scene3d.models.components.view_encoder import (
    AttentionViewPooling,
    MonaiResNetViewEncoder,
    MultiViewObjectEncoder,
    SmallCNNViewEncoder,
    prepare_crops,
)


def _crops(n: int = 4, k: int = 3, s: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, k, s, s, 3), generator=g, dtype=torch.uint8)


def test_prepare_crops_scales_uint8_and_standardises():
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = prepare_crops(white)
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    assert torch.allclose(prepare_crops(white.float() / 255), out)
    with pytest.raises(ValueError, match="RGB"):
        prepare_crops(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("encoder", [SmallCNNViewEncoder(out_dim=12, channels=[4, 8]),
                                     MonaiResNetViewEncoder(out_dim=12, block_inplanes=[4, 8, 8, 8])])
def test_encoders_map_crops_to_vectors_and_train(encoder):
    crops = _crops().permute(0, 1, 4, 2, 3).reshape(-1, 3, 16, 16)
    out = encoder(crops)
    assert out.shape == (12, 12) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_encoder_is_built_from_a_target_config():
    built = instantiate({"_target_": "scene3d.models.components.view_encoder.SmallCNNViewEncoder", "out_dim": 8,
                         "channels": [4]})
    assert isinstance(built, SmallCNNViewEncoder) and built(torch.zeros(2, 3, 8, 8)).shape == (2, 8)
    with pytest.raises(ValueError, match="widths"):
        SmallCNNViewEncoder(channels=[])


def test_monai_encoder_loads_local_weights_and_names_a_bad_path(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = MonaiResNetViewEncoder(out_dim=6, block_inplanes=[4, 4, 4, 4])
    path = tmp_path / "view.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = MonaiResNetViewEncoder(out_dim=6, block_inplanes=[4, 4, 4, 4], weights_path=str(path)).eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), source.eval()(x))
    with pytest.raises(ValueError, match="not found"):
        MonaiResNetViewEncoder(weights_path=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="does not fit"):
        MonaiResNetViewEncoder(out_dim=7, block_inplanes=[4, 4, 4, 4], weights_path=str(path))


def test_pooling_ignores_invalid_views_and_zeroes_objects_without_any():
    torch.manual_seed(0)
    pool = AttentionViewPooling(8, num_heads=2).eval()
    views = torch.randn(3, 4, 8)
    valid = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    out = pool(views, valid)
    changed = views.clone()
    changed[0, 2:] = 100.0  # invalid views of object 0
    changed[2] = 5.0  # object 2 has no valid view
    again = pool(changed, valid)
    assert torch.allclose(out, again) and torch.equal(out[2], torch.zeros(8))
    assert torch.isfinite(out).all()
    swapped = views.clone()
    swapped[0, [0, 1]] = views[0, [1, 0]]
    assert torch.allclose(pool(swapped, valid)[0], out[0], atol=1e-6)  # order of the views does not matter


def test_multiview_object_encoder_encodes_only_valid_crops_and_passes_gradients():
    torch.manual_seed(0)
    model = MultiViewObjectEncoder(SmallCNNViewEncoder(out_dim=6, channels=[4]), dim=8, num_heads=2)
    crops = _crops()
    valid = torch.tensor([[True, False, False], [True, True, True], [False, False, False], [True, True, False]])
    out = model(crops, valid)
    assert out["views"].shape == (4, 3, 8) and out["fused"].shape == (4, 8)
    assert out["has_view"].tolist() == [True, True, False, True]
    assert torch.equal(out["views"][~valid], torch.zeros(int((~valid).sum()), 8))
    channels_first = model(crops.permute(0, 1, 4, 2, 3), valid)
    assert torch.allclose(channels_first["fused"], out["fused"])
    out["fused"].sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    with pytest.raises(ValueError, match="valid"):
        model(crops, valid[:, :2])
