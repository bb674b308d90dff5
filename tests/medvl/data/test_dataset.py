"""Tests of medvl.data.dataset.CTReportDataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvl.data.dataset import CTReportDataset, StudyLoadError
from medvl.data.manifest import ManifestRecord
from medvl.data.transforms import AugmentConfig, PreprocessConfig, build_augmentation
from medvl.data.unorm16 import UNORM16_MAX_ERROR
from tests.medvl.data.nifti_helpers import CountingLoader, diag_affine, save_nifti

CONFIG = PreprocessConfig(spacing=(2.0, 2.0, 2.0), spatial_size=(12, 12, 12))
REPORT = "Findings: A nodule in the right lung. The heart is normal. No effusion. Impression: Lung nodule."


def _record(tmp_path, study_id="s1", labels=None, mask=True, findings=None, report=REPORT, center=(2, 7, 3)):
    """A LAS volume (air, one bright voxel at `center`) with an organ mask around it."""
    hu = np.full((10, 9, 8), -1000, dtype=np.int16)
    hu[center] = 1000
    affine = diag_affine(-3.0, 2.0, 2.5, origin=(40.0, -10.0, 5.0))
    volume = save_nifti(tmp_path / f"{study_id}.nii.gz", hu, affine)
    extras = {}
    if mask:
        labels_map = np.zeros(hu.shape, dtype=np.int16)
        labels_map[center] = 5
        save_nifti(tmp_path / f"{study_id}_mask.nii.gz", labels_map, affine)
        extras["organ_mask"] = f"{study_id}_mask.nii.gz"  # relative, as in the demo manifest
    extras["findings"] = findings if findings is not None else [
        {"name": "Lung nodule", "organ": "lung", "sentence": "A nodule in the right lung.", "center_vox": list(center)}
    ]
    return ManifestRecord(
        study_id=study_id, patient_id=f"p-{study_id}", volume_path=volume, report=report, split=None,
        labels=labels if labels is not None else {"Lung nodule": 1, "Pleural effusion": 0}, extras=extras,
    )


def test_item_content_shapes_and_label_order(tmp_path):
    records = [_record(tmp_path, "s1"), _record(tmp_path, "s2", labels={"Cardiomegaly": 1, "Lung nodule": 0})]
    dataset = CTReportDataset(records, CONFIG, extras_root=tmp_path, max_sentences=3)
    assert dataset.label_names == ["Lung nodule", "Pleural effusion", "Cardiomegaly"]
    item = dataset[1]
    assert item["image"].shape == (1, 12, 12, 12) and item["image"].dtype == torch.float32
    assert type(item["image"]) is torch.Tensor  # plain tensors: no MONAI meta in batches
    assert item["organ_mask"].shape == (1, 12, 12, 12) and item["organ_mask"].dtype == torch.int64
    assert item["labels"].tolist() == [0.0, -1.0, 1.0]  # -1: this study has no value for that finding
    assert item["study_id"] == "s2" and item["index"] == 1 and item["report"] == REPORT
    assert item["sentences"] == ["A nodule in the right lung.", "The heart is normal.", "No effusion."]
    assert item["affine"].shape == (4, 4) and item["affine"].dtype == torch.float64


@pytest.mark.parametrize("augment", [False, True])
def test_finding_centre_and_mask_follow_the_preprocessing(tmp_path, augment):
    augmentation = None
    if augment:
        flips = AugmentConfig(flip_prob=1.0, rotate90_prob=1.0, intensity_scale_prob=0, intensity_shift_prob=0,
                              noise_prob=0)
        augmentation = build_augmentation(flips, spatial_size=CONFIG.spatial_size)
        augmentation.set_random_state(0)
    dataset = CTReportDataset([_record(tmp_path)], CONFIG, extras_root=tmp_path, augmentation=augmentation)
    item = dataset[0]
    centre = np.array(item["findings"][0]["center_vox_preprocessed"])
    brightest = np.unravel_index(int(item["image"][0].argmax()), item["image"].shape[1:])
    assert np.abs(centre - np.array(brightest)).max() <= 1.0  # the bright voxel is where the finding maps
    labelled = np.argwhere(item["organ_mask"][0].numpy() == 5)
    assert len(labelled) > 0 and np.abs(labelled - centre).max() <= 1.5  # nearest-resampled mask moved with it
    assert item["findings"][0]["name"] == "Lung nodule"  # other fields kept


def test_cache_hit_skips_the_loader(tmp_path):
    loader = CountingLoader()
    dataset = CTReportDataset([_record(tmp_path)], CONFIG, cache_dir=tmp_path / "cache", extras_root=tmp_path,
                              loader=loader)
    first = dataset[0]
    assert loader.calls == 2
    second = dataset[0]
    assert loader.calls == 2
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["organ_mask"], second["organ_mask"])
    uncached = CTReportDataset([_record(tmp_path)], CONFIG, extras_root=tmp_path)[0]
    # the cache stores unorm16: within its documented rounding bound of the uncached values, masks exact
    assert 0 < (first["image"] - uncached["image"]).abs().max() <= UNORM16_MAX_ERROR
    assert torch.equal(first["organ_mask"], uncached["organ_mask"])


def test_unreadable_volume_names_study_and_file(tmp_path):
    record = _record(tmp_path, mask=False)
    record.volume_path.write_bytes(b"not a nifti file")
    with pytest.raises(StudyLoadError, match=r"study 's1': cannot load volume .*s1\.nii\.gz"):
        CTReportDataset([record], CONFIG)[0]


def test_relative_mask_needs_extras_root(tmp_path):
    with pytest.raises(ValueError, match="extras_root"):
        CTReportDataset([_record(tmp_path)], CONFIG)[0]
    item = CTReportDataset([_record(tmp_path, mask=False)], CONFIG)[0]
    assert "organ_mask" not in item


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(labels={"Lung nodule": 2}), "labels must be 0 or 1"), (dict(findings=["nodule"]), "list of dicts")],
)
def test_bad_records_are_refused_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CTReportDataset([_record(tmp_path, **kwargs)], CONFIG)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_sentences"):
        CTReportDataset([_record(tmp_path)], CONFIG, max_sentences=0)
    with pytest.raises(ValueError, match="duplicates"):
        CTReportDataset([_record(tmp_path)], CONFIG, label_names=["a", "a"])
