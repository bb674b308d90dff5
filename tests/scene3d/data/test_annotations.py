"""ScanRefer / ScanQA / Nr3D / 3DSSG readers and the cross-check of annotations against a scene."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scene3d.data.annotations import (
    AnnotationReadError,
    DanglingReference,
    Nr3DAnnotation,
    ScanQAAnnotation,
    ScanQAKeyWarning,
    ScanReferAnnotation,
    SceneGraphRelationship,
    check_annotations_against_scene,
    decode_stimulus_id,
    read_3dssg_relationships,
    read_nr3d,
    read_scanqa,
    read_scanrefer,
)
from scene3d.data.scannet import SkippedObjectWarning, UnmatchedSegmentWarning, read_scannet_scene
from tests.scene3d.data.scannet_factory import SCENE_ID, SEG_GROUPS, write_label_tsv, write_tiny_scene

SCANREFER = [
    {"scene_id": SCENE_ID, "object_id": "0", "object_name": "chair", "ann_id": "0",
     "description": "this is a wooden chair. it is next to the wall.", "token": ["this", "is", "a", "wooden", "chair"]},
    {"scene_id": SCENE_ID, "object_id": "1", "object_name": "kitchen_cabinets", "ann_id": "3",
     "description": "the cabinet under the sink.", "token": ["the", "cabinet"]},
]
SCANQA_TRAIN = [
    {"answers": ["brown", "dark brown"], "object_ids": [0, 1], "object_names": ["chair", "kitchen cabinets"],
     "question": "What color is the chair?", "question_id": "train-scene0042-0", "scene_id": SCENE_ID},
]
SCANQA_TEST_WITHOUT_OBJECTS = [
    {"question": "Where is the chair?", "question_id": "test-scene0042-1", "scene_id": SCENE_ID},
]
# The columns of ReferIt3D's nr3d.csv as this reader assumes them (see the module docstring).
NR3D_COLUMNS = [
    "assignmentid", "stimulus_id", "utterance", "correct_guess", "speaker_id", "listener_id", "scan_id",
    "instance_type", "target_id", "tokens", "dataset", "mentions_target_class", "uses_object_lang",
    "uses_spatial_lang", "uses_color_lang", "uses_shape_lang",
]
NR3D_ROWS = [
    {"assignmentid": "41", "stimulus_id": f"{SCENE_ID}-kitchen_cabinets-3-1-5-7",
     "utterance": 'The cabinet, facing the "big" window', "correct_guess": "True", "speaker_id": "s1",
     "listener_id": "l1", "scan_id": SCENE_ID, "instance_type": "kitchen cabinets", "target_id": "1",
     "tokens": "['the', 'cabinet']", "dataset": "nr3d", "mentions_target_class": "False",
     "uses_object_lang": "True", "uses_spatial_lang": "True", "uses_color_lang": "False", "uses_shape_lang": "False"},
    {"assignmentid": "42", "stimulus_id": "scene0001_00-chair-1-2", "utterance": "the only chair",
     "correct_guess": "False", "speaker_id": "s2", "listener_id": "l2", "scan_id": "scene0001_00",
     "instance_type": "chair", "target_id": "2", "tokens": "['the']", "dataset": "nr3d",
     "mentions_target_class": "True", "uses_object_lang": "True", "uses_spatial_lang": "False",
     "uses_color_lang": "False", "uses_shape_lang": "False"},
]
SSG = {"scans": [
    {"scan": "531cff08-0021-28f6-8e08-ba2eeb945e09", "objects": {"1": "floor", "2": "chair", "3": "table"},
     "relationships": [[2, 1, 1, "standing on"], [2, 3, 6, "close by"]], "split": 0},
    {"scan": SCENE_ID, "objects": {"0": "chair", "8": "lamp"}, "relationships": [[8, 0, 6, "close by"]]},
]}


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _write_nr3d(path: Path, rows: list[dict], columns: list[str] = NR3D_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- ScanRefer


def test_read_scanrefer(tmp_path: Path) -> None:
    annotations = read_scanrefer(_write_json(tmp_path / "ScanRefer_filtered_val.json", SCANREFER))
    assert annotations == [
        ScanReferAnnotation(SCENE_ID, 0, "chair", 0, SCANREFER[0]["description"], tuple(SCANREFER[0]["token"])),
        ScanReferAnnotation(SCENE_ID, 1, "kitchen_cabinets", 3, SCANREFER[1]["description"], ("the", "cabinet")),
    ]
    with pytest.raises(AttributeError):
        annotations[0].object_id = 5  # frozen


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d[1].pop("description"), r"entry 1: missing field\(s\) \['description'\]"),
        (lambda d: d[1].update(object_id="five"), "entry 1: 'object_id' must be an integer"),
        (lambda d: d[0].update(object_id=True), "entry 0: 'object_id' must be an integer"),
        (lambda d: d[0].update(token="this is"), "entry 0: 'token' must be a list of strings"),
        (lambda d: d[1].update(scene_id=3), "entry 1: 'scene_id' must be a string"),
        (lambda d: d.append(["not", "an", "object"]), "entry 2: expected a JSON object"),
    ],
)
def test_scanrefer_entry_errors_name_file_and_index(tmp_path: Path, edit, message: str) -> None:
    data = json.loads(json.dumps(SCANREFER))
    edit(data)
    path = _write_json(tmp_path / "scanrefer.json", data)
    with pytest.raises(AnnotationReadError, match=message) as info:
        read_scanrefer(path)
    assert str(info.value).startswith(f"{path}: ")


def test_json_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationReadError, match="absent.json: annotation file not found"):
        read_scanrefer(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text('[{"scene_id": ')
    with pytest.raises(AnnotationReadError, match="broken.json: invalid JSON"):
        read_scanqa(tmp_path / "broken.json")
    with pytest.raises(AnnotationReadError, match="dict.json: expected a JSON list of ScanRefer entries, got dict"):
        read_scanrefer(_write_json(tmp_path / "dict.json", {"a": 1}))
    with pytest.raises(AnnotationReadError, match="empty.json: no ScanQA entries"):
        read_scanqa(_write_json(tmp_path / "empty.json", []))


# ---------------------------------------------------------------- ScanQA


def test_read_scanqa_with_and_without_answers_and_objects(tmp_path: Path) -> None:
    (train,) = read_scanqa(_write_json(tmp_path / "ScanQA_v1.0_train.json", SCANQA_TRAIN))
    assert train == ScanQAAnnotation("train-scene0042-0", SCENE_ID, "What color is the chair?",
                                     ("brown", "dark brown"), (0, 1), ("chair", "kitchen cabinets"))
    (test,) = read_scanqa(_write_json(tmp_path / "ScanQA_v1.0_test_wo_obj.json", SCANQA_TEST_WITHOUT_OBJECTS))
    assert test.answers is None and test.object_ids is None and test.object_names is None
    with_objects = [{k: v for k, v in SCANQA_TRAIN[0].items() if k != "answers"}]
    (test_w_obj,) = read_scanqa(_write_json(tmp_path / "ScanQA_v1.0_test_w_obj.json", with_objects))
    assert test_w_obj.answers is None and test_w_obj.object_ids == (0, 1)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e.update(object_names=["chair"]), "entry 0: 2 object_ids but 1 object_names"),
        (lambda e: e.update(object_ids=[0, "x"]), "entry 0: 'object_ids' must be a list of integers"),
        (lambda e: e.update(object_ids=3), "entry 0: 'object_ids' must be a list of integers"),
        (lambda e: e.update(answers="brown"), "entry 0: 'answers' must be a list of strings"),
        (lambda e: e.pop("question"), r"entry 0: missing field\(s\) \['question'\]"),
        (lambda e: e.update(question_id=None), "entry 0: 'question_id' must be a string"),
    ],
)
def test_scanqa_entry_errors(tmp_path: Path, edit, message: str) -> None:
    entry = json.loads(json.dumps(SCANQA_TRAIN[0]))
    edit(entry)
    path = _write_json(tmp_path / "scanqa.json", [entry])
    with pytest.raises(AnnotationReadError, match=message) as info:
        read_scanqa(path)
    assert str(info.value).startswith(f"{path}: ")


# ---------------------------------------------------------------- Nr3D


def test_decode_stimulus_id() -> None:
    assert decode_stimulus_id("scene0525_00-plant-5-19-20-21-22-23") == ("scene0525_00", "plant", 5, 19,
                                                                           (20, 21, 22, 23))
    assert decode_stimulus_id("scene0001_00-office_chair-1-2") == ("scene0001_00", "office chair", 1, 2, ())
    with pytest.raises(ValueError, match="announces 3 objects but lists 2"):
        decode_stimulus_id("scene0001_00-chair-3-2-4")
    with pytest.raises(ValueError, match="is not"):
        decode_stimulus_id("scene0001_00-chair-3")
    with pytest.raises(ValueError, match="must be integers"):
        decode_stimulus_id("scene0001_00-chair-two-2-4")


def test_read_nr3d(tmp_path: Path) -> None:
    annotations = read_nr3d(_write_nr3d(tmp_path / "nr3d.csv", NR3D_ROWS))
    assert annotations == [
        Nr3DAnnotation(SCENE_ID, NR3D_ROWS[0]["stimulus_id"], 'The cabinet, facing the "big" window', 1,
                       "kitchen cabinets", (5, 7), "41", True, False),
        Nr3DAnnotation("scene0001_00", "scene0001_00-chair-1-2", "the only chair", 2, "chair", (), "42", False, True),
    ]


def test_read_nr3d_with_only_the_required_columns(tmp_path: Path) -> None:
    columns = ["stimulus_id", "utterance", "scan_id", "instance_type", "target_id"]
    (annotation, _) = read_nr3d(_write_nr3d(tmp_path / "nr3d.csv", NR3D_ROWS, columns))
    assert annotation.assignment_id is None and annotation.correct_guess is None
    assert annotation.mentions_target_class is None and annotation.distractor_ids == (5, 7)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(target_id="one"), "entry 1: 'target_id' must be an integer"),
        (lambda r: r.update(target_id="3"), "entry 1: stimulus_id .* names scan 'scene0001_00' / target 2 but "
                                           "the row has scan_id 'scene0001_00' / target_id 3"),
        (lambda r: r.update(scan_id="scene0009_00"), "entry 1: stimulus_id .* but the row has scan_id 'scene0009_00'"),
        (lambda r: r.update(stimulus_id="scene0001_00-chair-2-2"), "entry 1: stimulus id .* announces 2 objects"),
        (lambda r: r.update(utterance="  "), "entry 1: empty utterance"),
        (lambda r: r.update(correct_guess="maybe"), "entry 1: 'correct_guess' must be True or False"),
    ],
)
def test_nr3d_row_errors_name_file_and_index(tmp_path: Path, edit, message: str) -> None:
    rows = [dict(row) for row in NR3D_ROWS]
    edit(rows[1])
    path = _write_nr3d(tmp_path / "nr3d.csv", rows)
    with pytest.raises(AnnotationReadError, match=message) as info:
        read_nr3d(path)
    assert str(info.value).startswith(f"{path}: ")


def test_nr3d_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationReadError, match=r"nr3d.csv: missing column\(s\) \['target_id'\]"):
        read_nr3d(_write_nr3d(tmp_path / "nr3d.csv", NR3D_ROWS, [c for c in NR3D_COLUMNS if c != "target_id"]))
    with pytest.raises(AnnotationReadError, match="header_only.csv: no Nr3D rows"):
        read_nr3d(_write_nr3d(tmp_path / "header_only.csv", []))
    with pytest.raises(AnnotationReadError, match="absent.csv: annotation file not found"):
        read_nr3d(tmp_path / "absent.csv")
    short = tmp_path / "short.csv"
    short.write_text("stimulus_id,utterance,scan_id,instance_type,target_id\nscene0001_00-chair-1-2,hi\n")
    with pytest.raises(AnnotationReadError, match="short.csv: entry 0: row has fewer columns than the header"):
        read_nr3d(short)


# ---------------------------------------------------------------- 3DSSG


def test_read_3dssg_relationships(tmp_path: Path) -> None:
    graphs = read_3dssg_relationships(_write_json(tmp_path / "relationships.json", SSG))
    assert [g.scene_id for g in graphs] == ["531cff08-0021-28f6-8e08-ba2eeb945e09", SCENE_ID]
    assert dict(graphs[0].objects) == {1: "floor", 2: "chair", 3: "table"}
    assert graphs[0].relationships == (
        SceneGraphRelationship(2, 1, 1, "standing on"), SceneGraphRelationship(2, 3, 6, "close by"),
    )
    with pytest.raises(TypeError):
        graphs[0].objects[4] = "lamp"  # read-only


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["scans"][1]["relationships"].append([8, 9, 6, "close by"]),
         r"entry 1: relationships\[1\] refers to unlisted object\(s\) \[9\]"),
        (lambda d: d["scans"][0]["relationships"].append([2, 1, "support"]), r"entry 0: relationships\[2\] = "),
        (lambda d: d["scans"][0]["relationships"].append([2, 1, 4, 5]), r"entry 0: relationships\[2\] = "),
        (lambda d: d["scans"][1]["objects"].update(x="cup"), "entry 1: objects entry 'x'"),
        (lambda d: d["scans"][1].pop("scan"), r"entry 1: missing field\(s\) \['scan'\]"),
        (lambda d: d["scans"][0].update(objects=[]), "entry 0: 'objects' must be a JSON object"),
        (lambda d: d.update(scans=[]), "expected a JSON object with a non-empty list 'scans'"),
    ],
)
def test_3dssg_errors_name_file_and_index(tmp_path: Path, edit, message: str) -> None:
    data = json.loads(json.dumps(SSG))
    edit(data)
    path = _write_json(tmp_path / "relationships.json", data)
    with pytest.raises(AnnotationReadError, match=message) as info:
        read_3dssg_relationships(path)
    assert str(info.value).startswith(f"{path}: ")


# ---------------------------------------------------------------- cross-check


def test_check_annotations_against_scene(tmp_path: Path) -> None:
    groups = SEG_GROUPS + [{"objectId": 3, "label": "pillow", "segments": [99]}]  # no points: skipped
    with pytest.warns(SkippedObjectWarning), pytest.warns(UnmatchedSegmentWarning):
        scene = read_scannet_scene(write_tiny_scene(tmp_path, seg_groups=groups),
                                   label_map_path=write_label_tsv(tmp_path / "labels.tsv"),
                                   allow_unmatched_segments=True)
    annotations = [
        ScanReferAnnotation(SCENE_ID, 0, "chair", 0, "a chair", ("a", "chair")),        # resolves
        ScanReferAnnotation(SCENE_ID, 5, "chair", 0, "a chair", ("a", "chair")),        # no object 5
        ScanReferAnnotation("scene0999_00", 5, "chair", 0, "elsewhere", ()),           # other scene: ignored
        ScanQAAnnotation("q", SCENE_ID, "what?", None, (1, 3), ("kitchen cabinets", "pillow")),
        ScanQAAnnotation("q2", SCENE_ID, "what?", None, None, None),                    # nothing to check
        *read_nr3d(_write_nr3d(tmp_path / "nr3d.csv", NR3D_ROWS)),                      # target 1, distractors 5 7
        *read_3dssg_relationships(_write_json(tmp_path / "relationships.json", SSG)),   # objects 0 and 8
    ]
    assert check_annotations_against_scene(annotations, scene) == [
        DanglingReference(1, SCENE_ID, 5, "object_id", "no such object in the scene"),
        DanglingReference(3, SCENE_ID, 3, "object_ids", "skipped by the scene reader: no points"),
        DanglingReference(5, SCENE_ID, 5, "distractor_ids", "no such object in the scene"),
        DanglingReference(5, SCENE_ID, 7, "distractor_ids", "no such object in the scene"),
        DanglingReference(8, SCENE_ID, 8, "objects", "no such object in the scene"),
    ]
    assert check_annotations_against_scene(annotations[:1], scene) == []
    with pytest.raises(TypeError, match="not an annotation"):
        check_annotations_against_scene([{"scene_id": SCENE_ID}], scene)


def test_scanqa_singular_object_id_is_read_with_a_warning_never_dropped(tmp_path: Path) -> None:
    entries = [
        {"question_id": "q0", "scene_id": "scene0000_00", "question": "What is it?", "answers": ["chair"],
         "object_id": 5, "object_name": "chair"},
        {"question_id": "q1", "scene_id": "scene0000_00", "question": "Where?", "answers": ["left"],
         "object_id": [1, 2], "object_name": ["desk", "lamp"]},
    ]
    path = _write_json(tmp_path / "scanqa_singular.json", entries)
    with pytest.warns(ScanQAKeyWarning, match=r"scanqa_singular.json: .*'object_id' in 2 of 2 entries"):
        annotations = read_scanqa(path)
    assert [a.object_ids for a in annotations] == [(5,), (1, 2)]
    assert [a.object_names for a in annotations] == [("chair",), ("desk", "lamp")]

    both = _write_json(tmp_path / "both.json", [{**entries[0], "object_ids": [5]}])
    with pytest.raises(AnnotationReadError, match=r"both.json: entry 0: has both 'object_ids' and 'object_id'"):
        read_scanqa(both)
    bad = _write_json(tmp_path / "bad.json", [{**entries[0], "object_id": "five"}])
    with pytest.raises(AnnotationReadError, match=r"bad.json: entry 0: 'object_ids' must be a list of integers"):
        read_scanqa(bad)
