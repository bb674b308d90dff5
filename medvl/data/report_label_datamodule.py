"""Labelled reports (no images) for the report labeler: a LightningDataModule over `read_report_table` files.

Each item is ``(sentences, labels)``: the report split by ``parse_report`` (findings, then impression) and its
finding labels as a (K,) float tensor, NaN where unknown (the loss and metrics skip those). Without a validation
file, ``val_fraction`` of the training rows (a seeded random choice) are held out to pick the epoch and the
decision thresholds. Tokenisation happens in the model, so a checkpoint alone carries its tokenizer.
"""
from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from common.text.tokenizer import load_tokenizer, tokenizer_to_json, train_wordpiece_tokenizer
from medvl.data.report_table import ReportTable, ReportTableError, read_report_table
from medvl.data.reports import parse_report

__all__ = ["ReportLabelDataModule", "collate_reports", "report_sentences"]


def report_sentences(text: str, source: str) -> list[str]:
    """A report's sentences (findings, then impression), as the image-text pre-training splits them."""
    return parse_report(text, source=source, max_sentences=sys.maxsize).sentences


def collate_reports(items: list[tuple[list[str], torch.Tensor]]) -> dict[str, Any]:
    """-> {"sentences": B lists of str, "labels": (B, K) float (NaN = unknown)}."""
    return {"sentences": [sentences for sentences, _ in items], "labels": torch.stack([y for _, y in items])}


class ReportLabelDataModule(L.LightningDataModule):
    """Train / val (/ test) report tables with binary finding labels.

    Args:
        train: CSV / JSONL / .txt folder with the report column(s) and 0 / 1 / empty finding columns.
        val: optional validation file; None = hold out `val_fraction` of `train`.
        test: optional test file (``python -m medvl.label_reports`` tests on it after fitting).
        label_names: the finding columns; None = every label column of `train` (see `read_report_table`).
        val_fraction: share of `train` held out when `val` is None (0 < f < 1).
        tokenizer: {"pretrained_dir": folder (e.g. the prepared MiniLM) or None, "vocab_size", "min_frequency"}
            (None pretrained_dir = a WordPiece vocabulary trained on the training reports).
        batch_size, num_workers: DataLoader settings.
        seed: seed of the held-out choice.

    Raises:
        ReportTableError / FileNotFoundError: a file is missing or malformed (the line is named); val / test lack a
            finding column of train; a split has no row.
    """

    def __init__(self, train: str, val: str | None = None, test: str | None = None,
                 label_names: list[str] | None = None, val_fraction: float = 0.2,
                 tokenizer: dict[str, Any] | None = None, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.paths = {"train": train, "val": val, "test": test}
        self.requested_labels = list(label_names) if label_names else None
        self.val_fraction = float(val_fraction)
        self.tokenizer_options = dict(tokenizer or {})
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.items: dict[str, list[tuple[list[str], torch.Tensor]]] = {}
        self.label_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        train = read_report_table(self.paths["train"], label_names=self.requested_labels, require_labels=True)
        self.label_names = list(train.label_names)
        rows = {"train": self._items(train)}
        if self.paths["val"]:
            rows["val"] = self._items(read_report_table(self.paths["val"], label_names=self.label_names))
        else:
            order = list(range(len(rows["train"])))
            random.Random(self.seed).shuffle(order)
            held = max(1, round(self.val_fraction * len(order)))
            if held >= len(order):
                raise ReportTableError(train.path, [(0, f"{len(order)} report(s) are too few to hold out a "
                                                        "validation share: give data.val=FILE")])
            keep = set(order[held:])
            rows["val"] = [item for i, item in enumerate(rows["train"]) if i not in keep]
            rows["train"] = [item for i, item in enumerate(rows["train"]) if i in keep]
        if self.paths["test"]:
            rows["test"] = self._items(read_report_table(self.paths["test"], label_names=self.label_names))
        self.items = rows

    def _items(self, table: ReportTable) -> list[tuple[list[str], torch.Tensor]]:
        items = []
        for row in table.rows:
            labels = torch.tensor([row.labels.get(name, math.nan) for name in self.label_names], dtype=torch.float32)
            items.append((report_sentences(row.text, row.source), labels))
        return items

    def model_kwargs(self) -> dict[str, Any]:
        """tokenizer_json (loaded from pretrained_dir, or WordPiece trained on the TRAIN reports) and label_names."""
        self.setup()
        folder = self.tokenizer_options.get("pretrained_dir")
        if folder:
            tokenizer = load_tokenizer(Path(str(folder)))
        else:
            sentences = [s for sentences, _ in self.items["train"] for s in sentences]
            tokenizer = train_wordpiece_tokenizer(sentences, vocab_size=int(self.tokenizer_options.get("vocab_size", 4000)),
                                                  min_frequency=int(self.tokenizer_options.get("min_frequency", 2)))
        return {"tokenizer_json": tokenizer_to_json(tokenizer), "label_names": list(self.label_names)}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.items[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, collate_fn=collate_reports)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.items:
            raise ValueError("no test file: set data.test=FILE (or test=false)")
        return self._loader("test", shuffle=False)
