"""``python -m medvl.evaluate ckpt_path=... [data overrides]``: evaluate a pre-trained checkpoint on a test split.

Writes ``metrics.json`` into the run folder with retrieval Recall@1/5/10 both ways (``retrieval/v2t_R@k``,
``retrieval/t2v_R@k``), zero-shot finding AUROC (``zeroshot/auroc_mean``, ``zeroshot/auroc/<finding>``) and, when
organ masks and finding locations exist (the demo set), ``grounding/pointing_acc``; plus the figures of the test
split. The model is rebuilt from the checkpoint alone (tokenizer and sizes are stored in it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from common.checkpoint_loading import load_lightning_module, validate_checkpoint
from common.config_checks import check_config
from common.io import atomic_write_json, atomic_write_text
from common.lightning.runner import instantiate_collection, scalar_metrics, wait_for_launched_ranks
from medvl.models.medvl_module import MedVLPretrainModule, resolve_pointing_source

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``'s test split (or ``cfg.split``); returns (and writes) the metrics.

    Raises:
        FileNotFoundError, CheckpointFileError: a missing, unsafe, truncated or safetensors file, or a checkpoint of
            another model (see ``common.checkpoint_loading``).
        ValueError: no ckpt_path, an unknown split, or data whose preprocessing differs from the
            model's.
    """
    check_config(cfg)
    split = str(cfg.get("split") or "test")
    if split not in ("val", "test"):
        raise ValueError(f"split={split!r}: evaluate the 'test' split (the default) or 'val' (e.g. to choose "
                         f"zero-shot prompts without looking at the test split)")
    if not cfg.get("ckpt_path"):
        raise ValueError("give the checkpoint to evaluate: python -m medvl.evaluate ckpt_path=/path/to/last.ckpt")
    ckpt_path = validate_checkpoint(str(cfg.ckpt_path), expected_module=MedVLPretrainModule)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.get("seed", 0)), workers=True)

    model = load_lightning_module(MedVLPretrainModule, ckpt_path, map_location="cpu")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    trained = model.hparams["preprocess"]
    given = datamodule.preprocess_config.to_dict()
    if trained != given:
        diff = {k: (trained.get(k), given.get(k)) for k in sorted(set(trained) | set(given)) if trained.get(k) != given.get(k)}
        raise ValueError(f"the data's preprocessing differs from the one the model was trained with "
                         f"(key: (trained, given)): {diff}; set data.preprocess.* to the trained values")
    if cfg.get("pointing_source"):  # e.g. compare the pointing of one checkpoint by word and sentence attention
        model.pointing_method = resolve_pointing_source(str(cfg.pointing_source), model.loss_weights)
    if list(datamodule.label_names) != list(model.label_names):
        model.label_names = list(datamodule.label_names)  # zero-shot prompts follow the evaluated data's findings
    if cfg.get("zeroshot_templates"):  # other prompts for a trained checkpoint, e.g. the findings in other words
        model.set_zeroshot_templates(cfg.zeroshot_templates)
        log.info("zero-shot prompts: %s", model.hparams["zeroshot_templates"])

    loggers = instantiate_collection(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, default_root_dir=str(output_dir),
                                     callbacks=[])
    # the val split runs through the same test loop (metrics, figures); its loader has no augmentation either
    results = (trainer.test(model, datamodule=datamodule) if split == "test"
               else trainer.test(model, dataloaders=datamodule.val_dataloader()))
    metrics = {}
    for result in results:
        metrics.update(scalar_metrics(result))
    metrics.update(scalar_metrics(trainer.callback_metrics))
    wait_for_launched_ranks(trainer)
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
        atomic_write_text(output_dir / "evaluated_checkpoint.txt", f"{ckpt_path.resolve()}\nsplit: {split}\n")
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="medvl_evaluate")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    evaluate(cfg)


if __name__ == "__main__":
    main()
