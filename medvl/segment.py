"""``python -m medvl.segment export_dir=DIR [mode=train|evaluate|predict] [overrides]``: segmentation fine-tuning.

- ``mode=train`` (default): fine-tune a MONAI SwinUNETR / UNETR whose encoder is the export's (strict load;
  ``model.pretrained=false`` for the same architecture from random init) on labelled volumes (``data.manifest``,
  or the demo set's organ masks), evaluate the best checkpoint on the test split, and write
  ``metrics.json``, ``checkpoints/`` and a MONAI bundle (``bundle/``) into the run folder.
- ``mode=evaluate ckpt_path=...``: Dice per class of a fine-tuned checkpoint on the test split.
- ``mode=predict ckpt_path=... predict.input=CT.nii.gz``: NIfTI label maps on each input's own grid.

See configs/medvl_segment.yaml and docs/export.md.
"""
from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from common.checkpoint_loading import validate_checkpoint
from common.config_checks import check_config
from common.io import atomic_write_json, atomic_write_text
from common.lightning.runner import (
    best_checkpoint_path,
    instantiate_collection,
    resolve_resume_checkpoint,
    scalar_metrics,
    wait_for_launched_ranks,
)
from medvl.segmentation.bundle import write_bundle
from medvl.segmentation.module import SegmentationModule, load_segmentation_module

__all__ = ["MODES", "evaluate_segmentation", "predict_segmentation", "segment", "train_segmentation"]

log = logging.getLogger(__name__)

MODES = ("train", "evaluate", "predict")
_GLOB_CHARACTERS = ("*", "?", "[")


def segment(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.mode``; returns its metrics (train / evaluate) or {"predictions": [paths]} (predict).

    Raises:
        ValueError: an unknown mode, or a mode's missing argument (e.g. ckpt_path for evaluate / predict).
    """
    check_config(cfg)
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.get("seed", 0)), workers=True)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    if mode == "train":
        return train_segmentation(cfg)
    if mode == "evaluate":
        return evaluate_segmentation(cfg)
    return predict_segmentation(cfg)


def _trainer(cfg: DictConfig, output_dir: Path, *, with_callbacks: bool = True) -> L.Trainer:
    callbacks = instantiate_collection(cfg.get("callbacks")) if with_callbacks else []
    loggers = instantiate_collection(cfg.get("logger"))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir))


def _require_checkpoint(cfg: DictConfig, mode: str) -> Path:
    path = cfg.get("ckpt_path")
    if not path:
        raise ValueError(f"mode={mode} needs ckpt_path=<a .ckpt written by mode=train> (e.g. "
                         "outputs/medvl_segment/runs/<time>/checkpoints/last.ckpt)")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ValueError(f"ckpt_path={path} does not exist")
    return validate_checkpoint(path, expected_module=SegmentationModule)


def train_segmentation(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune, test the best checkpoint, write metrics.json and a MONAI bundle; returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_resume_checkpoint(cfg, output_dir)  # a bad checkpoint fails before the data are built
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if not len(datamodule.datasets["val"]):
        raise ValueError(
            "no validation volumes: checkpoints keep the best val/dice_mean; give manifest rows with split=val, "
            "or data.val_fraction > 0 for a manifest without a split column"
        )
    model: SegmentationModule = instantiate(cfg.model, **datamodule.model_kwargs())
    trainer = _trainer(cfg, output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = scalar_metrics(trainer.callback_metrics)
    best = best_checkpoint_path(trainer)
    if cfg.get("test", True) and len(datamodule.datasets["test"]):
        for result in trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True):
            metrics.update(scalar_metrics(result))
    metrics["trainer/global_step"] = float(trainer.global_step)
    wait_for_launched_ranks(trainer)
    if trainer.is_global_zero:
        if cfg.get("bundle", True):
            final = load_segmentation_module(best) if best else model
            bundle = write_bundle(
                final.network, output_dir / "bundle", network_spec=final.hparams["network_spec"],
                class_names=final.class_names, preprocess=final.hparams["preprocess"], roi_size=final.roi_size,
                sw_batch_size=int(final.hparams["sw_batch_size"]), overlap=float(final.hparams["overlap"]),
                blend_mode=str(final.hparams["blend_mode"]),
                extra_metadata={"eval_metrics": {k: v for k, v in metrics.items() if "dice" in k}},
            )
            log.info("MONAI bundle written to %s", bundle)
        atomic_write_json(output_dir / "metrics.json", metrics)
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


def evaluate_segmentation(cfg: DictConfig) -> dict[str, Any]:
    """Dice per class of ``cfg.ckpt_path`` on the data's test split; writes metrics.json.

    The data are preprocessed as the checkpoint was trained (its saved preprocessing and roi_size).

    Raises:
        ValueError: no ckpt_path, or the data's classes differ from the checkpoint's.
    """
    output_dir = Path(cfg.paths.output_dir)
    module = load_segmentation_module(_require_checkpoint(cfg, "evaluate"))
    # the label map as trained: no second data.source_labels needed (one given on the command line still wins)
    datamodule = instantiate(cfg.data, export_dir=None, preprocess=module.hparams["preprocess"],
                             roi_size=module.roi_size, class_map=module.hparams.get("class_map"))
    datamodule.prepare_data()
    datamodule.setup("test")
    if datamodule.class_names != module.class_names:
        raise ValueError(f"the data's classes {datamodule.class_names} differ from the checkpoint's "
                         f"{module.class_names}; set data.classes as in training")
    if not len(datamodule.datasets["test"]):
        raise ValueError("the test split is empty: give a manifest with test rows or a test_fraction > 0")
    trainer = _trainer(cfg, output_dir, with_callbacks=False)
    metrics: dict[str, Any] = {}
    for result in trainer.test(module, datamodule=datamodule):
        metrics.update(scalar_metrics(result))
    wait_for_launched_ranks(trainer)
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


def _inputs(pattern: str) -> list[Path]:
    if any(c in pattern for c in _GLOB_CHARACTERS):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern)))
        if not found:
            raise ValueError(f"predict.input={pattern!r} matches no file")
        return found
    path = Path(pattern).expanduser()
    if not path.exists():
        raise ValueError(f"predict.input={pattern} does not exist")
    return [path]


def _output_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + "_seg.nii.gz"
    return name + "_seg.nii.gz"  # a DICOM folder


def predict_segmentation(cfg: DictConfig) -> dict[str, Any]:
    """Label maps (NIfTI, each input's own grid and affine) of ``cfg.predict.input`` with ``cfg.ckpt_path``.

    Raises:
        ValueError: no ckpt_path or predict.input, or an input pattern that matches nothing.
    """
    module = load_segmentation_module(_require_checkpoint(cfg, "predict"))
    pattern = cfg.get("predict", {}).get("input")
    if not pattern:
        raise ValueError("mode=predict needs predict.input=<a NIfTI file, DICOM folder or glob pattern>")
    out_dir = Path(cfg.predict.output_dir)
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") else "cpu"
    segmenter = module.to(device).segmenter(device)
    written = []
    for path in _inputs(str(pattern)):
        written.append(str(segmenter.predict_to_file(path, out_dir / _output_name(path))))
        log.info("wrote %s", written[-1])
    print(f"Predictions: {out_dir.resolve()}")
    return {"predictions": written}


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="medvl_segment")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    segment(cfg)


if __name__ == "__main__":
    main()
