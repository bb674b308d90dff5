"""A CSV metric log that survives a resume.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder already holds one, so resuming a run threw away
its history (only the steps after the resume remained). ``ResumableCSVLogger`` keeps the file: on its first write
it drops the rows from the killed run that the resumed run logs again (every row whose ``step`` is at or after the
first step the resumed run logs) and appends from there, so the resumed log equals the uninterrupted run's. Rows
are flushed every ``flush_logs_every_n_steps`` (1 by default: a kill loses at most the row being written).
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from common.io import atomic_write_text


class _AppendingExperimentWriter(ExperimentWriter):
    """``ExperimentWriter`` that keeps an existing ``metrics.csv`` (see module docstring)."""

    def _check_log_dir_exists(self) -> None:
        self._previous: list[dict[str, str]] | None = None
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                reader = csv.DictReader(handle)
                self._previous = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self._previous is not None and self.metrics:
            first_new = min(int(row["step"]) for row in self.metrics)
            kept = [row for row in self._previous if _step(row) < first_new]
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(self.metrics_file_path, out.getvalue())
            self._previous = None
        super().save()


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` is continued, not deleted, when the run is resumed.

    Args: as ``lightning.pytorch.loggers.CSVLogger``; ``flush_logs_every_n_steps`` defaults to 1.
    """

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
