"""`CTReportDataset`: manifest records -> preprocessed (cached) CT volume + report + labels per item."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from medvl.data.cache import PreprocessedVolume, PreprocessedVolumeCache
from medvl.data.reports import parse_report
from medvl.data.transforms import IMAGE_KEY, MASK_KEY, PreprocessConfig, VolumeLoader, build_preprocessing

if TYPE_CHECKING:
    from medvl.data.manifest import ManifestRecord

UNKNOWN_LABEL = -1.0


class StudyLoadError(RuntimeError):
    """A study's volume (or organ mask) could not be read or preprocessed; names the study and files."""


def _root_cause(exc: BaseException) -> BaseException:
    """Innermost exception of a chain (MONAI wraps transform errors in 'applying transform ...')."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def label_names_of(records: Sequence[ManifestRecord]) -> list[str]:
    """Union of the records' label names, in order of first appearance (keeps the manifest's column order)."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record.labels))
    return list(names)


class CTReportDataset(Dataset):
    """Items of (CT volume, report) pairs, preprocessed once (cached on disk) and augmented on access.

    Each item is a dict:
        "image": (1, D, H, W) float32 in [0, 1];
        "report": str; "sentences": list[str], at most `max_sentences`;
        "labels": (K,) float32 in the order of `label_names`: 1 present, 0 absent, -1 unknown
            (the record has no value for that finding: mask it out of losses / metrics);
        "study_id": str; "index": int (position in `records`);
        "affine": (4, 4) float64, voxel index of "image" -> world mm (after preprocessing and
            augmentation: flips / rotations are reflected);
        "findings": list of dicts from `extras["findings"]` (empty if none); a finding with a
            "center_vox" (voxel of the loaded volume) gets "center_vox_preprocessed": the same world
            point as a (fractional) voxel index of "image";
        "organ_mask": (1, D, H, W) int64, only when the record has `extras["organ_mask"]`; resampled
            with nearest neighbour through the same geometric transforms as "image".

    Args:
        records: manifest records (see `medvl.data.manifest.read_manifest`).
        preprocess: deterministic preprocessing config.
        cache_dir: folder of the persistent cache, or None to preprocess on every access.
        augmentation: random transform on {"image", "organ_mask"} dicts (see `build_augmentation`), or None.
        max_sentences: keep at most this many report sentences.
        label_names: fixed label order; defaults to `label_names_of(records)`.
        extras_root: folder against which relative `extras["organ_mask"]` paths are resolved (the
            manifest's folder; `read_manifest` already makes `*_mask` extras absolute, so this only
            matters for records built by hand).
        loader: replacement for `load_volume` (path -> `Volume`).

    Raises:
        ValueError: `max_sentences` < 1; a label value other than 0 / 1; `findings` not a list of dicts.
        StudyLoadError (at access): the volume or mask cannot be read or preprocessed.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        preprocess: PreprocessConfig,
        cache_dir: str | Path | None = None,
        augmentation: Callable[[dict], dict] | None = None,
        max_sentences: int = 50,
        label_names: Sequence[str] | None = None,
        extras_root: str | Path | None = None,
        loader: VolumeLoader | None = None,
    ) -> None:
        if isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences < 1:
            raise ValueError(f"max_sentences must be an int >= 1, got {max_sentences!r}")
        self.records = list(records)
        self.preprocess = preprocess
        self.augmentation = augmentation
        self.max_sentences = max_sentences
        self.label_names = list(label_names) if label_names is not None else label_names_of(self.records)
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"label_names has duplicates: {self.label_names}")
        self.extras_root = Path(extras_root) if extras_root is not None else None
        # No Invertd downstream: the separable resampler (same grid as MONAI's Spacingd, float32, no coordinate grid).
        self.pipeline = build_preprocessing(preprocess, loader=loader, invertible=False)
        self.cache = PreprocessedVolumeCache(cache_dir, preprocess) if cache_dir is not None else None
        for record in self.records:
            self._check_record(record)

    def _check_record(self, record: ManifestRecord) -> None:
        bad = {k: v for k, v in record.labels.items() if v not in (0, 1)}
        if bad:
            raise ValueError(f"study {record.study_id!r}: labels must be 0 or 1, got {bad}")
        findings = record.extras.get("findings", [])
        if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
            raise ValueError(f"study {record.study_id!r}: extras['findings'] must be a list of dicts")

    def __len__(self) -> int:
        return len(self.records)

    def mask_path(self, record: ManifestRecord) -> Path | None:
        """Absolute path of the record's organ mask, or None when it has none.

        Raises:
            ValueError: the path is relative and no `extras_root` was given.
        """
        value = record.extras.get(MASK_KEY)
        if value is None:
            return None
        path = Path(value)
        if not path.is_absolute():
            if self.extras_root is None:
                raise ValueError(
                    f"study {record.study_id!r}: organ_mask path {value!r} is relative; pass extras_root "
                    f"(the manifest's folder) to resolve it"
                )
            path = self.extras_root / path
        return path

    def _preprocess_now(self, volume_path: Path, mask_path: Path | None) -> PreprocessedVolume:
        data: dict[str, Any] = {IMAGE_KEY: volume_path}
        if mask_path is not None:
            data[MASK_KEY] = mask_path
        out = self.pipeline(data)
        return PreprocessedVolume.from_meta_tensors(out[IMAGE_KEY], out.get(MASK_KEY))

    def preprocessed(self, index: int) -> PreprocessedVolume:
        """The record's preprocessed volume (from the cache when there is one), before augmentation.

        Raises:
            StudyLoadError: the volume or the mask cannot be read or preprocessed.
        """
        record = self.records[index]
        mask_path = self.mask_path(record)
        try:
            if self.cache is None:
                return self._preprocess_now(record.volume_path, mask_path)
            return self.cache.get_or_create(
                record.volume_path, mask_path, lambda: self._preprocess_now(record.volume_path, mask_path)
            )
        except Exception as exc:
            cause = _root_cause(exc)
            mask_text = f" (organ mask {mask_path})" if mask_path is not None else ""
            raise StudyLoadError(
                f"study {record.study_id!r}: cannot load volume {record.volume_path}{mask_text}: "
                f"{type(cause).__name__}: {cause}"
            ) from exc

    def sentences_of(self, record: ManifestRecord) -> list[str]:
        """The report's first `max_sentences` sentences (`parse_report`: findings, then impression).

        Reports are parsed per access (about 0.4 ms each) rather than all at construction, and cut here
        without parse_report's per-call warning, which would repeat every epoch.

        Raises:
            ValueError: the report is empty (`EmptyReportError`, naming the study).
        """
        report = parse_report(record.report, source=f"study {record.study_id!r}", max_sentences=sys.maxsize)
        return report.sentences[: self.max_sentences]

    def labels_of(self, record: ManifestRecord) -> torch.Tensor:
        """(K,) float32 in `label_names` order; -1 where the record has no value."""
        return torch.tensor(
            [float(record.labels.get(name, UNKNOWN_LABEL)) for name in self.label_names], dtype=torch.float32
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        volume = self.preprocessed(index)
        sample: dict[str, Any] = {IMAGE_KEY: MetaTensor(volume.image, affine=torch.from_numpy(volume.affine))}
        if volume.organ_mask is not None:
            sample[MASK_KEY] = volume.organ_mask
        if self.augmentation is not None:
            sample = self.augmentation(sample)
        image = sample[IMAGE_KEY]
        affine = image.affine.to(torch.float64) if isinstance(image, MetaTensor) else torch.from_numpy(volume.affine)
        item: dict[str, Any] = {
            "image": convert_to_tensor(image, track_meta=False).to(torch.float32),
            "report": record.report,
            "sentences": self.sentences_of(record),
            "labels": self.labels_of(record),
            "study_id": record.study_id,
            "index": index,
            "affine": affine,
            "findings": self._findings(record, volume.original_affine, affine.numpy()),
        }
        if MASK_KEY in sample:
            item[MASK_KEY] = convert_to_tensor(sample[MASK_KEY], track_meta=False).to(torch.int64)
        return item

    @staticmethod
    def _findings(record: ManifestRecord, original_affine: np.ndarray, affine: np.ndarray) -> list[dict]:
        """Copies of the record's findings; "center_vox" is mapped into the preprocessed voxel grid."""
        to_preprocessed = np.linalg.inv(affine) @ original_affine  # old voxel -> world -> new voxel
        findings = []
        for finding in record.extras.get("findings", []):
            finding = dict(finding)
            center = finding.get("center_vox")
            if center is not None and len(center) == 3:
                mapped = to_preprocessed @ np.array([*map(float, center), 1.0])
                finding["center_vox_preprocessed"] = [float(v) for v in mapped[:3]]
            findings.append(finding)
        return findings
