"""Save ``last.ckpt`` when training is interrupted (Ctrl+C / SIGINT / SIGTERM), so nothing is lost.

Lightning's ``ModelCheckpoint`` writes only at epoch or interval boundaries; on a KeyboardInterrupt Lightning
calls every callback's ``on_exception`` before shutting down, which is where this one writes the checkpoint
(loop state included, so ``resume=true`` continues mid-epoch from the same step).
"""
from __future__ import annotations

import signal
from pathlib import Path

import lightning as L


class SaveCheckpointOnInterrupt(L.Callback):
    """Write ``<dirpath>/<filename>`` on KeyboardInterrupt (SIGTERM is turned into one while fitting).

    Args:
        dirpath: checkpoint folder (the same as ModelCheckpoint's so ``resume=true`` finds it).
        filename: file name, ``last.ckpt`` by default.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self._previous_sigterm = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Schedulers (SLURM, k8s) stop jobs with SIGTERM: treat it like Ctrl+C so the checkpoint is written.
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        except ValueError:  # not in the main thread (e.g. some launchers): leave signals alone
            self._previous_sigterm = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        path = self.dirpath / self.filename
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(f"\nInterrupted at step {trainer.global_step}: saved {path}. Resume with resume=true "
                  f"(same run dir) or ckpt_path={path}")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
