"""The report-table reader (issue 20's input side): CSV / JSONL / .txt folder, CT-RATE columns, errors with lines."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medvl.data.report_table import ReportTableError, read_report_table

SHARED_REPORTS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "reports" / "ct_rate_reports_train.csv"


def test_csv_with_ct_rate_sections_and_labels(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("AccessionNo,Findings_EN,Impressions_EN,Cardiomegaly,Emphysema\n"
                    "a1,Heart is enlarged.,Cardiomegaly.,1,\n"
                    "a2,Lungs are clear.,Normal.,0,0\n", encoding="utf-8")
    table = read_report_table(path)
    assert table.label_names == ["Cardiomegaly", "Emphysema"]
    assert [row.line for row in table.rows] == [2, 3]
    first = table.rows[0]
    assert "FINDINGS:" in first.text and "Heart is enlarged." in first.text and "IMPRESSION:" in first.text
    assert first.labels["Cardiomegaly"] == 1.0 and math.isnan(first.labels["Emphysema"])
    assert table.rows[1].labels == {"Cardiomegaly": 0.0, "Emphysema": 0.0}


def test_jsonl_and_txt_folder(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"report": "No effusion.", "labels": {"effusion": 0}}) + "\n", encoding="utf-8")
    table = read_report_table(path)
    assert table.rows[0].text == "No effusion." and table.rows[0].labels == {"effusion": 0.0}
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "b.txt").write_text("Second.", encoding="utf-8")
    (folder / "a.txt").write_text("First.", encoding="utf-8")
    assert [row.text for row in read_report_table(folder).rows] == ["First.", "Second."]


def test_bad_label_and_bad_bytes_name_the_line_not_the_text(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("AccessionNo,report_text,Cardiomegaly\nSECRET1,fine text,1\nSECRET2,other text,yes\n",
                    encoding="utf-8")
    with pytest.raises(ReportTableError) as err:
        read_report_table(path)
    message = str(err.value)
    assert "bad.csv" in message and "line 3" in message and "Cardiomegaly" in message
    assert "SECRET2" not in message and "other text" not in message
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"report_text\n\xff\xfe broken\n")
    with pytest.raises(ReportTableError, match="bin.csv"):
        read_report_table(binary)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_report_table(tmp_path / "missing.csv")


@pytest.mark.skipif(not SHARED_REPORTS.exists(), reason="../shared/data is absent")
def test_real_ct_rate_report_sample_reads_as_is():
    table = read_report_table(SHARED_REPORTS)
    assert len(table.rows) >= 100 and len(table.label_names) == 18
    assert "Cardiomegaly" in table.label_names and all(row.text for row in table.rows)
