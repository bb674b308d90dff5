"""Real-anatomy mode: a real CT with a multilabel organ mask (TotalSegmentator-style ids and names) as the
canvas for synthetic findings, instead of a phantom.

The organ mask is translated to the demo organ table (`phantom.ORGAN_LABELS`) by structure name:
liver, spleen, kidneys, heart, aorta, trachea and lung lobes keep their names; vertebrae / sacrum become
"spine", ribs "ribs", the back and hip muscles "muscle", renal cysts their kidney, and every other
structure "soft_tissue". Unlabelled voxels stay 0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from medvl.data.demo.phantom import LUNG_LOBES, ORGAN_LABELS

_KEEP_NAMES = {"liver", "spleen", "kidney_left", "kidney_right", "heart", "aorta", "trachea", *LUNG_LOBES}
_MUSCLE_PREFIXES = ("autochthon_", "iliopsoas_", "gluteus_")
# Structures that are themselves a catalogue finding: when present, that label cannot be asserted 0.
_REAL_FINDING_STRUCTURES = {"kidney_cyst_left": "kidney cyst", "kidney_cyst_right": "kidney cyst"}


@dataclass
class RealAnatomy:
    """A real CT and its organ map on the demo organ table, reoriented to RAS.

    Attributes:
        hu: float32 (X, Y, Z) Hounsfield units.
        organs: int16 (X, Y, Z) label map with `ORGAN_LABELS` ids.
        affine: (4, 4) float64 voxel -> RAS mm.
        spacing_mm: voxel size per axis.
        voxel_counts: demo organ name -> voxel count (present organs only).
        preexisting_findings: catalogue findings the source mask already shows (their labels are unknown).
        source: {"ct", "mask", "labels"} file names (no patient information).
    """

    hu: np.ndarray
    organs: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    voxel_counts: dict[str, int]
    preexisting_findings: set[str] = field(default_factory=set)
    source: dict[str, str] = field(default_factory=dict)


def demo_organ_name(structure: str) -> str:
    """Demo organ name of a TotalSegmentator structure name (see the module docstring)."""
    if structure in _KEEP_NAMES:
        return structure
    if structure.startswith("vertebrae_") or structure == "sacrum":
        return "spine"
    if structure.startswith("rib_"):
        return "ribs"
    if structure.startswith(_MUSCLE_PREFIXES):
        return "muscle"
    if structure.startswith("kidney_cyst_"):
        return "kidney_" + structure.removeprefix("kidney_cyst_")
    return "soft_tissue"


def _read_labels(path: Path) -> dict[int, str]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read organ label names from {path}: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must hold a JSON object {{label id: structure name}}, got {type(raw).__name__}")
    try:
        return {int(key): str(value) for key, value in raw.items()}
    except ValueError as err:
        raise ValueError(
            f"{path}: keys must be integer label ids (TotalSegmentator style), got {list(raw)[:5]}"
        ) from err


def _read_canonical(path: Path, what: str) -> nib.Nifti1Image:
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several unrelated types for bad files
        raise ValueError(f"cannot read the {what} NIfTI file {path}: {err}") from err
    if len(image.shape) != 3:
        raise ValueError(f"the {what} {path} must be a 3D volume, got shape {image.shape}")
    return nib.as_closest_canonical(image)


def load_real_anatomy(ct_path: str | Path, mask_path: str | Path, labels_path: str | Path) -> RealAnatomy:
    """Read a CT, its multilabel mask and the mask's label names; translate to the demo organ table.

    Args:
        ct_path: NIfTI CT in HU.
        mask_path: NIfTI integer label map on the same grid (same shape and affine).
        labels_path: JSON {label id: structure name} (TotalSegmentator "total" task names).

    Raises:
        ValueError: unreadable files, a mask on another grid, non-integer mask values, or mask ids that
            the labels file does not name (each message names the file).
    """
    ct_path, mask_path, labels_path = Path(ct_path), Path(mask_path), Path(labels_path)
    names = _read_labels(labels_path)
    ct = _read_canonical(ct_path, "CT")
    mask = _read_canonical(mask_path, "organ mask")
    if ct.shape != mask.shape or not np.allclose(ct.affine, mask.affine, atol=1e-3):
        raise ValueError(
            f"the organ mask {mask_path} (shape {mask.shape}) is not on the grid of the CT {ct_path} "
            f"(shape {ct.shape}); resample the mask to the CT first"
        )
    raw_mask = np.asanyarray(mask.dataobj)
    ids = np.rint(raw_mask).astype(np.int64)
    if not np.array_equal(ids, raw_mask):
        raise ValueError(f"the organ mask {mask_path} holds non-integer values; it must be a label map")
    present = [int(v) for v in np.unique(ids) if v != 0]
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise ValueError(f"the organ mask {mask_path} uses label ids {unnamed} that {labels_path} does not name")

    lookup = np.zeros(max(present, default=0) + 1, dtype=np.int16)
    for value in present:
        lookup[value] = ORGAN_LABELS[demo_organ_name(names[value])]
    organs = lookup[ids]
    counts = {name: int((organs == label).sum()) for name, label in ORGAN_LABELS.items()}
    spacing = tuple(float(s) for s in np.sqrt((ct.affine[:3, :3] ** 2).sum(axis=0)))
    return RealAnatomy(
        hu=ct.get_fdata(dtype=np.float32),
        organs=organs,
        affine=ct.affine.astype(np.float64),
        spacing_mm=spacing,  # type: ignore[arg-type]
        voxel_counts={name: count for name, count in counts.items() if count > 0},
        preexisting_findings={
            _REAL_FINDING_STRUCTURES[names[v]] for v in present if names[v] in _REAL_FINDING_STRUCTURES
        },
        source={"ct": ct_path.name, "mask": mask_path.name, "labels": labels_path.name},
    )


def available_real_findings(anatomy: RealAnatomy) -> tuple[str, ...]:
    """Catalogue findings that can be inserted (and so labelled) in this scan.

    Splenomegaly is never offered (enlarging a real spleen would overwrite its neighbours), nor is any
    finding the scan already shows (see `RealAnatomy.preexisting_findings`).
    """
    present = anatomy.voxel_counts
    candidates = {
        "liver lesion": "liver" in present,
        "kidney cyst": "kidney_left" in present or "kidney_right" in present,
        "lung nodule": any(lobe in present for lobe in LUNG_LOBES),
        "pleural effusion": any(lobe in present for lobe in LUNG_LOBES),
        "arterial wall calcification": present.get("aorta", 0) >= 8,
    }
    return tuple(name for name, ok in candidates.items() if ok and name not in anatomy.preexisting_findings)
