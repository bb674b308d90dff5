"""`GroundingDataModule`: ScanRefer descriptions as grounding queries over a scene's proposals.

Query keys (one per description): text, scene_id, object_id, ann_id, object_name, target (index of the proposal
with the highest IoU with the ground-truth box: the training target), gt_center / gt_size (the ground-truth box
in the scene frame), target_class (ScanRefer class id of the described object: the text-classification target),
unique (ScanRefer's unique / multiple flag: `evaluation.grounding_accuracy.scanrefer_unique_mask` over the
whole split, classes from the scene's objects).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scene3d.data.annotations import read_scanrefer
from scene3d.data.finetune_datamodule import SceneFinetuneDataModule
from scene3d.data.finetune_scene import FinetuneScene
from scene3d.evaluation.box_iou import box_iou_matrix
from scene3d.evaluation.grounding_accuracy import scanrefer_unique_mask

__all__ = ["GroundingDataModule"]


class GroundingDataModule(SceneFinetuneDataModule):
    """ScanRefer grounding data (see `SceneFinetuneDataModule` for the arguments).

    Raises:
        ValueError: a description naming an object its scene lacks (file, scene and object named).
    """

    default_language_file = "ScanRefer_filtered_{split}.json"

    def build_queries(self, split: str, path: Path, scenes: Mapping[str, FinetuneScene],
                      proposals: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        entries = [a for a in read_scanrefer(path) if a.scene_id in scenes]
        located = []
        for index, a in enumerate(entries):
            scene = scenes[a.scene_id]
            located.append((scene, scene.node_of(a.object_id, f"{path} entry {index} (ann_id {a.ann_id})")))
        unique = scanrefer_unique_mask([(a.scene_id, a.object_id, scene.class_name(node))
                                        for a, (scene, node) in zip(entries, located)])
        queries: dict[str, list[dict[str, Any]]] = {}
        for a, (scene, node), is_unique in zip(entries, located, unique):
            prepared, props = scene.prepared, proposals[a.scene_id]
            center, size = prepared.centers[node], prepared.sizes[node]
            iou = box_iou_matrix(center[None], size[None], props.centers, props.sizes)[0]
            queries.setdefault(a.scene_id, []).append({
                "text": a.description, "scene_id": a.scene_id, "object_id": int(a.object_id), "ann_id": int(a.ann_id),
                "object_name": a.object_name, "target": int(np.argmax(iou)), "target_iou": float(iou.max()),
                "gt_center": center.astype(np.float64).tolist(), "gt_size": size.astype(np.float64).tolist(),
                "target_class": int(prepared.classes[node]), "unique": bool(is_unique),
            })
        return queries
