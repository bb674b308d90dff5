"""The language side of scene pre-training: ScanRefer descriptions with their noun phrases and stated relations.

Each ScanRefer entry (`ScanRefer_filtered_<split>.json`) becomes an `ObjectDescription`:

- `text`: the referring expression (for scene <-> text contrast and scene-conditioned MLM);
- `phrase`: the target's head noun phrase (for object <-> phrase contrast): "the <colour> <noun>" built from
  the entry's meta query when a `ScanRefer_filtered_<split>_meta.json` lies beside it (the demo set writes one:
  `query.noun`, `query.color`); without meta, the expression itself (it names the object, with context);
- `relation`, `anchor_noun`: the (target, relation, anchor) triplet the expression states, for relational
  meta entries (`kind == "relational"`, `query.relation` one of `scene_graph.RELATIONS`, `query.anchor_noun`).
  View-dependent expressions are not used as triplets: their relation holds for a viewer the 3D side does
  not know.

`resolve_anchor` then finds which object of the scene the anchor noun names (see there).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene3d.data.annotations import AnnotationReadError, read_scanrefer
from scene3d.data.labels import normalize_label
from scene3d.data.scene_graph import RELATION_TO_ID

__all__ = ["ObjectDescription", "read_pretrain_descriptions", "resolve_anchor"]

RELATIONAL_KIND = "relational"


@dataclass(frozen=True)
class ObjectDescription:
    """One description of one object, with what pre-training needs from it.

    Args:
        scene_id: ScanNet scene id.
        object_id: the target's `objectId`.
        text: the referring expression.
        phrase: the target's noun phrase ("the blue chair"), or `text` when no meta file gives the noun.
        relation: a `scene_graph.RELATIONS` name stated between the target (subject) and an anchor, or None.
        anchor_noun: the anchor's raw category ("table") when `relation` is set, else None.
    """

    scene_id: str
    object_id: int
    text: str
    phrase: str
    relation: str | None = None
    anchor_noun: str | None = None


def _read_meta(path: Path, expected: int) -> list[dict]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationReadError(f"{path}: cannot read the ScanRefer meta file ({error})") from error
    if not isinstance(meta, list) or len(meta) != expected:
        length = len(meta) if isinstance(meta, list) else type(meta).__name__
        raise AnnotationReadError(
            f"{path}: expected a list with one entry per ScanRefer entry ({expected}), got {length}; "
            "the meta file must be written together with its ScanRefer file"
        )
    return meta


def _from_meta(entry: dict, text: str, path: Path, index: int) -> tuple[str, str | None, str | None]:
    """(phrase, relation, anchor_noun) of one meta entry."""
    query = entry.get("query")
    if not isinstance(query, dict) or not isinstance(query.get("noun"), str):
        raise AnnotationReadError(f"{path}: entry {index}: 'query' must be an object with a string 'noun'")
    color = query.get("color")
    phrase = f"the {color} {query['noun']}" if isinstance(color, str) and color else f"the {query['noun']}"
    relation, anchor = query.get("relation"), query.get("anchor_noun")
    if entry.get("kind") == RELATIONAL_KIND and relation in RELATION_TO_ID and isinstance(anchor, str) and anchor:
        return phrase, relation, anchor
    return phrase, None, None


def read_pretrain_descriptions(
    scanrefer_path: str | os.PathLike, meta_path: str | os.PathLike | None = None
) -> dict[str, list[ObjectDescription]]:
    """Read a ScanRefer file (and its optional meta file) into descriptions grouped by scene, in file order.

    Args:
        scanrefer_path: a ScanRefer JSON file.
        meta_path: the matching `*_meta.json` (one entry per ScanRefer entry, same order), or None.

    Raises:
        AnnotationReadError: the ScanRefer file cannot be read (see `read_scanrefer`); the meta file is
            unreadable, has another length, or an entry whose scene_id / object_id / ann_id differ from the
            ScanRefer entry at the same index, or whose query lacks a noun.
    """
    annotations = read_scanrefer(scanrefer_path)
    meta = None
    if meta_path is not None:
        meta_path = Path(meta_path)
        meta = _read_meta(meta_path, len(annotations))
    by_scene: dict[str, list[ObjectDescription]] = {}
    for index, annotation in enumerate(annotations):
        phrase, relation, anchor = annotation.description, None, None
        if meta is not None:
            entry = meta[index]
            same = (isinstance(entry, dict) and entry.get("scene_id") == annotation.scene_id
                    and str(entry.get("object_id")) == str(annotation.object_id)
                    and str(entry.get("ann_id")) == str(annotation.ann_id))
            if not same:
                raise AnnotationReadError(
                    f"{meta_path}: entry {index} does not describe ScanRefer entry {index} "
                    f"({annotation.scene_id}, object {annotation.object_id}, ann {annotation.ann_id})"
                )
            phrase, relation, anchor = _from_meta(entry, annotation.description, meta_path, index)
        by_scene.setdefault(annotation.scene_id, []).append(ObjectDescription(
            scene_id=annotation.scene_id, object_id=annotation.object_id, text=annotation.description,
            phrase=phrase, relation=relation, anchor_noun=anchor,
        ))
    return by_scene


def resolve_anchor(
    target: int,
    anchor_noun: str,
    relation_id: int,
    labels: Sequence[str],
    centers: np.ndarray,
    relation_flags: dict[tuple[int, int], np.ndarray],
) -> int | None:
    """The object an expression's anchor noun refers to: the node index of the anchor, or None.

    Candidates are the other objects whose raw label equals `anchor_noun` (after `labels.normalize_label`).
    Among them, those for which the scene graph sets `relation` on (target, candidate) are preferred; ties
    and the case of no such candidate go to the candidate nearest the target (centre distance), so that
    a relation the box geometry misses (a pillow "on" a bed below the headboard's top) still finds its anchor.

    Args:
        target: node index of the described object (the triplet's subject).
        anchor_noun: raw category of the anchor.
        relation_id: index into `scene_graph.RELATIONS`.
        labels: raw label of every node.
        centers: box centres.
        relation_flags: (subject, object) node pair -> its (R,) relation flags, for the pairs of a scene graph.

    Shapes:
        centers: (N, 3).

    Returns:
        the anchor's node index, or None when no other object carries that label.
    """
    wanted = normalize_label(anchor_noun)
    candidates = [i for i, label in enumerate(labels) if i != target and normalize_label(label) == wanted]
    if not candidates:
        return None
    related = [i for i in candidates if (target, i) in relation_flags and relation_flags[(target, i)][relation_id]]
    pool = related or candidates
    distances = np.linalg.norm(centers[pool] - centers[target], axis=1)
    return pool[int(np.argmin(distances))]
