"""read_pretrain_descriptions (ScanRefer + optional meta) and resolve_anchor."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scene3d.data.annotations import AnnotationReadError
from scene3d.data.pretrain_language import read_pretrain_descriptions, resolve_anchor
from scene3d.data.scene_graph import RELATION_TO_ID, RELATIONS

ENTRIES = [
    {"scene_id": "scene0000_00", "object_id": "3", "object_name": "lamp", "ann_id": "0",
     "description": "the lamp on the table.", "token": ["the", "lamp", "on", "the", "table", "."]},
    {"scene_id": "scene0000_00", "object_id": "1", "object_name": "chair", "ann_id": "0",
     "description": "the red chair.", "token": ["the", "red", "chair", "."]},
    {"scene_id": "scene0001_00", "object_id": "0", "object_name": "door", "ann_id": "0",
     "description": "facing the door, the chair on the left.", "token": []},
]
META = [
    {"scene_id": "scene0000_00", "object_id": "3", "ann_id": "0", "kind": "relational",
     "query": {"noun": "lamp", "relation": "on", "anchor_noun": "table"}},
    {"scene_id": "scene0000_00", "object_id": "1", "ann_id": "0", "kind": "attribute",
     "query": {"noun": "chair", "color": "red"}},
    {"scene_id": "scene0001_00", "object_id": "0", "ann_id": "0", "kind": "view_dependent",
     "query": {"noun": "door", "relation": "view_left_of", "anchor_noun": "chair", "facing": "door"}},
]


def _write(tmp_path, entries, meta=None):
    path = tmp_path / "ScanRefer_filtered_train.json"
    path.write_text(json.dumps(entries))
    meta_path = None
    if meta is not None:
        meta_path = tmp_path / "ScanRefer_filtered_train_meta.json"
        meta_path.write_text(json.dumps(meta))
    return path, meta_path


def test_with_meta_gives_noun_phrases_and_relational_triplets_only(tmp_path):
    by_scene = read_pretrain_descriptions(*_write(tmp_path, ENTRIES, META))
    assert sorted(by_scene) == ["scene0000_00", "scene0001_00"]
    lamp, chair = by_scene["scene0000_00"]
    assert (lamp.object_id, lamp.phrase, lamp.relation, lamp.anchor_noun) == (3, "the lamp", "on", "table")
    assert (chair.phrase, chair.relation) == ("the red chair", None)
    door = by_scene["scene0001_00"][0]
    assert door.relation is None and door.anchor_noun is None  # view-dependent: no viewer on the 3D side


def test_without_meta_the_phrase_is_the_description(tmp_path):
    by_scene = read_pretrain_descriptions(_write(tmp_path, ENTRIES)[0])
    assert [d.phrase for d in by_scene["scene0000_00"]] == ["the lamp on the table.", "the red chair."]
    assert all(d.relation is None for ds in by_scene.values() for d in ds)


def test_meta_that_does_not_match_raises(tmp_path):
    with pytest.raises(AnnotationReadError, match="one entry per ScanRefer entry"):
        read_pretrain_descriptions(*_write(tmp_path, ENTRIES, META[:2]))
    swapped = [META[1], META[0], META[2]]
    with pytest.raises(AnnotationReadError, match="entry 0 does not describe"):
        read_pretrain_descriptions(*_write(tmp_path, ENTRIES, swapped))
    no_noun = [{**META[0], "query": {}}, META[1], META[2]]
    with pytest.raises(AnnotationReadError, match="noun"):
        read_pretrain_descriptions(*_write(tmp_path, ENTRIES, no_noun))


def test_resolve_anchor_prefers_the_related_candidate_then_the_nearest():
    labels = ["lamp", "table", "table", "chair"]
    centers = np.array([[0, 0, 1], [0.2, 0, 0.5], [3, 0, 0.5], [1, 0, 0.5]], dtype=np.float32)
    on = RELATION_TO_ID["on"]
    flags = {(0, 2): np.eye(len(RELATIONS), dtype=bool)[on], (0, 1): np.zeros(len(RELATIONS), dtype=bool)}
    assert resolve_anchor(0, "table", on, labels, centers, flags) == 2  # related, though farther
    assert resolve_anchor(0, "table", RELATION_TO_ID["near"], labels, centers, flags) == 1  # none related: nearest
    assert resolve_anchor(0, "Table", on, labels, centers, flags) == 2  # labels are normalised
    assert resolve_anchor(0, "sofa", on, labels, centers, flags) is None
    assert resolve_anchor(1, "table", on, labels, centers, {}) == 2  # never the target itself
