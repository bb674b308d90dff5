"""Write a fine-tuned segmentation network as a MONAI bundle folder that runs with MONAI and torch alone.

    <bundle>/configs/inference.json   MONAI transforms + SwinUNETR / UNETR + sliding-window inference + Invertd
    <bundle>/configs/metadata.json    MONAI bundle metadata (classes, input / output format, versions)
    <bundle>/models/model.pt          the network's state dict (torch.save of tensors only: weights_only loads it)
    <bundle>/docs/README.md           how to run it

Run it from the bundle folder (MONAI's convention: ``bundle_root`` is ".", or pass ``--bundle_root``):

    python -m monai.bundle run --config_file configs/inference.json --input_file /data/ct.nii.gz --output_dir out

``input_file`` may be a glob pattern (``'/data/*.nii.gz'``). Every input gets ``<output_dir>/<name>_seg.nii.gz``:
a label map on the input's own voxel grid, with its affine. The preprocessing written here is
``medvl.data.transforms.build_preprocessing`` step by step in MONAI classes (with MONAI's ``LoadImaged`` instead
of medvl's reader, so NIfTI inputs only), and the inference is that of
``medvl.segmentation.inference.SlidingWindowSegmenter``; a test checks that both give the same labels.

The inference loop is written as bundle expressions rather than MONAI's ``SupervisedEvaluator``, so the bundle
needs neither pytorch-ignite nor any package of this project; ``python -m monai.bundle`` itself needs ``fire``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from torch import nn

from common.io import atomic_write_json, atomic_write_text
from medvl.data.transforms import PreprocessConfig

__all__ = ["BUNDLE_VERSION", "inference_config", "metadata", "write_bundle"]

BUNDLE_VERSION = "0.1.0"
MODEL_FILE = "models/model.pt"


def _preprocessing(config: PreprocessConfig) -> list[dict[str, Any]]:
    """``build_preprocessing`` (without the final crop / pad) as MONAI transform configs on "image"."""
    lo, hi = config.hu_window
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        # labels None: axis letters of the image's own space (RAS for NIfTI), as medvl's pipeline does
        {"_target_": "Orientationd", "keys": "image", "axcodes": config.orientation, "labels": None},
    ]
    if config.spacing is not None:
        # border padding: replicate edge values (0 would be HU 0 = water before scaling)
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(config.spacing),
                      "mode": config.image_interpolation, "padding_mode": "border"})
    steps.append({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi,
                  "b_min": 0.0, "b_max": 1.0, "clip": True})
    if config.foreground_crop:
        threshold = (config.foreground_hu_threshold - lo) / (hi - lo)
        steps.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                      "select_fn": f"$lambda x: x > {threshold!r}", "margin": config.foreground_margin,
                      "allow_smaller": True})
    steps.append({"_target_": "CastToTyped", "keys": "image", "dtype": "$torch.float32"})
    return steps


def inference_config(
    network_spec: Mapping[str, Any],
    num_classes: int,
    preprocess: PreprocessConfig | Mapping[str, Any],
    roi_size: Sequence[int],
    *,
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    blend_mode: str = "gaussian",
) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` content (MONAI and torch classes only)."""
    config = preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig.from_dict(preprocess)
    dtype = "uint8" if num_classes <= 256 else "int16"
    return {
        "imports": ["$import glob", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "checkpoint": f"$@bundle_root + '/{MODEL_FILE}'",
        "input_file": "$@bundle_root + '/images/*.nii*'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": network_spec["segmentation_class"], "out_channels": num_classes,
                        **network_spec["segmentation_kwargs"]},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(config)},
        # a glob pattern, or one path (a path that does not exist is passed on, so LoadImaged names it)
        "datalist": "$[{'image': f} for f in sorted(glob.glob(@input_file))] or [{'image': @input_file}]",
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(roi_size), "sw_batch_size": sw_batch_size,
                    "overlap": overlap, "mode": blend_mode},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": f"$numpy.{dtype}", "resample": False,
             "separate_folder": False, "print_log": True},
        ]},
        # (1, D, H, W) preprocessed image -> (K, D, H, W) logits on the image's grid, then postprocessing
        "predict": "$lambda item: @postprocessing({**item, 'pred': @inferer(item['image'][None].to(@device), "
                   "@network)[0].cpu()})",
        "initialize": [
            "$torch.set_grad_enabled(False)",
            "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
            "$@network.eval()",
        ],
        "run": ["$[@predict(item) for item in @dataset]"],
    }


def metadata(
    class_names: Sequence[str],
    preprocess: PreprocessConfig | Mapping[str, Any],
    roi_size: Sequence[int],
    network_spec: Mapping[str, Any],
    *,
    description: str = "",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json`` content (MONAI's metadata fields)."""
    config = preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig.from_dict(preprocess)
    lo, hi = config.hu_window
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: "fine-tuned with python -m medvl.segment"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": _version("nibabel"), "einops": _version("einops")},
        "name": "medvl CT segmentation",
        "task": "CT segmentation of " + ", ".join(class_names[1:]),
        "description": description or (
            f"{network_spec['segmentation_class'].rsplit('.', 1)[-1]} fine-tuned from a medvl vision-language "
            "pre-trained CT encoder (python -m medvl.segment)"
        ),
        "authors": "medvl",
        "copyright": "see the training data's licence",
        "data_source": "see the fine-tuning run's manifest",
        "data_type": "nibabel",
        "image_classes": f"single-channel CT in HU; preprocessed: orientation {config.orientation}, spacing "
                         f"{list(config.spacing) if config.spacing else 'native'} mm, HU window [{lo}, {hi}] -> [0, 1]",
        "label_classes": {str(i): name for i, name in enumerate(class_names)},
        "pred_classes": {str(i): name for i, name in enumerate(class_names)},
        "eval_metrics": dict((extra or {}).get("eval_metrics", {})),
        "intended_use": "research only; not for clinical use",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                "spatial_shape": list(roi_size), "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": {"0": "image"},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(class_names),
                "spatial_shape": list(roi_size), "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": {str(i): name for i, name in enumerate(class_names)},
            }},
        },
        "medvl": {"preprocess": config.to_dict(), "network_spec": dict(network_spec), **dict(extra or {})},
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _readme(class_names: Sequence[str]) -> str:
    return f"""# medvl CT segmentation bundle

Classes: {", ".join(f"{i} = {name}" for i, name in enumerate(class_names))}.

Run (from this folder; needs `monai[einops,nibabel]`, `torch` and `fire`):

    python -m monai.bundle run --config_file configs/inference.json --input_file /data/ct.nii.gz --output_dir out

`--input_file` takes one NIfTI path or a glob pattern in quotes. Each input gives `out/<name>_seg.nii.gz`, a
label map on the input's voxel grid with the input's affine. Without `fire`:

    python -c "from monai.bundle import run; run(config_file='configs/inference.json', input_file='/data/ct.nii.gz', output_dir='out')"

Written by `python -m medvl.segment` (medvl); research use only, not for clinical use.
"""


def write_bundle(
    network: nn.Module,
    out_dir: str | Path,
    *,
    network_spec: Mapping[str, Any],
    class_names: Sequence[str],
    preprocess: PreprocessConfig | Mapping[str, Any],
    roi_size: Sequence[int],
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    blend_mode: str = "gaussian",
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``network`` (a ``build_segmentation_network`` network) as a MONAI bundle folder.

    Args:
        network: the fine-tuned network.
        out_dir: the bundle folder (created; existing bundle files are replaced).
        network_spec: ``network_spec(...)`` of the network (MONAI class and arguments).
        class_names: one per output channel, index 0 = background.
        preprocess: the training preprocessing (its spatial_size is ignored: sliding windows).
        roi_size: sliding-window size.
        sw_batch_size, overlap, blend_mode: sliding-window settings.
        extra_metadata: more entries under metadata.json's "medvl" key (e.g. "eval_metrics").

    Returns:
        ``out_dir``.

    Raises:
        ValueError: the network's output channels differ from ``len(class_names)``.
    """
    out_dir = Path(out_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    out_channels = output_channels(network)
    if out_channels is not None and out_channels != len(class_names):
        raise ValueError(f"the network has {out_channels} output channels but {len(class_names)} class names were given")
    config = inference_config(network_spec, len(class_names), preprocess, roi_size, sw_batch_size=sw_batch_size,
                              overlap=overlap, blend_mode=blend_mode)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    staged = out_dir / "models" / ".model.pt.tmp"
    torch.save(state, staged)
    staged.replace(out_dir / MODEL_FILE)
    atomic_write_text(out_dir / "configs" / "inference.json", json.dumps(config, indent=2) + "\n")
    atomic_write_json(out_dir / "configs" / "metadata.json",
                      metadata(class_names, preprocess, roi_size, network_spec, extra=extra_metadata))
    atomic_write_text(out_dir / "docs" / "README.md", _readme(class_names))
    return out_dir


def output_channels(network: nn.Module) -> int | None:
    """Output channels of a SwinUNETR / UNETR (its final 1x1x1 convolution), None for other networks."""
    out = getattr(network, "out", None)
    conv = getattr(getattr(out, "conv", None), "conv", None)
    return int(conv.out_channels) if isinstance(conv, nn.Conv3d) else None
