"""`CTReportDataModule`: manifest (or the built-in demo set) -> patient-disjoint splits -> DataLoaders."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning import LightningDataModule
from monai.data import DataLoader

from common.lightning.hparams import plain_container
from common.text.tokenizer import load_tokenizer, tokenizer_to_json, train_wordpiece_tokenizer
from medvl.data.collate import collate_ct_reports
from medvl.data.dataset import CTReportDataset, label_names_of
from medvl.data.demo import ensure_demo_dataset
from medvl.data.manifest import ManifestRecord, read_manifest
from medvl.data.transforms import AugmentConfig, PreprocessConfig, build_augmentation

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEMO_SUBDIR = "medvl_demo"


class DataSetupError(ValueError):
    """The data cannot be used as configured (no such manifest, an empty split); names the file and the fix."""


def _patient_of(record: ManifestRecord) -> str:
    return record.patient_id or record.study_id


def split_by_patient(
    records: Sequence[ManifestRecord], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[ManifestRecord]]:
    """Deterministic split in which every patient's studies fall into exactly one split.

    The sorted patient ids are permuted with `numpy.random.default_rng(seed)`; the first
    round(test_fraction * P) patients go to test, the next round(val_fraction * P) to val, the rest
    to train (at least one patient for a split whose fraction is > 0). Records keep manifest order.

    Args:
        records: the records to split (patient = `patient_id`, or `study_id` when that is empty).
        val_fraction: share of PATIENTS for validation, in [0, 1).
        test_fraction: share of PATIENTS for test, in [0, 1).
        seed: permutation seed.

    Raises:
        ValueError: fractions outside [0, 1) or summing to >= 1, or too few patients to leave one for training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (train needs data), got {val_fraction + test_fraction}"
        )
    patients = sorted({_patient_of(r) for r in records})
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n_test = max(1, round(test_fraction * len(patients))) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * len(patients))) if val_fraction > 0 else 0
    if n_test + n_val >= len(patients):
        raise ValueError(
            f"{len(patients)} patient(s) cannot fill train / val / test splits with val_fraction={val_fraction} "
            f"and test_fraction={test_fraction}; add data or lower the fractions"
        )
    split_of = {p: "test" for p in order[:n_test]}
    split_of.update({p: "val" for p in order[n_test : n_test + n_val]})
    split_of.update({p: "train" for p in order[n_test + n_val :]})
    out: dict[str, list[ManifestRecord]] = {s: [] for s in SPLITS}
    for record in records:
        out[split_of[_patient_of(record)]].append(record)
    return out


def split_from_manifest(records: Sequence[ManifestRecord]) -> dict[str, list[ManifestRecord]]:
    """Use the manifest's own `split` column (every record must have one of train / val / test).

    A patient found in several splits is logged as a warning (count only, no identifiers).

    Raises:
        ValueError: some records have a split and others not, or a split name is not train / val / test.
    """
    missing = sum(r.split is None for r in records)
    if missing:
        raise ValueError(
            f"{missing} of {len(records)} manifest rows have no split: give every row a split "
            f"(train / val / test) or none (then patients are split by val_fraction / test_fraction)"
        )
    bad = sorted({r.split for r in records} - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split name(s) {bad} in the manifest; use one of {list(SPLITS)}")
    out: dict[str, list[ManifestRecord]] = {s: [] for s in SPLITS}
    splits_of_patient: dict[str, set[str]] = {}
    for record in records:
        out[record.split].append(record)
        splits_of_patient.setdefault(_patient_of(record), set()).add(record.split)
    leaking = sum(len(s) > 1 for s in splits_of_patient.values())
    if leaking:
        logger.warning("the manifest's split puts %d patient(s) in more than one split (data leakage)", leaking)
    return out


def check_manifest_file(manifest: str | Path) -> Path:
    """The manifest's path once it is known to be a file (entry points call it before creating anything).

    Raises:
        DataSetupError: it does not exist or is a folder (the message names `data.manifest` and the value).
    """
    path = Path(manifest).expanduser()
    if not path.is_file():
        what = "is a folder, not a manifest file" if path.is_dir() else "does not exist"
        raise DataSetupError(
            f"data.manifest={manifest}: the manifest {what}; give a .jsonl or .csv manifest (see docs/data.md), "
            "or data.manifest=null for the built-in demo set"
        )
    return path


class CTReportDataModule(LightningDataModule):
    """CT volume + report pairs for pre-training, from a manifest or the synthetic demo set.

    Args:
        manifest: manifest file (JSONL / CSV, see `medvl.data.manifest`); None = the demo set.
        data_dir: folder of the demo set (built under `<data_dir>/<demo_subdir>` when `manifest` is None).
        demo_subdir: the demo set's folder inside `data_dir`; each demo configuration has its own (the default
            "medvl_demo", `data=medvl_demo_large` "medvl_demo_large"), so switching between them rebuilds nothing.
        demo: keyword arguments of `ensure_demo_dataset` (num_cases, size, spacing_mm, seed, ...).
        batch_size: studies per batch.
        num_workers: DataLoader worker processes (0 = load in the main process); workers persist
            across epochs when > 0.
        preprocess: `PreprocessConfig` fields (None = defaults).
        augment: `AugmentConfig` fields for the TRAIN split (None = no augmentation; {} = defaults).
        cache_dir: folder of the persistent preprocessed-volume cache, or None for no cache.
        val_fraction: share of patients for validation when the manifest has no split column.
        test_fraction: share of patients for test when the manifest has no split column.
        seed: seed of the patient split.
        max_sentences: report sentences kept per study.
        label_names: fixed label order; None = order of first appearance in the manifest.
        pin_memory: DataLoader pin_memory (useful on GPU servers).
        drop_last: drop the last incomplete TRAIN batch.
        tokenizer: how `model_kwargs()` gets the report tokenizer: {"vocab_size": int, "min_frequency": int}
            trains a WordPiece tokenizer on the TRAIN split's report sentences; {"pretrained_dir": path} loads
            a saved one (e.g. a BERT vocabulary with "[SENT]" added).

    Raises:
        ValueError: bad batch_size / num_workers / fractions, or invalid preprocess / augment options.
    """

    def __init__(
        self,
        manifest: str | None = None,
        data_dir: str = "data",
        demo: Mapping[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        preprocess: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        max_sentences: int = 50,
        label_names: Sequence[str] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        tokenizer: Mapping[str, Any] | None = None,
        demo_subdir: str = DEMO_SUBDIR,
    ) -> None:
        super().__init__()
        if not isinstance(demo_subdir, str) or not demo_subdir or Path(demo_subdir).name != demo_subdir:
            raise ValueError(f"demo_subdir must be a plain folder name (e.g. 'medvl_demo'), got {demo_subdir!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences < 1:
            raise ValueError(f"max_sentences must be an int >= 1, got {max_sentences!r}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 so that training keeps some patients")
        if demo is not None and not isinstance(demo, Mapping):
            raise ValueError(f"demo must be a mapping of ensure_demo_dataset arguments, got {type(demo).__name__}")
        # Hydra passes DictConfigs: store plain containers so checkpoints load with weights_only=True.
        demo, augment, tokenizer = plain_container(demo), plain_container(augment), plain_container(tokenizer)
        preprocess = plain_container(preprocess)
        # preprocess and label_names are logged by the model (resolved values); logging both would clash
        self.save_hyperparameters(ignore=["preprocess", "label_names"])
        self.manifest = manifest
        self.data_dir = Path(data_dir)
        self.demo_dir = self.data_dir / demo_subdir
        self.demo = dict(demo or {})
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.preprocess_config = PreprocessConfig.from_dict(preprocess)
        self.augment_config = AugmentConfig.from_dict(augment) if augment is not None else None
        # Built now so that an augmentation incompatible with spatial_size fails at construction.
        self.augmentation = (
            build_augmentation(self.augment_config, spatial_size=self.preprocess_config.spatial_size)
            if self.augment_config is not None
            else None
        )
        self.cache_dir = cache_dir
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_sentences = max_sentences
        self._label_names = list(label_names) if label_names is not None else None
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.tokenizer_options = dict(tokenizer or {})
        unknown = set(self.tokenizer_options) - {"vocab_size", "min_frequency", "pretrained_dir"}
        if unknown:
            raise ValueError(f"unknown tokenizer options {sorted(unknown)}; use vocab_size, min_frequency or "
                             "pretrained_dir")
        self.records: dict[str, list[ManifestRecord]] = {}
        self.datasets: dict[str, CTReportDataset] = {}

    def manifest_path(self) -> Path:
        """The manifest in use: `manifest`, or the demo set's (built on first call; safe across processes)."""
        if self.manifest is not None:
            return check_manifest_file(self.manifest)
        return Path(ensure_demo_dataset(self.demo_dir, **self.demo))

    def prepare_data(self) -> None:
        """Build the demo set if it is in use and absent (Lightning calls this on one process)."""
        if self.manifest is None:
            self.manifest_path()

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, split it (manifest split column, else by patient) and build the datasets."""
        if self.datasets:
            return
        path = self.manifest_path()
        records = read_manifest(path)
        if not records:
            raise ValueError(f"{path}: the manifest has no rows")
        if any(r.split is not None for r in records):
            self.records = split_from_manifest(records)
        else:
            self.records = split_by_patient(records, self.val_fraction, self.test_fraction, self.seed)
        if not self.records["train"]:
            raise ValueError(f"{path}: no record in the train split")
        label_names = self._label_names if self._label_names is not None else label_names_of(records)
        self._label_names = label_names
        logger.info("CT report splits: %s", {s: len(r) for s, r in self.records.items()})
        for split in SPLITS:
            self.datasets[split] = CTReportDataset(
                self.records[split],
                self.preprocess_config,
                cache_dir=self.cache_dir,
                augmentation=self.augmentation if split == "train" else None,
                max_sentences=self.max_sentences,
                label_names=label_names,
                extras_root=path.parent,
            )

    def check_splits(self, *, test: bool = True) -> None:
        """Refuse, before fitting, a split the run needs but the data leaves empty (called by the runner).

        Args:
            test: whether the run will evaluate on the test split (`test=true`, the default).

        Raises:
            DataSetupError: the val split is empty (validation, best-checkpoint choice and early stopping
                need it), or `test` and the test split is empty (the run would skip the test silently).
        """
        self._require_setup()
        counts = {split: len(records) for split, records in self.records.items()}
        where = f"{self.manifest_path()}" if self.manifest is not None else "the demo set"
        needed = ["val", "test"] if test else ["val"]
        empty = [split for split in needed if not counts[split]]
        if not empty:
            return
        why = []
        if "val" in empty:
            why.append(
                "validation, the choice of the best checkpoint and early stopping need a val split: give some "
                "rows split=val, or drop the split column to split by patient (data.val_fraction / "
                "data.test_fraction)"
            )
        if "test" in empty:
            why.append(
                "the run would skip its test evaluation: give some rows split=test, or pass test=false to "
                "train without one (metrics.json then holds no test/ metrics)"
            )
        raise DataSetupError(
            f"{where}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty (rows per "
            f"split: {counts}); {'; '.join(why)}"
        )

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("CTReportDataModule: call setup() first (Lightning's Trainer does it for you)")

    @property
    def label_names(self) -> list[str]:
        """Finding names, in the order of the `labels` tensor columns."""
        self._require_setup()
        return list(self._label_names)

    def train_reports(self) -> list[str]:
        """Report texts of the TRAIN split only (for tokenizer training without test leakage)."""
        self._require_setup()
        return [r.report for r in self.records["train"]]

    def model_kwargs(self) -> dict[str, Any]:
        """What the pre-training model needs from the data, as plain Python values (stored in checkpoints).

        Returns:
            tokenizer_json: the report tokenizer (trained on the TRAIN split's sentences, or loaded), as JSON;
            label_names: finding names in label-column order; preprocess: the preprocessing config;
            organ_labels: organ name -> label id of the organ masks ({} when the manifest has none).
        """
        self._require_setup()
        options = self.tokenizer_options
        if options.get("pretrained_dir"):
            tokenizer = load_tokenizer(options["pretrained_dir"])
            if "[SENT]" not in tokenizer.get_vocab():  # a stock BERT folder: add TriBERT's sentence token (next id)
                tokenizer.add_special_tokens({"additional_special_tokens": ["[SENT]"]})
        else:
            dataset = self.datasets["train"]
            sentences = [s for record in self.records["train"] for s in dataset.sentences_of(record)]
            tokenizer = train_wordpiece_tokenizer(sentences, vocab_size=int(options.get("vocab_size", 4000)),
                                                  min_frequency=int(options.get("min_frequency", 2)))
        organ_labels: dict[str, int] = {}
        for record in self.records["train"]:
            organ_labels = {str(k): int(v) for k, v in (record.extras.get("organ_labels") or {}).items()}
            if organ_labels:
                break
        return {
            "tokenizer_json": tokenizer_to_json(tokenizer),
            "label_names": list(self.label_names),
            "preprocess": self.preprocess_config.to_dict(),
            "organ_labels": organ_labels,
        }

    def _loader(self, split: str) -> DataLoader:
        self._require_setup()
        train = split == "train"
        # monai's DataLoader seeds the MONAI random transforms per worker (torch's would repeat one
        # random stream in every worker).
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=collate_ct_reports,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
