"""SegmentationModule: loss, gradients, Dice per class on whole volumes, rebuilding from a checkpoint alone."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvl.segmentation.module import SegmentationModule, load_segmentation_module

from .conftest import EXPORT_PREPROCESS

CLASS_NAMES = ["background", "liver", "spleen", "kidney"]


def _module(export_dir, **overrides) -> SegmentationModule:
    kwargs = dict(class_names=CLASS_NAMES, preprocess=EXPORT_PREPROCESS.to_dict(), roi_size=[64, 64, 64],
                  export_dir=str(export_dir), sw_batch_size=1)
    return SegmentationModule(**{**kwargs, **overrides})


class ClassFromIntensity(nn.Module):
    """Voxel-wise stand-in network: predicts class round(x) (so a test writes its prediction into the image)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = x[:, 0].round().long().clamp(0, self.num_classes - 1)  # (B, 1, D, H, W) -> (B, D, H, W)
        return F.one_hot(classes, self.num_classes).permute(0, 4, 1, 2, 3).float() * 10.0  # -> (B, K, D, H, W)


def test_gradients_reach_every_parameter_without_nan(tiny_export):
    module = _module(tiny_export)
    batch = {"image": torch.rand(1, 1, 64, 64, 64), "label": torch.randint(0, 4, (1, 1, 64, 64, 64))}
    loss = module.compute_losses(batch, "train")["segmentation_loss"]
    loss.backward()
    for name, parameter in module.network.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert math.isfinite(loss.item())


def test_cross_entropy_term_equals_the_reference(tiny_export):
    module = _module(tiny_export, dice_weight=0.0, ce_weight=1.0)
    logits = torch.randn(2, 4, 8, 8, 8)
    label = torch.randint(0, 4, (2, 1, 8, 8, 8))
    module.network = nn.Identity()
    loss = module.compute_losses({"image": logits, "label": label}, "train")["segmentation_loss"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, label[:, 0]))


def test_dice_per_class_on_whole_volumes(tiny_export):
    module = _module(tiny_export, roi_size=[64, 64, 64])
    reference = torch.zeros(1, 1, 40, 30, 20, dtype=torch.long)
    reference[..., :10, :, :] = 1  # liver: 10 * 30 * 20 voxels
    reference[..., 20:30, :, :] = 2  # spleen; no kidney in this volume
    prediction = reference.clone()
    prediction[..., 5:10, :, :] = 0  # half the liver missed -> Dice = 2 * 0.5 / 1.5 = 2 / 3
    module.network = ClassFromIntensity(4)
    # a whole volume through 64^3 sliding windows (padded), as validation does
    module.compute_losses({"image": prediction.float(), "label": reference}, "val")
    dice = module.dice_per_class("val")
    assert dice["dice/liver"] == pytest.approx(2 / 3, abs=1e-6)
    assert dice["dice/spleen"] == pytest.approx(1.0)
    assert math.isnan(dice["dice/kidney"])  # absent from the reference: no value, not 0
    assert dice["dice_mean"] == pytest.approx((2 / 3 + 1.0) / 2, abs=1e-6)
    assert module.dice_per_class("val") == {}  # reset after reading


def test_checkpoint_rebuilds_without_the_export_folder(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "export")
    module = _module(export)
    checkpoint = tmp_path / "seg.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    shutil.rmtree(export)
    rebuilt = load_segmentation_module(checkpoint)
    for name, tensor in module.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
    assert rebuilt.class_names == CLASS_NAMES and rebuilt.roi_size == [64, 64, 64]


def test_bad_arguments(tiny_export):
    with pytest.raises(ValueError, match="start with 'background'"):
        _module(tiny_export, class_names=["liver", "spleen"])
    with pytest.raises(ValueError, match="pretrained=true needs export_dir"):
        SegmentationModule(CLASS_NAMES, EXPORT_PREPROCESS.to_dict(), [64, 64, 64], architecture={"preset": "tiny"})
    with pytest.raises(ValueError, match="sliding windows need"):
        _module(tiny_export, overlap=1.0)
    with pytest.raises(ValueError, match="single voxel"):
        _module(tiny_export, roi_size=[32, 32, 32])
    module = _module(tiny_export)
    module.network = nn.Identity()
    with pytest.raises(ValueError, match="class indices outside"):
        module.compute_losses({"image": torch.zeros(1, 4, 2, 2, 2), "label": torch.full((1, 1, 2, 2, 2), 7)}, "train")


def test_lr_scales_slow_down_the_pretrained_encoder_only(tiny_export):
    module = _module(tiny_export, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3),
                     lr_scales={"network.swinViT": 0.1})
    optimizer = module.configure_optimizers()
    encoder = {id(p) for p in module.network.swinViT.parameters()}
    lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert encoder and all(lrs[i] == pytest.approx(1e-4) for i in encoder)
    others = [lr for i, lr in lrs.items() if i not in encoder]
    assert others and all(lr == pytest.approx(1e-3) for lr in others)
