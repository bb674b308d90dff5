"""``python -m scene3d.evaluate task=grounding|qa checkpoint=<fine-tuned .ckpt> [overrides]``: score a fine-tuned
checkpoint on the test split (default; ``split=val`` for val) and write metrics.json plus the benchmark's
prediction file (predictions/) into the run folder. See configs/scene3d_evaluate.yaml."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from common.io import atomic_write_json, atomic_write_text
from common.lightning.runner import scalar_metrics

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Load ``cfg.checkpoint`` (weights only) into the task's module class, run the split, return its metrics.

    Raises:
        ValueError: no checkpoint given or found, or an unknown split.
    """
    checkpoint = cfg.get("checkpoint")
    if not checkpoint or not Path(str(checkpoint)).is_file():
        raise ValueError(f"checkpoint={checkpoint}: give a fine-tuned checkpoint written by python -m scene3d.finetune "
                         "(<run dir>/checkpoints/best-*.ckpt or last.ckpt)")
    split = str(cfg.get("split", "test"))
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(int(cfg.get("seed", 0)))
    module_class = get_class(cfg.model._target_)
    model = module_class.load_from_checkpoint(str(checkpoint), map_location="cpu", weights_only=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    if split == "val":
        datamodule.test_dataloader = datamodule.val_dataloader  # score val through the test loop (same outputs)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[], default_root_dir=str(output_dir))
    results = trainer.test(model, datamodule=datamodule)
    metrics = {}
    for result in results:
        metrics.update(scalar_metrics(result))
    metrics.update(scalar_metrics(trainer.callback_metrics))
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="scene3d_evaluate")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    evaluate(cfg)


if __name__ == "__main__":
    main()
