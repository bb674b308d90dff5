"""Tiny ScanNet-format scenes and label maps with hand-computable contents, shared by the scene3d data tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from scene3d.data.scannet import write_scannet_scene

SCENE_ID = "scene0042_00"
# The real header of scannetv2-labels.combined.tsv.
LABEL_TSV_COLUMNS = (
    "id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class", "eigen13class",
    "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid", "wnsynsetkey", "mpcat40",
    "mpcat40index",
)
# (raw_category, category, nyu40id, nyu40class), a subset of the real rows.
LABEL_ROWS = (
    ("chair", "chair", 5, "chair"),
    ("kitchen cabinets", "kitchen cabinet", 3, "cabinet"),
    ("wall", "wall", 1, "wall"),
    ("shower curtain", "shower curtain", 28, "shower curtain"),
    ("trash can", "trash can", 39, "otherfurniture"),
    ("pillow", "pillow", 18, "pillow"),
)

# Ten vertices; segment ids per vertex. Segment 4 (vertex 8) belongs to no object.
XYZ = np.array([
    [0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [5, 5, 5],
    [6, 7, 5], [-1, -1, -1], [-2, -1, -1], [9, 9, 9], [1, 1, 1],
], dtype=np.float32)
SEG_INDICES = np.array([0, 1, 0, 1, 2, 2, 3, 3, 4, 0])
RGB = np.stack([np.arange(10) * 10, 255 - np.arange(10) * 10, np.arange(10)], axis=1).astype(np.uint8)
SEG_GROUPS = [
    {"objectId": 0, "label": "chair", "segments": [0, 1]},             # vertices 0 1 2 3 9
    {"objectId": 1, "label": "kitchen cabinets", "segments": [2]},     # vertices 4 5
    {"objectId": 2, "label": "wall", "segments": [3]},                 # vertices 6 7
]
OBJECT_VERTICES = {0: [0, 1, 2, 3, 9], 1: [4, 5], 2: [6, 7]}


def write_label_tsv(path: Path, rows=LABEL_ROWS) -> Path:
    """A label map with the real column names and the given (raw, category, nyu40id, nyu40class) rows."""
    lines = ["\t".join(LABEL_TSV_COLUMNS)]
    for index, (raw, category, nyu40_id, nyu40_class) in enumerate(rows, start=1):
        cells = [str(index), raw, category, "1", str(nyu40_id), "0", nyu40_class, nyu40_class, ""]
        lines.append("\t".join(cells + [""] * (len(LABEL_TSV_COLUMNS) - len(cells))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_tiny_scene(root: Path, *, seg_groups=None, axis_alignment=None, scene_id: str = SCENE_ID) -> Path:
    """The ten-vertex scene above (or other seg_groups), written under `root`; returns the scene folder."""
    return write_scannet_scene(
        root, scene_id, XYZ, RGB, SEG_INDICES, SEG_GROUPS if seg_groups is None else seg_groups,
        axis_alignment=axis_alignment, faces=np.array([[0, 1, 2], [4, 5, 9]]),
    )
