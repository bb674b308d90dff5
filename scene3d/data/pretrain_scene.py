"""One scene prepared for pre-training: per-object point sets in a canonical scene frame, classes, descriptions.

`prepare_pretrain_scene` turns a `scannet.Scene` and its `ObjectDescription`s into a `PretrainScene`, once per
scene (the dataset then samples points, augments, masks and builds graphs from it at every access).

Scene frame: the scene is shifted so that the centre of the xy-box around all objects is at x = y = 0 and the
lowest object bottom at z = 0 (rooms of different sizes and scan origins line up; heights keep their meaning).
Each object keeps up to `max_stored_points` of its points (a seeded random subset), as xyz relative to its box
centre plus rgb in [0, 1], which bounds memory on real scans with 1e5+ vertices per scene.

Masked-object-modelling targets: every object whose NYU40 class is not room structure (`STRUCTURE_CLASSES`:
wall, floor, ceiling). Structure stays in the scene as context.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scene3d.data.labels import SCANREFER_CLASS_TO_ID
from scene3d.data.pretrain_language import ObjectDescription, resolve_anchor
from scene3d.data.scannet import Scene
from scene3d.data.scene_graph import RELATION_TO_ID, SceneGraphConfig, build_scene_graph

__all__ = [
    "STRUCTURE_CLASSES", "NodeDescription", "PretrainScene", "class_counts", "prepare_pretrain_scene",
    "scene_frame_origin", "summarize_stats",
]

STRUCTURE_CLASSES: tuple[str, ...] = ("wall", "floor", "ceiling")


@dataclass(frozen=True)
class NodeDescription:
    """A description attached to a node of the scene.

    Args:
        node: index of the described object in `PretrainScene` order.
        text: the referring expression.
        phrase: the object's noun phrase.
        anchor: node index of the anchor of the stated relation, or -1.
        relation: index into `scene_graph.RELATIONS` of the stated (node, relation, anchor) triplet, or -1.
    """

    node: int
    text: str
    phrase: str
    anchor: int = -1
    relation: int = -1


@dataclass
class PretrainScene:
    """Arrays of one scene for pre-training (N objects).

    Args:
        scene_id: the scene.
        points: per object, (P_i, 6) float32: xyz minus the object's box centre, then rgb in [0, 1].
        centers: box centres in the scene frame (module docstring), float32.
        sizes: box edge lengths, float32.
        classes: ScanRefer class id of every object (`labels.SCANREFER_CLASSES`).
        labels: raw category of every object.
        mom_eligible: True for objects that masked object modelling may mask and score.
        descriptions: the scene's descriptions, with node indices.
        stats: counts of what preparation dropped: `descriptions_unmatched` (object absent from the scene),
            `anchors_unresolved` (relation kept out: no object carries the anchor noun).

    Shapes:
        centers, sizes: (N, 3); classes: (N,) int64; mom_eligible: (N,) bool.
    """

    scene_id: str
    points: list[np.ndarray]
    centers: np.ndarray
    sizes: np.ndarray
    classes: np.ndarray
    labels: list[str]
    mom_eligible: np.ndarray
    descriptions: list[NodeDescription] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return len(self.points)


def scene_frame_origin(box_min: np.ndarray, box_max: np.ndarray) -> np.ndarray:
    """Origin of the scene frame: xy centre of the box around all objects, lowest bottom for z.

    Shapes:
        box_min, box_max: (N, 3) -> (3,)
    """
    low, high = box_min.min(axis=0), box_max.max(axis=0)
    return np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], dtype=np.float64)


def prepare_pretrain_scene(
    scene: Scene,
    descriptions: list[ObjectDescription] | None = None,
    *,
    max_stored_points: int = 2048,
    structure_classes: tuple[str, ...] = STRUCTURE_CLASSES,
    seed: int = 0,
) -> PretrainScene:
    """Convert a read scene and its descriptions into pre-training arrays (see the module docstring).

    Args:
        scene: from `scannet.read_scannet_scene`.
        descriptions: the scene's `ObjectDescription`s (None or [] for a scene without language). Those naming
            an object the scene lacks are dropped (counted in `stats`); relational ones get their anchor
            resolved with `pretrain_language.resolve_anchor` on the scene graph of all pairs.
        max_stored_points: most points kept per object (>= 1).
        structure_classes: NYU40 class names never used as masked-object targets.
        seed: seed of the per-object point subsets.

    Raises:
        ValueError: `max_stored_points` < 1, a scene without objects, objects with NaN / infinite points (the
            message names the scene and the objects), or a description of another scene.
    """
    if isinstance(max_stored_points, bool) or not isinstance(max_stored_points, int) or max_stored_points < 1:
        raise ValueError(f"max_stored_points must be an int >= 1, got {max_stored_points!r}")
    if not scene.objects:
        raise ValueError(f"scene {scene.scene_id} has no objects; it cannot be used for pre-training")
    rng = np.random.default_rng([seed, _stable_hash(scene.scene_id)])
    box_min = np.stack([obj.box_min for obj in scene.objects]).astype(np.float64)
    box_max = np.stack([obj.box_max for obj in scene.objects]).astype(np.float64)
    bad = ~(np.isfinite(box_min).all(axis=1) & np.isfinite(box_max).all(axis=1))  # (N,)
    if bad.any():
        ids = [scene.objects[i].object_id for i in np.flatnonzero(bad)[:10]]
        raise ValueError(f"scene {scene.scene_id}: objects {ids} have NaN or infinite point coordinates")
    origin = scene_frame_origin(box_min, box_max)
    centers = ((box_min + box_max) / 2 - origin).astype(np.float32)
    sizes = (box_max - box_min).astype(np.float32)
    points = []
    for obj, center in zip(scene.objects, (box_min + box_max) / 2):
        keep = np.arange(obj.points.shape[0])
        if keep.size > max_stored_points:
            keep = np.sort(rng.choice(keep.size, max_stored_points, replace=False))
        xyz = (obj.points[keep].astype(np.float64) - center).astype(np.float32)
        points.append(np.concatenate([xyz, obj.colors[keep]], axis=1).astype(np.float32))
    classes = np.array([SCANREFER_CLASS_TO_ID[obj.scanrefer_class] for obj in scene.objects], dtype=np.int64)
    eligible = np.array([obj.nyu40_class not in structure_classes for obj in scene.objects], dtype=bool)
    labels = [obj.label for obj in scene.objects]
    prepared = PretrainScene(scene_id=scene.scene_id, points=points, centers=centers, sizes=sizes, classes=classes,
                             labels=labels, mom_eligible=eligible)
    prepared.descriptions, prepared.stats = _attach_descriptions(scene, descriptions or [], centers, sizes, labels)
    return prepared


def _attach_descriptions(
    scene: Scene, descriptions: list[ObjectDescription], centers: np.ndarray, sizes: np.ndarray, labels: list[str]
) -> tuple[list[NodeDescription], dict[str, int]]:
    node_of = {obj.object_id: index for index, obj in enumerate(scene.objects)}
    stats: Counter[str] = Counter(descriptions_unmatched=0, anchors_unresolved=0)
    flags: dict[tuple[int, int], np.ndarray] | None = None
    attached = []
    for description in descriptions:
        if description.scene_id != scene.scene_id:
            raise ValueError(
                f"description of scene {description.scene_id} given for scene {scene.scene_id}; group "
                "descriptions by scene_id first"
            )
        node = node_of.get(description.object_id)
        if node is None:
            stats["descriptions_unmatched"] += 1
            continue
        anchor, relation = -1, -1
        if description.relation is not None and description.anchor_noun is not None:
            if flags is None:
                flags = _all_pair_flags(centers, sizes)
            relation_id = RELATION_TO_ID[description.relation]
            found = resolve_anchor(node, description.anchor_noun, relation_id, labels, centers, flags)
            if found is None:
                stats["anchors_unresolved"] += 1
            else:
                anchor, relation = found, relation_id
        attached.append(NodeDescription(node=node, text=description.text, phrase=description.phrase,
                                        anchor=anchor, relation=relation))
    return attached, dict(stats)


def _all_pair_flags(centers: np.ndarray, sizes: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(subject, object) -> relation flags over every ordered pair (class-agnostic: no same_class)."""
    graph = build_scene_graph(centers, sizes, torch.zeros(len(centers), dtype=torch.long),
                              config=SceneGraphConfig(k=None, same_class_ignore_ids=(0,)))
    pairs = graph.edge_index.t().tolist()
    values = graph.edge_attr.numpy() > 0
    return {(int(s), int(o)): values[e] for e, (s, o) in enumerate(pairs)}


def _stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's hash() is salted per process)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def class_counts(scenes: list[PretrainScene], num_classes: int) -> list[int]:
    """How many masked-object targets of each class the scenes hold (eligible objects only)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for scene in scenes:
        np.add.at(counts, scene.classes[scene.mom_eligible], 1)
    return [int(c) for c in counts]


def summarize_stats(scenes: list[PretrainScene]) -> dict[str, Any]:
    """Totals of the per-scene `stats` (for logging)."""
    total: Counter[str] = Counter()
    for scene in scenes:
        total.update(scene.stats)
    return dict(total)
