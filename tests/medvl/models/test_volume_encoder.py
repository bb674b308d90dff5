"""Tests for medvl.models.components.volume_encoder."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNETR, BasicUNet, SwinUNETR, ViT

from medvl.models.components.volume_encoder import PRESETS, UNET_LEVELS, VolumeEncoder, swin_window_size

# A tiny ViT (12 blocks and 16^3 patches, as UNETR requires, but 24 channels): ~0.2 M parameters.
VIT_TINY = {"vit_hidden_size": 24, "vit_heads": 2, "vit_layers": 12, "vit_mlp_dim": 48, "out_dim": 16}
OUTPUT_KEYS = {"fine", "fine_grid", "coarse", "coarse_grid", "tokens", "tokens_grid", "pooled", "pooled_tokens"}


def _swin(size: int = 32, **overrides) -> VolumeEncoder:
    return VolumeEncoder.from_preset("tiny", **{"image_size": size, **overrides})


def _vit(size: int = 32, **overrides) -> VolumeEncoder:
    return VolumeEncoder("vit", **{"image_size": size, **VIT_TINY, **overrides})


def _unet(size: int = 32, **overrides) -> VolumeEncoder:
    return VolumeEncoder("unet", **{"image_size": size, "unet_features": (4, 8, 8, 16, 16), "out_dim": 16, **overrides})


def _volumes(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    ("size", "batch", "fine_grid", "coarse_grid", "tokens_grid"),
    [(32, 2, (4, 4, 4), (2, 2, 2), (1, 1, 1)), (64, 1, (8, 8, 8), (4, 4, 4), (2, 2, 2))],
)
def test_swin_output_shapes(size, batch, fine_grid, coarse_grid, tokens_grid):
    encoder = _swin(size).eval()
    with torch.no_grad():
        out = encoder.encode_volume(_volumes(batch, size))
    assert set(out) == OUTPUT_KEYS
    dim = PRESETS["tiny"]["out_dim"]
    assert out["fine_grid"] == fine_grid and out["coarse_grid"] == coarse_grid and out["tokens_grid"] == tokens_grid
    assert out["fine"].shape == (batch, fine_grid[0] ** 3, dim)
    assert out["coarse"].shape == (batch, coarse_grid[0] ** 3, dim)
    assert out["tokens"].shape == (batch, tokens_grid[0] ** 3, dim)
    assert out["pooled"].shape == (batch, dim)
    assert (encoder.fine_stride, encoder.coarse_stride) == (8, 16)  # patch 2 * 2**stage, stages 2 and 3


@pytest.mark.parametrize(("size", "batch"), [(32, 2), (64, 1)])
def test_vit_output_shapes(size, batch):
    encoder = _vit(size).eval()
    with torch.no_grad():
        out = encoder(_volumes(batch, size))
    patches = size // 16
    assert set(out) == OUTPUT_KEYS
    assert out["fine_grid"] == out["tokens_grid"] == (patches,) * 3
    assert out["coarse_grid"] == (patches // 2,) * 3
    assert out["fine"].shape == out["tokens"].shape == (batch, patches**3, 16)
    assert out["coarse"].shape == (batch, (patches // 2) ** 3, 16)
    assert out["pooled"].shape == (batch, 16)
    assert (encoder.fine_stage, encoder.coarse_stage) == (5, 11)  # defaults: vit_layers // 2 - 1, vit_layers - 1


def test_anisotropic_swin_grid():
    encoder = _swin(32, image_size=(32, 64, 32)).eval()
    with torch.no_grad():
        out = encoder(torch.rand(1, 1, 32, 64, 32))
    assert out["fine_grid"] == (4, 8, 4) and out["fine"].shape[1] == 4 * 8 * 4
    assert encoder.backbone_spec()["backbone_kwargs"]["window_size"] == [2, 4, 2]


# --------------------------------------------------------------------------- reference paths and token order
def test_swin_tokens_are_raster_ordered_stage_features():
    """Token n of a stage is the stage's feature at (n // (H*W), (n // W) % H, n % W), projected."""
    encoder = _swin(32, image_size=(32, 64, 32)).eval()
    x = torch.rand(2, 1, 32, 64, 32)
    with torch.no_grad():
        out = encoder(x)
        hidden = encoder.backbone(x, normalize=True)
        fine_map = hidden[encoder.fine_stage]  # (B, C, 4, 8, 4)
        _, _, _, h, w = fine_map.shape
        for n in (0, 5, 37, 127):
            d_i, h_i, w_i = n // (h * w), (n // w) % h, n % w
            expected = encoder.fine_proj(fine_map[:, :, d_i, h_i, w_i])
            torch.testing.assert_close(out["fine"][:, n], expected)
        last = hidden[-1]  # (B, 16F, 1, 2, 1)
        torch.testing.assert_close(out["pooled"], encoder.pooled_proj(last.mean(dim=(2, 3, 4))))
        # pooled_tokens live in the pooled space: with a linear projection their mean is the pooled feature
        torch.testing.assert_close(out["pooled_tokens"].mean(dim=1), out["pooled"])


def test_vit_features_match_monai_vit_forward_and_naive_pooling():
    encoder = _vit(64).eval()
    x = _volumes(2, 64)
    with torch.no_grad():
        out = encoder(x)
        final, hidden = encoder.backbone(x)  # monai ViT.forward: normed output, per-block outputs
        torch.testing.assert_close(out["tokens"], encoder.tokens_proj(final))
        torch.testing.assert_close(out["pooled"], encoder.pooled_proj(final.mean(dim=1)))
        fine = F.layer_norm(hidden[encoder.fine_stage], (24,))
        torch.testing.assert_close(out["fine"], encoder.fine_proj(fine))
        # naive 2x2x2 pooling of the 4^3 raster-ordered patch grid, index by index
        block = hidden[encoder.coarse_stage]
        coarse = []
        for d in range(2):
            for h in range(2):
                for w in range(2):
                    offsets = [(a, b, c) for a in range(2) for b in range(2) for c in range(2)]
                    members = [(2 * d + a) * 16 + (2 * h + b) * 4 + (2 * w + c) for a, b, c in offsets]
                    coarse.append(block[:, members].mean(dim=1))
        coarse = F.layer_norm(torch.stack(coarse, dim=1), (24,))
        torch.testing.assert_close(out["coarse"], encoder.coarse_proj(coarse))


@pytest.mark.parametrize("make", [_swin, _vit, _unet], ids=["swin", "vit", "unet"])
def test_gradient_checkpointing_matches_plain_forward(make):
    torch.manual_seed(0)
    plain = make(32)
    torch.manual_seed(0)
    checkpointed = make(32, use_checkpoint=True)
    x = _volumes(2, 32)
    grads = []
    for encoder in (plain, checkpointed):
        encoder.train()
        out = encoder(x)
        sum(out[k].sum() for k in ("fine", "coarse", "tokens", "pooled")).backward()
        grads.append([p.grad.clone() for p in encoder.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- export contract
def test_swin_state_dict_loads_strictly_into_swinunetr_from_spec():
    torch.manual_seed(0)
    encoder = _swin(32, image_size=(32, 32, 64)).eval()  # SwinUNETR's bottleneck norm needs > 1 voxel
    spec = json.loads(json.dumps(encoder.backbone_spec()))  # must survive JSON
    assert spec["segmentation_class"] == "monai.networks.nets.SwinUNETR" and spec["backbone_attribute"] == "swinViT"
    assert spec["image_size"] == [32, 32, 64] and spec["segmentation_notes"] == []
    net = SwinUNETR(out_channels=3, **spec["segmentation_kwargs"]).eval()
    result = net.swinViT.load_state_dict(encoder.backbone_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.rand(1, 1, 32, 32, 64)
    with torch.no_grad():
        for ours, theirs in zip(encoder.backbone(x, normalize=True), net.swinViT(x, normalize=True)):
            torch.testing.assert_close(ours, theirs)
        assert net(x).shape == (1, 3, 32, 32, 64)


def test_swin_spec_notes_the_single_voxel_bottleneck_at_32_cubed():
    notes = _swin(32).backbone_spec()["segmentation_notes"]
    assert len(notes) == 1 and "instance norm" in notes[0]


def test_vit_state_dict_loads_strictly_into_unetr_from_spec():
    torch.manual_seed(0)
    encoder = _vit(32).eval()
    spec = json.loads(json.dumps(encoder.backbone_spec()))
    assert spec["segmentation_class"] == "monai.networks.nets.UNETR" and spec["backbone_attribute"] == "vit"
    net = UNETR(out_channels=2, **spec["segmentation_kwargs"]).eval()
    net.vit.load_state_dict(encoder.backbone_state_dict(), strict=True)
    x = _volumes(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.vit(x)[0], encoder.backbone(x)[0])
        assert net(x).shape == (1, 2, 32, 32, 32)


def test_unet_levels_are_basicunet_encoder_outputs_and_load_strictly_into_it():
    torch.manual_seed(0)
    encoder = _unet(64).eval()
    assert (encoder.fine_grid, encoder.coarse_grid, encoder.tokens_grid) == ((8, 8, 8), (4, 4, 4), (4, 4, 4))
    spec = json.loads(json.dumps(encoder.backbone_spec()))
    assert spec["segmentation_class"] == "monai.networks.nets.BasicUNet"
    assert spec["backbone_attribute"] == list(UNET_LEVELS)
    assert spec["segmentation_kwargs"]["features"] == [4, 8, 8, 16, 16, 4]
    net = BasicUNet(out_channels=3, **spec["segmentation_kwargs"]).eval()
    state = encoder.backbone_state_dict()
    assert {key.split(".", 1)[0] for key in state} == set(UNET_LEVELS)
    net.load_state_dict(state, strict=False)
    x = _volumes(2, 64)
    with torch.no_grad():
        out = encoder(x)
        level = x
        levels = []
        for name in UNET_LEVELS:  # BasicUNet.forward's encoder half, run on the network that took the weights
            level = getattr(net, name)(level)
            levels.append(level)
        fine = F.layer_norm(levels[3].flatten(2).transpose(1, 2), (16,))  # 8^3 tokens, raster order
        torch.testing.assert_close(out["fine"], encoder.fine_proj(fine))
        last = F.layer_norm(levels[4].flatten(2).transpose(1, 2), (16,))
        torch.testing.assert_close(out["tokens"], encoder.tokens_proj(last))
        assert net(x).shape == (2, 3, 64, 64, 64)


def test_vit_spec_flags_unetr_incompatible_depth_but_backbone_still_loads():
    encoder = _vit(32, vit_layers=4)
    spec = json.loads(json.dumps(encoder.backbone_spec()))
    assert spec["segmentation_class"] is None and "12-block" in spec["segmentation_notes"][0]
    ViT(**spec["backbone_kwargs"]).load_state_dict(encoder.backbone_state_dict(), strict=True)


# ------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("make", "size", "message"),
    [
        (_swin, (40, 64, 64), r"multiple of 32.*nearest valid size: \(32, 64, 64\)"),
        (_swin, 80, r"nearest valid size: \(96, 96, 96\)"),
        (_vit, 48, r"multiple of 32.*nearest valid size: \(64, 64, 64\)"),
        (_unet, 40, r"multiple of 16.*nearest valid size: \(48, 48, 48\)"),
    ],
)
def test_bad_image_size_names_the_nearest_valid_size(make, size, message):
    with pytest.raises(ValueError, match=message):
        make(size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "resnet"},
        {"feature_size": 16},
        {"patch_size": 4},
        {"depths": (2, 2, 2)},
        {"num_heads": (5, 6, 12, 24)},
        {"fine_stage": 3, "coarse_stage": 3},
        {"coarse_stage": 5},
        {"dropout_path_rate": 1.0},
        {"out_dim": 0},
    ],
)
def test_bad_swin_arguments_raise(kwargs):
    args = {"backbone": "swin", "image_size": 32, **kwargs}
    with pytest.raises(ValueError):
        VolumeEncoder(args.pop("backbone"), **args)


@pytest.mark.parametrize(
    "kwargs",
    [{"vit_heads": 5}, {"dropout_path_rate": 0.1}, {"fine_stage": 12}, {"fine_stage": 3, "coarse_stage": 2}],
)
def test_bad_vit_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        _vit(32, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"unet_features": (4, 8, 16)}, "5 channel counts"), ({"unet_features": (4, 8, 0, 16, 16)}, "unet_features"),
     ({"fine_stage": 4}, "fine_stage"), ({"fine_stage": 2, "coarse_stage": 2}, "coarse_stage"),
     ({"dropout_path_rate": 0.1}, "dropout_path_rate")],
)
def test_bad_unet_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _unet(32, **kwargs)


def test_unknown_preset_raises_listing_known_ones():
    with pytest.raises(ValueError, match="tiny"):
        VolumeEncoder.from_preset("huge")


@pytest.mark.parametrize(
    "x",
    [
        torch.rand(1, 1, 64, 64, 64),
        torch.rand(1, 32, 32, 32),
        torch.rand(1, 2, 32, 32, 32),
        torch.zeros(1, 1, 32, 32, 32, dtype=torch.long),
    ],
    ids=["wrong-size", "no-channel-axis", "wrong-channels", "integer"],
)
def test_bad_input_raises(x):
    with pytest.raises(ValueError, match="VolumeEncoder expects"):
        _swin(32)(x)


def test_window_clamp_and_velvet_preset_sizes():
    assert swin_window_size((32, 32, 32), 7) == (2, 2, 2)
    assert swin_window_size((64, 64, 64), 7) == (4, 4, 4)
    assert swin_window_size((96, 96, 96), 7) == (6, 6, 6)
    assert swin_window_size((128, 128, 128), 7) == (7, 7, 7)
    velvet = PRESETS["velvet"]
    assert velvet["feature_size"] == 48 and tuple(velvet["depths"]) == (2, 2, 2, 2)
    assert tuple(velvet["num_heads"]) == (3, 6, 12, 24) and tuple(velvet["image_size"]) == (96, 96, 96)


# ------------------------------------------------------------------------------------ gradients, determinism
@pytest.mark.parametrize("make", [_swin, _vit, _unet], ids=["swin", "vit", "unet"])
def test_gradients_reach_every_parameter(make):
    encoder = make(32).train()
    out = encoder(_volumes(2, 32))
    sum(out[k].sum() for k in ("fine", "coarse", "tokens", "pooled")).backward()
    frozen = {name for name, parameter in encoder.named_parameters() if not parameter.requires_grad}
    # only MONAI ViT's unused cross-attention norms are frozen (see VolumeEncoder's docstring)
    assert all(".norm_cross_attn." in name for name in frozen)
    assert len(frozen) == (2 * 12 if make is _vit else 0)
    for name, parameter in encoder.named_parameters():
        if name in frozen:
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("make", [_swin, _vit, _unet], ids=["swin", "vit", "unet"])
def test_seeded_construction_and_forward_are_deterministic(make):
    x = _volumes(2, 32)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        encoder = make(32).eval()
        with torch.no_grad():
            outputs.append(encoder(x))
    for key in ("fine", "coarse", "tokens", "pooled"):
        assert torch.equal(outputs[0][key], outputs[1][key]), key


def test_batch_norm_on_the_pooled_feature_spreads_volumes_apart():
    torch.manual_seed(0)
    # like CT scans of one body region: a shared anatomy plus small per-volume differences
    x = (torch.rand(1, 1, 32, 32, 32) + 0.1 * torch.rand(4, 1, 32, 32, 32)).clamp(0, 1)
    spread = {}
    for norm in ("none", "batch"):
        torch.manual_seed(0)
        encoder = VolumeEncoder("swin", image_size=32, out_dim=8, pooled_norm=norm).train()
        pooled = F.normalize(encoder(x)["pooled"], dim=-1)
        spread[norm] = float(pooled.std(dim=0).mean())
    # a random Swin maps different volumes to nearly the same vector; standardising over the batch undoes it
    assert spread["batch"] > 10 * spread["none"]
    with pytest.raises(ValueError, match="pooled_norm"):
        VolumeEncoder("swin", image_size=32, out_dim=8, pooled_norm="layer")
