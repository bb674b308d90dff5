"""A hand-made 4-object scene (floor, table, lamp on the table, chair) shared by the pre-training data tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from scene3d.data.scannet import Scene, SceneObject

SCENE_ID = "scene0007_00"
# (object_id, label, nyu40 class, ScanRefer class, box min, box max)
OBJECTS = [
    (0, "floor", "floor", "others", (0, 0, 0), (4, 2, 0.01)),
    (1, "table", "table", "table", (1, 0.5, 0.0), (2, 1.5, 0.7)),
    (5, "lamp", "lamp", "others", (1.4, 0.9, 0.7), (1.6, 1.1, 1.1)),
    (7, "chair", "chair", "chair", (2.2, 0.8, 0.0), (2.6, 1.2, 0.9)),
]


def make_scene(points_per_object: int = 50, scene_id: str = SCENE_ID, lamp_max=(1.6, 1.1, 1.1)) -> Scene:
    """The scene with uniform points filling each box (its first two points are the box corners)."""
    rng = np.random.default_rng(0)
    objects = []
    for object_id, label, nyu40, scanrefer, low, high in OBJECTS:
        high = lamp_max if label == "lamp" else high
        points = rng.uniform(low, high, size=(points_per_object, 3))
        points[0], points[1] = low, high
        colors = rng.uniform(size=(points_per_object, 3))
        objects.append(SceneObject(object_id, label, 1, nyu40, scanrefer, points, colors))
    return Scene(scene_id, objects, np.eye(4))


TINY_DEMO = {"num_scenes": 4, "points_per_scene": 3000, "questions_per_type": 1}


def tiny_demo_root(tmp_path_factory) -> Path:
    """A 4-scene demo set (train 2, val 1, test 1), built once per test session and reused (ensure_demo_scenes)."""
    from scene3d.data.demo import ensure_demo_scenes

    return ensure_demo_scenes(tmp_path_factory.getbasetemp() / "scene3d_tiny_demo", progress=False, **TINY_DEMO)
