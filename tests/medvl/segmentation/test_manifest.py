"""Segmentation manifests (volume + label columns, JSONL or CSV) and the demo set's organ masks."""
from __future__ import annotations

import json

import pytest

from medvl.data.demo import ensure_demo_dataset
from medvl.data.manifest import ManifestError
from medvl.segmentation.manifest import demo_studies, read_segmentation_manifest


def test_manifest_paths_are_resolved_relative_to_its_folder(synthetic_ct):
    studies = read_segmentation_manifest(synthetic_ct["manifest"])
    assert [s.study_id for s in studies] == ["case0", "case1"] and [s.split for s in studies] == ["train", "val"]
    assert studies[0].volume_path == synthetic_ct["image"] and studies[0].label_path == synthetic_ct["label"]
    assert studies[0].patient_id == "case0"


def test_csv_manifest(synthetic_ct, tmp_path):
    root = synthetic_ct["root"]
    path = tmp_path / "labels.csv"
    path.write_text(f"volume,label,study_id\n{root}/images/case0.nii.gz,{root}/labels/case0.nii.gz,a\n")
    (study,) = read_segmentation_manifest(path)
    assert study.study_id == "a" and study.split is None and study.label_path == synthetic_ct["label"]


def test_manifest_problems_are_all_listed_with_line_numbers(synthetic_ct, tmp_path):
    root = synthetic_ct["root"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"volume": f"{root}/images/case0.nii.gz"}),
        json.dumps({"volume": "missing.nii.gz", "label": f"{root}/labels/case0.nii.gz"}),
        "{not json",
        json.dumps({"volume": f"{root}/images/case0.nii.gz", "label": f"{root}/labels/case0.nii.gz", "split": "dev"}),
    ]) + "\n")
    with pytest.raises(ManifestError) as error:
        read_segmentation_manifest(path)
    lines = [line for line, _ in error.value.problems]
    assert lines == [1, 2, 3, 4]
    assert "missing 'label'" in str(error.value) and "does not exist" in str(error.value)
    assert "unknown split 'dev'" in str(error.value)


def test_duplicate_study_ids_are_refused(synthetic_ct, tmp_path):
    row = json.dumps({"volume": str(synthetic_ct["image"]), "label": str(synthetic_ct["label"])})
    path = tmp_path / "dup.jsonl"
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(ManifestError, match="already used on line 1"):
        read_segmentation_manifest(path)


def test_demo_organ_masks(tmp_path):
    manifest = ensure_demo_dataset(tmp_path / "demo", num_cases=3, size=16, progress=False)
    studies, organ_labels = demo_studies(manifest)
    assert len(studies) == 3 and organ_labels["liver"] == 12
    assert all(s.label_path.is_file() and s.label_path.name == s.volume_path.name for s in studies)
