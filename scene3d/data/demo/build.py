"""Build the demo scene set on disk (ScanNet scans + ScanRefer / ScanQA / Scan2Cap-style language), and reuse it.

Per scene: a procedural room (`rooms.generate_room`) is point-sampled (`primitives.sample_parts`), cut into
segments, shuffled, moved into a random scan frame and written with `scannet.write_scannet_scene` together
with the axis alignment that undoes the move. The scene is then read back with `scannet.read_scannet_scene`,
so the boxes the language is generated from are exactly the boxes every consumer of the files computes;
the language (`language.py`) comes from the scene graph of those boxes.

`build_demo_scenes` writes a set into an empty folder; `ensure_demo_scenes` is what training calls: it
returns the existing build when `dataset_info.json` records the same arguments, version and scene-graph
thresholds, and otherwise
rebuilds under an exclusive file lock into a temporary folder that is renamed into place, so concurrent
callers (several DDP ranks, two jobs) never see a half-written set.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.build_once import build_folder_once, read_json_file
from common.io import atomic_write_json, atomic_write_text
from scene3d.data.demo.furniture import CATEGORY_COLORS
from scene3d.data.demo.language import (
    QUESTION_TYPES,
    REFERRING_KINDS,
    ObjectFacts,
    SceneFacts,
    SceneRelations,
    caption,
    questions,
    referring_expressions,
    tokenize,
)
from scene3d.data.demo.primitives import allocate_points, sample_parts
from scene3d.data.demo.rooms import (
    ROOM_TYPES,
    RoomLayout,
    generate_room,
    in_openings,
    room_floor_area,
    structure_parts,
    wall_frame,
)
from scene3d.data.scannet import Scene, read_scannet_scene, write_scannet_scene
from scene3d.data.scene_graph import SceneGraphConfig

log = logging.getLogger(__name__)

#: Bump when the generated data changes for the same arguments (ensure_demo_scenes then rebuilds).
DEMO_VERSION = 1
CREATED_WITH = "scene3d.data.demo"
INFO_NAME = "dataset_info.json"
README_NAME = "README.txt"
SCANS_DIR = "scans"
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
STRUCTURE_LABELS = ("floor", "wall")  # written as objects, never referred to
STRUCTURE_COLORS = {"floor": ("brown", "grey", "beige"), "wall": ("white", "beige", "grey")}
STRUCTURE_SHARE = 0.3  # share of a scene's points on floor and walls
MIN_OBJECT_POINTS = 60
SEGMENT_POINTS = 300  # about this many points per segment (ScanNet's over-segmentation is finer on real meshes)
REFERENCE_FLOOR_AREA = 20.0  # m^2: a room this size gets points_per_scene points; others scale with sqrt(area)
# 3DSSG's predicate index of "supported by" (its relationships.txt: 0 none, 1 supported by, ...).
THREE_DSSG_SUPPORTED_BY = (1, "supported by")


def file_names(split: str) -> dict[str, str]:
    """Names of the per-split language files (ScanRefer / ScanQA release names where they exist)."""
    return {
        "scanrefer": f"ScanRefer_filtered_{split}.json",
        "scanrefer_meta": f"ScanRefer_filtered_{split}_meta.json",
        "scanqa": f"ScanQA_v1.0_{split}.json",
        "scanqa_meta": f"ScanQA_v1.0_{split}_meta.json",
        "captions": f"Scan2Cap_{split}.json",
        "scene_list": f"scannetv2_{split}.txt",
    }


@dataclass
class GeneratedScene:
    """One scene, ready to write.

    Attributes:
        scene_id, room_type: identifiers.
        layout: the room it was sampled from.
        xyz: vertex positions in the scan frame (before axis alignment), float64 (V, 3).
        rgb: uint8 (V, 3). seg_indices: int64 (V,).
        seg_groups: ScanNet segGroups (objectId, label, segments).
        axis_alignment: (4, 4) scan frame -> room frame.
        objects: per objectId: label, color, wall, supported_by (objectId or None), structure (bool).
    """

    scene_id: str
    room_type: str
    layout: RoomLayout
    xyz: np.ndarray
    rgb: np.ndarray
    seg_indices: np.ndarray
    seg_groups: list[dict[str, Any]]
    axis_alignment: np.ndarray
    objects: list[dict[str, Any]]


def scene_id_of(index: int) -> str:
    """ScanNet-style id of scene `index` ("scene0007_00")."""
    return f"scene{index:04d}_00"


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, scene, purpose): a scene never depends on how many are built."""
    return np.random.default_rng([seed, index, stream])


def assign_splits(num_scenes: int, seed: int) -> list[str]:
    """Split of each scene index: a seeded permutation cut 70/15/15 (val and test get at least one scene each
    once there are 3 or more)."""
    n_val = round(SPLIT_FRACTIONS["val"] * num_scenes)
    n_test = round(SPLIT_FRACTIONS["test"] * num_scenes)
    if num_scenes >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_scenes)
    splits = ["train"] * num_scenes
    for rank, scene in enumerate(order):
        if rank < n_val:
            splits[scene] = "val"
        elif rank < n_val + n_test:
            splits[scene] = "test"
    return splits


def _segment_ids(xyz: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Segment index per point: each group (an object part, a wall) cut into runs of ~SEGMENT_POINTS points
    along its longest axis; (P, 3), (P,) -> (P,) int64 numbered from 0."""
    segments = np.empty(xyz.shape[0], dtype=np.int64)
    next_id = 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        n_chunks = max(1, math.ceil(members.size / SEGMENT_POINTS))
        axis = int(np.argmax(np.ptp(xyz[members], axis=0)))
        order = members[np.argsort(xyz[members, axis], kind="stable")]
        for chunk in np.array_split(order, n_chunks):
            segments[chunk] = next_id
            next_id += 1
    return segments


def _random_alignment(rng: np.random.Generator) -> np.ndarray:
    """A ScanNet-like axis alignment: a turn about z and a shift (scan frame -> room frame), (4, 4)."""
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = np.eye(4)
    matrix[:2, :2] = [[cos, -sin], [sin, cos]]
    matrix[:3, 3] = [float(rng.uniform(-4.0, 4.0)), float(rng.uniform(-4.0, 4.0)), float(rng.uniform(-0.3, 0.3))]
    return matrix


def make_scene(index: int, *, seed: int, points_per_scene: int, noise_m: float) -> GeneratedScene:
    """Generate scene `index`: lay out the room, sample its points, cut segments, move it into a scan frame."""
    room_type = ROOM_TYPES[(index + seed) % len(ROOM_TYPES)]
    layout = generate_room(_rng(seed, index, 0), room_type)
    rng = _rng(seed, index, 1)
    area_scale = float(np.clip(math.sqrt(room_floor_area(layout) / REFERENCE_FLOOR_AREA), 2 / 3, 4 / 3))
    total = round(points_per_scene * area_scale)
    object_counts = allocate_points([sum(part.area() for part in obj.parts) for obj in layout.objects],
                                    round(total * (1 - STRUCTURE_SHARE)), MIN_OBJECT_POINTS)

    xyz_list, rgb_list, group_list, objects, seg_groups_raw = [], [], [], [], []
    group_offset = 0
    for object_id, (placed, n_points) in enumerate(zip(layout.objects, object_counts)):
        xyz, rgb, part = sample_parts(rng, placed.parts, placed.color, int(n_points), noise_m=noise_m)
        xyz_list.append(xyz)
        rgb_list.append(rgb)
        group_list.append(part + group_offset)  # one group per part of every object
        seg_groups_raw.append((object_id, placed.raw_label, np.unique(part + group_offset)))
        group_offset += len(placed.parts)
        # Object ids are layout indices, so `placed.on` (a layout index) is the supporting object's id.
        objects.append({"object_id": object_id, "label": placed.raw_label, "color": placed.color,
                        "wall": placed.wall, "supported_by": placed.on, "structure": False})

    surfaces = structure_parts(layout)
    flat = [(label, box, wall) for label in STRUCTURE_LABELS for box, wall in surfaces[label]]
    structure_counts = allocate_points([box.area() for _, box, _ in flat], total - int(object_counts.sum()), 100)
    next_id = len(layout.objects)
    for (label, box, wall), n_points in zip(flat, structure_counts):
        color = str(rng.choice(STRUCTURE_COLORS[label]))
        xyz, rgb, part = sample_parts(rng, [box], color, int(n_points), noise_m=noise_m)
        if wall is not None:
            keep = ~in_openings(layout, wall, xyz)  # no wall surface behind doors and windows
            xyz, rgb, part = xyz[keep], rgb[keep], part[keep]
        xyz_list.append(xyz)
        rgb_list.append(rgb)
        group_list.append(part + group_offset)
        seg_groups_raw.append((next_id, label, np.array([group_offset])))
        group_offset += 1
        objects.append({"object_id": next_id, "label": label, "color": color, "wall": wall, "supported_by": None,
                        "structure": True})
        next_id += 1

    xyz, rgb, groups = np.concatenate(xyz_list), np.concatenate(rgb_list), np.concatenate(group_list)
    segments = _segment_ids(xyz, groups)
    # ScanNet's segment ids are arbitrary integers: renumber with a random permutation.
    renumber = rng.permutation(int(segments.max()) + 1)
    segment_of_group = {int(g): np.unique(renumber[segments[groups == g]]) for g in np.unique(groups)}
    seg_groups = [{"objectId": object_id, "label": label,
                   "segments": sorted(int(s) for g in member_groups for s in segment_of_group[int(g)])}
                  for object_id, label, member_groups in seg_groups_raw]
    order = rng.permutation(xyz.shape[0])  # mesh vertices come in no particular order
    alignment = _random_alignment(_rng(seed, index, 2))
    # Room frame -> scan frame: x_scan = R^T (x_room - t), the inverse of the alignment.
    scan_xyz = (xyz[order] - alignment[:3, 3]) @ alignment[:3, :3]
    return GeneratedScene(
        scene_id=scene_id_of(index), room_type=room_type, layout=layout, xyz=scan_xyz, rgb=rgb[order],
        seg_indices=renumber[segments][order], seg_groups=seg_groups, axis_alignment=alignment, objects=objects,
    )


def scene_entry(generated: GeneratedScene, split: str) -> dict[str, Any]:
    """The scene's record in objects.json: split, room type and size, and per object its label, colour, wall,
    support and whether it is referable (floor and walls are not)."""
    layout = generated.layout
    return {
        "split": split, "room_type": generated.room_type, "room_size": [layout.width, layout.depth, layout.height],
        "n_vertices": int(generated.xyz.shape[0]),
        "objects": [{key: obj[key] for key in ("object_id", "label", "color", "wall", "supported_by")}
                    | {"referable": not obj["structure"]} for obj in generated.objects],
    }


def facts_from_scene(scene: Scene, entry: dict[str, Any]) -> SceneFacts:
    """Language facts of a scene read with `read_scannet_scene`: its boxes, with the colours, walls and supports
    of its objects.json `entry` (`scene_entry`).

    Raises:
        ValueError: the scene's objects or labels differ from the entry's (a writer / reader mismatch).
    """
    table = {obj["object_id"]: obj for obj in entry["objects"]}
    read = {obj.object_id: obj for obj in scene.objects}
    if set(read) != set(table) or any(read[i].label != table[i]["label"] for i in table):
        raise ValueError(
            f"{scene.scene_id}: objects read back {sorted(read)} differ from those written {sorted(table)}"
        )
    referable = [obj for obj in scene.objects if table[obj.object_id]["referable"]]
    node_of = {obj.object_id: node for node, obj in enumerate(referable)}
    objects = tuple(
        ObjectFacts(
            object_id=obj.object_id, noun=obj.label, eval_class=obj.scanrefer_class,
            color=table[obj.object_id]["color"],
            center=tuple(float(v) for v in obj.center), size=tuple(float(v) for v in obj.size),
            wall=table[obj.object_id]["wall"],
        )
        for obj in referable
    )
    supports = tuple((node_of[obj.object_id], node_of[table[obj.object_id]["supported_by"]]) for obj in referable
                     if table[obj.object_id]["supported_by"] is not None)
    width, depth, _ = entry["room_size"]
    normals = {wall: tuple(float(v) for v in wall_frame(width, depth, wall)[2]) for wall in range(4)}
    return SceneFacts(scene.scene_id, objects, normals, supports)


def scene_language(facts: SceneFacts, *, seed: int, index: int, split: str, descriptions_per_kind: int,
                   questions_per_type: int) -> dict[str, list[dict]]:
    """ScanRefer, ScanQA and caption records (plus their metadata) of one scene."""
    relations = SceneRelations(facts)
    objects = facts.objects
    scanrefer, scanrefer_meta = [], []
    ann_ids: Counter[int] = Counter()
    for expression in referring_expressions(facts, relations, _rng(seed, index, 3), per_kind=descriptions_per_kind):
        target = objects[expression.target]
        ann_id = ann_ids[target.object_id]
        ann_ids[target.object_id] += 1
        scanrefer.append({
            "scene_id": facts.scene_id, "object_id": str(target.object_id),
            "object_name": target.noun.replace(" ", "_"), "ann_id": str(ann_id),
            "description": expression.text, "token": tokenize(expression.text),
        })
        scanrefer_meta.append({
            "scene_id": facts.scene_id, "object_id": str(target.object_id), "ann_id": str(ann_id),
            "kind": expression.kind, "unique_multiple": expression.unique_multiple,
            "eval_class": target.eval_class, "query": expression.query.to_json(),
        })
    scanqa, scanqa_meta = [], []
    number = facts.scene_id.split("_")[0]
    for k, question in enumerate(questions(facts, relations, _rng(seed, index, 4), per_type=questions_per_type)):
        question_id = f"{split}-{number}-{k}"
        scanqa.append({
            "question_id": question_id, "scene_id": facts.scene_id, "question": question.question,
            "answers": list(question.answers), "object_ids": [objects[i].object_id for i in question.targets],
            "object_names": [objects[i].noun for i in question.targets],
        })
        scanqa_meta.append({
            "question_id": question_id, "question_type": question.question_type,
            "about_object_ids": [objects[i].object_id for i in question.about],
        })
    caption_rng = _rng(seed, index, 5)
    captions = [{"scene_id": facts.scene_id, "object_id": str(obj.object_id), "object_name": obj.noun.replace(" ", "_"),
                 "description": caption(node, facts, relations, caption_rng)} for node, obj in enumerate(objects)]
    return {"scanrefer": scanrefer, "scanrefer_meta": scanrefer_meta, "scanqa": scanqa, "scanqa_meta": scanqa_meta,
            "captions": captions}


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def demo_build_args(*, num_scenes: int = 60, seed: int = 0, points_per_scene: int = 30000, noise_m: float = 0.002,
                    descriptions_per_kind: int = 1, questions_per_type: int = 5) -> dict:
    """Check the build arguments and return them as the JSON dict recorded in `dataset_info.json`.

    Raises:
        ValueError: a value out of range (the message says which).
    """
    args = {
        "num_scenes": _check_int("num_scenes", num_scenes, 1),
        "seed": _check_int("seed", seed, 0),
        "points_per_scene": _check_int("points_per_scene", points_per_scene, 2000),
        "descriptions_per_kind": _check_int("descriptions_per_kind", descriptions_per_kind, 1),
        "questions_per_type": _check_int("questions_per_type", questions_per_type, 1),
    }
    if num_scenes > 9999:
        raise ValueError(f"num_scenes must be <= 9999 (scene ids are scene0000_00 .. scene9999_00), got {num_scenes}")
    if not (isinstance(noise_m, (int, float)) and not isinstance(noise_m, bool) and math.isfinite(noise_m)
            and 0 <= noise_m <= 0.01):
        raise ValueError(f"noise_m must be a number in [0, 0.01] metres (scanner noise), got {noise_m!r}")
    args["noise_m"] = float(noise_m)
    return args


def graph_config_json() -> dict:
    """The scene-graph thresholds the language is generated with (`SceneGraphConfig()` defaults), as JSON.

    Recorded in dataset_info.json: when the defaults change, the relations and so the text change, and
    `ensure_demo_scenes` rebuilds.
    """
    return json.loads(json.dumps(asdict(SceneGraphConfig())))


def _make_readable(root: Path) -> None:
    """Give every file of the set mode 0o644: the atomic writes create private (0o600) temp files, and a demo
    set is shared by every user and job on a machine."""
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def build_demo_scenes(out_dir: str | Path, *, num_scenes: int = 60, seed: int = 0, points_per_scene: int = 30000,
                      noise_m: float = 0.002, descriptions_per_kind: int = 1, questions_per_type: int = 5,
                      progress: bool = True) -> Path:
    """Write the demo scene set into `out_dir` (created; must be absent or empty) and return `out_dir`.

    Args:
        out_dir: dataset folder.
        num_scenes: rooms to generate (room types rotate: bedroom, living room, office, kitchen, bathroom).
        seed: everything (layouts, points, segments, alignment, language, splits) is a function of the seed.
        points_per_scene: vertices of a 20 m^2 room; others scale with the square root of their floor area
            (clipped to 2/3 .. 4/3 of it), about 30% of them on floor and walls.
        noise_m: standard deviation of the Gaussian noise added to every vertex (scanner noise), metres.
        descriptions_per_kind: referring expressions per object and kind (when that many exist).
        questions_per_type: questions per scene and type (when that many can be asked).
        progress: show a rich progress bar on stderr.

    Raises:
        ValueError: bad arguments (see `demo_build_args`), or `out_dir` exists and is not an empty folder.
    """
    args = demo_build_args(num_scenes=num_scenes, seed=seed, points_per_scene=points_per_scene, noise_m=noise_m,
                           descriptions_per_kind=descriptions_per_kind, questions_per_type=questions_per_type)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder; build the demo scenes into a new folder")
    scans = out_dir / SCANS_DIR
    scans.mkdir(parents=True, exist_ok=True)

    splits = assign_splits(num_scenes, seed)
    records: dict[str, dict[str, list]] = {split: {key: [] for key in ("scanrefer", "scanrefer_meta", "scanqa",
                                                                         "scanqa_meta", "captions")}
                                           for split in SPLITS}
    scene_table, relationships, room_types = {}, [], Counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"building demo scenes in {out_dir.name}", total=num_scenes)
        for index in range(num_scenes):
            generated = make_scene(index, seed=seed, points_per_scene=points_per_scene, noise_m=noise_m)
            scene_dir = write_scannet_scene(scans, generated.scene_id, generated.xyz, generated.rgb,
                                            generated.seg_indices, generated.seg_groups, generated.axis_alignment)
            entry = scene_entry(generated, splits[index])
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # an object skipped by the reader would be a bug here
                facts = facts_from_scene(read_scannet_scene(scene_dir, scene_id=generated.scene_id), entry)
            language = scene_language(facts, seed=seed, index=index, split=splits[index],
                                      descriptions_per_kind=descriptions_per_kind,
                                      questions_per_type=questions_per_type)
            for key, rows in language.items():
                records[splits[index]][key].extend(rows)
            room_types[generated.room_type] += 1
            scene_table[generated.scene_id] = entry
            relationships.append({
                "scan": generated.scene_id,
                "objects": {str(obj.object_id): obj.noun for obj in facts.objects},
                "relationships": [[facts.objects[child].object_id, facts.objects[parent].object_id,
                                   *THREE_DSSG_SUPPORTED_BY] for child, parent in facts.supported_by],
            })
            bar.advance(task)

    for split in SPLITS:
        names = file_names(split)
        for key in ("scanrefer", "scanrefer_meta", "scanqa", "scanqa_meta", "captions"):
            atomic_write_json(out_dir / names[key], records[split][key])
        ids = [scene_id_of(i) for i in range(num_scenes) if splits[i] == split]
        atomic_write_text(out_dir / names["scene_list"], "".join(f"{scene_id}\n" for scene_id in ids))
    atomic_write_json(out_dir / "splits.json", {split: [scene_id_of(i) for i in range(num_scenes) if splits[i] == split]
                                                for split in SPLITS})
    atomic_write_json(out_dir / "objects.json", scene_table)
    atomic_write_json(out_dir / "relationships.json", {"scans": relationships})
    stats = _statistics(records, scene_table, room_types)
    atomic_write_text(out_dir / README_NAME, _readme(args, stats))
    info = {"created_with": CREATED_WITH, "version": DEMO_VERSION, "args": args,
            "scene_graph_config": graph_config_json(), **stats}
    # Written last: a folder with dataset_info.json is a complete build.
    atomic_write_json(out_dir / INFO_NAME, info)
    _make_readable(out_dir)
    return out_dir


def _statistics(records: dict[str, dict[str, list]], scene_table: dict, room_types: Counter) -> dict:
    """Counts recorded in dataset_info.json and the README."""
    refer = [row for split in SPLITS for row in records[split]["scanrefer_meta"]]
    qa = [row for split in SPLITS for row in records[split]["scanqa_meta"]]
    labels = Counter(obj["label"] for scene in scene_table.values() for obj in scene["objects"] if obj["referable"])
    return {
        "num_scenes": len(scene_table),
        "split_counts": {split: sum(s["split"] == split for s in scene_table.values()) for split in SPLITS},
        "room_types": dict(sorted(room_types.items())),
        "object_labels": dict(sorted(labels.items())),
        "referring": {
            "total": len(refer),
            "per_split": {split: len(records[split]["scanrefer"]) for split in SPLITS},
            "kinds": {kind: sum(r["kind"] == kind for r in refer) for kind in REFERRING_KINDS},
            "unique_multiple": {name: sum(r["unique_multiple"] == name for r in refer)
                                for name in ("unique", "multiple")},
        },
        "questions": {
            "total": len(qa),
            "per_split": {split: len(records[split]["scanqa"]) for split in SPLITS},
            "types": {name: sum(r["question_type"] == name for r in qa) for name in QUESTION_TYPES},
        },
        "captions": sum(len(records[split]["captions"]) for split in SPLITS),
        "vertices": {"min": min(s["n_vertices"] for s in scene_table.values()),
                     "max": max(s["n_vertices"] for s in scene_table.values())},
    }


def _readme(args: dict, stats: dict) -> str:
    names = file_names("{split}")
    colours = ", ".join(sorted({c for cs in CATEGORY_COLORS.values() for c in cs}))
    return f"""scene3d demo scene set (version {DEMO_VERSION}), built by scene3d.data.demo
=========================================================================
Synthetic indoor rooms in ScanNet's file format with ScanRefer / ScanQA / Scan2Cap-style language, for
development and smoke tests. Build arguments: {json.dumps(args)}
Scenes: {stats['num_scenes']} (train {stats['split_counts']['train']}, val {stats['split_counts']['val']}, test \
{stats['split_counts']['test']}); splits are by scene, a seeded permutation cut 70/15/15.
Room types: {json.dumps(stats['room_types'])}.
Vertices per scene: {stats['vertices']['min']} .. {stats['vertices']['max']}.

Files
  scans/<scene_id>/
      ScanNet v2 scan: <scene>_vh_clean_2.ply (binary; x y z red green blue alpha; no faces),
      <scene>_vh_clean_2.0.010000.segs.json, <scene>.aggregation.json and <scene>.txt (axisAlignment: the
      scan is stored turned and shifted; read_scannet_scene undoes it)
  {names['scene_list']}
      scene ids of a split, one per line (ScanNet's split-file format); splits.json holds all three
  {names['scanrefer']}
      ScanRefer schema: scene_id, object_id (str), object_name ("_" for spaces), ann_id (str), description, token
  {names['scanrefer_meta']}
      one entry per ScanRefer entry, same order: scene_id, object_id, ann_id, kind (attribute / relational /
      view_dependent), unique_multiple, eval_class (ScanRefer class), query (the expression's meaning)
  {names['scanqa']}
      ScanQA schema: question_id, scene_id, question, answers, object_ids (int), object_names
  {names['scanqa_meta']}
      question_id, question_type (what / colour / count / where / which), about_object_ids (the anchors it
      names, e.g. the table of "what is on the table?"; the answer's objects are ScanQA's object_ids)
  {names['captions']}
      Scan2Cap-style captions, one per object: scene_id, object_id (str), object_name, description
  objects.json
      per scene: split, room_type, room_size [x, y, z] in m, n_vertices, objects (object_id, label, color,
      wall 0..3 or null, supported_by (an object_id) or null, referable)
  relationships.json
      the generator's support facts in 3DSSG format: scans[].objects {{id: label}}, scans[].relationships
      [[subject id, object id, 1, "supported by"]], ids being ScanNet objectIds
  dataset_info.json
      build arguments, version, scene-graph thresholds and the counts below (ensure_demo_scenes reads it)

Objects: labels are ScanNet raw categories (the label map sends them to NYU40 and ScanRefer's 18 classes); floor
and walls are objects labelled "floor" / "wall" but are never described. Colours: {colours}.
Object counts: {json.dumps(stats['object_labels'])}

Language (generated from scene3d.data.scene_graph relations of the boxes read back from the scans, plus the
generator's support facts as ground truth; see scene3d/data/demo/language.py for the exact meaning of each
phrase). Every referring expression identifies its object: no other object of the scene satisfies it (checked
when building). unique_multiple: "unique" when the target's ScanRefer class occurs once among the scene's
objects other than floor and walls ("others" counts as one class, as in ScanRefer). View-dependent expressions
("facing the window, the chair on the left") mean left / right for a viewer looking straight at the named
object's wall. Answers are lower case; counts are digits ("2"); several answers are all accepted.
Referring expressions: {json.dumps(stats['referring'])}
Questions: {json.dumps(stats['questions'])}
Captions: {stats['captions']}
"""


def _is_current(root: Path, args: dict) -> bool:
    info = read_json_file(root / INFO_NAME)
    return (info is not None and info.get("created_with") == CREATED_WITH and info.get("version") == DEMO_VERSION
            and info.get("args") == args and info.get("scene_graph_config") == graph_config_json()
            and (root / SCANS_DIR).is_dir())


def ensure_demo_scenes(root: str | Path, *, num_scenes: int = 60, seed: int = 0, points_per_scene: int = 30000,
                       noise_m: float = 0.002, descriptions_per_kind: int = 1, questions_per_type: int = 5,
                       progress: bool = True, force: bool = False) -> Path:
    """Return `root` (resolved), building the demo scenes first if they are absent, were built with other
    arguments, by another version of this code or with other scene-graph defaults (or `force`).

    Concurrency: see `common.build_once.build_folder_once` (exclusive lock, build in a temporary sibling
    folder, rename into place; a caller that waited for the lock finds the fresh build).

    Args: as `build_demo_scenes`; `force` rebuilds even when the existing build matches.

    Raises:
        ValueError: bad arguments, or `root` exists, is not empty and is not a demo scene set (never deleted).
    """
    build = {"num_scenes": num_scenes, "seed": seed, "points_per_scene": points_per_scene, "noise_m": noise_m,
             "descriptions_per_kind": descriptions_per_kind, "questions_per_type": questions_per_type}
    args = demo_build_args(**build)
    return build_folder_once(
        root, force=force, what="demo scene set",
        is_current=lambda folder: _is_current(folder, args),
        is_ours=lambda folder: (read_json_file(folder / INFO_NAME) or {}).get("created_with") == CREATED_WITH,
        build=lambda staging: build_demo_scenes(staging, progress=progress, **build),
    )
