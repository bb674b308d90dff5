"""Study manifests: which volume goes with which report, patient, split and finding labels.

A manifest is JSONL (one JSON object per line) or CSV (a header line, then one row per study). Fields:

* `volume` (required): a NIfTI file or a DICOM folder, absolute or relative to the manifest's folder
  (or to `volume_root` when given).
* `report` (the text) or `report_file` (a UTF-8 .txt file, relative to the manifest's folder): one of them.
* `study_id` (default: the volume's name without .nii.gz / .nii), `patient_id` (default: the study_id,
  i.e. every study its own patient), `split` (train / val / test, or absent).
* `labels`: JSONL {"finding name": 0 or 1}; CSV one column per finding named `label:<finding name>`.
  A finding left out (JSON null, an empty CSV cell) is unknown for that study, not 0; a warning says
  which findings are labelled on some rows only (a misspelt finding name shows up there).
* any other field is kept in `extras`; extras whose name ends in `_mask`, `_path` or `_file` are paths,
  resolved like `volume` (relative to the manifest's folder) into absolute path strings.

CT-RATE CSV files are read too: `VolumeName` (a file name, looked up in the manifest's folder or
`volume_root`, directly or in CT-RATE's `<split>/<patient>/<patient>_<scan>/` layout) replaces `volume`, and
`Findings_EN` / `Impressions_EN` become the report "FINDINGS: ...\\n\\nIMPRESSION: ..." (which
`medvl.data.reports.parse_report` splits back). A CT-RATE name such as "train_1_a_1.nii.gz" encodes the
patient ("train_1"), which becomes the `patient_id` unless one is given.

All problems are collected and raised together in one `ManifestError`, each with its line number (the
line where the row starts; line 1 of a CSV is its header). Report text never appears in errors or logs.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.data.reports import is_blank_report

__all__ = ["ManifestError", "ManifestRecord", "SPLITS", "read_manifest", "write_manifest"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_LABEL_PREFIX = "label:"
_PATH_EXTRA_SUFFIXES = ("_mask", "_path", "_file")
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CT_RATE_NAME = re.compile(r"^(?P<patient>(?P<split>train|valid|test)_\d+)_(?P<scan>[A-Za-z]+)_\d+")
_RESERVED = frozenset(
    {"volume", "report", "report_file", "study_id", "patient_id", "split", "labels",
     "VolumeName", "Findings_EN", "Impressions_EN"}
)
_MAX_LISTED_PROBLEMS = 200


@dataclass
class ManifestRecord:
    """One study of a manifest.

    Attributes:
        study_id: unique within the manifest.
        patient_id: the patient (studies of one patient must stay in one split).
        volume_path: absolute path of the NIfTI file or DICOM folder.
        report: the report text.
        split: "train", "val", "test" or None.
        labels: {"finding name": 0 or 1}.
        extras: every other field of the row (path-like ones made absolute).
    """

    study_id: str
    patient_id: str
    volume_path: Path
    report: str
    split: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class ManifestError(ValueError):
    """A manifest with problems; `problems` holds every (line number, problem) found (line 0: the file)."""

    def __init__(self, path: str | Path, problems: list[tuple[int, str]]):
        self.path = Path(path)
        self.problems = sorted(problems, key=lambda item: item[0])
        listed = [f"  line {line}: {problem}" if line else f"  {problem}"  # line 0: the whole file
                  for line, problem in self.problems[:_MAX_LISTED_PROBLEMS]]
        if len(self.problems) > _MAX_LISTED_PROBLEMS:
            listed.append(f"  ... and {len(self.problems) - _MAX_LISTED_PROBLEMS} more (see ManifestError.problems)")
        super().__init__(f"{self.path}: {len(self.problems)} problem(s) in the manifest:\n" + "\n".join(listed))


def read_manifest(
    path: str | Path, *, check_files: bool = True, volume_root: str | Path | None = None
) -> list[ManifestRecord]:
    """Read and validate a JSONL or CSV manifest (format in the module docstring).

    Args:
        path: the manifest file (.jsonl / .json lines, or .csv).
        check_files: check that every volume and path-like extra exists (report files are always read).
        volume_root: resolve relative volume paths and CT-RATE `VolumeName`s against this folder instead
            of the manifest's folder.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: when the manifest does not exist.
        ManifestError: listing every problem: unreadable lines, missing columns, missing files, empty
            reports, duplicate study ids, unknown splits, labels other than 0 / 1.
    """
    path = _absolute(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise ManifestError(path, [(0, f"unknown manifest type {suffix!r}: use .jsonl or .csv")])
    base = path.parent
    root = _absolute(volume_root) if volume_root is not None else base
    problems: list[tuple[int, str]] = []
    rows = _read_csv_rows(path, problems) if suffix == ".csv" else _read_jsonl_rows(path, problems)

    records: list[tuple[int, ManifestRecord]] = []
    for line, row in rows:
        row_problems: list[str] = []
        record = _build_record(row, base, root, check_files, row_problems)
        problems.extend((line, problem) for problem in row_problems)
        if record is not None and not row_problems:
            records.append((line, record))
    _check_across_rows(records, problems)
    if not rows and not problems:
        problems.append((0, "the manifest has no rows"))
    if problems:
        raise ManifestError(path, problems)
    logger.info("read %d studies from manifest %s", len(records), path)
    return [record for _, record in records]


def write_manifest(records: Iterable[ManifestRecord], path: str | Path) -> Path:
    """Write records as a JSONL manifest with paths relative to its folder (atomically: temp file + rename).

    Args:
        records: the studies; `read_manifest(path)` gives them back.
        path: the .jsonl file to write (its folder is created if needed).

    Returns:
        The manifest path.

    Raises:
        ValueError: when `path` is not .jsonl, or an extra field has a reserved name.
    """
    path = _absolute(path)
    if path.suffix.lower() != ".jsonl":
        raise ValueError(f"write_manifest writes JSONL: give a path ending in .jsonl, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        clashes = sorted(set(record.extras) & _RESERVED)
        if clashes:
            raise ValueError(f"study {record.study_id}: extras use reserved field names {clashes}; rename them")
        row: dict[str, Any] = {
            "study_id": record.study_id,
            "patient_id": record.patient_id,
            "volume": _relative(record.volume_path, path.parent),
            "report": record.report,
        }
        if record.split is not None:
            row["split"] = record.split
        if record.labels:
            row["labels"] = dict(record.labels)
        for key, value in record.extras.items():
            row[key] = _relative(value, path.parent) if _is_path_extra(key, value) else value
        lines.append(json.dumps(row, ensure_ascii=False))
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _read_jsonl_rows(path: Path, problems: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.strip())
            except json.JSONDecodeError as error:  # the message names the column, never the text
                problems.append((line_number, f"not valid JSON ({error.msg} at column {error.colno})"))
                continue
            if not isinstance(row, dict):
                problems.append((line_number, f"expected a JSON object, got a {type(row).__name__}"))
                continue
            rows.append((line_number, row))
    return rows


def _read_csv_rows(path: Path, problems: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    """CSV rows as dicts (empty cells dropped, `label:<name>` columns gathered into `labels`)."""
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return rows
        header = [name.strip() for name in header]
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            problems.append((1, f"duplicate columns {duplicates}"))
        if "volume" not in header and "VolumeName" not in header:
            problems.append((1, "missing required column 'volume' (or CT-RATE's 'VolumeName')"))
        has_report = {"report", "report_file", "Findings_EN", "Impressions_EN"} & set(header)
        if not has_report:
            problems.append((1, "missing report column: give 'report' or 'report_file' (or CT-RATE's 'Findings_EN' "
                                "and 'Impressions_EN')"))
        if problems:
            return rows
        start = reader.line_num + 1
        for cells in reader:
            line_number, start = start, reader.line_num + 1  # a quoted cell may span several lines
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                problems.append((line_number, f"has {len(cells)} cells but the header has {len(header)} columns"))
                continue
            row: dict[str, Any] = {}
            labels: dict[str, Any] = {}
            for name, cell in zip(header, cells):
                if name.startswith(_LABEL_PREFIX):
                    if cell.strip():  # an empty cell: the finding is unknown for this study
                        labels[name[len(_LABEL_PREFIX):].strip()] = cell.strip()
                elif cell.strip():
                    row[name] = cell
            if any(name.startswith(_LABEL_PREFIX) for name in header):
                row["labels"] = labels
            elif "labels" in row:  # a JSON object in a `labels` column
                try:
                    row["labels"] = json.loads(row["labels"])
                except json.JSONDecodeError:
                    problems.append((line_number, "the 'labels' cell is not a JSON object"))
                    continue
            rows.append((line_number, row))
    return rows


def _build_record(
    row: dict[str, Any], base: Path, root: Path, check_files: bool, problems: list[str]
) -> ManifestRecord | None:
    """One record from one row, appending every problem found to `problems`."""
    ct_rate = "volume" not in row and "VolumeName" in row
    volume_field = row.get("volume", row.get("VolumeName"))
    volume_path = None
    if not isinstance(volume_field, str) or not volume_field.strip():
        problems.append("missing 'volume' (the NIfTI file or DICOM folder)")
    else:
        volume_path = _resolve_volume(volume_field.strip(), root, ct_rate, check_files, problems)

    report = _report_text(row, base, problems)

    study_id = _optional_text(row, "study_id", problems)
    if study_id is None and isinstance(volume_field, str) and volume_field.strip():
        study_id = _volume_stem(volume_field.strip())
    patient_id = _optional_text(row, "patient_id", problems)
    if patient_id is None and ct_rate and isinstance(volume_field, str):
        match = _CT_RATE_NAME.match(Path(volume_field.strip()).name)
        patient_id = match.group("patient") if match else None
    if patient_id is None:
        patient_id = study_id

    split = _optional_text(row, "split", problems)
    if split is not None and split not in SPLITS:
        problems.append(f"unknown split {split!r}: use one of {', '.join(SPLITS)} or leave it empty")

    labels = _labels(row.get("labels"), problems)

    extras: dict[str, Any] = {}
    for key, value in row.items():
        if key in _RESERVED:
            continue
        if _is_path_extra(key, value):
            resolved = _absolute(base / Path(value.strip()).expanduser())
            if check_files and not resolved.exists():
                problems.append(f"{key} {resolved} does not exist")
            value = str(resolved)
        extras[key] = value

    if problems or volume_path is None or report is None or study_id is None or patient_id is None:
        return None
    return ManifestRecord(
        study_id=study_id, patient_id=patient_id, volume_path=volume_path, report=report,
        split=split, labels=labels, extras=extras,
    )


def _resolve_volume(name: str, root: Path, ct_rate: bool, check_files: bool, problems: list[str]) -> Path:
    """Absolute volume path; CT-RATE names are also looked up in the `<split>/<patient>/<scan>/` layout."""
    candidates = [_absolute(root / Path(name).expanduser())]
    match = _CT_RATE_NAME.match(Path(name).name) if ct_rate else None
    if match is not None:
        scan_folder = f"{match.group('patient')}_{match.group('scan')}"
        candidates.append(root / match.group("split") / match.group("patient") / scan_folder / Path(name).name)
    existing = next((candidate for candidate in candidates if candidate.exists()), None)
    if existing is not None:
        return existing
    if check_files:
        problems.append("volume not found: " + " nor ".join(str(candidate) for candidate in candidates))
    return candidates[0]


def _report_text(row: dict[str, Any], base: Path, problems: list[str]) -> str | None:
    """The report: `report`, the text of `report_file`, or CT-RATE's findings + impression."""
    given = [key for key in ("report", "report_file") if key in row]
    ct_rate_given = [key for key in ("Findings_EN", "Impressions_EN") if key in row]
    if len(given) == 2 or (given and ct_rate_given):
        problems.append(f"give one report source, not {' and '.join(given + ct_rate_given)}")
        return None
    if "report_file" in row:
        if not isinstance(row["report_file"], str) or not row["report_file"].strip():
            problems.append("'report_file' must be a path")
            return None
        report_path = _absolute(base / Path(row["report_file"].strip()).expanduser())
        if not report_path.is_file():
            problems.append(f"report file {report_path} does not exist")
            return None
        try:
            report = report_path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            problems.append(f"report file {report_path} is not UTF-8 text")
            return None
        if is_blank_report(report):
            problems.append(f"report file {report_path} is empty")
            return None
        return report
    if "report" in row:
        report = row["report"]
    elif ct_rate_given:
        sections = []
        for header, key in (("FINDINGS", "Findings_EN"), ("IMPRESSION", "Impressions_EN")):
            text = row.get(key)
            if isinstance(text, str) and not is_blank_report(text):
                sections.append(f"{header}: {text.strip()}")
        report = "\n\n".join(sections)
    else:
        problems.append("missing report: give 'report' (the text) or 'report_file' (a .txt path)")
        return None
    if not isinstance(report, str):
        problems.append(f"'report' must be text, got {_json_type(report)}")
        return None
    if is_blank_report(report):
        problems.append("empty report text")
        return None
    return report


def _optional_text(row: dict[str, Any], key: str, problems: list[str]) -> str | None:
    """A string field; ints are accepted for ids; missing, null or empty -> None."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append(f"'{key}' must be text, got {_json_type(value)}")
        return None
    return str(value).strip()


def _labels(value: Any, problems: list[str]) -> dict[str, int]:
    """{"finding": 0 or 1}: accepts 0 / 1, true / false, 0.0 / 1.0 and the strings "0" / "1"."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"'labels' must be an object {{\"finding name\": 0 or 1}}, got {_json_type(value)}")
        return {}
    labels: dict[str, int] = {}
    for name, raw in value.items():
        if raw is None:  # null: the finding is unknown for this study
            continue
        number = _binary(raw)
        if not isinstance(name, str) or not name.strip():
            problems.append("a label has an empty finding name")
        elif number is None:
            problems.append(f"label {name!r} is {raw!r}: labels must be 0 or 1")
        else:
            labels[name.strip()] = number
    return labels


def _binary(value: Any) -> int | None:
    if isinstance(value, str):
        text = value.strip()
        return {"0": 0, "1": 1, "0.0": 0, "1.0": 1}.get(text)
    if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return int(value) if value in (0, 1) else None
    return None


def _check_across_rows(records: list[tuple[int, ManifestRecord]], problems: list[tuple[int, str]]) -> None:
    """Duplicate study ids are problems; findings labelled on some rows only are worth a warning."""
    first_line: dict[str, int] = {}
    for line, record in records:
        if record.study_id in first_line:
            problems.append(
                (line, f"duplicate study_id {record.study_id!r} (first on line {first_line[record.study_id]})")
            )
        else:
            first_line[record.study_id] = line
    label_counts: dict[str, int] = {}
    for _, record in records:
        for name in record.labels:
            label_counts[name] = label_counts.get(name, 0) + 1
    partial = {name: len(records) - count for name, count in label_counts.items() if count < len(records)}
    if partial:
        logger.warning(
            "some findings are not labelled on every row (unknown there, not 0): %s",
            ", ".join(f"{name!r} missing on {missing} row(s)" for name, missing in sorted(partial.items())),
        )


def _volume_stem(volume: str) -> str:
    """The volume's name without a volume suffix ("case_1.nii.gz" -> "case_1"; DICOM folders keep theirs)."""
    name = Path(volume.rstrip("/\\")).name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _absolute(path: str | Path) -> Path:
    """Absolute and normalised ("a/../b" -> "b"), without resolving symbolic links."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _is_path_extra(key: str, value: Any) -> bool:
    return key.endswith(_PATH_EXTRA_SUFFIXES) and isinstance(value, (str, Path)) and bool(str(value).strip())


def _relative(value: str | Path, folder: Path) -> str:
    """`value` relative to `folder` in POSIX form when it is absolute and on the same drive, else as given."""
    value = Path(value)
    if not value.is_absolute():
        return value.as_posix()
    try:
        return Path(os.path.relpath(value, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return value.as_posix()


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
