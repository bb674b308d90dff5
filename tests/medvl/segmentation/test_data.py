"""SegmentationDataModule: preprocessed training crops and whole evaluation volumes with remapped labels."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medvl.segmentation.data import SegmentationDataModule

from .conftest import CLASSES, SOURCE_LABELS


def _datamodule(synthetic_ct, **overrides) -> SegmentationDataModule:
    kwargs = dict(classes=CLASSES, manifest=str(synthetic_ct["manifest"]), source_labels=SOURCE_LABELS,
                  preprocess={"spacing": [6.0, 6.0, 6.0]}, roi_size=[16, 16, 16], batch_size=1,
                  samples_per_volume=2)
    return SegmentationDataModule(**{**kwargs, **overrides})


def test_training_crops_and_whole_validation_volumes_with_remapped_labels(synthetic_ct):
    datamodule = _datamodule(synthetic_ct)
    datamodule.setup("fit")
    assert datamodule.class_names == ["background", "liver", "spleen", "kidney"]
    assert datamodule.model_kwargs()["preprocess"]["spatial_size"] is None
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["label"].shape == (2, 1, 16, 16, 16)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    (val,) = list(datamodule.val_dataloader())
    # 40 x 36 x 20 voxels of 3 mm, reoriented to RAS and resampled to 6 mm: 20 x 18 x 10
    assert val["image"].shape == (1, 1, 20, 18, 10) and val["study_id"] == ["case1"]
    assert set(torch.unique(val["label"]).tolist()) == {0, 1, 2, 3}  # pancreas (7) joined the background
    # the label map is the source map moved onto the RAS grid: liver voxels = source id 5 voxels (subsampled)
    source = np.asarray(nib.load(synthetic_ct["root"] / "labels" / "case1.nii.gz").dataobj)[::-1, ::-1][::2, ::2, ::2]
    np.testing.assert_array_equal(val["label"][0, 0].numpy() == 1, source == 5)


def test_crops_are_seeded(synthetic_ct):
    def first_crop(seed: int) -> torch.Tensor:
        datamodule = _datamodule(synthetic_ct, samples_per_volume=1, preprocess={"spacing": [3.0, 3.0, 3.0]})
        datamodule.setup("fit")
        torch.manual_seed(seed)  # what Lightning's seed_everything does; MONAI's DataLoader seeds the crops from it
        return next(iter(datamodule.train_dataloader()))["image"]

    assert torch.equal(first_crop(0), first_crop(0))
    assert not torch.equal(first_crop(0), first_crop(1))


def test_max_volumes_and_bad_arguments(synthetic_ct):
    datamodule = _datamodule(synthetic_ct, max_eval_volumes=1, max_train_volumes=1)
    datamodule.setup()
    assert len(datamodule.datasets["train"]) == 1 and len(datamodule.datasets["val"]) == 1
    with pytest.raises(ValueError, match="roi_size is required"):
        _datamodule(synthetic_ct, roi_size=None)
    with pytest.raises(ValueError, match="batch_size"):
        _datamodule(synthetic_ct, batch_size=0)
    with pytest.raises(ValueError, match="unknown structure name"):
        _datamodule(synthetic_ct, classes={"lung": ["lung"]}).setup()


def test_export_preprocessing_and_roi_are_used(synthetic_ct, tiny_export):
    datamodule = _datamodule(synthetic_ct, export_dir=str(tiny_export), preprocess=None, roi_size=None)
    kwargs = datamodule.model_kwargs()
    assert kwargs["roi_size"] == [64, 64, 64] and kwargs["preprocess"]["spacing"] == [6.0, 6.0, 6.0]


def test_demo_organ_masks_become_classes(tmp_path):
    datamodule = SegmentationDataModule(CLASSES, data_dir=str(tmp_path), demo={"num_cases": 3, "size": 16},
                                        roi_size=[16, 16, 16])
    datamodule.setup()
    assert sum(len(d) for d in datamodule.datasets.values()) == 3
    assert datamodule.class_map == {12: 1, 13: 2, 14: 3, 15: 3}  # the demo organ table's ids


def test_persistent_cache_gives_the_same_volumes(synthetic_ct, tmp_path):
    volumes = []
    for _ in range(2):
        datamodule = _datamodule(synthetic_ct, cache_dir=str(tmp_path / "cache"))
        datamodule.setup()
        volumes.append(datamodule.datasets["val"][0])
    assert list((tmp_path / "cache").rglob("*.safetensors"))
    assert torch.equal(volumes[0]["image"], volumes[1]["image"]) and torch.equal(volumes[0]["label"], volumes[1]["label"])


def test_a_label_map_on_another_grid_names_the_study_and_files(synthetic_ct, tmp_path):
    from .conftest import LPS_AFFINE, write_nifti

    label = write_nifti(np.zeros((10, 10, 10), dtype=np.int16), LPS_AFFINE, tmp_path / "small_label.nii.gz")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"volume": str(synthetic_ct["image"]), "label": str(label), "split": "train"}) + "\n")
    datamodule = _datamodule(synthetic_ct, manifest=str(manifest))
    datamodule.setup()
    with pytest.raises(RuntimeError) as error:
        datamodule.datasets["train"][0]
    message = str(error.value)
    assert "study 'case0'" in message and "small_label.nii.gz" in message and "voxel grid" in message
