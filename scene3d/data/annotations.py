"""Readers for the language annotations of 3D scenes: ScanRefer, ScanQA, Nr3D and 3DSSG scene graphs.

Every reader returns a list of frozen dataclasses, validated entry by entry; a bad entry raises
`AnnotationReadError` naming the file and the entry's index. File formats (field names exactly as in the
released files):
- ScanRefer JSON (`ScanRefer_filtered_{train,val}.json`): a list of {"scene_id", "object_id", "object_name",
  "ann_id", "description", "token"}; `object_id` and `ann_id` are decimal strings in the release ("5"), ints
  are accepted too; `object_name` is the raw category with "_" for spaces ("kitchen_cabinet").
- ScanQA JSON (`ScanQA_v1.0_{train,val,test_w_obj,test_wo_obj}.json`): a list of {"question_id", "scene_id",
  "question", "answers", "object_ids", "object_names"}; test files have no "answers", `test_wo_obj` has no
  "object_ids" / "object_names" either (read as None). Files converted by other tools sometimes write the
  singular `object_id` / `object_name` (one value or a list): they are read as object_ids / object_names, with
  one `ScanQAKeyWarning` per file saying so (never dropped silently); an entry with both spellings is an error.
- Nr3D CSV (ReferIt3D's `nr3d.csv`): one row per utterance. Required columns: stimulus_id, utterance, scan_id,
  instance_type, target_id. Optional, read when present: assignmentid, correct_guess, mentions_target_class.
  Other columns (speaker_id, listener_id, tokens, dataset, uses_*_lang, ...) are ignored. The stimulus id is
  `<scan_id>-<instance_type with "_" for spaces>-<n objects>-<target_id>[-<distractor id>...]` (ReferIt3D's
  `decode_stimulus_string`); it is decoded for the distractor ids and checked against the scan_id and
  target_id columns. The column names follow ReferIt3D's loaders (`load_nr3d_raw_data`,
  `load_referential_data`); the full header of the released file could not be checked offline.
- 3DSSG `relationships.json`: {"scans": [{"scan": id, "objects": {"<id>": label}, "relationships":
  [[subject id, object id, predicate index, predicate name], ...]}, ...]}; 3DSSG scans are 3RScan scans, so
  their ids are not ScanNet scene ids.

`check_annotations_against_scene` lists the references of a list of annotations to objects that a `Scene`
does not have.
"""
from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scene3d.data.scannet import Scene


class AnnotationReadError(ValueError):
    """An annotation file could not be read; the message names the file and, for a bad entry, its index."""


class ScanQAKeyWarning(UserWarning):
    """A ScanQA file spells `object_ids` / `object_names` in the singular; the values were read all the same."""


@dataclass(frozen=True)
class ScanReferAnnotation:
    """One ScanRefer description of one object.

    Args:
        scene_id: ScanNet scene, e.g. "scene0000_00".
        object_id: the described object's `objectId` in the scene's aggregation file.
        object_name: raw category as in the file ("kitchen_cabinet").
        ann_id: index of this description among the object's descriptions.
        description: the free-text description.
        tokens: the file's `token` list.
    """

    scene_id: str
    object_id: int
    object_name: str
    ann_id: int
    description: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class ScanQAAnnotation:
    """One ScanQA question.

    Args:
        question_id: e.g. "train-scene0000-0".
        scene_id: ScanNet scene.
        question: the question text.
        answers: the accepted answers; None in test files, which have none.
        object_ids: `objectId`s of the objects the question is about; None when the file has no object_ids.
        object_names: their raw categories, same length as object_ids; None when absent.
    """

    question_id: str
    scene_id: str
    question: str
    answers: tuple[str, ...] | None
    object_ids: tuple[int, ...] | None
    object_names: tuple[str, ...] | None


@dataclass(frozen=True)
class Nr3DAnnotation:
    """One Nr3D utterance.

    Args:
        scene_id: ScanNet scene (the `scan_id` column).
        stimulus_id: the stimulus string the utterance was written for.
        utterance: the referring utterance.
        target_id: `objectId` of the referred object.
        instance_type: the target's class, e.g. "plant".
        distractor_ids: `objectId`s of the same-class distractors, decoded from `stimulus_id`.
        assignment_id: the `assignmentid` column, or None when absent.
        correct_guess: whether the listener found the target; None when the column is absent.
        mentions_target_class: whether the utterance names the target's class; None when absent.
    """

    scene_id: str
    stimulus_id: str
    utterance: str
    target_id: int
    instance_type: str
    distractor_ids: tuple[int, ...]
    assignment_id: str | None
    correct_guess: bool | None
    mentions_target_class: bool | None


@dataclass(frozen=True)
class SceneGraphRelationship:
    """One directed 3DSSG relationship: subject --predicate--> object."""

    subject_id: int
    object_id: int
    predicate_id: int
    predicate: str


@dataclass(frozen=True)
class SceneGraphAnnotation:
    """The 3DSSG scene graph of one scan.

    Args:
        scene_id: the scan id (the file's `scan`).
        objects: object id -> label (read-only).
        relationships: the relationships, in file order; their ids are keys of `objects`.
    """

    scene_id: str
    objects: Mapping[int, str]
    relationships: tuple[SceneGraphRelationship, ...]


Annotation = ScanReferAnnotation | ScanQAAnnotation | Nr3DAnnotation | SceneGraphAnnotation


@dataclass(frozen=True)
class DanglingReference:
    """A reference from an annotation to an object the scene does not have.

    Args:
        index: position of the annotation in the list given to `check_annotations_against_scene`.
        scene_id: the scene.
        object_id: the missing object id.
        field: the annotation field holding it ("object_id", "object_ids", "target_id", "distractor_ids",
            "objects").
        reason: "no such object in the scene", or why the scene reader skipped it.
    """

    index: int
    scene_id: str
    object_id: int
    field: str
    reason: str


_INTEGER = re.compile(r"-?[0-9]+")


def _entry_error(path: Path, index: int, message: str) -> AnnotationReadError:
    return AnnotationReadError(f"{path}: entry {index}: {message}")


def _load_json(path: str | os.PathLike) -> tuple[Path, Any]:
    path = Path(path)
    if not path.is_file():
        raise AnnotationReadError(f"{path}: annotation file not found")
    try:
        with path.open("rb") as handle:
            return path, json.load(handle)
    except json.JSONDecodeError as error:
        raise AnnotationReadError(
            f"{path}: invalid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationReadError(f"{path}: cannot read ({error})") from error


def _load_json_list(path: str | os.PathLike, what: str) -> tuple[Path, list[Any]]:
    path, data = _load_json(path)
    if not isinstance(data, list):
        raise AnnotationReadError(f"{path}: expected a JSON list of {what} entries, got {type(data).__name__}")
    if not data:
        raise AnnotationReadError(f"{path}: no {what} entries")
    return path, data


def _as_int(value: Any) -> int | None:
    """An int, or a decimal string of one (ScanRefer writes ids as strings); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _str_field(entry: Mapping[str, Any], key: str, path: Path, index: int) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise _entry_error(path, index, f"'{key}' must be a string, got {value!r}")
    return value


def _int_field(entry: Mapping[str, Any], key: str, path: Path, index: int) -> int:
    value = _as_int(entry.get(key))
    if value is None:
        raise _entry_error(path, index, f"'{key}' must be an integer, got {entry.get(key)!r}")
    return value


def _str_list(value: Any, key: str, path: Path, index: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _entry_error(path, index, f"'{key}' must be a list of strings, got {value!r}")
    return tuple(value)


def _int_list(value: Any, key: str, path: Path, index: int) -> tuple[int, ...]:
    ids = [_as_int(item) for item in value] if isinstance(value, list) else [None]
    if any(item is None for item in ids):
        raise _entry_error(path, index, f"'{key}' must be a list of integers, got {value!r}")
    return tuple(ids)  # type: ignore[arg-type]


def _require_keys(entry: Any, keys: Sequence[str], path: Path, index: int) -> None:
    if not isinstance(entry, dict):
        raise _entry_error(path, index, f"expected a JSON object, got {type(entry).__name__}")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise _entry_error(path, index, f"missing field(s) {missing}")


def read_scanrefer(path: str | os.PathLike) -> list[ScanReferAnnotation]:
    """Read a ScanRefer JSON file.

    Raises:
        AnnotationReadError: missing file, invalid JSON, not a non-empty list, or an entry (named by its
            index) lacking a field or holding a value of the wrong type.
    """
    path, data = _load_json_list(path, "ScanRefer")
    keys = ("scene_id", "object_id", "object_name", "ann_id", "description", "token")
    annotations = []
    for index, entry in enumerate(data):
        _require_keys(entry, keys, path, index)
        annotations.append(ScanReferAnnotation(
            scene_id=_str_field(entry, "scene_id", path, index),
            object_id=_int_field(entry, "object_id", path, index),
            object_name=_str_field(entry, "object_name", path, index),
            ann_id=_int_field(entry, "ann_id", path, index),
            description=_str_field(entry, "description", path, index),
            tokens=_str_list(entry["token"], "token", path, index),
        ))
    return annotations


def read_scanqa(path: str | os.PathLike) -> list[ScanQAAnnotation]:
    """Read a ScanQA JSON file (train / val with answers, test without).

    Raises:
        AnnotationReadError: missing file, invalid JSON, not a non-empty list, or an entry (named by its
            index) lacking question_id / scene_id / question, with a value of the wrong type, with
            object_ids and object_names of different lengths, or with both object_ids and object_id.

    Warns:
        ScanQAKeyWarning: the file uses `object_id` / `object_name` (read as object_ids / object_names).
    """
    path, data = _load_json_list(path, "ScanQA")
    annotations = []
    singular_keys: dict[str, int] = {}
    for index, entry in enumerate(data):
        _require_keys(entry, ("question_id", "scene_id", "question"), path, index)
        question_id = entry["question_id"]
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise _entry_error(path, index, f"'question_id' must be a string, got {question_id!r}")
        answers = _str_list(entry["answers"], "answers", path, index) if "answers" in entry else None
        for plural, singular in (("object_ids", "object_id"), ("object_names", "object_name")):
            if singular in entry:
                if plural in entry:
                    raise _entry_error(path, index, f"has both '{plural}' and '{singular}': keep only '{plural}'")
                value = entry[singular]
                entry = {**entry, plural: value if isinstance(value, list) else [value]}
                singular_keys[singular] = singular_keys.get(singular, 0) + 1
        object_ids = _int_list(entry["object_ids"], "object_ids", path, index) if "object_ids" in entry else None
        object_names = (
            _str_list(entry["object_names"], "object_names", path, index) if "object_names" in entry else None
        )
        if object_ids is not None and object_names is not None and len(object_ids) != len(object_names):
            raise _entry_error(
                path, index, f"{len(object_ids)} object_ids but {len(object_names)} object_names"
            )
        annotations.append(ScanQAAnnotation(
            question_id=str(question_id),
            scene_id=_str_field(entry, "scene_id", path, index),
            question=_str_field(entry, "question", path, index),
            answers=answers,
            object_ids=object_ids,
            object_names=object_names,
        ))
    if singular_keys:
        found = ", ".join(f"'{key}' in {count} of {len(data)} entries" for key, count in singular_keys.items())
        warnings.warn(
            f"{path}: ScanQA's keys are 'object_ids' / 'object_names' (plural); this file uses {found}: read as "
            "the plural lists (a single value becomes a one-element list)",
            ScanQAKeyWarning,
            stacklevel=2,
        )
    return annotations


_NR3D_REQUIRED = ("stimulus_id", "utterance", "scan_id", "instance_type", "target_id")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def decode_stimulus_id(stimulus_id: str) -> tuple[str, str, int, int, tuple[int, ...]]:
    """(scan id, instance type, number of objects, target id, distractor ids) of a ReferIt3D stimulus id.

    Format: `<scan_id>-<instance type, "_" for spaces>-<n objects>-<target id>[-<distractor id>...]`.

    Raises:
        ValueError: the string does not have that form or the number of distractors is not n objects - 1.
    """
    parts = stimulus_id.split("-", maxsplit=4)
    if len(parts) < 4:
        raise ValueError(f"stimulus id {stimulus_id!r} is not '<scan>-<type>-<n>-<target>[-<distractors>]'")
    scan_id, instance_type, n_objects, target_id = parts[:4]
    distractors = parts[4].split("-") if len(parts) == 5 else []
    numbers = [_as_int(value) for value in (n_objects, target_id, *distractors)]
    if any(number is None for number in numbers):
        raise ValueError(f"stimulus id {stimulus_id!r}: object count and ids must be integers")
    n, target, *distractor_ids = numbers
    if len(distractor_ids) != n - 1:  # type: ignore[operator]
        raise ValueError(
            f"stimulus id {stimulus_id!r} announces {n} objects but lists {len(distractor_ids) + 1}"
        )
    return scan_id, instance_type.replace("_", " "), n, target, tuple(distractor_ids)  # type: ignore[return-value]


def _optional_bool(row: Mapping[str, str], key: str, path: Path, index: int) -> bool | None:
    value = row.get(key)
    if value is None or value.strip() == "":
        return None
    parsed = _BOOLEANS.get(value.strip().lower())
    if parsed is None:
        raise _entry_error(path, index, f"'{key}' must be True or False, got {value!r}")
    return parsed


def read_nr3d(path: str | os.PathLike) -> list[Nr3DAnnotation]:
    """Read an Nr3D CSV (see the module docstring for the columns used).

    Entry indices in errors count data rows from 0 (the header is not counted).

    Raises:
        AnnotationReadError: missing file, no header or no rows, a required column missing, or a row (named by
            its index) with an empty utterance, a non-integer target_id, a malformed stimulus_id or one that
            disagrees with the row's scan_id / target_id, or a boolean column that is not True / False.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationReadError(f"{path}: annotation file not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AnnotationReadError(f"{path}: cannot read the CSV ({error})") from error
    missing = [name for name in _NR3D_REQUIRED if name not in header]
    if missing:
        raise AnnotationReadError(f"{path}: missing column(s) {missing}; the header is {header}")
    if not rows:
        raise AnnotationReadError(f"{path}: no Nr3D rows")
    annotations = []
    for index, row in enumerate(rows):
        if any(row.get(name) is None for name in _NR3D_REQUIRED):
            raise _entry_error(path, index, "row has fewer columns than the header")
        target_id = _as_int(row["target_id"])
        if target_id is None:
            raise _entry_error(path, index, f"'target_id' must be an integer, got {row['target_id']!r}")
        if not row["utterance"].strip():
            raise _entry_error(path, index, "empty utterance")
        try:
            scan_id, _, _, stimulus_target, distractors = decode_stimulus_id(row["stimulus_id"])
        except ValueError as error:
            raise _entry_error(path, index, str(error)) from None
        if scan_id != row["scan_id"] or stimulus_target != target_id:
            raise _entry_error(
                path, index,
                f"stimulus_id {row['stimulus_id']!r} names scan {scan_id!r} / target {stimulus_target} but the "
                f"row has scan_id {row['scan_id']!r} / target_id {target_id}",
            )
        assignment = row.get("assignmentid")
        annotations.append(Nr3DAnnotation(
            scene_id=row["scan_id"],
            stimulus_id=row["stimulus_id"],
            utterance=row["utterance"],
            target_id=target_id,
            instance_type=row["instance_type"],
            distractor_ids=distractors,
            assignment_id=assignment if assignment else None,
            correct_guess=_optional_bool(row, "correct_guess", path, index),
            mentions_target_class=_optional_bool(row, "mentions_target_class", path, index),
        ))
    return annotations


def read_3dssg_relationships(path: str | os.PathLike) -> list[SceneGraphAnnotation]:
    """Read a 3DSSG `relationships.json`.

    Entry indices in errors are positions in the file's `scans` list.

    Raises:
        AnnotationReadError: missing file, invalid JSON, no non-empty `scans` list, or a scan (named by its
            index) without `scan` / `objects` / `relationships`, with object ids that are not integers, labels
            that are not strings, a relationship that is not [subject, object, predicate index, name], or a
            relationship between objects its `objects` does not list.
    """
    path, data = _load_json(path)
    scans = data.get("scans") if isinstance(data, dict) else None
    if not isinstance(scans, list) or not scans:
        raise AnnotationReadError(f"{path}: expected a JSON object with a non-empty list 'scans'")
    graphs = []
    for index, scan in enumerate(scans):
        _require_keys(scan, ("scan", "objects", "relationships"), path, index)
        scene_id = _str_field(scan, "scan", path, index)
        if not isinstance(scan["objects"], dict):
            raise _entry_error(path, index, "'objects' must be a JSON object {id: label}")
        objects: dict[int, str] = {}
        for key, label in scan["objects"].items():
            object_id = _as_int(key)
            if object_id is None or not isinstance(label, str):
                raise _entry_error(path, index, f"objects entry {key!r}: {label!r} is not an integer id -> label")
            objects[object_id] = label
        if not isinstance(scan["relationships"], list):
            raise _entry_error(path, index, "'relationships' must be a list")
        relationships = []
        for r_index, relation in enumerate(scan["relationships"]):
            fields = [_as_int(value) for value in relation[:3]] if isinstance(relation, list) else []
            if len(fields) != 3 or None in fields or len(relation) != 4 or not isinstance(relation[3], str):
                raise _entry_error(
                    path, index, f"relationships[{r_index}] = {relation!r} is not [subject id, object id, "
                    f"predicate index, predicate name]",
                )
            subject_id, object_id, predicate_id = fields
            unknown = [value for value in (subject_id, object_id) if value not in objects]
            if unknown:
                raise _entry_error(path, index, f"relationships[{r_index}] refers to unlisted object(s) {unknown}")
            relationships.append(SceneGraphRelationship(subject_id, object_id, predicate_id, relation[3]))
        graphs.append(SceneGraphAnnotation(scene_id, MappingProxyType(objects), tuple(relationships)))
    return graphs


def _referenced_ids(annotation: Annotation) -> Iterable[tuple[str, int]]:
    """(field name, object id) of every object reference an annotation makes."""
    if isinstance(annotation, ScanReferAnnotation):
        yield "object_id", annotation.object_id
    elif isinstance(annotation, ScanQAAnnotation):
        for object_id in annotation.object_ids or ():
            yield "object_ids", object_id
    elif isinstance(annotation, Nr3DAnnotation):
        yield "target_id", annotation.target_id
        for object_id in annotation.distractor_ids:
            yield "distractor_ids", object_id
    elif isinstance(annotation, SceneGraphAnnotation):
        for object_id in annotation.objects:
            yield "objects", object_id
    else:
        raise TypeError(f"not an annotation of this module: {type(annotation).__name__}")


def check_annotations_against_scene(annotations: Sequence[Annotation], scene: Scene) -> list[DanglingReference]:
    """References of `annotations` to objects that `scene` does not have.

    Only annotations of this scene (`annotation.scene_id == scene.scene_id`) are checked; the others are
    ignored, so a whole split's annotations can be passed for each scene. Objects the reader skipped
    (`scene.meta["skipped_objects"]`) are reported with the reader's reason.

    Returns:
        one `DanglingReference` per missing reference, in annotation order; empty when all resolve.

    Raises:
        TypeError: an element of `annotations` is not one of this module's annotation types.
    """
    present = {obj.object_id for obj in scene.objects}
    skipped = {item["object_id"]: item["reason"] for item in scene.meta.get("skipped_objects", [])}
    dangling = []
    for index, annotation in enumerate(annotations):
        references = list(_referenced_ids(annotation))
        if annotation.scene_id != scene.scene_id:
            continue
        for field_name, object_id in references:
            if object_id in present:
                continue
            reason = (
                f"skipped by the scene reader: {skipped[object_id]}" if object_id in skipped
                else "no such object in the scene"
            )
            dangling.append(DanglingReference(index, scene.scene_id, object_id, field_name, reason))
    return dangling
