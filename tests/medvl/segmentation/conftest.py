"""Fixtures for the segmentation tests: a tiny exported encoder and small synthetic CT + label-map NIfTI files."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medvl.data.transforms import PreprocessConfig
from medvl.export import export_volume_encoder
from medvl.models.components.volume_encoder import VolumeEncoder

# Source ids of the synthetic label maps (TotalSegmentator's numbering) and the classes the tests train.
SOURCE_LABELS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "pancreas": 7}
CLASSES = {"liver": ["liver"], "spleen": ["spleen"], "kidney": ["kidney_left", "kidney_right"]}
EXPORT_PREPROCESS = PreprocessConfig(spacing=(6.0, 6.0, 6.0), spatial_size=(64, 64, 64))


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def synthetic_case(shape=(40, 36, 20), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, source label map int16): air, a soft-tissue body and five organ boxes of distinct HU."""
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.int16)
    x, y, z = shape
    hu[4:x - 4, 4:y - 4, :] = 40
    boxes = {  # id: (slices, HU)
        5: ((slice(6, 20), slice(6, 20), slice(2, 18)), 120),
        1: ((slice(24, 34), slice(8, 16), slice(4, 14)), 200),
        2: ((slice(8, 14), slice(24, 30), slice(4, 10)), 300),
        3: ((slice(24, 30), slice(24, 30), slice(4, 10)), 300),
        7: ((slice(16, 22), slice(24, 30), slice(12, 18)), 80),
    }
    for label, (box, value) in boxes.items():
        hu[box] = value + rng.integers(-5, 6, size=hu[box].shape)
        labels[box] = label
    return hu, labels


# voxel (i, j, k) -> RAS mm for an LPS-stored volume of 3 mm voxels: i grows to the Left, j Posterior, k Superior
LPS_AFFINE = np.array([[-3.0, 0, 0, 60.0], [0, -3.0, 0, 50.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])


@pytest.fixture(scope="session")
def synthetic_ct(tmp_path_factory) -> dict[str, Path]:
    """Two labelled studies (LPS-stored NIfTI) and their JSONL manifest with relative paths."""
    root = tmp_path_factory.mktemp("synthetic_ct")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for index in range(2):
        hu, labels = synthetic_case(seed=index)
        write_nifti(hu, LPS_AFFINE, root / "images" / f"case{index}.nii.gz")
        write_nifti(labels, LPS_AFFINE, root / "labels" / f"case{index}.nii.gz")
    manifest = root / "labels.jsonl"
    manifest.write_text(
        '{"volume": "images/case0.nii.gz", "label": "labels/case0.nii.gz", "split": "train"}\n'
        '{"volume": "images/case1.nii.gz", "label": "labels/case1.nii.gz", "split": "val"}\n'
    )
    return {"root": root, "manifest": manifest, "image": root / "images" / "case0.nii.gz",
            "label": root / "labels" / "case0.nii.gz"}


@pytest.fixture(scope="session")
def tiny_encoder() -> VolumeEncoder:
    torch.manual_seed(0)
    return VolumeEncoder.from_preset("tiny", depths=(1, 1, 1, 1), out_dim=16).eval()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_encoder) -> Path:
    """A `python -m medvl.export`-style folder (weights + description JSON) of a tiny 64^3 Swin encoder."""
    out = tmp_path_factory.mktemp("tiny_export")
    export_volume_encoder(tiny_encoder, EXPORT_PREPROCESS.to_dict(), out, formats=["safetensors"])
    return out
