"""The shared training runner behind every ``python -m <package>.train``.

``run(cfg)`` is a plain function (tests call it directly with a composed config); the ``@hydra.main`` wrappers
in ``medvl/train.py`` and ``scene3d/train.py`` only hand it the config. It

1. seeds everything (``cfg.seed``),
2. instantiates the datamodule; if the datamodule has ``model_kwargs()`` (e.g. vocabulary size, label names,
   tokenizer folder learnt from the training split) those are passed to the model's constructor,
3. instantiates the model, callbacks, loggers and trainer from their ``_target_`` configs,
4. fits, resuming from ``cfg.ckpt_path`` or, with ``resume=true``, from ``<output_dir>/checkpoints/last.ckpt``,
5. tests (best checkpoint when there is one) when ``cfg.test`` is true,
6. writes ``metrics.json`` (flat dict of final metrics) and ``config.yaml`` (resolved) into the run folder and
   prints the run folder last.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from common.checkpoint_loading import validate_checkpoint
from common.config_checks import check_config
from common.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("data", "model", "trainer", "paths")


def run(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) the configured model; returns the final metrics also written to ``metrics.json``.

    Raises:
        ConfigValueError: a config value of the wrong type or range (``common.config_checks``).
        ValueError: when the config lacks a required group, or ``ckpt_path`` does not exist.
    """
    missing = [key for key in REQUIRED_KEYS if cfg.get(key) is None]
    if missing:
        raise ValueError(f"config is missing {missing}; compose it from configs/ (e.g. medvl_train.yaml)")
    check_config(cfg)  # wrong types / ranges of overrides, named by key, before anything is built
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_resume_checkpoint(cfg, output_dir)  # before anything is built or written
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    L.seed_everything(int(cfg.get("seed", 0)), workers=True)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))

    datamodule = instantiate(cfg.data)
    model_kwargs: dict[str, Any] = {}
    if hasattr(datamodule, "model_kwargs"):
        datamodule.prepare_data()
        datamodule.setup("fit")
        model_kwargs = dict(datamodule.model_kwargs())
        if hasattr(datamodule, "check_splits"):  # an empty split the run needs: refuse before fitting
            datamodule.check_splits(test=bool(cfg.get("test", True)))
    model = instantiate(cfg.model, **model_kwargs)

    callbacks = instantiate_collection(cfg.get("callbacks"))
    loggers = instantiate_collection(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(output_dir))

    if ckpt_path is not None:
        log.info("Resuming from %s", ckpt_path)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metrics = scalar_metrics(trainer.callback_metrics)
    if cfg.get("test", True):
        best = best_checkpoint_path(trainer)
        test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
        for result in test_results:
            metrics.update(scalar_metrics(result))
        metrics.update(scalar_metrics(trainer.callback_metrics))
    metrics["trainer/global_step"] = float(trainer.global_step)
    metrics["trainer/epoch"] = float(trainer.current_epoch)
    wait_for_launched_ranks(trainer)

    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


def wait_for_launched_ranks(trainer: L.Trainer, timeout_s: float = 600.0) -> None:
    """On the process that launched the other DDP ranks (Lightning's script launcher): wait for them to exit and
    fail when one failed, so that a run with a dead rank never ends with exit code 0 and a "Run directory" line.

    Lightning only polls its children every few seconds and a fast rank 0 can finish first. Elsewhere (single
    process, child ranks, torchrun / SLURM launches, where the launcher watches every rank) this does nothing.

    Raises:
        RuntimeError: a launched rank exited with a non-zero code, or is still running after ``timeout_s``.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    failed = []
    for rank, proc in enumerate(getattr(launcher, "procs", None) or [], start=1):
        try:
            code = proc.wait(timeout=timeout_s)
        except Exception:  # subprocess.TimeoutExpired
            failed.append(f"rank {rank} (pid {proc.pid}) is still running {timeout_s:.0f} s after rank 0 finished")
            continue
        if code != 0:
            failed.append(f"rank {rank} (pid {proc.pid}) exited with code {code}")
    if failed:
        raise RuntimeError(f"the run failed on another process: {'; '.join(failed)}; its error is in the log above. "
                           "The results of rank 0 alone are not the run's results")


def best_checkpoint_path(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint of the trainer's monitoring `ModelCheckpoint` (the one with a `monitor`),
    or None when there is none or it saved nothing (then `trainer.test` uses the current weights)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) and getattr(callback, "best_model_path", ""):
            return callback.best_model_path
    return None


def resolve_resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """``cfg.ckpt_path`` if given (must exist); else ``<output_dir>/checkpoints/last.ckpt`` when ``resume``.

    The checkpoint is validated (``common.checkpoint_loading``) before anything is built.

    Raises:
        CheckpointFileError: the checkpoint is unsafe, truncated, a safetensors file, or another model's.
        ValueError: ``ckpt_path`` does not exist; or the run folder already holds a run's ``last.ckpt`` and
            neither ``resume`` nor ``ckpt_path`` is given: starting over there would overwrite its checkpoints
            and Lightning's CSV logger would delete its metric history.
    """
    explicit = cfg.get("ckpt_path")
    expected = _model_class(cfg)
    if explicit:
        path = Path(str(explicit)).expanduser()
        if not path.exists():
            raise ValueError(f"ckpt_path={explicit} does not exist; give a .ckpt file written by a previous run "
                             "(e.g. outputs/<task>/runs/<time>/checkpoints/last.ckpt)")
        if path.is_file():  # a folder may be a sharded (FSDP) checkpoint: Lightning's strategy reads those
            validate_checkpoint(path, expected_module=expected)
        return str(path)
    if cfg.get("resume", False):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            validate_checkpoint(last, expected_module=expected)
            return str(last)
        log.warning("resume=true but %s does not exist: starting from scratch. To resume a run, point "
                    "hydra.run.dir at its folder or pass ckpt_path=...", last)
        return None
    existing = output_dir / "checkpoints" / "last.ckpt"
    if existing.is_file():
        raise ValueError(f"the run folder {output_dir} already holds a run ({existing}); pass resume=true to continue "
                         "it, or choose another hydra.run.dir (a fresh start there would overwrite its checkpoints "
                         "and delete its metric log)")
    return None


def _model_class(cfg: DictConfig) -> type | None:
    """The class ``cfg.model._target_`` builds (to check a checkpoint belongs to it), or None if not a class."""
    target = cfg.get("model", {}).get("_target_") if cfg.get("model") is not None else None
    if not target:
        return None
    try:
        cls = get_class(str(target))
    except Exception:  # a factory function, or a target that fails to import: instantiate() reports it later
        return None
    return cls if isinstance(cls, type) else None


def instantiate_collection(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping of configs (callbacks / loggers); skip empty ones."""
    if not node:
        return []
    if not isinstance(node, (Mapping, DictConfig)):
        raise ValueError(f"expected a mapping of name -> config with _target_, got {type(node).__name__}")
    objects = []
    for name, sub in node.items():
        if sub is None:
            continue
        if "_target_" not in sub:
            raise ValueError(f"config entry '{name}' has no _target_; every callback / logger needs one")
        objects.append(instantiate(sub))
    return objects


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats; Lightning's per-step / per-epoch twins of a logged name are dropped."""
    out = {}
    for name, value in metrics.items():
        if name.endswith("_step") or (name.endswith("_epoch") and name[: -len("_epoch")] in metrics):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[str(name)] = float(value)
    return out


def hydra_entry(cfg: DictConfig) -> None:
    """Body of the ``@hydra.main`` wrappers: configure logging verbosity and call :func:`run`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    run(cfg)
