"""A tiny paired-embedding task used to test the shared runner, callbacks and base module end to end."""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.lightning.vlp_module import VLPModule


class ToyPairsDataModule(L.LightningDataModule):
    """Pairs (x, y) where y is a fixed linear function of x: a model that aligns them learns the map."""

    def __init__(self, n: int = 64, dim: int = 8, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, dim, generator=g)
        self.batch_size = batch_size
        self.dim = dim

    def model_kwargs(self) -> dict:
        return {"dim": self.dim}

    def _loader(self, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(False)


class ToyAlignModule(VLPModule):
    """Two linear encoders; losses: MSE alignment + a small L2 penalty (two `*_loss` terms) and a metric."""

    def __init__(self, dim: int = 4, hidden: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.enc_x = nn.Linear(dim, hidden)
        self.enc_y = nn.Linear(dim, hidden)

    def compute_losses(self, batch, stage):
        x, y = batch
        zx, zy = self.enc_x(x), self.enc_y(y)
        align = (zx - zy).pow(2).mean()
        return {"align_loss": align, "l2_loss": 1e-3 * zx.pow(2).mean(),
                "cos_sim": torch.cosine_similarity(zx, zy).mean()}


class InterruptAtStep(L.Callback):
    """Raise KeyboardInterrupt (like Ctrl+C) once training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class InterruptAtBatchStart(L.Callback):
    """Raise KeyboardInterrupt when the batch after ``step`` optimiser steps starts (its metrics are logged)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args, **kwargs):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class ToyEpochMetricModule(ToyAlignModule):
    """ToyAlignModule that also logs an evaluation metric at the end of each validation epoch (as the medvl and
    segmentation modules log retrieval / Dice), with a value that differs every epoch."""

    def on_validation_epoch_end(self):
        self.log("val/epoch_score", float(self.current_epoch) + 0.5)
