"""collate_pretrain_scenes: batch-wide node indices, masked views, texts."""
from __future__ import annotations

import pytest
import torch

from scene3d.data.pretrain_collate import collate_pretrain_scenes
from scene3d.data.pretrain_dataset import ScenePretrainDataset
from scene3d.data.pretrain_language import ObjectDescription
from scene3d.data.pretrain_scene import prepare_pretrain_scene
from tests.scene3d.data.pretrain_factory import make_scene


def _items():
    first = prepare_pretrain_scene(make_scene(scene_id="scene0001_00"), [
        ObjectDescription("scene0001_00", 5, "the lamp on the table.", "the lamp", "on", "table")])
    second = prepare_pretrain_scene(make_scene(scene_id="scene0002_00"), [
        ObjectDescription("scene0002_00", 7, "the chair.", "the chair"),
        ObjectDescription("scene0002_00", 5, "the lamp on the table.", "the lamp", "on", "table")])
    dataset = ScenePretrainDataset([first, second], points_per_object=4, train=False)
    return [dataset[0], dataset[1]]


def test_node_indices_become_batch_wide():
    batch = collate_pretrain_scenes(_items())
    assert list(batch)[0] == "scene_ids" and batch["scene_ids"] == ["scene0001_00", "scene0002_00"]
    assert batch["graph"].num_nodes == 8 and batch["graph"].points.shape == (8, 4, 6)
    assert batch["description_nodes"].tolist() == [2, 4 + 3, 4 + 2]
    assert batch["description_anchors"].tolist() == [1, -1, 4 + 1]
    assert batch["description_scene"].tolist() == [0, 1, 1]
    assert batch["phrases"] == ["the lamp", "the chair", "the lamp"]
    views = batch["mom"]
    assert views.num_graphs == 6  # 3 eligible objects per scene, one leave-one-out view each
    assert views.source_node[views.masked].tolist() == [1, 2, 3, 5, 6, 7]
    # a view's nodes copy their scene's nodes: same positions as the scene graph's
    torch.testing.assert_close(batch["graph"].pos[views.source_node], torch.cat([batch["graph"].pos[:4]] * 3
                                                                              + [batch["graph"].pos[4:]] * 3))


def test_no_views_without_eligible_objects():
    items = _items()
    for item in items:
        item["mom_views"] = []
    assert collate_pretrain_scenes(items)["mom"] is None


def test_bad_batches():
    with pytest.raises(ValueError, match="empty"):
        collate_pretrain_scenes([])
    item = _items()[0]
    del item["graph"]
    with pytest.raises(ValueError, match="lacks"):
        collate_pretrain_scenes([item])
    item = _items()[0]
    item["phrases"] = []
    with pytest.raises(ValueError, match="differ in length"):
        collate_pretrain_scenes([item])
