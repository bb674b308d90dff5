"""MultiViewPretrainDataModule on the tiny demo set: crops and phrases per node, collation, missing frames, errors."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from scene3d.data.multiview_datamodule import MultiViewPretrainDataModule, collate_multiview_scenes
from tests.scene3d.data.pretrain_factory import TINY_DEMO

FRAMES = {"frames_per_scene": 4, "color_size": [64, 48], "depth_size": [32, 24]}
VIEWS = {"views_per_object": 2, "crop_size": 12}


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = MultiViewPretrainDataModule(data_dir=str(tmp_path_factory.mktemp("data")), demo=TINY_DEMO,
                                     demo_frames=FRAMES, views=VIEWS, points_per_object=8)
    dm.setup()  # builds the 4-scene demo set and renders its frames
    return dm


def test_items_carry_crops_and_phrases_in_node_order(datamodule):
    item = datamodule.datasets["train"][0]
    n = item["graph"].num_nodes
    assert tuple(item["view_crops"].shape) == (n, 2, 12, 12, 3) and tuple(item["view_valid"].shape) == (n, 2)
    assert item["view_valid"].any(1).float().mean() > 0.5  # most objects are seen by one of 4 frames
    scene = datamodule.scenes["train"][0]
    named = [(p, label) for p, label in zip(item["view_phrases"], scene.labels) if p]
    assert named and all(p.endswith(label) for p, label in named)  # "<pattern> <colour> <label>" of that node
    assert not item["view_crops"][~item["view_valid"]].any()


def test_collate_concatenates_views_in_graph_node_order(datamodule):
    samples = [datamodule.datasets["val"][0], datamodule.datasets["train"][1]]
    batch = collate_multiview_scenes(samples)
    total = batch["graph"].num_nodes
    assert batch["view_crops"].shape[0] == batch["view_valid"].shape[0] == len(batch["view_phrases"]) == total
    first = samples[0]["graph"].num_nodes
    assert (batch["view_crops"][first:] == samples[1]["view_crops"]).all()
    with pytest.raises(ValueError, match="view_crops"):
        collate_multiview_scenes([{k: v for k, v in samples[0].items() if k != "view_crops"}])


def test_scene_without_frames_gets_no_views(tmp_path, datamodule, caplog):
    root = datamodule.dataset_root()
    frames = tmp_path / "frames"
    shutil.copytree(datamodule.frames_folder(), frames, ignore=shutil.ignore_patterns(".views_cache"))
    train_ids = (root / "scannetv2_train.txt").read_text().split()
    shutil.rmtree(frames / train_ids[0])
    dm = MultiViewPretrainDataModule(root=str(root), frames_root=str(frames), views=VIEWS, points_per_object=8)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "have no frame folder" in caplog.text
    assert not dm.scene_views["train"][0]["valid"].any() and dm.scene_views["train"][1]["valid"].any()
    assert np.all(dm.scene_views["train"][0]["crops"] == 0)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="ViewSelectionConfig"):
        MultiViewPretrainDataModule(views={"nope": 1})
    with pytest.raises(ValueError, match="frames_root"):
        MultiViewPretrainDataModule(root="/some/scans")
