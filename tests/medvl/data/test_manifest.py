"""Manifest reading / writing: JSONL, CSV and CT-RATE columns, relative paths, all problems listed at once."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medvl.data.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest
from medvl.data.reports import parse_report


def touch(path: Path) -> Path:
    """An empty stand-in file (the manifest only checks that volumes exist, it never opens them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n", "utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    touch(tmp_path / "vols" / "case_a.nii.gz")
    (tmp_path / "vols" / "case_b").mkdir()  # a DICOM folder
    touch(tmp_path / "masks" / "case_a.nii.gz")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "case_b.txt").write_text("FINDINGS: Lungs clear.\nIMPRESSION: Normal.", "utf-8")
    return tmp_path


def test_jsonl_with_relative_paths(dataset: Path) -> None:
    manifest = write_jsonl(dataset / "manifest.jsonl", [
        {"volume": "vols/case_a.nii.gz", "report": "Lungs are clear.", "split": "train",
         "labels": {"nodule": 1, "effusion": 0}, "organ_mask": "masks/case_a.nii.gz",
         "findings": [{"name": "nodule", "center_vox": [1, 2, 3]}]},
        "",  # blank lines are skipped
        {"volume": "vols/case_b", "report_file": "reports/case_b.txt", "patient_id": "p7", "study_id": 12,
         "split": "val", "labels": {"nodule": False, "effusion": "1"}},
    ])
    first, second = read_manifest(manifest)
    assert first == ManifestRecord(
        study_id="case_a", patient_id="case_a", volume_path=dataset / "vols" / "case_a.nii.gz",
        report="Lungs are clear.", split="train", labels={"nodule": 1, "effusion": 0},
        extras={"organ_mask": str(dataset / "masks" / "case_a.nii.gz"),
                "findings": [{"name": "nodule", "center_vox": [1, 2, 3]}]},
    )
    assert first.volume_path.is_absolute()
    assert (second.study_id, second.patient_id, second.split) == ("12", "p7", "val")
    assert second.volume_path == dataset / "vols" / "case_b"
    assert second.labels == {"nodule": 0, "effusion": 1}
    assert parse_report(second.report).impression == "Normal."


def test_csv_with_relative_paths_and_label_columns(dataset: Path) -> None:
    manifest = dataset / "manifest.csv"
    manifest.write_text(
        "volume,report,split,label:nodule,label:effusion,site\n"
        'vols/case_a.nii.gz,"Lungs are clear.\nNo effusion.",train,1,0,north\n'  # a report over two lines
        "vols/case_b,Heart is normal.,,0,1,\n",
        "utf-8",
    )
    first, second = read_manifest(manifest)
    assert first.report == "Lungs are clear.\nNo effusion."
    assert first.labels == {"nodule": 1, "effusion": 0} and first.extras == {"site": "north"}
    assert second.split is None and second.extras == {}  # empty cells are absent fields
    assert second.volume_path == dataset / "vols" / "case_b"


def test_ct_rate_columns(tmp_path: Path) -> None:
    touch(tmp_path / "train_1_a_1.nii.gz")  # flat, next to the manifest
    root = tmp_path / "ctrate"
    touch(root / "train" / "train_2" / "train_2_a" / "train_2_a_2.nii.gz")  # CT-RATE's own layout
    manifest = tmp_path / "reports.csv"
    manifest.write_text(
        "VolumeName,ClinicalInformation_EN,Findings_EN,Impressions_EN\n"
        "train_1_a_1.nii.gz,Cough.,Lungs are clear. Heart is normal.,Normal chest CT.\n"
        "train_2_a_2.nii.gz,,A 3.5 mm nodule.,\n",
        "utf-8",
    )
    first = read_manifest(manifest, check_files=False)[0]
    assert (first.study_id, first.patient_id) == ("train_1_a_1", "train_1")
    assert first.volume_path == tmp_path / "train_1_a_1.nii.gz"
    assert first.extras == {"ClinicalInformation_EN": "Cough."}
    report = parse_report(first.report)
    assert (report.findings, report.impression) == ("Lungs are clear. Heart is normal.", "Normal chest CT.")

    with pytest.raises(ManifestError, match="line 2: volume not found"):
        read_manifest(manifest, volume_root=root)  # train_1_a_1 is not under the root
    (root / "train_1_a_1.nii.gz").write_bytes(b"")
    first, second = read_manifest(manifest, volume_root=root)
    assert first.volume_path == root / "train_1_a_1.nii.gz"
    assert second.volume_path == root / "train" / "train_2" / "train_2_a" / "train_2_a_2.nii.gz"
    assert (second.study_id, second.patient_id) == ("train_2_a_2", "train_2")
    assert parse_report(second.report).sentences == ["A 3.5 mm nodule."]


def test_error_lists_every_problem_with_its_line(dataset: Path) -> None:
    touch(dataset / "vols" / "case_c.nii.gz")
    manifest = write_jsonl(dataset / "manifest.jsonl", [
        {"volume": "vols/case_a.nii.gz", "report": "Fine.", "labels": {"nodule": 1}},  # line 1: valid
        '{"volume": "vols/case_b", "report": ',  # line 2: unparseable JSON
        {"volume": "vols/missing.nii.gz", "report": "Fine."},  # line 3: missing volume file
        {"volume": "vols/case_b", "report_file": "reports/none.txt"},  # line 4: missing report file
        {"volume": "vols/case_c.nii.gz", "report": "   "},  # line 5: empty report
        {"volume": "vols/case_b", "study_id": "case_a", "report": "Fine."},  # line 6: duplicate study_id
        {"volume": "vols/case_c.nii.gz", "report": "Fine.", "split": "training"},  # line 7: unknown split
        {"volume": "vols/case_c.nii.gz", "study_id": "c8", "report": "Fine.", "labels": {"nodule": 2}},  # 8
        {"report": "Fine."},  # line 9: missing required field `volume`
        {"volume": "vols/case_c.nii.gz", "study_id": "c10"},  # line 10: missing report
        {"volume": "vols/case_c.nii.gz", "study_id": "c11", "report": "x.", "labels": ["nodule"]},  # line 11
    ])
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    expected = {
        2: "not valid JSON", 3: "volume not found", 4: "report file", 5: "empty report",
        6: "duplicate study_id 'case_a' (first on line 1)", 7: "unknown split 'training'",
        8: "label 'nodule' is 2", 9: "missing 'volume'", 10: "missing report", 11: "'labels' must be an object",
    }
    for line, problem in expected.items():
        assert f"line {line}: {problem}" in message
    assert sorted({line for line, _ in caught.value.problems}) == sorted(expected)
    assert "\n  line 1:" not in message  # the valid first row is not reported
    assert isinstance(caught.value, ValueError)


def test_unlabelled_findings_are_unknown_and_warned_about(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jsonl = write_jsonl(dataset / "m.jsonl", [
        {"volume": "vols/case_a.nii.gz", "report": "Fine.", "labels": {"nodule": 1, "effusion": None}},
        {"volume": "vols/case_b", "report": "Fine.", "labels": {"nodule": 0, "effusion": 1}},
    ])
    with caplog.at_level(logging.WARNING, logger="medvl.data.manifest"):
        first, second = read_manifest(jsonl)
    assert first.labels == {"nodule": 1} and second.labels == {"nodule": 0, "effusion": 1}
    assert "'effusion' missing on 1 row(s)" in caplog.text and "nodule" not in caplog.text
    csv_path = dataset / "m.csv"
    csv_path.write_text("volume,report,label:nodule\nvols/case_a.nii.gz,Fine.,\nvols/case_b,Fine.,1.0\n", "utf-8")
    first, second = read_manifest(csv_path)
    assert (first.labels, second.labels) == ({}, {"nodule": 1})


def test_csv_header_problems(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text("path,text\nvol.nii.gz,Fine.\n", "utf-8")
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    assert "line 1: missing required column 'volume'" in str(caught.value)
    assert "line 1: missing report column" in str(caught.value)
    manifest.write_text("volume,report,label:nodule\nvol.nii.gz,Fine.,yes\nvol2.nii.gz,Fine.\n", "utf-8")
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest, check_files=False)
    assert "line 2: label 'nodule' is 'yes'" in str(caught.value)
    assert "line 3: has 2 cells but the header has 3 columns" in str(caught.value)


def test_check_files_false_accepts_missing_volumes(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"volume": "later/case.nii.gz", "report": "Fine."}])
    (record,) = read_manifest(manifest, check_files=False)
    assert record.volume_path == tmp_path / "later" / "case.nii.gz"
    with pytest.raises(ManifestError, match="line 1: volume not found"):
        read_manifest(manifest)


def test_write_then_read_round_trip_with_relative_paths(dataset: Path) -> None:
    records = [
        ManifestRecord(study_id="case_a", patient_id="p1", volume_path=dataset / "vols" / "case_a.nii.gz",
                       report="Lungs are clear.", split="train", labels={"nodule": 1},
                       extras={"organ_mask": str(dataset / "masks" / "case_a.nii.gz"), "organ_labels": {"liver": 1}}),
        ManifestRecord(study_id="case_b", patient_id="case_b", volume_path=dataset / "vols" / "case_b",
                       report="Heart is normal.", split=None, labels={"nodule": 0}, extras={}),
    ]
    manifest = write_manifest(records, dataset / "out" / "manifest.jsonl")
    text = manifest.read_text("utf-8")
    assert str(dataset) not in text  # every path is written relative to the manifest's folder
    assert json.loads(text.splitlines()[0])["volume"] == "../vols/case_a.nii.gz"
    assert read_manifest(manifest) == records
    assert not list(manifest.parent.glob("*.tmp"))  # the temporary file was renamed away


def test_bad_paths_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "absent.jsonl")
    (tmp_path / "m.txt").write_text("x", "utf-8")
    with pytest.raises(ManifestError, match="use .jsonl or .csv"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "empty.jsonl").write_text("\n", "utf-8")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(tmp_path / "empty.jsonl")
    record = ManifestRecord("a", "a", tmp_path / "a.nii.gz", "Fine.", extras={"split": "x"})
    with pytest.raises(ValueError, match="reserved"):
        write_manifest([record], tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match=".jsonl"):
        write_manifest([], tmp_path / "out.csv")
