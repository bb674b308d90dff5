"""Tests of medvl.data.datamodule: patient-disjoint splits, manifest splits, batches with 0 and 2 workers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.data.datamodule import CTReportDataModule, split_by_patient
from medvl.data.manifest import read_manifest
from tests.medvl.data.nifti_helpers import diag_affine, save_nifti

PREPROCESS = {"spacing": (4.0, 4.0, 4.0), "spatial_size": (8, 8, 8)}


def _write_manifest(
    folder: Path, n_patients: int = 6, studies_per_patient: int = 2, splits: dict[int, str] | None = None
) -> Path:
    """JSONL manifest of tiny NIfTI studies; patient p has `studies_per_patient` studies."""
    rows = []
    rng = np.random.default_rng(0)
    for p in range(n_patients):
        for s in range(studies_per_patient):
            study = f"p{p}s{s}"
            hu = rng.integers(-1000, 1000, size=(9, 8, 7)).astype(np.int16)
            save_nifti(folder / f"{study}.nii.gz", hu, diag_affine(3.0, 3.0, 3.0))
            save_nifti(folder / f"{study}_mask.nii.gz", (hu > 0).astype(np.int16), diag_affine(3.0, 3.0, 3.0))
            row = {
                "volume": f"{study}.nii.gz",
                "report": f"Findings: Study {study} of patient {p}. Nodule size {s + 1} mm. Impression: Stable.",
                "patient_id": f"patient{p}",
                "study_id": study,
                "labels": {"Lung nodule": int(s % 2), "Emphysema": int(p % 2)},
                "organ_mask": f"{study}_mask.nii.gz",
                "findings": [],
            }
            if splits is not None:
                row["split"] = splits[p]
            rows.append(row)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _patients(records) -> set[str]:
    return {r.patient_id for r in records}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_split_has_no_overlap_and_is_deterministic(tmp_path, seed):
    records = read_manifest(_write_manifest(tmp_path, n_patients=10, studies_per_patient=3))
    splits = split_by_patient(records, val_fraction=0.2, test_fraction=0.2, seed=seed)
    train, val, test = (_patients(splits[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    assert sum(len(v) for v in splits.values()) == len(records)  # nothing lost
    again = split_by_patient(records, val_fraction=0.2, test_fraction=0.2, seed=seed)
    study_ids = {s: [r.study_id for r in v] for s, v in splits.items()}
    assert {s: [r.study_id for r in v] for s, v in again.items()} == study_ids


def test_patient_split_changes_with_seed_and_refuses_too_few_patients(tmp_path):
    records = read_manifest(_write_manifest(tmp_path, n_patients=10, studies_per_patient=1))
    tests = {frozenset(_patients(split_by_patient(records, 0.2, 0.2, seed)["test"])) for seed in range(5)}
    assert len(tests) > 1
    with pytest.raises(ValueError, match="cannot fill"):
        split_by_patient(records[:2], 0.2, 0.2, 0)
    with pytest.raises(ValueError, match="must be < 1"):
        split_by_patient(records, 0.5, 0.5, 0)


def test_manifest_split_column_is_respected(tmp_path):
    splits = {0: "train", 1: "train", 2: "val", 3: "test", 4: "train", 5: "test"}
    dm = CTReportDataModule(manifest=str(_write_manifest(tmp_path, splits=splits)), preprocess=PREPROCESS)
    dm.setup()
    expected = {name: {f"patient{p}" for p, s in splits.items() if s == name} for name in ("train", "val", "test")}
    assert {name: _patients(dm.records[name]) for name in expected} == expected
    assert len(dm.train_reports()) == 6 and all("patient" in text for text in dm.train_reports())
    assert {t.split("Study ")[1].split(" ")[0][:2] for t in dm.train_reports()} == {"p0", "p1", "p4"}


def test_partial_split_column_is_refused(tmp_path):
    path = _write_manifest(tmp_path, n_patients=3, studies_per_patient=1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["split"] = "train"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = CTReportDataModule(manifest=str(path), preprocess=PREPROCESS)
    with pytest.raises(ValueError, match="2 of 3 manifest rows have no split"):
        dm.setup()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloaders_build_batches(tmp_path, num_workers):
    dm = CTReportDataModule(
        manifest=str(_write_manifest(tmp_path)), batch_size=3, num_workers=num_workers, preprocess=PREPROCESS,
        augment={}, cache_dir=str(tmp_path / "cache"), val_fraction=0.2, test_fraction=0.2, seed=0,
    )
    dm.setup("fit")
    assert dm.label_names == ["Lung nodule", "Emphysema"]
    loader = dm.train_dataloader()
    assert loader.persistent_workers is (num_workers > 0)
    batches = list(loader)
    assert sum(len(b["study_id"]) for b in batches) == len(dm.records["train"]) == 8
    batch = batches[0]
    assert batch["image"].shape == (3, 1, 8, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["organ_mask"].shape == (3, 1, 8, 8, 8) and batch["labels"].shape == (3, 2)
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    val = next(iter(dm.val_dataloader()))
    assert {sid[:2] for sid in val["study_id"]}.isdisjoint({r.study_id[:2] for r in dm.records["train"]})
    assert any((tmp_path / "cache").rglob("*.safetensors"))


def test_val_batches_are_not_augmented_and_repeat_exactly(tmp_path):
    dm = CTReportDataModule(manifest=str(_write_manifest(tmp_path)), batch_size=2, preprocess=PREPROCESS,
                            augment={"noise_prob": 1.0})
    dm.setup()
    first = next(iter(dm.val_dataloader()))["image"]
    second = next(iter(dm.val_dataloader()))["image"]
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(num_workers=-1), "num_workers"),
        (dict(val_fraction=0.6, test_fraction=0.5), "val_fraction"),
        (dict(preprocess={"spacingg": 1}), "unknown preprocessing option"),
        (dict(augment={"flip_prob": 2.0}), "flip_prob"),
        (dict(preprocess={"spatial_size": (8, 8, 4)}, augment={"rotate90_axes": (0, 2)}), "square plane"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CTReportDataModule(**kwargs)


def test_using_results_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        CTReportDataModule().train_reports()


def test_demo_set_end_to_end_findings_land_in_their_organ(tmp_path):
    dm = CTReportDataModule(
        data_dir=str(tmp_path), demo={"num_cases": 8, "size": 24, "progress": False}, batch_size=4,
        preprocess={"spacing": (4.0, 4.0, 4.0), "spatial_size": (32, 32, 32)},
        augment={"flip_prob": 0.5, "rotate90_prob": 0.5, "noise_prob": 0.0},
    )
    dm.prepare_data()
    dm.setup()
    assert (tmp_path / "medvl_demo" / "manifest.jsonl").is_file()
    assert sum(len(v) for v in dm.records.values()) == 8 and dm.records["train"]
    organ_labels = dm.records["train"][0].extras["organ_labels"]
    checked = 0
    for batch in dm.train_dataloader():
        assert batch["organ_mask"].shape == batch["image"].shape and batch["organ_mask_valid"].all()
        assert batch["labels"].shape[1] == len(dm.label_names) and set(batch["labels"].unique().tolist()) <= {0.0, 1.0}
        for mask, findings in zip(batch["organ_mask"][:, 0], batch["findings"]):
            for finding in findings:
                # Through 4 mm resampling, padding to 32^3 and random flips / rotations,
                # the finding's centre still lands inside its organ.
                centre = tuple(np.rint(finding["center_vox_preprocessed"]).astype(int))
                assert int(mask[centre]) == organ_labels[finding["organ"]], finding["name"]
                checked += 1
    assert checked > 0
