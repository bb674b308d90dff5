"""ScenePretrainDataset: augmentation, class-agnostic graphs, masked views that hide the masked object's extent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scene3d.data.pretrain_dataset import ScenePretrainDataset, augment_scene, sample_object_points
from scene3d.data.pretrain_language import ObjectDescription
from scene3d.data.pretrain_scene import prepare_pretrain_scene
from scene3d.data.scene_graph import RELATION_TO_ID, SceneGraphConfig
from tests.scene3d.data.pretrain_factory import SCENE_ID, make_scene

LAMP = 2  # node index of the lamp (on the table, node 1)
DESCRIPTIONS = [ObjectDescription(SCENE_ID, 5, "the lamp on the table.", "the lamp", "on", "table"),
                ObjectDescription(SCENE_ID, 7, "the chair.", "the chair")]


def _dataset(train: bool, **kwargs) -> ScenePretrainDataset:
    scene = prepare_pretrain_scene(make_scene(**kwargs.pop("scene", {})), DESCRIPTIONS)
    return ScenePretrainDataset([scene], points_per_object=8, train=train, **kwargs)


def test_augment_scene_quarter_turn_and_mirror():
    centers = np.array([[1.0, 0.0, 0.5]], dtype=np.float32)
    sizes = np.array([[2.0, 1.0, 0.3]], dtype=np.float32)
    points = np.array([[[1.0, 0.5, 0.1, 0.2, 0.3, 0.4]]], dtype=np.float32)
    c, s, p = augment_scene(centers, sizes, points, 1, False)  # +90 degrees: (x, y) -> (-y, x)
    np.testing.assert_allclose(c, [[0.0, 1.0, 0.5]], atol=1e-6)
    np.testing.assert_allclose(s, [[1.0, 2.0, 0.3]], atol=1e-6)
    np.testing.assert_allclose(p, [[[-0.5, 1.0, 0.1, 0.2, 0.3, 0.4]]], atol=1e-6)
    c, s, _ = augment_scene(centers, sizes, points, 0, True)
    np.testing.assert_allclose(c, [[-1.0, 0.0, 0.5]])
    np.testing.assert_allclose(s, sizes)


def test_sample_object_points_repeats_points_of_small_objects():
    rng = np.random.default_rng(0)
    clouds = [np.arange(12, dtype=np.float32).reshape(2, 6), np.arange(60, dtype=np.float32).reshape(10, 6)]
    sampled = sample_object_points(clouds, 4, rng)
    assert sampled.shape == (2, 4, 6)
    assert {tuple(row) for row in sampled[0]} <= {tuple(row) for row in clouds[0]}
    assert len({tuple(row) for row in sampled[1]}) == 4  # enough points: no repeats


def test_evaluation_item_layout_and_determinism():
    dataset = _dataset(train=False)
    item, again = dataset[0], dataset[0]
    graph = item["graph"]
    assert graph.points.shape == (4, 8, 6) and graph.pos.shape == (4, 3) and graph.box_size.shape == (4, 3)
    torch.testing.assert_close(graph.points, again["graph"].points)
    assert not bool(graph.edge_attr[:, RELATION_TO_ID["same_class"]].any())  # classes never reach the graph
    assert bool(graph.edge_attr[:, RELATION_TO_ID["on"]].any())  # the lamp is on the table
    # leave-one-out: one view per eligible object (table, lamp, chair; not the floor), one masked node each
    views = item["mom_views"]
    assert [int(v.masked.nonzero()) for v in views] == [1, 2, 3]
    assert item["description_nodes"] == [2, 3] and item["description_anchors"] == [1, -1]


def test_masked_view_keeps_the_masked_objects_position_only():
    lamp_view = _dataset(train=False)[0]["mom_views"][1]
    assert int(lamp_view.masked.nonzero()) == LAMP
    from_lamp = lamp_view.edge_index[0] == LAMP
    assert not bool(lamp_view.edge_attr[from_lamp, RELATION_TO_ID["on"]].any())  # a point touches nothing
    moved = _dataset(train=False, scene={"lamp_max": (1.9, 1.3, 1.8)})[0]["mom_views"][1]  # centre moves too
    assert not torch.equal(moved.edge_geom, lamp_view.edge_geom)  # where the masked object is still counts


def test_masked_view_is_identical_for_any_extent_around_the_same_centre():
    scene = prepare_pretrain_scene(make_scene())
    wide = prepare_pretrain_scene(make_scene())
    wide.sizes = wide.sizes.copy()
    wide.sizes[LAMP] = [0.9, 0.05, 1.5]  # another extent, same centre
    views = [ScenePretrainDataset([s], points_per_object=4, train=False)[0]["mom_views"][1] for s in (scene, wide)]
    for key in ("edge_index", "edge_attr", "edge_geom"):
        torch.testing.assert_close(getattr(views[0], key), getattr(views[1], key))
    full = [ScenePretrainDataset([s], points_per_object=4, train=False)[0]["graph"] for s in (scene, wide)]
    assert not torch.equal(full[0].edge_geom, full[1].edge_geom)  # the unmasked graph does see the extent


def test_training_item_masks_at_least_one_object_and_samples_descriptions():
    torch.manual_seed(0)
    dataset = _dataset(train=True, mom_mask_ratio=0.01, max_descriptions=1)
    for _ in range(5):
        item = dataset[0]
        (view,) = item["mom_views"]
        assert 1 <= int(view.masked.sum()) and not bool(view.masked[0])  # never the floor
        assert len(item["descriptions"]) == 1


def test_bad_arguments():
    scene = prepare_pretrain_scene(make_scene())
    with pytest.raises(ValueError, match="at least one scene"):
        ScenePretrainDataset([])
    with pytest.raises(ValueError, match="mom_mask_ratio"):
        ScenePretrainDataset([scene], mom_mask_ratio=1.0)
    with pytest.raises(ValueError, match="points_per_object"):
        ScenePretrainDataset([scene], points_per_object=0)
    dataset = ScenePretrainDataset([scene], graph_config=SceneGraphConfig(same_class_ignore_ids=(3,)))
    assert dataset.graph_config.same_class_ignore_ids == (0,)  # class-agnostic graph, whatever was asked
