"""Labelled CT volumes for segmentation fine-tuning: manifest (or demo organ masks) -> splits -> DataLoaders.

Sources (see ``medvl.segmentation.manifest``): a segmentation manifest (``volume`` + ``label`` columns) or the demo
set's organ masks (``manifest: null``).

Volumes go through the pre-trained encoder's preprocessing (``medvl.data.transforms.build_preprocessing``:
orientation, spacing, HU window; the label map is resampled with nearest neighbour on the same grid) WITHOUT its
final crop / pad, so that evaluation and prediction see whole volumes (sliding windows); training takes random
``roi_size`` crops, half of them centred on a foreground voxel.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from monai.data import DataLoader, MetaTensor
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd
from torch.utils.data import Dataset

from medvl.data.cache import PreprocessedVolume, PreprocessedVolumeCache
from medvl.data.datamodule import DEMO_SUBDIR, split_by_patient, split_from_manifest
from medvl.data.demo import ensure_demo_dataset
from medvl.data.transforms import IMAGE_KEY, MASK_KEY, PreprocessConfig, build_preprocessing
from medvl.export import read_export_info
from medvl.segmentation.labels import RemapLabelsd, read_source_labels, resolve_class_map
from medvl.segmentation.manifest import LabelledStudy, demo_studies, read_segmentation_manifest

__all__ = ["LABEL_KEY", "LabelledVolumeDataset", "SegmentationDataModule", "segmentation_preprocess"]

logger = logging.getLogger(__name__)

LABEL_KEY = "label"


def segmentation_preprocess(
    export_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> PreprocessConfig:
    """The preprocessing of segmentation volumes: the export's (pre-training) preprocessing, without its crop / pad.

    Args:
        export_dir: a medvl export folder; None = ``PreprocessConfig`` defaults.
        overrides: ``PreprocessConfig`` fields to change (a warning names those that differ from the export's).

    Returns:
        The config with ``spatial_size=None`` (whole volumes; crops and sliding windows use roi_size).
    """
    values = dict(read_export_info(export_dir)["preprocess"]) if export_dir is not None else {}
    changes = {k: v for k, v in dict(overrides or {}).items() if k not in values or values[k] != v}
    if export_dir is not None and {k for k in changes if k != "spatial_size"}:
        logger.warning("segmentation preprocessing differs from the pre-training one in %s: the encoder saw data "
                       "preprocessed with %s", sorted(changes), {k: values.get(k) for k in changes})
    values.update(dict(overrides or {}))
    values["spatial_size"] = None
    return PreprocessConfig.from_dict(values)


class LabelledVolumeDataset(Dataset):
    """Preprocessed (image, label) pairs, remapped to class indices, optionally randomly cropped.

    Preprocessing runs once per study: into the persistent cache (``cache_dir``) or, without one, into memory
    (``cache_in_memory``); the class remapping and the random transform run on every access.

    Args:
        studies: the labelled studies.
        preprocess: preprocessing config (see ``segmentation_preprocess``).
        class_map: source label id -> class index (``resolve_class_map``).
        transform: random transform on {"image", "label"} dicts (may return a list of crops), or None.
        cache_dir: persistent cache folder, or None.
        cache_in_memory: keep preprocessed volumes in memory when there is no ``cache_dir``.

    Shapes:
        item: {"image": (1, D, H, W) float32 MetaTensor with its affine, "label": (1, D, H, W) int64, "study_id"}
        (or a list of such dicts when ``transform`` returns crops).

    Raises:
        RuntimeError (at access): the volume or label map cannot be read or preprocessed (names the files).
    """

    def __init__(
        self,
        studies: Sequence[LabelledStudy],
        preprocess: PreprocessConfig,
        class_map: Mapping[int, int],
        transform: Callable[[dict], Any] | None = None,
        cache_dir: str | Path | None = None,
        cache_in_memory: bool = True,
    ) -> None:
        self.studies = list(studies)
        self.preprocess = preprocess
        self.pipeline = build_preprocessing(preprocess)
        self.remap = RemapLabelsd(LABEL_KEY, class_map)
        self.transform = transform
        self.cache = PreprocessedVolumeCache(cache_dir, preprocess) if cache_dir is not None else None
        self.cache_in_memory = cache_in_memory and cache_dir is None
        self._memory: dict[int, PreprocessedVolume] = {}

    def __len__(self) -> int:
        return len(self.studies)

    def _preprocess_now(self, study: LabelledStudy) -> PreprocessedVolume:
        # the label map rides in the pipeline's organ-mask slot: same grid checks, nearest-neighbour resampling
        out = self.pipeline({IMAGE_KEY: study.volume_path, MASK_KEY: study.label_path})
        return PreprocessedVolume.from_meta_tensors(out[IMAGE_KEY], out[MASK_KEY])

    def preprocessed(self, index: int) -> PreprocessedVolume:
        """The study's preprocessed image and (source-id) label map, from a cache when there is one."""
        if index in self._memory:
            return self._memory[index]
        study = self.studies[index]
        try:
            if self.cache is not None:
                volume = self.cache.get_or_create(study.volume_path, study.label_path, lambda: self._preprocess_now(study))
            else:
                volume = self._preprocess_now(study)
        except Exception as error:  # MONAI wraps transform errors; name the study and both files
            cause = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
            raise RuntimeError(
                f"study {study.study_id!r}: cannot load volume {study.volume_path} with label map {study.label_path}: "
                f"{type(cause).__name__}: {cause}"
            ) from error
        if self.cache_in_memory:
            self._memory[index] = volume
        return volume

    def __getitem__(self, index: int) -> Any:
        volume = self.preprocessed(index)
        affine = torch.from_numpy(volume.affine)
        sample = {
            IMAGE_KEY: MetaTensor(volume.image, affine=affine),
            LABEL_KEY: MetaTensor(volume.organ_mask, affine=affine.clone()),
        }
        sample = self.remap(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        study_id = self.studies[index].study_id
        if isinstance(sample, list):
            return [{**crop, "study_id": study_id} for crop in sample]
        return {**sample, "study_id": study_id}


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if allow_none else ''}, got {value!r}")


class SegmentationDataModule(LightningDataModule):
    """Labelled CT volumes for fine-tuning: train crops, whole val / test volumes (batch size 1).

    Args:
        classes: class name -> source label ids or names (see ``medvl.segmentation.labels``).
        manifest: segmentation manifest (JSONL / CSV with volume + label); None = the demo set's organ masks.
        source_labels: name -> id of the label maps' structures (mapping or JSON file, either direction);
            the demo set's ``organ_labels`` by default.
        data_dir: the demo set lives in ``<data_dir>/medvl_demo`` (shared with pre-training when the demo
            arguments are the same).
        demo: ``ensure_demo_dataset`` arguments.
        export_dir: medvl export folder: its preprocessing and (default) roi_size are used.
        preprocess: ``PreprocessConfig`` fields overriding the export's (or the defaults without an export).
        roi_size: training crop and sliding-window size (D, H, W); default: the export's image_size.
        batch_size: training volumes per batch (each gives ``samples_per_volume`` crops).
        samples_per_volume: random crops per training volume and access.
        num_workers: DataLoader workers.
        cache_dir: persistent cache of preprocessed volumes (None: in memory, see ``cache_in_memory``).
        cache_in_memory: keep preprocessed volumes in memory when there is no cache_dir.
        val_fraction, test_fraction, seed: patient split when the data has no split column (random crops
            follow torch's seed, i.e. the run's seed_everything).
        max_train_volumes: use only the first N training volumes (few-label experiments); None = all.
        max_eval_volumes: use only the first N validation and test volumes; None = all.
        class_map: source label id -> class index as resolved in training (a checkpoint's ``class_map``); used
            instead of resolving ``classes`` when ``source_labels`` is not given, so evaluating a checkpoint needs
            no second copy of the label names.

    Raises:
        ValueError: bad arguments, unknown class members, no training volume.
    """

    def __init__(
        self,
        classes: Mapping[str, Sequence[int | str] | int | str],
        manifest: str | None = None,
        source_labels: str | Mapping[Any, Any] | None = None,
        data_dir: str = "data",
        demo: Mapping[str, Any] | None = None,
        export_dir: str | None = None,
        preprocess: Mapping[str, Any] | None = None,
        roi_size: Sequence[int] | None = None,
        batch_size: int = 2,
        samples_per_volume: int = 2,
        num_workers: int = 0,
        cache_dir: str | None = None,
        cache_in_memory: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        max_train_volumes: int | None = None,
        max_eval_volumes: int | None = None,
        class_map: Mapping[Any, int] | None = None,
    ) -> None:
        super().__init__()
        _positive_int("batch_size", batch_size)
        _positive_int("samples_per_volume", samples_per_volume)
        _positive_int("max_train_volumes", max_train_volumes, allow_none=True)
        _positive_int("max_eval_volumes", max_eval_volumes, allow_none=True)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if not isinstance(classes, Mapping) or not classes:
            raise ValueError("classes must map class names to source label ids or names, e.g. {'liver': ['liver']}")
        self.classes = {str(k): v for k, v in classes.items()}
        self.manifest = manifest
        self.source_labels = source_labels
        self.data_dir = Path(data_dir)
        self.demo = dict(demo or {})
        self.export_dir = export_dir
        self.preprocess_config = segmentation_preprocess(export_dir, preprocess)
        if roi_size is None:
            if export_dir is None:
                raise ValueError("roi_size is required without export_dir (e.g. roi_size=[64, 64, 64])")
            roi_size = read_export_info(export_dir)["backbone_spec"]["image_size"]
        self.roi_size = [int(s) for s in roi_size]
        if len(self.roi_size) != 3 or min(self.roi_size) < 1:
            raise ValueError(f"roi_size must be 3 positive sides, got {list(roi_size)}")
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.cache_in_memory = cache_in_memory
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.max_train_volumes, self.max_eval_volumes = max_train_volumes, max_eval_volumes
        self.studies: dict[str, list[LabelledStudy]] = {}
        self.datasets: dict[str, LabelledVolumeDataset] = {}
        self.class_map: dict[int, int] = {}
        self.given_class_map = None if class_map is None else {int(k): int(v) for k, v in dict(class_map).items()}
        if self.given_class_map is not None and not all(
                k > 0 and 1 <= v <= len(self.classes) for k, v in self.given_class_map.items()):
            raise ValueError(f"class_map must map source ids > 0 to class indices 1..{len(self.classes)}, "
                             f"got {self.given_class_map}")

    @property
    def class_names(self) -> list[str]:
        """Class names, index 0 = "background"."""
        return ["background", *self.classes]

    def model_kwargs(self) -> dict[str, Any]:
        """What the model must agree on: class names, preprocessing, roi_size, and (after ``setup``) the source id ->
        class index map (plain values for checkpoints)."""
        kwargs = {"class_names": self.class_names, "preprocess": self.preprocess_config.to_dict(), "roi_size": self.roi_size}
        if self.class_map:
            kwargs["class_map"] = {int(k): int(v) for k, v in self.class_map.items()}
        return kwargs

    def _all_studies(self) -> tuple[list[LabelledStudy], dict[str, int] | None]:
        if self.manifest is not None:
            studies = read_segmentation_manifest(self.manifest)
            return studies, read_source_labels(self.source_labels) if self.source_labels is not None else None
        manifest = ensure_demo_dataset(self.data_dir / DEMO_SUBDIR, **self.demo)
        studies, organ_labels = demo_studies(manifest)
        source = read_source_labels(self.source_labels) if self.source_labels is not None else organ_labels
        return studies, source

    def prepare_data(self) -> None:
        """Build the demo set when it is used and absent."""
        if self.manifest is None:
            ensure_demo_dataset(self.data_dir / DEMO_SUBDIR, **self.demo)

    def setup(self, stage: str | None = None) -> None:
        """Read the studies, split them (split column, else by patient) and build the datasets."""
        if self.datasets:
            return
        studies, source_labels = self._all_studies()
        if self.given_class_map is not None and self.source_labels is None:
            self.class_map = dict(self.given_class_map)
        else:
            self.class_map = resolve_class_map(self.classes, source_labels)
        if any(s.split is not None for s in studies):
            splits = split_from_manifest(studies)  # reads only .split / .patient_id / .study_id
        else:
            splits = split_by_patient(studies, self.val_fraction, self.test_fraction, self.seed)
        splits["train"] = splits["train"][: self.max_train_volumes]
        for split in ("val", "test"):
            splits[split] = splits[split][: self.max_eval_volumes]
        if not splits["train"]:
            raise ValueError("no labelled volume in the train split; check the manifest's split column")
        self.studies = splits
        logger.info("segmentation splits: %s", {k: len(v) for k, v in splits.items()})
        # Random crops follow torch's seed (Lightning's seed_everything): MONAI's DataLoader seeds them from it.
        crops = Compose([
            # constant 0 = the window minimum (air): intensities are already scaled
            SpatialPadd([IMAGE_KEY, LABEL_KEY], spatial_size=self.roi_size, mode="constant"),
            RandCropByPosNegLabeld([IMAGE_KEY, LABEL_KEY], label_key=LABEL_KEY, spatial_size=self.roi_size,
                                   pos=1.0, neg=1.0, num_samples=self.samples_per_volume),
        ])
        for split, members in splits.items():
            self.datasets[split] = LabelledVolumeDataset(
                members, self.preprocess_config, self.class_map, transform=crops if split == "train" else None,
                cache_dir=self.cache_dir, cache_in_memory=self.cache_in_memory,
            )

    def _loader(self, split: str) -> DataLoader:
        if not self.datasets:
            raise RuntimeError("SegmentationDataModule: call setup() first (Lightning's Trainer does it for you)")
        train = split == "train"
        # monai's DataLoader flattens the lists of crops and seeds MONAI's random transforms per worker.
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size if train else 1, shuffle=train,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

