"""End to end: `finetune(cfg)` from the real configs, shrunk to the 4-scene demo set and a tiny backbone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from scene3d.finetune import finetune
from tests.scene3d.data.pretrain_factory import TINY_DEMO

TINY_BACKBONE = ["model.backbone.dim=16", "model.backbone.embed_dim=16", "model.backbone.object_encoder.point_channels=[8]",
                 "model.backbone.graph_encoder.num_layers=1", "model.backbone.graph_encoder.num_heads=2",
                 "model.backbone.text_encoder.hidden_size=16", "model.backbone.text_encoder.num_layers=1",
                 "model.backbone.text_encoder.intermediate_size=32"]
TINY = [*(f"data.demo.{key}={value}" for key, value in TINY_DEMO.items()), "data.batch_size=2",
        "data.points_per_object=8", "data.tokenizer.vocab_size=200", "model.scheduler.warmup_steps=1",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=false", "callbacks.progress_bar=null"]


def compose_finetune(tmp: Path, *overrides: str, run: str = "run"):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="scene3d_finetune",
                      overrides=[f"paths.root_dir={tmp}", *TINY, *TINY_BACKBONE, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / run)
    return cfg


@pytest.fixture(scope="module")
def grounding_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    cfg = compose_finetune(tmp, "task=grounding")
    return cfg, finetune(cfg)


def test_grounding_writes_metrics_and_scanrefer_predictions(grounding_run):
    cfg, metrics = grounding_run
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("acc@0.25", "acc@0.5", "acc@0.5/random_baseline", "proposal_acc", "val/acc@0.5",
                "test/grounding_loss", "test/object_cls_loss", "test/text_cls_loss"):
        assert key in saved, key
    assert 0 <= saved["acc@0.5"] <= 1 and 0 < saved["acc@0.5/random_baseline"] < 1
    predictions = json.loads((run / "predictions" / "scanrefer_predictions.json").read_text())
    assert len(predictions) == saved["n"] and set(predictions[0]) == {"scene_id", "object_id", "ann_id", "bbox"}
    assert np.asarray(predictions[0]["bbox"]).shape == (8, 3)
