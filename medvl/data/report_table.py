"""Report-only files: a CSV / JSONL table of reports (optionally with binary finding labels), or a folder of .txt.

Where the report text comes from, per row (the first that applies):

* a ``report`` or ``report_text`` column (the manifest's field; CT-RATE's report sample uses ``report_text``);
* CT-RATE's ``Findings_EN`` / ``Impressions_EN`` columns, joined as "FINDINGS: ...\\n\\nIMPRESSION: ..." exactly as
  `medvl.data.manifest` joins them (``medvl.data.reports.parse_report`` splits them back);
* for a folder: every ``*.txt`` file (sorted by name) is one report; the file name without ``.txt`` is its id.

Finding labels (for the labeler; report-only pre-training ignores them): with ``label_names`` given, exactly those
columns; otherwise the manifest's ``label:<finding>`` columns when there are any; otherwise every column that is
not a report, id or manifest bookkeeping column (``AccessionNo``, ``study_id``, ``VolumeName``, ``split``, ...).
JSONL rows may also hold a ``labels`` object {finding: 0 / 1 / null}. A label is 0, 1 or empty (unknown: NaN);
anything else is an error naming the line and the column.

Every problem (unreadable bytes, an empty report, a bad label) is an error naming the file and the line; the
report text itself is never put into an error message, nor are id values (they may be accession numbers).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.data.reports import is_blank_report

__all__ = ["ReportRow", "ReportTable", "ReportTableError", "read_report_table"]

REPORT_COLUMNS = ("report", "report_text")
CT_RATE_COLUMNS = ("Findings_EN", "Impressions_EN")
_LABEL_PREFIX = "label:"
# Columns that are never finding labels when the label columns are inferred.
_NON_LABEL_COLUMNS = frozenset({
    *REPORT_COLUMNS, *CT_RATE_COLUMNS, "report_file", "labels", "AccessionNo", "accession", "id", "study_id",
    "patient_id", "split", "volume", "VolumeName", "ClinicalInformation_EN", "Technique_EN", "Comparison_EN",
})
_MAX_LISTED = 20


class ReportTableError(ValueError):
    """A report file with problems; the message lists each one with its line number."""

    def __init__(self, path: str | Path, problems: Sequence[tuple[int, str]]):
        self.path = Path(path)
        self.problems = list(problems)
        lines = [f"  line {line}: {text}" if line else f"  {text}" for line, text in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        super().__init__(f"{self.path}: {len(self.problems)} problem(s):\n" + "\n".join(lines))


@dataclass
class ReportRow:
    """One report.

    Attributes:
        line: where the row starts in its file (1-based; the CSV header is line 1), or 0 for a .txt file.
        source: "<file> line <n>" or the .txt file, for messages.
        text: the report text (CT-RATE sections joined).
        labels: {finding: 0.0 / 1.0 / NaN (unknown)} for the table's label columns.
        fields: the row's cells as read (CSV: str; JSONL: JSON values), in column order.
    """

    line: int
    source: str
    text: str
    labels: dict[str, float] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportTable:
    """The rows of a report file, its columns in file order and the finding label names (label column order)."""

    path: Path
    columns: list[str]
    rows: list[ReportRow]
    label_names: list[str]


def read_report_table(path: str | Path, *, label_names: Sequence[str] | None = None,
                      require_labels: bool = False) -> ReportTable:
    """Read a CSV / JSONL report table or a folder of .txt reports (see the module docstring).

    Args:
        path: a ``.csv``, ``.jsonl`` / ``.json`` (one object per line) file, or a folder of ``.txt`` files.
        label_names: the finding columns; None = inferred (module docstring).
        require_labels: raise when the file has no label column (the labeler's training data must have some).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ReportTableError: not UTF-8, a missing report column, an empty report, a label other than 0 / 1 / empty,
            a missing named label column, no label column with ``require_labels``, no rows (lines named).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"report file {path} does not exist")
    if path.is_dir():
        table = _read_txt_folder(path)
    else:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            columns, raw_rows = _read_csv(path)
        elif suffix in (".jsonl", ".json"):
            columns, raw_rows = _read_jsonl(path)
        else:
            raise ReportTableError(path, [(0, f"unknown report file type {suffix!r}: use .csv, .jsonl or a folder "
                                              "of .txt files")])
        table = _table_from_rows(path, columns, raw_rows, label_names)
    if not table.rows:
        raise ReportTableError(path, [(0, "the file holds no report")])
    if require_labels and not table.label_names:
        raise ReportTableError(path, [(0, "no finding label column: give 0 / 1 columns (e.g. CT-RATE's 18 finding "
                                          "columns) or name them with label_names")])
    return table


# ------------------------------------------------------------------------------------------------ readers
def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); undecodable bytes -> an error naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ReportTableError(path, [(line, f"is not UTF-8 (byte 0x{data[error.start]:02x} at offset "
                                             f"{error.start}); save the file as UTF-8")]) from None


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = _decode(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ReportTableError(path, [(0, "the CSV file is empty (no header line)")]) from None
    except csv.Error as error:
        raise ReportTableError(path, [(1, f"unreadable CSV header ({error})")]) from None
    header = [name.strip() for name in header]
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problems.append((start, f"unreadable CSV row ({error})"))
            break
        if cells and any(cell.strip() for cell in cells):
            if len(cells) != len(header):
                problems.append((start, f"has {len(cells)} cells but the header has {len(header)} columns"))
            else:
                rows.append((start, dict(zip(header, cells))))
        start = reader.line_num + 1
    if problems:
        raise ReportTableError(path, problems)
    return header, rows


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = _decode(path, path.read_bytes())
    columns: dict[str, None] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append((number, f"is not valid JSON ({error.msg})"))
            continue
        if not isinstance(obj, dict):
            problems.append((number, f"must be a JSON object, got {type(obj).__name__}"))
            continue
        labels = obj.pop("labels", None)
        if labels is not None:
            if not isinstance(labels, dict):
                problems.append((number, "'labels' must be an object {finding: 0 / 1 / null}"))
                continue
            obj.update({f"{_LABEL_PREFIX}{name}": value for name, value in labels.items()})
        columns.update(dict.fromkeys(obj))
        rows.append((number, obj))
    if problems:
        raise ReportTableError(path, problems)
    return list(columns), rows


def _read_txt_folder(path: Path) -> ReportTable:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise ReportTableError(path, [(0, "the folder holds no .txt report")])
    rows, problems = [], []
    for file in files:
        try:
            text = _decode(file, file.read_bytes())
        except ReportTableError as error:
            problems.extend((0, f"{file.name} line {line}: {problem}") for line, problem in error.problems)
            continue
        if is_blank_report(text):
            problems.append((0, f"{file.name}: the report is empty"))
            continue
        rows.append(ReportRow(line=0, source=str(file), text=text, fields={"file": file.stem, "report": text}))
    if problems:
        raise ReportTableError(path, problems)
    return ReportTable(path=path, columns=["file", "report"], rows=rows, label_names=[])


# ------------------------------------------------------------------------------------------------ rows
def _report_text(fields: dict[str, Any]) -> Any:
    for column in REPORT_COLUMNS:
        if column in fields:
            return fields[column]
    findings, impression = fields.get(CT_RATE_COLUMNS[0]), fields.get(CT_RATE_COLUMNS[1])
    parts = []
    if not is_blank_report(findings):
        parts.append(f"FINDINGS: {str(findings).strip()}")
    if not is_blank_report(impression):
        parts.append(f"IMPRESSION: {str(impression).strip()}")
    return "\n\n".join(parts)


def _label_columns(path: Path, columns: list[str], label_names: Sequence[str] | None) -> dict[str, str]:
    """finding name -> column holding it."""
    if label_names is not None:
        by_name = {}
        missing = []
        for name in label_names:
            column = name if name in columns else f"{_LABEL_PREFIX}{name}"
            if column not in columns:
                missing.append(name)
            by_name[str(name)] = column
        if missing:
            raise ReportTableError(path, [(0, f"label column(s) {missing} not found; the columns are {columns}")])
        return by_name
    prefixed = [c for c in columns if c.startswith(_LABEL_PREFIX)]
    if prefixed:
        return {c[len(_LABEL_PREFIX):]: c for c in prefixed}
    return {c: c for c in columns if c not in _NON_LABEL_COLUMNS}


def _label_value(value: Any) -> float | None:
    """0 / 1 / empty -> 0.0 / 1.0 / NaN; anything else -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return math.nan
        if text in ("0", "1", "0.0", "1.0"):
            return float(text)
    return None


def _table_from_rows(path: Path, columns: list[str], raw_rows: list[tuple[int, dict[str, Any]]],
                     label_names: Sequence[str] | None) -> ReportTable:
    has_report = any(c in columns for c in REPORT_COLUMNS) or any(c in columns for c in CT_RATE_COLUMNS)
    if not has_report:
        raise ReportTableError(path, [(0, f"no report column: give one of {list(REPORT_COLUMNS)} or CT-RATE's "
                                          f"{list(CT_RATE_COLUMNS)}; the columns are {columns}")])
    label_columns = _label_columns(path, columns, label_names)
    rows: list[ReportRow] = []
    problems: list[tuple[int, str]] = []
    for line, fields in raw_rows:
        text = _report_text(fields)
        if is_blank_report(text):
            problems.append((line, "the report is empty; give its text or drop the row"))
            continue
        if not isinstance(text, str):
            problems.append((line, f"the report must be text, got {type(text).__name__}"))
            continue
        labels = {}
        for name, column in label_columns.items():
            value = _label_value(fields.get(column))
            if value is None:
                shown = str(fields.get(column))[:20]
                problems.append((line, f"label column {column!r} holds {shown!r}; a label is 0, 1 or empty "
                                       "(name the label columns with label_names if this is not a label)"))
            else:
                labels[name] = value
        rows.append(ReportRow(line=line, source=f"{path.name} line {line}", text=text, labels=labels, fields=fields))
    if problems:
        raise ReportTableError(path, problems)
    return ReportTable(path=path, columns=columns, rows=rows, label_names=list(label_columns))
