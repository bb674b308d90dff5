"""Object proposals of a scene: the boxes a fine-tuned model scores, with the points it encodes for each.

Chosen in the config group ``proposals`` (``proposals=gt`` | ``proposals=box_folder proposals.folder=...``):

- `GTProposals`: the scene's annotated objects (ReferIt3D's Nr3D / Sr3D setting, 3D-VisTA's "GT proposals"
  rows). Proposal i is object i, so the highest-IoU proposal of a target is the target itself.
- `BoxFolderProposals`: a detector's boxes, one JSON file per scene, ``<folder>/<scene_id>.json`` =
  ``{"boxes": [[cx, cy, cz, sx, sy, sz], ...]}`` (centre and edge lengths in metres, in ScanNet's
  axis-aligned frame, the frame of ScanRefer's boxes; optional ``"scores": [...]`` is ignored). Mask3D /
  PointGroup / Vote2Cap-DETR outputs are converted to this by taking each instance's axis-aligned box. A
  proposal's points are the scene's object points inside its box (at least one: the nearest point otherwise).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene3d.data.finetune_scene import FinetuneScene
from scene3d.evaluation.box_iou import box_iou_matrix

__all__ = ["BoxFolderProposals", "GTProposals", "ProposalSet"]


@dataclass
class ProposalSet:
    """K proposals of one scene, in the scene frame.

    Args:
        centers, sizes: (K, 3) float32 boxes.
        points: K arrays (P_k, 6): xyz relative to the proposal's centre, rgb in [0, 1].
        classes: (K,) int64 ScanRefer class of the ground-truth object each proposal overlaps most (the target of
            the auxiliary object classification), or the object's own class for `GTProposals`.
    """

    centers: np.ndarray
    sizes: np.ndarray
    points: list[np.ndarray]
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


class GTProposals:
    """The scene's annotated objects as proposals (module docstring)."""

    def __call__(self, scene: FinetuneScene) -> ProposalSet:
        p = scene.prepared
        return ProposalSet(centers=p.centers, sizes=p.sizes, points=p.points, classes=p.classes)


class BoxFolderProposals:
    """A detector's boxes from ``<folder>/<scene_id>.json`` (module docstring).

    Args:
        folder: the predictions folder.

    Raises:
        ValueError: the folder is missing (at construction); a scene's file is missing, unreadable, or has no
            valid "boxes" list (when the scene is loaded, naming the file).
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(str(folder)).expanduser()
        if not self.folder.is_dir():
            raise ValueError(f"proposals.folder={folder}: folder not found; it must hold one <scene_id>.json per scene")

    def read_boxes(self, scene_id: str) -> np.ndarray:
        """(K, 6) boxes of a scene, ScanNet axis-aligned frame."""
        path = self.folder / f"{scene_id}.json"
        if not path.is_file():
            raise ValueError(f"{path}: no proposals for scene {scene_id}; the predictions folder must hold a file "
                             "for every scene of the split")
        try:
            boxes = np.asarray(json.loads(path.read_text())["boxes"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: expected {{\"boxes\": [[cx, cy, cz, sx, sy, sz], ...]}} ({error})") from None
        if boxes.ndim != 2 or boxes.shape[1] != 6 or len(boxes) == 0 or (boxes[:, 3:] < 0).any():
            raise ValueError(f"{path}: 'boxes' must be a non-empty list of 6 numbers each (centre, size >= 0), "
                             f"got shape {boxes.shape}")
        return boxes

    def __call__(self, scene: FinetuneScene) -> ProposalSet:
        p = scene.prepared
        boxes = self.read_boxes(scene.scene_id)
        centers = (boxes[:, :3] - scene.origin).astype(np.float32)
        sizes = boxes[:, 3:].astype(np.float32)
        xyz = np.concatenate([obj[:, :3] + c for obj, c in zip(p.points, p.centers)])  # (P_all, 3) scene frame
        rgb = np.concatenate([obj[:, 3:] for obj in p.points])
        points = []
        for center, size in zip(centers, sizes):
            inside = np.all(np.abs(xyz - center) <= size / 2 + 1e-6, axis=1)
            if not inside.any():
                inside[np.argmin(np.linalg.norm(xyz - center, axis=1))] = True
            points.append(np.concatenate([xyz[inside] - center, rgb[inside]], axis=1).astype(np.float32))
        iou = box_iou_matrix(centers, sizes, p.centers, p.sizes)  # (K, N)
        classes = p.classes[np.argmax(iou, axis=1)].astype(np.int64)
        return ProposalSet(centers=centers, sizes=sizes, points=points, classes=classes)
