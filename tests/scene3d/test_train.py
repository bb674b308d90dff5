"""End to end: `train(cfg)` from the real configs, shrunk to a 4-scene demo set and a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from common.export import load_checkpoint
from scene3d.models.scene3d_module import Scene3DPretrainModule
from scene3d.train import train
from tests.scene3d.data.pretrain_factory import TINY_DEMO

REPO = Path(__file__).resolve().parents[2]

TINY = [
    *(f"data.demo.{key}={value}" for key, value in TINY_DEMO.items()),
    "data.batch_size=2", "data.points_per_object=8", "data.tokenizer.vocab_size=200", "model.dim=16",
    "model.embed_dim=16", "model.object_encoder.point_channels=[8]", "model.graph_encoder.num_layers=1",
    "model.graph_encoder.num_heads=2", "model.text_encoder.hidden_size=16", "model.text_encoder.num_layers=1",
    "model.text_encoder.intermediate_size=32", "model.scheduler.warmup_steps=1", "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
]


def _compose(tmp: Path, *overrides: str, shrink: bool = True):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="scene3d_train",
                      overrides=[f"paths.root_dir={tmp}", *(TINY if shrink else ()), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scene3d")
    cfg = _compose(tmp)
    return cfg, train(cfg)


def test_train_writes_metrics_checkpoints_and_figures(trained_run):
    cfg, metrics = trained_run
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) == set(metrics)
    for key in ("mom/acc", "mom/majority_baseline", "mom/balanced_acc", "retrieval/obj2phrase_R@1",
                "retrieval/phrase2obj_R@1", "retrieval/triplet2text_R@1", "val/mom/acc", "test/loss"):
        assert key in saved, key
    for name in ("object_phrase", "triplet_phrase", "scene_text", "mlm", "mom"):
        assert f"test/{name}_loss" in saved, name
    assert 0.0 <= saved["mom/acc"] <= 1.0 and saved["trainer/global_step"] == 2  # 2 train scenes, batch 2, 2 epochs
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
    for figure in ("loss_curves.png", "metric_curves.png", "mom_predictions.png"):
        assert (run / "figures" / figure).read_bytes()[:4] == b"\x89PNG", figure
    assert "Scene3DPretrainModule" in (run / "config.yaml").read_text()


def test_checkpoint_loads_without_unpickling_code(trained_run):
    cfg, _ = trained_run
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert "[MASK]" in load_checkpoint(path)["hyper_parameters"]["tokenizer_json"]
    model = Scene3DPretrainModule.load_from_checkpoint(path, weights_only=True)
    assert model.hparams["context"] == "graph" and model.hparams["class_counts"]


def test_no_graph_experiment_composes_and_runs(tmp_path):
    cfg = _compose(tmp_path, "experiment=no_graph", "trainer.max_epochs=1", "test=false")
    assert cfg.model.context == "objectwise" and cfg.task_name == "scene3d_no_graph"
    metrics = train(cfg)
    assert "val/mom/acc" in metrics and metrics["trainer/global_step"] == 1


def test_base_model_config_builds(trained_run, tmp_path):
    from hydra.utils import instantiate

    from scene3d.data.datamodule import ScenePretrainDataModule

    cfg = _compose(tmp_path, "model=scene3d_base", shrink=False)
    assert cfg.model.dim == 256 and cfg.model.loss_weights.mom == 1.0  # inherits the tiny config's objectives
    trained_cfg, _ = trained_run
    dm = ScenePretrainDataModule(root=str(Path(trained_cfg.paths.data_dir) / "scene3d_demo"), points_per_object=4)
    dm.setup()
    model = instantiate(cfg.model, **dm.model_kwargs())
    assert sum(p.numel() for p in model.context_encoder.parameters()) > 1_000_000


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(tmp_path):
    """The command line with trainer=ddp on 2 CPU processes (gloo): ranks see different objectives per batch."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "scene3d.train", *TINY, "data.batch_size=1", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.precision=32-true", "trainer.strategy.process_group_backend=gloo",
           f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'ddp'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 2  # 2 train scenes over 2 ranks, batch 1, 2 epochs
    assert "mom/acc" in metrics and (tmp_path / "ddp" / "figures" / "mom_predictions.png").is_file()
