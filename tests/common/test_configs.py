"""Every shared config group composes and instantiates (GPU-only groups are checked as configs + strategy)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from common.lightning.checkpoint_io import AtomicCheckpointIO
from common.lightning.last_checkpoint import LastCheckpoint
from common.lightning.runner import best_checkpoint_path, instantiate_collection

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def _compose(*overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(overrides=["+paths=default", "paths.output_dir=/tmp/x", "+task_name=t",
                                  "+monitor.metric=val/loss", "+monitor.mode=min", *overrides])


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_ROOT / "trainer").glob("*.yaml")))
def test_every_trainer_config_instantiates(name):
    cfg = _compose(f"+trainer={name}")
    if cfg.trainer.accelerator == "gpu":
        # GPU configs: check what they promise, then build them on CPU to prove the rest is valid.
        assert cfg.trainer.precision == "bf16-mixed"
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "32-true"
        cfg.trainer.devices = 1
    if name == "fsdp":  # FSDP needs CUDA to construct; check the strategy object alone
        strategy = instantiate(cfg.trainer.strategy)
        assert type(strategy).__name__ == "FSDPStrategy"
        assert cfg.trainer.plugins is None
        return
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer, L.Trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_cpu_trainer_is_fp32():
    cfg = _compose("+trainer=cpu")
    assert cfg.trainer.precision == "32-true" and cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("group_file", sorted(f"{p.parent.name}/{p.stem}" for group in ("callbacks", "logger")
                                              for p in (CONFIG_ROOT / group).glob("*.yaml")))
def test_every_callback_and_logger_config_instantiates(group_file, tmp_path):
    group, name = group_file.split("/")
    if name == "tensorboard":
        pytest.importorskip("tensorboard")
    cfg = _compose(f"+{group}={name}", f"paths.output_dir={tmp_path}")
    objects = instantiate_collection(cfg.get(group))
    assert len(objects) == len([v for v in (cfg.get(group) or {}).values() if v])


def test_paths_follow_project_root(monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", "/srv/project")
    cfg = _compose()
    assert cfg.paths.data_dir == "/srv/project/data"
    assert cfg.paths.log_dir == "/srv/project/outputs"


def test_hydra_run_dir_is_under_outputs():
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_ROOT / "hydra" / "default.yaml"))  # unresolved
    assert cfg["run"]["dir"].startswith("${paths.log_dir}/${task_name}/runs/")


class _WorseEveryEpoch(L.LightningModule):
    """One weight; validation loss = epoch index, so the best epoch is the first and every later one is worse."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_default_callbacks_refresh_last_checkpoint_every_epoch_and_keep_the_best(tmp_path):
    # Lightning >= 2.5's save_last only refreshes last.ckpt in epochs that improve the monitored metric; the
    # default callbacks must still leave the newest epoch in last.ckpt (resume) and the best one in best-*.ckpt.
    cfg = _compose("+callbacks=default", f"paths.output_dir={tmp_path}")
    callbacks = [c for c in instantiate_collection(cfg.callbacks) if isinstance(c, (ModelCheckpoint, LastCheckpoint))]
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = L.Trainer(max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(_WorseEveryEpoch(), train_dataloaders=data, val_dataloaders=data)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # LastCheckpoint writes once more when fit ends: Lightning then counts 3 finished epochs (epoch 3, step 6)
    assert (last["epoch"], last["global_step"]) == (3, 6)
    best = best_checkpoint_path(trainer)
    assert best is not None and Path(best).name == "best-epoch000.ckpt"
    assert torch.load(best, map_location="cpu", weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
