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


def _scanrefer_targets(cfg):
    """(key, gt centre, size, unique) of every test query, boxes in ScanNet's frame, from the real datamodule."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup()
    return dm, [((q["scene_id"], q["object_id"], q["ann_id"]), np.asarray(q["gt_center"]) + s.origin,
                 np.asarray(q["gt_size"]), q["unique"]) for s in dm.scenes["test"] for q in s.queries]


def test_predictions_round_trip_and_oracle_scores_one(grounding_run, tmp_path):
    from scene3d.evaluation.box_iou import box_corners
    from scene3d.evaluation.submission import read_scanrefer_submission, score_scanrefer_submission

    cfg, metrics = grounding_run
    _, targets = _scanrefer_targets(cfg)
    written = read_scanrefer_submission(Path(cfg.paths.output_dir) / "predictions" / "scanrefer_predictions.json")
    rescored = score_scanrefer_submission(written, targets)
    for key in ("acc@0.25", "acc@0.5", "acc@0.5/unique", "acc@0.5/multiple"):
        if key in metrics:
            assert rescored[key] == pytest.approx(metrics[key]), key   # the file reproduces the logged metric
    oracle = tmp_path / "oracle.json"
    oracle.write_text(json.dumps([{"scene_id": k[0], "object_id": str(k[1]), "ann_id": str(k[2]),
                                   "bbox": box_corners(c, s).tolist()} for k, c, s, _ in targets]))
    scored = score_scanrefer_submission(read_scanrefer_submission(oracle), targets)
    assert scored["acc@0.25"] == 1.0 and scored["acc@0.5"] == 1.0
    with pytest.raises(ValueError, match="no prediction"):
        score_scanrefer_submission({}, targets)


def test_description_of_missing_object_stops_with_the_file_named(grounding_run, tmp_path):
    import shutil

    from hydra.utils import instantiate

    cfg, _ = grounding_run
    root = Path(cfg.paths.data_dir) / "scene3d_demo"
    copy = tmp_path / "demo"
    shutil.copytree(root, copy)
    path = copy / "ScanRefer_filtered_val.json"
    entries = json.loads(path.read_text())
    entries[0]["object_id"] = "999"
    path.write_text(json.dumps(entries))
    with open_dict(cfg):
        data = OmegaConf.merge(cfg.data, {"root": str(copy)})
    with pytest.raises(ValueError, match=r"ScanRefer_filtered_val.json entry 0 .* has no object 999"):
        instantiate(data).setup()


@pytest.fixture(scope="module")
def pretrained_checkpoint(tmp_path_factory):
    """A 1-epoch scene3d.train run on the same tiny demo set (its last.ckpt)."""
    from scene3d.train import train
    from tests.scene3d.test_train import _compose

    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = _compose(tmp, "trainer.max_epochs=1", "test=false")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def _backbone_state(path):
    from common.export import load_checkpoint

    state = load_checkpoint(path)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("object_encoder.", "context_encoder.", "text_encoder."))}


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_pretrained_init_frozen_and_lora_train_only_what_they_should(pretrained_checkpoint, tmp_path, mode):
    from scene3d.evaluate import evaluate
    from scene3d.models.grounding_module import GroundingModule

    cfg = compose_finetune(tmp_path, "task=grounding", f"adaptation={mode}", f"init_checkpoint={pretrained_checkpoint}",
                           "trainer.max_epochs=1", "test=false")
    finetune(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = GroundingModule.load_from_checkpoint(ckpt, weights_only=True)   # no pre-training file needed
    assert model.hparams["initialised_from"] == str(pretrained_checkpoint) and model.hparams["init_checkpoint"] is None
    tuned = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    pretrained = _backbone_state(pretrained_checkpoint)
    lora = [k for k in tuned if "lora_" in k]
    assert bool(lora) == (mode == "lora")
    for name, value in pretrained.items():   # the pre-trained weights themselves never move in these modes
        tuned_name = "backbone." + name.replace(".query.", ".query.base_layer.").replace(".key.", ".key.base_layer.") \
            .replace(".value.", ".value.base_layer.").replace("intermediate.dense.", "intermediate.dense.base_layer.") \
            if mode == "lora" else "backbone." + name
        assert (tuned[tuned_name] == value).all(), name
    if mode == "lora":   # the adapters did train (lora_B starts at 0)
        assert any(tuned[k].abs().sum() > 0 for k in lora if "lora_B" in k)
        assert model.hparams["adaptation"]["r"] == 8
    with open_dict(cfg):
        cfg.checkpoint = str(ckpt)
        cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(cfg)
    assert 0.0 <= metrics["acc@0.5"] <= 1.0
    assert (tmp_path / "eval" / "predictions" / "scanrefer_predictions.json").is_file()


def test_backbone_config_matches_the_pretraining_model_config():
    root = Path(__file__).resolve().parents[2] / "configs"
    backbone = OmegaConf.load(root / "backbone" / "scene3d_tiny.yaml")
    model = OmegaConf.load(root / "model" / "scene3d_tiny.yaml")
    for key, value in backbone.items():
        assert model[key] == value, key


def test_qa_runs_end_to_end_with_em_text_metrics_and_scanqa_submission(tmp_path):
    from scene3d.evaluation.submission import read_scanqa_submission
    from scene3d.models.qa_module import QAModule

    cfg = compose_finetune(tmp_path, "task=qa", "model.answer_loss._target_=scene3d.models.components.answer_losses."
                           "AnswerCrossEntropy")
    metrics = finetune(cfg)
    for key in ("em@1", "em@10", "refined_em@1", "refined_em@10", "em@1/majority_baseline", "answer_bleu4",
                "answer_rouge_l", "answer_cider", "val/em@1", "test/answer_loss", "test/related_loss"):
        assert key in metrics, key
    assert metrics["em@10"] >= metrics["em@1"] and metrics["refined_em@1"] >= metrics["em@1"]
    run = Path(cfg.paths.output_dir)
    submission = read_scanqa_submission(run / "predictions" / "scanqa_predictions.json")
    model = QAModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(submission) == metrics["n"]
    entry = next(iter(submission.values()))
    assert entry["bbox"].shape == (8, 3) and set(entry["answer_top10"]) <= set(model.vocabulary)


def test_answer_vocabulary_from_an_empty_split_is_refused():
    from scene3d.data.qa_datamodule import build_answer_vocabulary

    with pytest.raises(ValueError, match="empty split"):
        build_answer_vocabulary([[], []], source="ScanQA_v1.0_train.json")
    assert build_answer_vocabulary([["b", "a"], ["a"]]) == ["a", "b"]


def test_answer_losses_hand_computed():
    import math

    import torch

    from scene3d.models.components.answer_losses import AnswerCrossEntropy, SoftScoreBCE

    logits = torch.zeros(1, 2)
    assert float(SoftScoreBCE()(logits, torch.tensor([[1.0, 0.0]]))) == pytest.approx(2 * math.log(2))
    assert float(AnswerCrossEntropy()(logits, torch.tensor([[0.5, 0.0]]))) == pytest.approx(math.log(2))
    assert float(AnswerCrossEntropy()(logits, torch.zeros(1, 2))) == 0.0   # no in-vocabulary answer: left out
