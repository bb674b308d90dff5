"""Axis-aligned 3D boxes: IoU, and the 8 corners the ScanRefer benchmark's submission format uses.

Boxes are (centre xyz, size xyz) in metres. The ScanRefer / Scan2Cap evaluation (`box3d_iou` on
`construct_bbox_corners` boxes) computes the IoU of axis-aligned boxes from their corners; this is the same number
computed from min / max directly.
"""
from __future__ import annotations

import numpy as np

__all__ = ["box_corners", "box_iou_matrix", "box_iou_pairs", "corners_to_box"]


def _as_boxes(centers: np.ndarray, sizes: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    centers, sizes = np.asarray(centers, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[-1] != 3 or sizes.shape != centers.shape:
        raise ValueError(f"{name}: centers and sizes must both have shape (N, 3), got {centers.shape} and "
                         f"{sizes.shape}")
    if (sizes < 0).any():
        raise ValueError(f"{name}: box sizes must be >= 0")
    return centers - sizes / 2, centers + sizes / 2


def box_iou_matrix(centers_a: np.ndarray, sizes_a: np.ndarray, centers_b: np.ndarray,
                   sizes_b: np.ndarray) -> np.ndarray:
    """IoU of every box of a with every box of b: volume(intersection) / volume(union).

    Touching boxes (a shared face) have an intersection of volume 0, so IoU 0; two empty boxes have IoU 0.

    Shapes:
        centers_a, sizes_a: (N, 3); centers_b, sizes_b: (M, 3) -> (N, M) float64
    """
    low_a, high_a = _as_boxes(centers_a, sizes_a, "a")
    low_b, high_b = _as_boxes(centers_b, sizes_b, "b")
    low = np.maximum(low_a[:, None], low_b[None])  # (N, M, 3)
    high = np.minimum(high_a[:, None], high_b[None])
    intersection = np.clip(high - low, 0.0, None).prod(axis=-1)
    volume_a = (high_a - low_a).prod(axis=-1)
    volume_b = (high_b - low_b).prod(axis=-1)
    union = volume_a[:, None] + volume_b[None] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def box_iou_pairs(centers_a: np.ndarray, sizes_a: np.ndarray, centers_b: np.ndarray,
                  sizes_b: np.ndarray) -> np.ndarray:
    """IoU of box i of a with box i of b.

    Shapes:
        all (N, 3) -> (N,)
    """
    centers_a, sizes_a = np.asarray(centers_a), np.asarray(sizes_a)
    centers_b, sizes_b = np.asarray(centers_b), np.asarray(sizes_b)
    if centers_a.shape != centers_b.shape:
        raise ValueError(f"box_iou_pairs needs as many boxes in a as in b, got {centers_a.shape} and {centers_b.shape}")
    return np.array([box_iou_matrix(centers_a[i:i + 1], sizes_a[i:i + 1], centers_b[i:i + 1], sizes_b[i:i + 1])[0, 0]
                     for i in range(len(centers_a))], dtype=np.float64)


def box_corners(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The 8 corners of an axis-aligned box in ScanRefer's `construct_bbox_corners` order.

    Order: x signs (+ + - - + + - -), y signs (+ - - + + - - +), z signs (+ + + + - - - -), times half the size.

    Shapes:
        center, size: (3,) -> (8, 3)
    """
    center, half = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64) / 2
    signs = np.array([[1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1],
                      [1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1]], dtype=np.float64)
    return center + signs * half


def corners_to_box(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of the axis-aligned box around 8 corners (the inverse of `box_corners`).

    Shapes:
        corners: (8, 3) -> (3,), (3,)
    """
    corners = np.asarray(corners, dtype=np.float64)
    if corners.shape != (8, 3):
        raise ValueError(f"a box must be given as 8 corners of shape (8, 3), got {corners.shape}")
    low, high = corners.min(axis=0), corners.max(axis=0)
    return (low + high) / 2, high - low
