"""Scene3DPretrainModule on real batches of a 4-scene demo set: losses, gradients, switches, metrics, no leak."""
from __future__ import annotations

import pytest
import torch

from scene3d.data.datamodule import ScenePretrainDataModule
from scene3d.models.scene3d_module import OBJECTIVES, Scene3DPretrainModule, first_unique, one_per_key
from tests.scene3d.data.pretrain_factory import tiny_demo_root

TINY = {"dim": 16, "embed_dim": 16, "object_encoder": {"point_channels": [8]},
        "graph_encoder": {"num_layers": 1, "num_heads": 2}, "text_encoder": {"hidden_size": 16, "num_layers": 1,
        "intermediate_size": 32, "dropout": 0.0}, "fusion": {"num_layers": 1, "num_heads": 2}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    dm = ScenePretrainDataModule(root=str(tiny_demo_root(tmp_path_factory)), batch_size=2, points_per_object=8,
                                 max_descriptions=100, tokenizer={"vocab_size": 200})
    dm.setup()
    torch.manual_seed(0)
    return dm, dm.model_kwargs(), next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))


def _model(kwargs, **overrides):
    torch.manual_seed(0)
    return Scene3DPretrainModule(**kwargs, **{**TINY, **overrides})


def test_every_objective_gives_a_finite_loss_and_every_parameter_a_gradient(data):
    _, kwargs, train_batch, _ = data
    assert (train_batch["description_anchors"] >= 0).any()  # the batch states relation triplets
    model = _model(kwargs)
    out = model.compute_losses(train_batch, "train")
    assert {f"{name}_loss" for name in OBJECTIVES} <= set(out) and 0.0 <= float(out["mom_acc"]) <= 1.0
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_masked_objects_are_predicted_without_their_own_geometry(data):
    _, kwargs, train_batch, _ = data
    model = _model(kwargs).eval()
    graph, views = train_batch["graph"], train_batch["mom"]
    with torch.no_grad():
        logits, targets, nodes = model._mom_logits(model.object_encoder.appearance(graph.points, graph.box_size),
                                                   graph, views)
        points, sizes = graph.points.clone(), graph.box_size.clone()
        points[nodes] = torch.randn_like(points[nodes]) * 3  # other points, colours and extent
        sizes[nodes] = sizes[nodes] * 2 + 0.5
        again, _, _ = model._mom_logits(model.object_encoder.appearance(points, sizes), graph, views)
    assert logits.shape == (targets.numel(), 18)
    torch.testing.assert_close(again, logits)


def test_switching_objectives_off_builds_no_heads(data):
    _, kwargs, train_batch, _ = data
    mom_only = _model(kwargs, loss_weights={"object_phrase": 0, "triplet_phrase": 0, "scene_text": 0, "mlm": 0})
    assert not hasattr(mom_only, "text_encoder") and not hasattr(mom_only, "fusion")
    assert {k for k in mom_only.compute_losses(train_batch, "train") if k.endswith("_loss")} == {"mom_loss"}
    no_mlm = _model(kwargs, loss_weights={"mlm": 0.0, "triplet_phrase": 2.0})
    assert not hasattr(no_mlm, "fusion") and "mlm_loss" not in no_mlm.compute_losses(train_batch, "train")
    with pytest.raises(ValueError, match="at least one"):
        _model(kwargs, loss_weights={name: 0 for name in OBJECTIVES})
    with pytest.raises(ValueError, match="unknown objectives"):
        _model(kwargs, loss_weights={"contrastive": 1})
    with pytest.raises(ValueError, match="context"):
        _model(kwargs, context="transformer")
    with pytest.raises(ValueError, match="unknown graph_encoder options"):
        _model(kwargs, graph_encoder={"layers": 2})


def test_no_graph_context_has_the_graph_encoders_budget(data):
    _, kwargs, train_batch, _ = data
    graph, objectwise = _model(kwargs), _model(kwargs, context="objectwise")
    count = lambda m: sum(p.numel() for p in m.context_encoder.parameters())  # noqa: E731
    assert count(objectwise) == pytest.approx(count(graph), rel=0.02)
    assert "mom_loss" in objectwise.compute_losses(train_batch, "train")


def test_evaluation_metrics_on_held_out_scenes(data):
    _, kwargs, _, val_batch = data
    model = _model(kwargs).eval()
    model.on_validation_epoch_start()
    with torch.no_grad():
        model.compute_losses(val_batch, "val")
        first = model.evaluation_metrics()
        model.on_validation_epoch_start()
        model.compute_losses(val_batch, "val")
    assert model.evaluation_metrics() == first  # evaluation is deterministic
    targets = val_batch["graph"].y[val_batch["graph"].mom_eligible]
    assert first["mom/n_targets"] == targets.numel()
    assert first["mom/majority_baseline"] == pytest.approx(float((targets == model.majority_class).float().mean()))
    for key in ("mom/acc", "mom/balanced_acc", "retrieval/obj2phrase_R@1", "retrieval/phrase2obj_R@1",
                "retrieval/obj2phrase_chance_R@1", "retrieval/triplet2text_R@1"):
        assert 0.0 <= first[key] <= 1.0, key


def test_encode_scene_and_text_shapes(data):
    _, kwargs, train_batch, _ = data
    model = _model(kwargs).eval()
    scene = model(train_batch)
    assert scene["objects"].shape == (train_batch["graph"].num_nodes, 16) and scene["scene"].shape == (2, 16)
    text = model.encode_text(["the chair next to the table.", "a lamp."])
    assert text["pooled"].shape == (2, 16) and text["tokens"].shape[:2] == text["attention_mask"].shape


def test_dedup_helpers():
    assert first_unique(["a", "b", "a", "c"]) == [0, 1, 3]
    assert one_per_key(["a", "b", "a", "c"], [1, 1, 2, 3]) == [0, 3]  # row 1 repeats object 1, row 2 phrase "a"


def test_idle_objectives_return_zero_losses_that_touch_their_parameters(data):
    _, kwargs, train_batch, _ = data
    model = _model(kwargs)
    no_anchor = torch.full_like(train_batch["description_anchors"], -1)
    out = model.compute_losses({**train_batch, "mom": None, "description_anchors": no_anchor}, "val")
    assert {f"{name}_loss" for name in OBJECTIVES} <= set(out)  # same keys on every rank of a DDP run
    assert float(out["triplet_phrase_loss"].detach()) == 0.0 and float(out["mom_loss"].detach()) == 0.0
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    assert not [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert model.zero_losses_of_idle_objectives(model.compute_losses(train_batch, "train")) == {}


def test_parameters_of_switched_off_objectives_are_frozen(data):
    _, kwargs, _, _ = data
    model = _model(kwargs, loss_weights={"mlm": 0.0, "mom": 0.0})
    assert not model.text_encoder.mlm_bias.requires_grad and not model.object_encoder.mask_token.requires_grad
