"""prepare_pretrain_scene: scene frame, classes, masked-object targets, descriptions with anchors."""
from __future__ import annotations

import numpy as np
import pytest

from scene3d.data.labels import SCANREFER_CLASS_TO_ID
from scene3d.data.pretrain_language import ObjectDescription
from scene3d.data.pretrain_scene import class_counts, prepare_pretrain_scene
from scene3d.data.scannet import Scene
from tests.scene3d.data.pretrain_factory import make_scene

def test_scene_frame_classes_and_targets():
    prepared = prepare_pretrain_scene(make_scene())
    # frame: xy centre of the box around all objects (2, 1) at 0, lowest bottom at z = 0
    np.testing.assert_allclose(prepared.centers[1], [-0.5, 0.0, 0.35], atol=1e-6)
    np.testing.assert_allclose(prepared.sizes[2], [0.2, 0.2, 0.4], atol=1e-6)
    assert prepared.classes.tolist() == [SCANREFER_CLASS_TO_ID[c] for c in ("others", "table", "others", "chair")]
    assert prepared.mom_eligible.tolist() == [False, True, True, True]  # the floor is context, never a target
    assert prepared.points[0].shape == (50, 6)
    np.testing.assert_allclose(prepared.points[1][:2, :3], [[-0.5, -0.5, -0.35], [0.5, 0.5, 0.35]], atol=1e-6)
    assert class_counts([prepared], 18)[SCANREFER_CLASS_TO_ID["others"]] == 1  # the lamp, not the floor


def test_max_stored_points_keeps_a_seeded_subset():
    scene = make_scene(points_per_object=100)
    a = prepare_pretrain_scene(scene, max_stored_points=10, seed=3)
    b = prepare_pretrain_scene(scene, max_stored_points=10, seed=3)
    assert all(p.shape == (10, 6) for p in a.points)
    np.testing.assert_array_equal(a.points[2], b.points[2])


def test_descriptions_get_nodes_and_anchors():
    descriptions = [
        ObjectDescription("scene0007_00", 5, "the lamp on the table.", "the lamp", "on", "table"),
        ObjectDescription("scene0007_00", 7, "the chair near the sofa.", "the chair", "near", "sofa"),
        ObjectDescription("scene0007_00", 99, "a ghost.", "the ghost"),
    ]
    prepared = prepare_pretrain_scene(make_scene(), descriptions)
    lamp, chair = prepared.descriptions
    assert (lamp.node, lamp.anchor, lamp.relation) == (2, 1, 2)  # RELATIONS[2] == "on"
    assert (chair.node, chair.anchor, chair.relation) == (3, -1, -1)  # no sofa in the scene
    assert prepared.stats == {"descriptions_unmatched": 1, "anchors_unresolved": 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_stored_points"):
        prepare_pretrain_scene(make_scene(), max_stored_points=0)
    with pytest.raises(ValueError, match="another scene|of scene"):
        prepare_pretrain_scene(make_scene(), [ObjectDescription("scene0001_00", 5, "x", "x")])
    with pytest.raises(ValueError, match="no objects"):
        prepare_pretrain_scene(Scene("scene0000_00", [], np.eye(4)))
