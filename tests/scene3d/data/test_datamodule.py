"""ScenePretrainDataModule on a 4-scene demo set: splits, loaders, model kwargs, layout errors."""
from __future__ import annotations

import shutil

import pytest

from scene3d.data.datamodule import ScenePretrainDataModule
from scene3d.data.labels import SCANREFER_CLASSES
from scene3d.data.scene_graph import EDGE_GEOMETRY_FEATURES, RELATIONS
from tests.scene3d.data.pretrain_factory import tiny_demo_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_demo_root(tmp_path_factory)


def test_setup_loaders_and_model_kwargs(root):
    dm = ScenePretrainDataModule(root=str(root), batch_size=2, points_per_object=8, tokenizer={"vocab_size": 200})
    dm.setup()
    assert {split: len(dm.datasets[split]) for split in ("train", "val", "test")} == {"train": 2, "val": 1, "test": 1}
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["scene_ids"]) == 2 and batch["graph"].points.shape[1:] == (8, 6)
    assert batch["mom"] is not None and 1 <= int(batch["mom"].masked.sum())
    kwargs = dm.model_kwargs()
    assert kwargs["class_names"] == list(SCANREFER_CLASSES)
    assert sum(kwargs["class_counts"]) == sum(int(s.mom_eligible.sum()) for s in dm.scenes["train"])
    assert (kwargs["num_relations"], kwargs["edge_geometry_dim"]) == (len(RELATIONS), len(EDGE_GEOMETRY_FEATURES))
    assert "[MASK]" in kwargs["tokenizer_json"]
    # the tokenizer sees training text only
    assert set(dm.train_texts()) >= {d.text for s in dm.scenes["train"] for d in s.descriptions}
    test_batch = next(iter(dm.test_dataloader()))
    assert int(test_batch["mom"].masked.sum()) == test_batch["mom"].num_graphs  # leave-one-out views


def test_missing_test_list_falls_back_to_val(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "scannetv2_test.txt").unlink()
    dm = ScenePretrainDataModule(root=str(copy), points_per_object=4)
    dm.setup()
    assert [s.scene_id for s in dm.scenes["test"]] == [s.scene_id for s in dm.scenes["val"]]


def test_layout_errors_name_the_file(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "scannetv2_train.txt").unlink()
    with pytest.raises(ValueError, match="scannetv2_train.txt"):
        ScenePretrainDataModule(root=str(copy)).setup()
    (copy / "scannetv2_train.txt").write_text("scene9999_00\n")
    with pytest.raises(ValueError, match="scene9999_00"):
        ScenePretrainDataModule(root=str(copy)).setup()


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"num_workers": -1}, {"mom_mask_ratio": 0.0},
                                    {"graph": {"k": 0}}, {"graph": {"nope": 1}}, {"tokenizer": {"size": 3}}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ScenePretrainDataModule(**kwargs)
