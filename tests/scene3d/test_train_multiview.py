"""End to end: `train(cfg)` with experiment=multiview on a 4-scene demo set with tiny rendered frames."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from scene3d.models.components.view_encoder import SmallCNNViewEncoder
from scene3d.models.multiview_module import Scene3DMultiViewPretrainModule
from scene3d.train import train
from tests.scene3d.data.pretrain_factory import TINY_DEMO

TINY = [
    *(f"data.demo.{key}={value}" for key, value in TINY_DEMO.items()),
    "data.batch_size=2", "data.points_per_object=8", "data.tokenizer.vocab_size=200", "model.dim=16",
    "model.embed_dim=16", "model.object_encoder.point_channels=[8]", "model.graph_encoder.num_layers=1",
    "model.graph_encoder.num_heads=2", "model.text_encoder.hidden_size=16", "model.text_encoder.num_layers=1",
    "model.text_encoder.intermediate_size=32", "model.scheduler.warmup_steps=1", "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "data.demo_frames.frames_per_scene=4", "data.demo_frames.color_size=[64,48]", "data.demo_frames.depth_size=[32,24]",
    "data.views.crop_size=16", "data.views.views_per_object=2", "model.view_encoder.out_dim=8",
    "model.view_encoder.channels=[8]",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scene3d_mv")
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="scene3d_train", overrides=[f"paths.root_dir={tmp}", "experiment=multiview", *TINY])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg, train(cfg)


def test_multiview_experiment_trains_with_view_losses_and_retrieval(trained_run):
    cfg, metrics = trained_run
    assert cfg.task_name == "scene3d_multiview"
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    for name in ("view_object", "view_text", "object_text", "mom", "object_phrase"):
        assert f"test/{name}_loss" in saved, name
    for key in ("retrieval/view2obj_R@1", "retrieval/obj2view_R@1", "retrieval/view2obj_chance_R@1",
                "retrieval/view2text_R@1", "val/retrieval/view2obj_R@1"):
        assert key in saved, key
    assert 0 < saved["retrieval/view2obj_chance_R@1"] < 0.2  # a test scene holds more than 5 objects with views
    assert saved["trainer/global_step"] == 2
    frames = Path(cfg.paths.data_dir) / "scene3d_demo" / "frames"
    assert (frames / "object_phrases.json").is_file() and list((frames / ".views_cache").glob("*.npz"))


def test_multiview_checkpoint_rebuilds_the_view_encoder(trained_run):
    cfg, _ = trained_run
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = Scene3DMultiViewPretrainModule.load_from_checkpoint(path, weights_only=True)
    assert isinstance(model.view_model.encoder, SmallCNNViewEncoder)
    assert model.hparams["view_encoder"]["channels"] == [8] and model.hparams["view_loss_weights"]["view_text"] == 1.0
