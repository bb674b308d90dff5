"""Build the MONAI segmentation network (SwinUNETR, UNETR or BasicUNet) that takes a pre-trained medvl volume encoder.

The architecture comes from an export folder's ``volume_encoder.json`` (``backbone_spec``, written by
``python -m medvl.export``) or, without an export, from ``VolumeEncoder`` arguments, so that a randomly
initialised baseline has exactly the architecture of the pre-trained one. The pre-trained weights
(``volume_encoder.safetensors``) are loaded with strict=True into the network's backbone attribute
(``swinViT`` / ``vit``; BasicUNet: each of ``conv_0``, ``down_1`` ... ``down_4`` the keys under its name); anything
that does not fit raises ``WeightsMismatchError`` listing the keys.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.networks.nets import UNETR, BasicUNet, SwinUNETR
from torch import nn

from common.export import load_weights
from medvl.export import WEIGHTS_FILE, read_export_info
from medvl.models.components.volume_encoder import VolumeEncoder

__all__ = [
    "SEGMENTATION_CLASSES",
    "build_segmentation_network",
    "check_roi_size",
    "load_pretrained_backbone",
    "network_spec",
]

# The MONAI networks an export can describe, by the full name `VolumeEncoder.backbone_spec()` writes (an explicit
# table: a class name read from a file never imports arbitrary code).
SEGMENTATION_CLASSES: dict[str, type[nn.Module]] = {
    "monai.networks.nets.SwinUNETR": SwinUNETR,
    "monai.networks.nets.UNETR": UNETR,
    "monai.networks.nets.BasicUNet": BasicUNet,
}
_SPEC_KEYS = ("backbone", "image_size", "segmentation_class", "segmentation_kwargs", "backbone_attribute")
_SWIN_BOTTLENECK_STRIDE = 32  # SwinUNETR's deepest feature map is 1/32 of the input
_UNET_BOTTLENECK_STRIDE = 16  # BasicUNet's deepest feature map is 1/16 of the input (floor)


def network_spec(
    export_dir: str | Path | None = None, architecture: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The backbone spec of an export folder, or of a ``VolumeEncoder`` built from ``architecture``.

    Args:
        export_dir: a folder written by ``python -m medvl.export``.
        architecture: ``VolumeEncoder`` keyword arguments (incl. "backbone"), or {"preset": "tiny", ...overrides};
            used when there is no export (a randomly initialised network of that architecture).

    Returns:
        ``VolumeEncoder.backbone_spec()``: backbone, image_size, segmentation_class, segmentation_kwargs,
        backbone_attribute, ... (JSON-able).

    Raises:
        ValueError: neither or both given; an export without a segmentation network (e.g. a ViT that UNETR cannot
            hold: the reason is in the message); bad architecture arguments.
        FileNotFoundError: ``export_dir`` is not an export folder.
    """
    if (export_dir is None) == (architecture is None):
        raise ValueError(
            "give exactly one of export_dir (a pre-trained export: its architecture) or architecture "
            "(VolumeEncoder arguments, e.g. {'preset': 'tiny'}, for a randomly initialised network)"
        )
    if export_dir is not None:
        spec = read_export_info(export_dir).get("backbone_spec")
        source = f"{Path(export_dir) / 'volume_encoder.json'}"
    else:
        kwargs = dict(architecture)
        preset = kwargs.pop("preset", None)
        encoder = VolumeEncoder.from_preset(preset, **kwargs) if preset else VolumeEncoder(**kwargs)
        spec = encoder.backbone_spec()
        source = f"architecture {dict(architecture)}"
    missing = [key for key in _SPEC_KEYS if not isinstance(spec, Mapping) or key not in spec]
    if missing:
        raise ValueError(f"{source}: the backbone spec lacks {missing}; re-export the checkpoint")
    if spec["segmentation_class"] is None:
        notes = "; ".join(spec.get("segmentation_notes", [])) or "no segmentation network fits this backbone"
        raise ValueError(f"{source}: no MONAI segmentation network takes this backbone: {notes}")
    if spec["segmentation_class"] not in SEGMENTATION_CLASSES:
        raise ValueError(
            f"{source}: unknown segmentation class {spec['segmentation_class']!r}; known: {sorted(SEGMENTATION_CLASSES)}"
        )
    return dict(spec)


def check_roi_size(spec: Mapping[str, Any], roi_size: Sequence[int]) -> tuple[int, int, int]:
    """Check that the network can run on ``roi_size`` crops and return it as a tuple.

    SwinUNETR: every side a multiple of 32 and more than one voxel at its 1/32 bottleneck (its instance norm
    raises on a single voxel); the Swin weights do not depend on the input size. UNETR: exactly the ViT's
    image_size (its position embeddings are one per patch of that grid).

    Raises:
        ValueError: a size the network cannot run at (the message gives a valid one).
    """
    roi = tuple(int(side) for side in roi_size)
    if len(roi) != 3 or any(side < 1 for side in roi):
        raise ValueError(f"roi_size must be 3 positive sides (D, H, W), got {list(roi_size)}")
    if spec["segmentation_class"].endswith("SwinUNETR"):
        if any(side % _SWIN_BOTTLENECK_STRIDE for side in roi):
            nearest = [max(_SWIN_BOTTLENECK_STRIDE, round(s / _SWIN_BOTTLENECK_STRIDE) * _SWIN_BOTTLENECK_STRIDE) for s in roi]
            raise ValueError(f"SwinUNETR needs roi_size sides that are multiples of 32, got {list(roi)}; e.g. {nearest}")
        if math.prod(side // _SWIN_BOTTLENECK_STRIDE for side in roi) == 1:
            raise ValueError(
                f"roi_size {list(roi)} leaves a single voxel at SwinUNETR's 1/32 bottleneck, where its instance norm "
                "fails; use a side of 64 or more, e.g. roi_size=[64, 64, 64]"
            )
    elif spec["segmentation_class"].endswith("BasicUNet"):
        if math.prod(side // _UNET_BOTTLENECK_STRIDE for side in roi) <= 1:
            raise ValueError(
                f"roi_size {list(roi)} leaves at most one voxel at BasicUNet's 1/16 bottleneck, where its instance "
                "norm fails; use sides of 32 or more, e.g. roi_size=[64, 64, 64]"
            )
    elif list(roi) != list(spec["image_size"]):
        raise ValueError(
            f"UNETR runs only at the ViT's image_size {list(spec['image_size'])} (one position embedding per "
            f"patch), got roi_size {list(roi)}; set roi_size={list(spec['image_size'])}"
        )
    return roi  # type: ignore[return-value]


def load_pretrained_backbone(network: nn.Module, spec: Mapping[str, Any], weights: str | Path) -> nn.Module:
    """Load ``volume_encoder.safetensors`` (or an export folder holding it) into the network's backbone, strictly.

    Raises:
        FileNotFoundError: no weights file.
        WeightsMismatchError: the weights come from another architecture or size (lists the keys).
    """
    path = Path(weights)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    attribute = spec["backbone_attribute"]
    if isinstance(attribute, str):
        backbone = getattr(network, attribute, None)
        if backbone is None:
            raise ValueError(f"{type(network).__name__} has no backbone attribute {attribute!r}")
        load_weights(backbone, path, strict=True)
        return network
    # Several attributes (BasicUNet's encoder levels): a ModuleDict of the network's own modules under the same
    # names has exactly the export's keys, so one strict load checks everything before copying anything.
    absent = [name for name in attribute if getattr(network, name, None) is None]
    if absent:
        raise ValueError(f"{type(network).__name__} has no backbone attributes {absent}")
    load_weights(nn.ModuleDict({name: getattr(network, name) for name in attribute}), path, strict=True)
    return network


def build_segmentation_network(
    spec: Mapping[str, Any],
    num_classes: int,
    *,
    backbone_weights: str | Path | None = None,
    roi_size: Sequence[int] | None = None,
) -> nn.Module:
    """``SwinUNETR`` / ``UNETR`` with ``num_classes`` output channels, optionally with pre-trained backbone weights.

    Args:
        spec: from ``network_spec``.
        num_classes: output channels, background included (>= 2).
        backbone_weights: ``volume_encoder.safetensors`` or its export folder; None = random initialisation.
        roi_size: the crop size it will run on, checked with ``check_roi_size`` when given.

    Shapes:
        network(x): (B, C_in, D, H, W) -> (B, num_classes, D, H, W) logits.

    Raises:
        ValueError: fewer than 2 classes, a bad roi_size; see ``load_pretrained_backbone`` for weight errors.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background + at least one class), got {num_classes!r}")
    if roi_size is not None:
        check_roi_size(spec, roi_size)
    network_class = SEGMENTATION_CLASSES[spec["segmentation_class"]]
    network = network_class(out_channels=num_classes, **spec["segmentation_kwargs"])
    if backbone_weights is not None:
        load_pretrained_backbone(network, spec, backbone_weights)
    return network
