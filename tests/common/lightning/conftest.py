from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict


def compose_toy(tmp_path: Path, *overrides: str) -> DictConfig:
    """Compose the real trainer / callbacks / logger / paths groups around the toy model and data."""
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(overrides=[
            "+trainer=cpu", "+callbacks=default", "+logger=csv", "+paths=default",
            f"paths.output_dir={tmp_path / 'run'}",
            "+task_name=toy", "+seed=7", "+resume=false", "+ckpt_path=null", "+test=true",
            "+monitor.metric=val/loss", "+monitor.mode=min",
            "+data._target_=tests.common.lightning.toy.ToyPairsDataModule",
            "+model._target_=tests.common.lightning.toy.ToyAlignModule",
            "+model.optimizer._target_=torch.optim.AdamW", "+model.optimizer._partial_=true",
            "+model.optimizer.lr=0.01",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
            *overrides,
        ])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def toy_cfg(tmp_path):
    return lambda *overrides: compose_toy(tmp_path, *overrides)
