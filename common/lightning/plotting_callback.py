"""A callback that keeps the history of logged scalars and draws PNG curves at the end of fit.

Loss curves (``*/loss`` and every ``*_loss`` term, train per step and val per epoch) go to
``<dirpath>/loss_curves.png``; every other validation metric (recall, AUROC, accuracy, ...) to
``<dirpath>/metric_curves.png``; the plotted points themselves to ``<dirpath>/curves.json`` ({name: [[step, value],
...]}; x = optimiser steps done, which is the CSV logger's 0-based ``step`` + 1). The history is part of the callback's checkpoint state, so a resumed run draws
its whole history, not just the part after the resume.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from common.io import atomic_write_json


class PlotCurves(L.Callback):
    """Record scalars from ``trainer.callback_metrics`` and save loss / metric curve PNGs.

    Args:
        dirpath: folder for the figures (created when needed).
        log_every_n_steps: training scalars are recorded every this many optimiser steps.
    """

    def __init__(self, dirpath: str | Path, log_every_n_steps: int = 1) -> None:
        if log_every_n_steps < 1:
            raise ValueError("log_every_n_steps must be >= 1")
        self.dirpath = Path(dirpath)
        self.log_every_n_steps = log_every_n_steps
        # name -> list of (global_step, value)
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    # ------------------------------------------------------------------ recording
    def _record(self, trainer: L.Trainer, prefix: str, suffix_strip: str = "") -> None:
        step = int(trainer.global_step)
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(prefix) or (prefix == "train/" and not name.endswith("_step")):
                continue
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    continue
                value = value.item()
            key = name[: -len("_step")] if name.endswith("_step") else name
            if prefix == "val/" and key.endswith("_epoch"):
                key = key[: -len("_epoch")]
            series = self.history[key]
            if series and series[-1][0] == step:
                series[-1] = (step, float(value))
            else:
                series.append((step, float(value)))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step % self.log_every_n_steps == 0:
            self._record(trainer, "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: Lightning calls the callbacks' epoch-end hook *before* the module's, where
        # evaluation metrics (retrieval, AUROC, Dice) are logged, and folds the epoch's values into
        # callback_metrics only after both; recording there drew every validation one epoch late and lost the last.
        if not trainer.sanity_checking:
            self._record(trainer, "val/")

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = defaultdict(list, {k: [(int(s), float(v)) for s, v in pts]
                                          for k, pts in state_dict.get("history", {}).items()})

    # ------------------------------------------------------------------ drawing
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_figures()

    @rank_zero_only
    def save_figures(self) -> list[Path]:
        """Write the PNGs that have data and ``curves.json``; returns the PNGs' paths."""
        if self.history:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.dirpath / "curves.json", self.state_dict()["history"])
        losses = {k: v for k, v in self.history.items() if k.endswith("/loss") or k.endswith("_loss")}
        metrics = {k: v for k, v in self.history.items() if k.startswith("val/") and k not in losses}
        written = []
        if losses:
            written.append(plot_series(losses, self.dirpath / "loss_curves.png", "Losses", log_y=True))
        if metrics:
            written.append(plot_series(metrics, self.dirpath / "metric_curves.png", "Validation metrics"))
        return written


def plot_series(series: dict[str, list[tuple[int, float]]], path: Path, title: str, log_y: bool = False) -> Path:
    """One subplot per base name (train and val of the same term share a panel); x = optimiser step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for name, points in sorted(series.items()):
        stage, _, base = name.partition("/")
        panels[base or name][stage] = points
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (base, by_stage) in zip(axes.flat, panels.items()):
        for stage, points in sorted(by_stage.items()):
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=stage)
        ax.set_title(base, fontsize=10)
        ax.set_xlabel("step")
        finite = [y for pts in by_stage.values() for _, y in pts if math.isfinite(y)]
        if log_y and finite and min(finite) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # leave the suptitle its own strip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
