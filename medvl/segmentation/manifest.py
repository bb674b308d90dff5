"""Labelled studies (a CT volume + its label map) from a segmentation manifest or from the demo set.

A segmentation manifest is JSONL (one object per line) or CSV with the columns ``volume`` (NIfTI file or DICOM
folder) and ``label`` (a NIfTI label map on the same voxel grid), paths relative to the manifest's folder or
absolute, and optionally ``study_id`` (default: the volume's file stem), ``patient_id`` (default: the study_id)
and ``split`` (train / val / test). The demo set's studies use their organ masks (``extras["organ_mask"]``, names
in ``organ_labels``).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.data.manifest import SPLITS, ManifestError, read_manifest
from medvl.data.transforms import MASK_KEY

__all__ = ["LabelledStudy", "demo_studies", "read_segmentation_manifest"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class LabelledStudy:
    """One CT volume with its label map.

    Attributes:
        study_id: unique within the data set.
        patient_id: studies of one patient stay in one split.
        volume_path: absolute path of the NIfTI file or DICOM folder.
        label_path: absolute path of the label map (same voxel grid as the volume).
        split: "train", "val", "test" or None (then patients are split by fractions).
    """

    study_id: str
    patient_id: str
    volume_path: Path
    label_path: Path
    split: str | None = None


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _manifest_rows(path: Path, problems: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for line, row in enumerate(reader, start=2):
                rows.append((line, {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}))
        return rows
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                problems.append((line, f"not valid JSON ({error.msg} at column {error.colno})"))
                continue
            if not isinstance(row, dict):
                problems.append((line, f"expected a JSON object, got a {type(row).__name__}"))
                continue
            rows.append((line, row))
    return rows


def read_segmentation_manifest(path: str | Path) -> list[LabelledStudy]:
    """Read a JSONL / CSV manifest of (volume, label) pairs (format in the module docstring).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: listing every problem at once (line number + problem): bad JSON, a missing column, a
            file that does not exist, an unknown split, a duplicate study_id, no rows.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"segmentation manifest {path} does not exist")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise ManifestError(path, [(0, f"unknown manifest type {path.suffix!r}: use .jsonl or .csv")])
    problems: list[tuple[int, str]] = []
    studies: list[LabelledStudy] = []
    seen: dict[str, int] = {}
    for line, row in _manifest_rows(path, problems):
        paths: dict[str, Path] = {}
        for column in ("volume", "label"):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                problems.append((line, f"missing '{column}' (a path relative to {path.parent} or absolute)"))
                continue
            resolved = (path.parent / Path(value.strip()).expanduser()).resolve()
            if not resolved.exists():
                problems.append((line, f"{column} {resolved} does not exist"))
                continue
            paths[column] = resolved
        split = row.get("split")
        if split is not None and split not in SPLITS:
            problems.append((line, f"unknown split {split!r}: use one of {', '.join(SPLITS)} or leave it out"))
        if len(paths) != 2:
            continue
        study_id = str(row.get("study_id") or _stem(row["volume"].strip()))
        if study_id in seen:
            problems.append((line, f"study_id {study_id!r} already used on line {seen[study_id]}; make it unique"))
            continue
        seen[study_id] = line
        studies.append(LabelledStudy(study_id, str(row.get("patient_id") or study_id), paths["volume"],
                                     paths["label"], split))
    if not studies and not problems:
        problems.append((0, "the manifest has no rows"))
    if problems:
        raise ManifestError(path, problems)
    return studies


def demo_studies(manifest: str | Path) -> tuple[list[LabelledStudy], dict[str, int]]:
    """The demo set's volumes with their organ masks, and the organ table (name -> id).

    Raises:
        ValueError: a row without an organ mask, or rows with different organ tables.
    """
    studies, organ_labels = [], None
    for record in read_manifest(manifest):
        mask = record.extras.get(MASK_KEY)
        labels = record.extras.get("organ_labels")
        if mask is None or not isinstance(labels, dict):
            raise ValueError(f"{manifest}: study {record.study_id!r} has no organ_mask / organ_labels")
        if organ_labels is not None and labels != organ_labels:
            raise ValueError(f"{manifest}: study {record.study_id!r} has another organ table than the first study")
        organ_labels = labels
        studies.append(LabelledStudy(record.study_id, record.patient_id, record.volume_path, Path(mask), record.split))
    return studies, {str(k): int(v) for k, v in (organ_labels or {}).items()}
