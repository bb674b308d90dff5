"""Tiny NIfTI writers and a counting volume loader shared by the CT data-pipeline tests."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medvl.data.volume import Volume, load_volume


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write `array` (X, Y, Z) with `affine` (voxel -> RAS mm) as a NIfTI file and return its path."""
    nib.save(nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64)), str(path))
    return path


def diag_affine(*diagonal: float, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 4) affine with the given signed voxel sizes on the diagonal and a translation."""
    affine = np.diag([*map(float, diagonal), 1.0])
    affine[:3, 3] = origin
    return affine


class CountingLoader:
    """`load_volume` that counts its calls (a picklable top-level class, so DataLoader workers accept it)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> Volume:
        self.calls += 1
        return load_volume(path)
