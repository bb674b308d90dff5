"""Keep ``<dirpath>/last.ckpt`` current, so a finished fit always leaves one and a killed run loses little.

Lightning's ``ModelCheckpoint`` writes ``last`` only where it would also consider a "best" file (validation ends, or
epoch ends when validation runs every epoch): a run that ends before its first validation (``check_val_every_n_epoch
> max_epochs``, a short fine-tuning) wrote no checkpoint at all, and a kill lost everything since the last epoch.
This callback writes ``last.ckpt`` (loop state included, so ``resume=true`` continues from exactly there):

- every ``every_n_train_steps`` optimiser steps and / or every ``every_n_minutes`` of training (so a kill loses at
  most that much),
- at the end of every training epoch and after every validation,
- when fit ends, however it ended (so ``last.ckpt`` always exists after a fit that ran at least one step).

Each write goes through the trainer's checkpoint IO (``AtomicCheckpointIO``: temp file, fsync, rename, folder
fsync); temp files left by a write that was killed are removed when fitting starts.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L

from common.io import remove_stale_temp_files


class LastCheckpoint(L.Callback):
    """Write ``<dirpath>/<filename>`` periodically, at epoch / validation ends and at the end of fit.

    Args:
        dirpath: checkpoint folder (``resume=true`` reads ``<dirpath>/last.ckpt``).
        filename: file name.
        every_n_train_steps: also write every this many optimiser steps (None: off).
        every_n_minutes: also write when this many minutes of training passed since the last write (None: off).

    Raises:
        ValueError: a non-positive interval.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt", every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = None) -> None:
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool) or int(every_n_train_steps) < 1):
            raise ValueError(f"every_n_train_steps must be an integer >= 1 or null, got {every_n_train_steps!r}")
        if every_n_minutes is not None and not float(every_n_minutes) > 0:
            raise ValueError(f"every_n_minutes must be > 0 or null, got {every_n_minutes!r}")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.every_n_train_steps = int(every_n_train_steps) if every_n_train_steps is not None else None
        self.every_n_seconds = float(every_n_minutes) * 60.0 if every_n_minutes is not None else None
        self._saved_at: tuple[int, int, int] | None = None
        self._last_time = time.monotonic()

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            remove_stale_temp_files(self.dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        due = bool(self.every_n_train_steps and trainer.global_step > 0
                   and trainer.global_step % self.every_n_train_steps == 0)
        if not due and self.every_n_seconds is not None:
            # every rank must take the same decision (a save is collective): rank 0's clock decides
            due = bool(trainer.strategy.broadcast(time.monotonic() - self._last_time >= self.every_n_seconds))
        if due:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            self._save(trainer, force=True)

    def _save(self, trainer: L.Trainer, force: bool = False) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        fit_loop = trainer.fit_loop
        # (step, epochs done, batches done): a second request at the same point writes nothing new
        where = (trainer.global_step, fit_loop.epoch_progress.current.processed,
                 fit_loop.epoch_loop.batch_progress.current.processed)
        if where == self._saved_at and not force:
            return
        trainer.save_checkpoint(self.path)
        self._saved_at = where
        self._last_time = time.monotonic()
