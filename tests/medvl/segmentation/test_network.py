"""network_spec / build_segmentation_network: the export's architecture, strict pre-trained loading, clear errors."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR, BasicUNet, SwinUNETR

from common.export import WeightsMismatchError
from medvl.export import export_volume_encoder
from medvl.models.components.volume_encoder import VolumeEncoder
from medvl.segmentation.network import build_segmentation_network, check_roi_size, network_spec

from .conftest import EXPORT_PREPROCESS


def test_pretrained_backbone_is_loaded_exactly_and_the_network_runs(tiny_export, tiny_encoder):
    spec = network_spec(export_dir=tiny_export)
    network = build_segmentation_network(spec, 4, backbone_weights=tiny_export, roi_size=(64, 64, 64))
    assert isinstance(network, SwinUNETR)
    for name, tensor in tiny_encoder.backbone_state_dict().items():
        assert torch.equal(network.swinViT.state_dict()[name], tensor), name
    with torch.no_grad():
        assert network(torch.rand(1, 1, 64, 64, 64)).shape == (1, 4, 64, 64, 64)


def test_random_init_has_the_same_architecture_but_not_the_weights(tiny_export, tiny_encoder):
    torch.manual_seed(1)
    network = build_segmentation_network(network_spec(export_dir=tiny_export), 2)
    pretrained = tiny_encoder.backbone_state_dict()
    assert {k: v.shape for k, v in network.swinViT.state_dict().items()} == {k: v.shape for k, v in pretrained.items()}
    assert not torch.equal(network.swinViT.state_dict()["patch_embed.proj.weight"], pretrained["patch_embed.proj.weight"])


def test_architecture_without_export_matches_the_encoder_spec():
    spec = network_spec(architecture={"preset": "tiny", "depths": [1, 1, 1, 1]})
    reference = VolumeEncoder.from_preset("tiny", depths=(1, 1, 1, 1)).backbone_spec()
    assert spec == reference


def test_weights_of_another_size_list_the_mismatched_keys(tiny_export):
    spec = network_spec(architecture={"preset": "tiny", "depths": [1, 1, 1, 1], "feature_size": 24})
    with pytest.raises(WeightsMismatchError) as error:
        build_segmentation_network(spec, 2, backbone_weights=tiny_export)
    names = [name for name, _, _ in error.value.shape_mismatches]
    assert "patch_embed.proj.weight" in names and names[0] in str(error.value)


def test_weights_of_another_depth_list_the_missing_keys(tiny_export):
    spec = network_spec(architecture={"preset": "tiny"})  # depths (2, 2, 2, 2): blocks the export lacks
    with pytest.raises(WeightsMismatchError) as error:
        build_segmentation_network(spec, 2, backbone_weights=tiny_export)
    assert "layers1.0.blocks.1.attn.qkv.weight" in error.value.missing


def test_vit_export_builds_unetr_and_refuses_other_roi(tmp_path):
    encoder = VolumeEncoder("vit", image_size=32, vit_hidden_size=24, vit_heads=2, out_dim=8)
    export_volume_encoder(encoder, EXPORT_PREPROCESS.to_dict(), tmp_path, formats=["safetensors"])
    spec = network_spec(export_dir=tmp_path)
    network = build_segmentation_network(spec, 3, backbone_weights=tmp_path, roi_size=(32, 32, 32))
    assert isinstance(network, UNETR)
    assert torch.equal(network.vit.patch_embedding.position_embeddings, encoder.backbone.patch_embedding.position_embeddings)
    with pytest.raises(ValueError, match="UNETR runs only at the ViT's image_size"):
        check_roi_size(spec, (64, 64, 64))


def test_unet_export_builds_basicunet_with_every_encoder_level_loaded(tmp_path):
    encoder = VolumeEncoder("unet", image_size=32, unet_features=(4, 8, 8, 16, 16), out_dim=8)
    export_volume_encoder(encoder, EXPORT_PREPROCESS.to_dict(), tmp_path, formats=["safetensors"])
    spec = network_spec(export_dir=tmp_path)
    network = build_segmentation_network(spec, 3, backbone_weights=tmp_path, roi_size=(32, 32, 48))
    assert isinstance(network, BasicUNet)
    state = network.state_dict()
    for name, tensor in encoder.backbone_state_dict().items():  # keys "conv_0....", "down_1....", ...
        assert torch.equal(state[name], tensor), name
    with torch.no_grad():
        assert network(torch.rand(1, 1, 32, 32, 48)).shape == (1, 3, 32, 32, 48)
    with pytest.raises(ValueError, match="1/16 bottleneck"):
        check_roi_size(spec, (16, 16, 16))
    wider = network_spec(architecture={"backbone": "unet", "image_size": 32, "unet_features": [4, 8, 8, 16, 32]})
    with pytest.raises(WeightsMismatchError) as error:
        build_segmentation_network(wider, 2, backbone_weights=tmp_path)
    assert any(name.startswith("down_4.") for name, _, _ in error.value.shape_mismatches)


def test_vit_that_unetr_cannot_hold_is_refused_with_the_reason(tmp_path):
    encoder = VolumeEncoder("vit", image_size=32, vit_hidden_size=24, vit_heads=2, vit_layers=2, out_dim=8)
    export_volume_encoder(encoder, EXPORT_PREPROCESS.to_dict(), tmp_path, formats=["safetensors"])
    with pytest.raises(ValueError, match="12-block ViT"):
        network_spec(export_dir=tmp_path)


@pytest.mark.parametrize("roi, message", [((32, 32, 32), "single voxel"), ((64, 64, 70), "multiples of 32"),
                                          ((64, 64), "3 positive sides")])
def test_swin_roi_sizes_it_cannot_run_at(tiny_export, roi, message):
    with pytest.raises(ValueError, match=message):
        check_roi_size(network_spec(export_dir=tiny_export), roi)


def test_bad_arguments(tiny_export, tmp_path):
    with pytest.raises(ValueError, match="exactly one of export_dir"):
        network_spec()
    with pytest.raises(ValueError, match="exactly one of export_dir"):
        network_spec(export_dir=tiny_export, architecture={"preset": "tiny"})
    with pytest.raises(FileNotFoundError, match="not a medvl export folder"):
        network_spec(export_dir=tmp_path)
    with pytest.raises(ValueError, match="num_classes"):
        build_segmentation_network(network_spec(export_dir=tiny_export), 1)
