"""One scene prepared for fine-tuning: the pre-training arrays plus what the benchmarks' files refer to.

`FinetuneScene` wraps a `pretrain_scene.PretrainScene` (per-object points, boxes in the scene frame, ScanRefer
classes) and keeps the ScanNet `objectId` of every object (what ScanRefer / ScanQA entries name) and the scene
frame's origin in the axis-aligned ScanNet frame, so predicted boxes can be written back in the benchmark's
coordinates: ``box in ScanNet's axis-aligned frame = box in the scene frame + origin``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from scene3d.data.labels import SCANREFER_CLASSES
from scene3d.data.pretrain_scene import STRUCTURE_CLASSES, PretrainScene, prepare_pretrain_scene, scene_frame_origin
from scene3d.data.scannet import read_scannet_scene

__all__ = ["FinetuneScene", "load_finetune_scene"]


@dataclass
class FinetuneScene:
    """A scene for fine-tuning (module docstring).

    Shapes:
        object_ids: (N,) int64, in the order of `prepared`'s objects; origin: (3,) float64.
    """

    prepared: PretrainScene
    object_ids: np.ndarray
    origin: np.ndarray

    @property
    def scene_id(self) -> str:
        return self.prepared.scene_id

    def node_of(self, object_id: int, source: str) -> int:
        """Index of the object with ScanNet `objectId` `object_id`.

        Raises:
            ValueError: the scene has no such object (naming the annotation `source`, the scene and the ids it has).
        """
        hits = np.flatnonzero(self.object_ids == int(object_id))
        if hits.size == 0:
            raise ValueError(f"{source}: scene {self.scene_id} has no object {object_id} (the reader kept object ids "
                             f"{self.object_ids.tolist()[:30]}); fix the annotation, or lower data.min_points if "
                             "the reader skipped it for having too few points")
        return int(hits[0])

    def class_name(self, node: int) -> str:
        """The ScanRefer (18-class) label of object `node`."""
        return SCANREFER_CLASSES[int(self.prepared.classes[node])]


def load_finetune_scene(scene_dir: str | os.PathLike, scene_id: str, *, label_map_path: str | None = None,
                        min_points: int = 1, max_stored_points: int = 2048,
                        structure_classes: tuple[str, ...] = STRUCTURE_CLASSES, seed: int = 0) -> FinetuneScene:
    """Read a ScanNet scene folder and prepare it (see `pretrain_scene.prepare_pretrain_scene`)."""
    scene = read_scannet_scene(scene_dir, scene_id=scene_id, label_map_path=label_map_path, min_points=min_points)
    prepared = prepare_pretrain_scene(scene, None, max_stored_points=max_stored_points,
                                      structure_classes=structure_classes, seed=seed)
    box_min = np.stack([obj.box_min for obj in scene.objects]).astype(np.float64)
    box_max = np.stack([obj.box_max for obj in scene.objects]).astype(np.float64)
    return FinetuneScene(prepared=prepared, object_ids=np.array([o.object_id for o in scene.objects], dtype=np.int64),
                         origin=scene_frame_origin(box_min, box_max))
