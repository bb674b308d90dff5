"""Tests of the demo scene set: geometry, ScanNet files read back, language honesty, schemas, splits, reuse."""
from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from scene3d.data.annotations import read_scanqa, read_scanrefer
from scene3d.data.demo import build as demo_build
from scene3d.data.demo import build_demo_scenes, demo_build_args, ensure_demo_scenes, file_names
from scene3d.data.demo.__main__ import main as demo_main
from scene3d.data.demo.build import SPLITS, facts_from_scene
from scene3d.data.demo.language import (
    ObjectFacts,
    Query,
    SceneFacts,
    SceneRelations,
    questions,
    referring_expressions,
    resolve,
    tokenize,
)
from scene3d.data.demo.primitives import NAMED_COLORS, Box, Cylinder, allocate_points, sample_parts
from scene3d.data.demo.rooms import ROOM_TYPES, generate_room, layout_summary
from scene3d.data.labels import load_label_map
from scene3d.data.scannet import read_scannet_scene

SMALL = {"num_scenes": 4, "seed": 0, "points_per_scene": 8000}
SCANREFER_KEYS = {"scene_id", "object_id", "object_name", "ann_id", "description", "token"}
SCANQA_KEYS = {"question_id", "scene_id", "question", "answers", "object_ids", "object_names"}
CAPTION_KEYS = {"scene_id", "object_id", "object_name", "description"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_scenes(tmp_path_factory.mktemp("demo") / "set", progress=False, **SMALL)


@pytest.fixture(scope="module")
def scenes(demo_root: Path) -> dict:
    """scene_id -> (Scene read back, objects.json entry, SceneFacts, SceneRelations)."""
    table = json.loads((demo_root / "objects.json").read_text())
    out = {}
    for scene_id, entry in table.items():
        scene = read_scannet_scene(demo_root / "scans" / scene_id)
        facts = facts_from_scene(scene, entry)
        out[scene_id] = (scene, entry, facts, SceneRelations(facts))
    return out


def _load(root: Path, key: str, split: str) -> list:
    return json.loads((root / file_names(split)[key]).read_text())


def _all(root: Path, key: str) -> list:
    return [row for split in SPLITS for row in _load(root, key, split)]


# ----------------------------------------------------------------------------------------- primitives ----
def test_box_points_lie_on_its_faces_and_span_it():
    box = Box((0.0, 1.0, 2.0), (1.0, 3.0, 2.5))
    points = box.sample(np.random.default_rng(0), 2000)
    lo, hi = np.array(box.lo), np.array(box.hi)
    on_a_face = np.isclose(points, lo).any(axis=1) | np.isclose(points, hi).any(axis=1)
    assert on_a_face.all() and (points >= lo - 1e-12).all() and (points <= hi + 1e-12).all()
    np.testing.assert_allclose(points.min(axis=0), lo)
    np.testing.assert_allclose(points.max(axis=0), hi)
    # Area-weighted: faces 2 x (2 x 0.5) + 2 x (1 x 0.5) + 2 x (1 x 2) = 7 m^2; the z faces hold 4 / 7.
    share = np.isclose(points[:, 2], 2.0).mean() + np.isclose(points[:, 2], 2.5).mean()
    assert abs(share - 4 / 7) < 0.04


def test_open_bottom_box_has_no_bottom_points_and_cylinder_points_are_on_its_surface():
    box = Box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), open_bottom=True)
    assert box.area() == pytest.approx(5.0)
    assert not np.isclose(box.sample(np.random.default_rng(1), 500)[:, 2], 0.0).any()
    cylinder = Cylinder((1.0, -1.0), 0.2, 0.7, 0.3)
    points = cylinder.sample(np.random.default_rng(2), 1000)
    radius = np.hypot(points[:, 0] - 1.0, points[:, 1] + 1.0)
    lateral = (points[:, 2] > 0.2 + 1e-9) & (points[:, 2] < 0.7 - 1e-9)
    np.testing.assert_allclose(radius[lateral], 0.3)
    assert (radius <= 0.3 + 1e-9).all() and lateral.any() and (~lateral).any()


def test_allocate_points_sums_exactly_and_respects_the_minimum():
    counts = allocate_points([1.0, 0.0, 3.0], 100, 5)
    assert counts.sum() == 100 and counts.min() >= 5
    # 85 spare points split 1 : 0 : 3 = 21.25 : 0 : 63.75 -> 21 : 0 : 63, the leftover point to the larger remainder.
    np.testing.assert_array_equal(counts, [5 + 21, 5, 5 + 64])
    assert allocate_points([1.0, 1.0], 1, 4).tolist() == [4, 4]  # the floor wins over the total
    with pytest.raises(ValueError):
        allocate_points([], 10, 1)
    with pytest.raises(ValueError):
        allocate_points([-1.0], 10, 1)


def test_sample_parts_is_seeded_and_colours_come_from_the_named_colour():
    parts = [Box((0, 0, 0), (1, 1, 0.1)), Cylinder((0.5, 0.5), 0.1, 0.5, 0.05)]
    first = sample_parts(np.random.default_rng(3), parts, "red", 300, noise_m=0.001)
    second = sample_parts(np.random.default_rng(3), parts, "red", 300, noise_m=0.001)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    xyz, rgb, part = first
    assert xyz.shape == (300, 3) and rgb.dtype == np.uint8 and set(part.tolist()) == {0, 1}
    np.testing.assert_allclose(rgb.mean(axis=0) / 255, NAMED_COLORS["red"], atol=0.02)
    with pytest.raises(ValueError, match="unknown colour"):
        sample_parts(np.random.default_rng(0), parts, "mauve", 10)
    with pytest.raises(ValueError):
        Box((0, 0, 0), (1, -1, 1))


# --------------------------------------------------------------------------------------------- rooms ----
DEFINING_OBJECTS = {
    "bedroom": {"door", "bed", "pillow"}, "living room": {"door", "sofa", "pillow"},
    "office": {"door", "desk", "chair"}, "kitchen": {"door", "counter", "sink", "refrigerator", "table"},
    "bathroom": {"door", "bathtub", "toilet", "cabinet", "sink"},
}


@pytest.mark.parametrize("room_type", ROOM_TYPES)
def test_rooms_keep_objects_inside_and_apart(room_type: str):
    layout = generate_room(np.random.default_rng([5, 1]), room_type)
    assert DEFINING_OBJECTS[room_type] <= set(layout_summary(layout))
    room = np.array([layout.width, layout.depth, layout.height])
    boxes = [obj.bounds for obj in layout.objects]
    for lo, hi in boxes:
        assert (lo >= -1e-9).all() and (hi <= room + 1e-9).all()
    for i, (lo_i, hi_i) in enumerate(boxes):
        for j in range(i):
            touching = layout.objects[i].on == j or layout.objects[j].on == i
            shower = {layout.objects[i].raw_label, layout.objects[j].raw_label} == {"shower curtain", "bathtub"}
            overlap = np.all(lo_i < boxes[j][1]) and np.all(boxes[j][0] < hi_i)
            assert touching or shower or not overlap, (layout.objects[i].raw_label, layout.objects[j].raw_label)
    with pytest.raises(ValueError, match="unknown room type"):
        generate_room(np.random.default_rng(0), "garage")


# ------------------------------------------------------------------------------------- files on disk ----
def test_build_is_deterministic_for_a_seed(demo_root: Path, tmp_path: Path):
    again = build_demo_scenes(tmp_path / "again", progress=False, **SMALL)
    files = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (demo_root / name).read_bytes() == (again / name).read_bytes(), name
    other = build_demo_scenes(tmp_path / "other", progress=False, **{**SMALL, "seed": 1, "num_scenes": 1})
    assert _load(other, "scanrefer", "train") != _load(demo_root, "scanrefer", "train")


def test_scenes_read_back_with_the_written_objects_and_classes(scenes: dict):
    label_map = load_label_map(None)
    for scene_id, (scene, entry, facts, _) in scenes.items():
        written = {obj["object_id"]: obj["label"] for obj in entry["objects"]}
        assert {obj.object_id: obj.label for obj in scene.objects} == written
        assert scene.meta["n_vertices"] == entry["n_vertices"]
        assert scene.meta["unknown_label_counts"] == {} and scene.meta["n_unassigned_vertices"] == 0
        for obj in scene.objects:
            assert obj.scanrefer_class == label_map.get(obj.label).scanrefer_class
        assert not np.allclose(scene.axis_alignment, np.eye(4))  # stored turned; the reader undoes it
        floor = next(obj for obj in scene.objects if obj.label == "floor")
        width, depth, _ = entry["room_size"]
        np.testing.assert_allclose(floor.box_min, [0, 0, 0], atol=0.02)
        np.testing.assert_allclose(floor.box_max, [width, depth, 0], atol=0.02)
        assert {obj.noun for obj in facts.objects}.isdisjoint({"floor", "wall"})
        assert Counter(obj.label for obj in scene.objects)["wall"] == 4
    room_types = Counter(entry["room_type"] for _, entry, _, _ in scenes.values())
    assert len(room_types) == 4  # bedroom, living room, office, kitchen for seed 0


def test_named_colours_match_the_points(scenes: dict):
    names = list(NAMED_COLORS)
    palette = np.array([NAMED_COLORS[name] for name in names])
    for scene, entry, _, _ in scenes.values():
        colour = {obj["object_id"]: obj["color"] for obj in entry["objects"]}
        for obj in scene.objects:
            median = np.median(obj.colors, axis=0)
            assert names[int(np.argmin(((palette - median) ** 2).sum(axis=1)))] == colour[obj.object_id], obj.label


def test_supported_objects_stand_on_their_support(scenes: dict):
    checked = Counter()
    for scene, entry, _, _ in scenes.values():
        for record in entry["objects"]:
            if record["supported_by"] is None:
                continue
            child, parent = scene.get_object(record["object_id"]), scene.get_object(record["supported_by"])
            inside = (child.box_min[:2] >= parent.box_min[:2] - 0.02).all() and \
                (child.box_max[:2] <= parent.box_max[:2] + 0.02).all()
            assert inside, (child.label, parent.label)
            if parent.label in ("bed", "sofa"):  # lies on the mattress / seat, below the headboard / back
                assert child.box_min[2] < parent.box_max[2]
            else:
                assert abs(float(child.box_min[2] - parent.box_max[2])) <= 0.02, (child.label, parent.label)
            checked[child.label] += 1
    assert checked["lamp"] >= 1 and sum(checked.values()) >= 5


# ------------------------------------------------------------------------------------------ language ----
def test_every_referring_expression_identifies_its_target(demo_root: Path, scenes: dict):
    rows, meta = _all(demo_root, "scanrefer"), _all(demo_root, "scanrefer_meta")
    assert len(rows) == len(meta) > 50
    kinds = Counter()
    for row, info in zip(rows, meta):
        key = ("scene_id", "object_id", "ann_id")
        assert [row[k] for k in key] == [info[k] for k in key]
        _, entry, facts, relations = scenes[row["scene_id"]]
        node = next(i for i, obj in enumerate(facts.objects) if obj.object_id == int(row["object_id"]))
        query = Query(**info["query"])
        assert resolve(query, facts, relations) == [node], row["description"]
        assert query.noun in row["description"] and query.noun.replace(" ", "_") == row["object_name"]
        # unique / multiple from the read-back classes, counted by hand.
        classes = Counter(obj.eval_class for obj in facts.objects)
        assert info["unique_multiple"] == ("unique" if classes[facts.objects[node].eval_class] == 1 else "multiple")
        if set(info["query"]) == {"noun", "color"}:  # a colour-only description: the colour is unique, by hand
            same = [o for o in entry["objects"] if o["label"] == query.noun and o["color"] == query.color]
            assert len(same) == 1
        kinds[info["kind"]] += 1
    assert set(kinds) == {"attribute", "relational", "view_dependent"}
    assert {info["unique_multiple"] for info in meta} == {"unique", "multiple"}


def test_referring_and_qa_files_have_exactly_the_release_schemas(demo_root: Path):
    for split in SPLITS:
        for row in _load(demo_root, "scanrefer", split):
            assert set(row) == SCANREFER_KEYS
            assert row["object_id"].isdigit() and row["ann_id"].isdigit()
            assert row["token"] == tokenize(row["description"]) and all(isinstance(t, str) for t in row["token"])
        for row in _load(demo_root, "scanqa", split):
            assert set(row) == SCANQA_KEYS
            assert row["question_id"].startswith(f"{split}-scene")
            assert all(isinstance(i, int) for i in row["object_ids"]) and row["answers"]
            assert len(row["object_ids"]) == len(row["object_names"]) >= 1
        for row in _load(demo_root, "captions", split):
            assert set(row) == CAPTION_KEYS
        # The project's own readers accept the files.
        names = file_names(split)
        assert len(read_scanrefer(demo_root / names["scanrefer"])) == len(_load(demo_root, "scanrefer", split))
        assert len(read_scanqa(demo_root / names["scanqa"])) == len(_load(demo_root, "scanqa", split))


def test_count_answers_equal_the_real_counts(demo_root: Path, scenes: dict):
    rows, meta = _all(demo_root, "scanqa"), _all(demo_root, "scanqa_meta")
    types = Counter(info["question_type"] for info in meta)
    assert set(types) == {"what", "colour", "count", "where", "which"}
    for row, info in zip(rows, meta):
        scene = scenes[row["scene_id"]][0]
        labels = {obj.object_id: obj.label for obj in scene.objects}
        assert [labels[i] for i in row["object_ids"]] == row["object_names"]
        if info["question_type"] == "colour":
            colour = {o["object_id"]: o["color"] for o in scenes[row["scene_id"]][1]["objects"]}
            assert row["answers"] == [colour[row["object_ids"][0]]]
        if info["question_type"] != "count":
            continue
        assert row["answers"] == [str(len(row["object_ids"]))]
        if row["question"].endswith("are there in the room?"):
            noun = row["object_names"][0]
            assert int(row["answers"][0]) == sum(label == noun for label in labels.values())


def test_where_and_what_answers_follow_support(demo_root: Path, scenes: dict):
    for row, info in zip(_all(demo_root, "scanqa"), _all(demo_root, "scanqa_meta")):
        entry = scenes[row["scene_id"]][1]
        table = {o["object_id"]: o for o in entry["objects"]}
        if info["question_type"] == "where":
            target = table[row["object_ids"][0]]
            if target["supported_by"] is not None:
                assert row["answers"][0] == f"on the {table[target['supported_by']]['label']}"
        if info["question_type"] == "what" and row["question"].startswith("what is on"):
            anchor = info["about_object_ids"][0]
            assert all(table[i]["supported_by"] == anchor for i in row["object_ids"])


def test_splits_are_disjoint_and_cover_every_scene(demo_root: Path):
    splits = json.loads((demo_root / "splits.json").read_text())
    ids = [scene_id for split in SPLITS for scene_id in splits[split]]
    assert len(ids) == len(set(ids)) == SMALL["num_scenes"]
    assert all(splits[split] for split in SPLITS)  # 4 scenes: 2 train, 1 val, 1 test
    for split in SPLITS:
        assert (demo_root / file_names(split)["scene_list"]).read_text().split() == splits[split]
        for key in ("scanrefer", "scanqa", "captions"):
            assert {row["scene_id"] for row in _load(demo_root, key, split)} <= set(splits[split])
    info = json.loads((demo_root / "dataset_info.json").read_text())
    assert info["args"] == demo_build_args(**SMALL) and info["version"] == demo_build.DEMO_VERSION
    assert (demo_root / "README.txt").read_text().startswith("scene3d demo scene set")


# ---------------------------------------------------------------------------- language on a toy scene ----
def _toy_scene() -> tuple[SceneFacts, SceneRelations]:
    """A 4 x 4 m room: a table with a lamp on it, a red chair left and a blue chair right of the table (seen
    facing the window on wall 2, y = 4), a bed by wall 0."""
    objects = (
        ObjectFacts(0, "table", "table", "brown", (2.0, 2.0, 0.375), (1.0, 0.8, 0.75)),
        ObjectFacts(1, "lamp", "others", "white", (2.0, 2.0, 0.95), (0.2, 0.2, 0.4)),
        ObjectFacts(2, "chair", "chair", "red", (1.2, 2.0, 0.45), (0.45, 0.45, 0.9)),
        ObjectFacts(3, "chair", "chair", "blue", (2.8, 2.0, 0.45), (0.45, 0.45, 0.9)),
        ObjectFacts(4, "window", "window", "white", (2.0, 3.96, 1.5), (1.2, 0.08, 1.2), wall=2),
        ObjectFacts(5, "bed", "bed", "white", (3.0, 0.5, 0.3), (1.4, 1.0, 0.6), wall=0),
    )
    normals = {0: (0.0, 1.0), 1: (-1.0, 0.0), 2: (0.0, -1.0), 3: (1.0, 0.0)}
    facts = SceneFacts("scene9999_00", objects, normals, supported_by=((1, 0),))
    return facts, SceneRelations(facts)


def test_resolve_on_a_hand_made_scene():
    facts, relations = _toy_scene()
    assert resolve(Query("lamp", relation="on", anchor_noun="table"), facts, relations) == [1]
    assert resolve(Query("table", relation="supports", anchor_noun="lamp"), facts, relations) == [0]
    assert resolve(Query("chair"), facts, relations) == [2, 3]  # two chairs: ambiguous
    assert resolve(Query("chair", color="red"), facts, relations) == [2]
    # Facing the window (wall 2, looking towards +y), x grows to the right: the red chair (x = 1.2) is left.
    assert resolve(Query("chair", extreme="left", facing="window"), facts, relations) == [2]
    assert resolve(Query("chair", extreme="right", facing="window"), facts, relations) == [3]
    # Facing the bed (wall 0, looking towards -y), left and right swap.
    assert resolve(Query("chair", extreme="left", facing="bed"), facts, relations) == [3]
    assert resolve(Query("chair", relation="view_left_of", anchor_noun="table", facing="window"),
                   facts, relations) == [2]
    assert resolve(Query("chair", relation="next_to", anchor_noun="table"), facts, relations) == [2, 3]
    assert resolve(Query("chair", extreme="left", facing="lamp"), facts, relations) == []  # the lamp is on no wall
    assert facts.unique_multiple(0) == "unique" and facts.unique_multiple(2) == "multiple"
    with pytest.raises(ValueError, match="facing"):
        Query("chair", extreme="left")
    with pytest.raises(ValueError, match="anchor"):
        Query("chair", relation="on")


def test_generated_language_on_a_hand_made_scene_is_honest_and_seeded():
    facts, relations = _toy_scene()
    expressions = referring_expressions(facts, relations, np.random.default_rng(0))
    again = referring_expressions(facts, relations, np.random.default_rng(0))
    assert expressions == again and expressions
    for expression in expressions:
        assert resolve(expression.query, facts, relations) == [expression.target]
    chair_texts = [e.text for e in expressions if e.target == 2]
    assert chair_texts and all("chair" in text for text in chair_texts)
    asked = questions(facts, relations, np.random.default_rng(0), per_type=10)
    counts = {q.question: q.answers for q in asked if q.question_type == "count"}
    assert counts["how many chairs are there in the room?"] == ("2",)
    assert counts["how many chairs are next to the table?"] == ("2",)
    what = [q for q in asked if q.question == "what is on the table?"]
    assert what and what[0].answers == ("lamp",) and what[0].targets == (1,)
    where = next(q for q in asked if q.question == "where is the lamp?")
    assert where.answers[0] == "on the table"


# ------------------------------------------------------------------------------------ ensure and CLI ----
def test_ensure_reuses_rebuilds_and_refuses_foreign_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    small = {"num_scenes": 1, "seed": 0, "points_per_scene": 2000, "progress": False}
    root = ensure_demo_scenes(tmp_path / "scenes", **small)
    assert (root / "scans" / "scene0000_00").is_dir()
    built = []
    original = demo_build.build_demo_scenes

    def counting_build(*args, **kwargs):
        built.append(kwargs["seed"])
        return original(*args, **kwargs)

    monkeypatch.setattr(demo_build, "build_demo_scenes", counting_build)
    assert ensure_demo_scenes(tmp_path / "scenes", **small) == root and built == []  # reused
    ensure_demo_scenes(tmp_path / "scenes", **{**small, "seed": 3})  # other arguments: rebuilt
    assert built == [3] and json.loads((root / "dataset_info.json").read_text())["args"]["seed"] == 3
    ensure_demo_scenes(tmp_path / "scenes", **{**small, "seed": 3}, force=True)
    assert built == [3, 3]
    assert not list(tmp_path.glob(".scenes.building-*")) and not list(tmp_path.glob(".scenes.old-*"))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a demo scene set"):
        ensure_demo_scenes(tmp_path / "foreign", **small)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_concurrent_ensure_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    small = {"num_scenes": 1, "seed": 0, "points_per_scene": 2000, "progress": False}
    built = []
    original = demo_build.build_demo_scenes

    def counting_build(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(demo_build, "build_demo_scenes", counting_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo_scenes(tmp_path / "s", **small)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and len(results) == 2 and results[0] == results[1]


def test_bad_arguments_raise(tmp_path: Path):
    for bad in ({"num_scenes": 0}, {"seed": -1}, {"points_per_scene": 10}, {"noise_m": -0.1},
                {"num_scenes": True}, {"questions_per_type": 0}):
        with pytest.raises(ValueError):
            demo_build_args(**bad)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        build_demo_scenes(tmp_path / "full", num_scenes=1, progress=False)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert demo_main([str(tmp_path / "cli"), "--num-scenes", "1", "--points-per-scene", "2000", "--no-progress"]) == 0
    assert "referring expressions" in capsys.readouterr().out
    with pytest.raises(SystemExit) as error:
        demo_main([str(tmp_path / "cli2"), "--num-scenes", "0"])
    assert error.value.code == 2
