"""Points and boxes -> pixels of posed pinhole cameras, with visibility; vectorised over points and frames.

Conventions (those of ScanNet's SensReader export, `scene3d.data.frames`):

- ``pose`` (V, 4, 4) maps camera coordinates to world coordinates: ``x_world = R x_cam + t``; the inverse,
  ``x_cam = R^T (x_world - t)``, takes world points into the camera. Camera axes are OpenCV's: x right, y down,
  z forward (the depth).
- ``K`` (3, 3) or (4, 4) (only its top-left 3x3 is used): ``u = fx x / z + cx``, ``v = fy y / z + cy`` in pixels of
  the image K belongs to (the colour intrinsics for the colour size, the depth intrinsics for the depth size).
  Pixel (u, v) = (0, 0) is the centre of the top-left pixel; the image spans u in [-0.5, W - 0.5).
- A point is **visible** in a frame when it is in front of the camera and inside the image (the frustum), its
  camera depth z lies in ``[min_depth, max_depth]`` and ``|z - depth_map(u, v)| <= depth_tolerance`` at its
  nearest depth pixel (a pixel with depth 0, no measurement, never confirms). ScanRefer's multiview projection
  uses 0.1-4 m and 5 cm; these are `VisibilityConfig`'s defaults.

Written in torch rather than taken from open3d: open3d projects one camera at a time in C++, whereas the
selection needs every point in every frame at once, batched on the GPU when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VisibilityConfig", "world_to_camera", "project_points", "point_visibility", "project_boxes",
           "box_corners", "lift_view_features"]


@dataclass(frozen=True)
class VisibilityConfig:
    """When a projected point counts as visible (see the module docstring).

    Args:
        min_depth, max_depth: camera depth range in metres (ScanRefer: 0.1, 4.0).
        depth_tolerance: largest |point depth - depth map| in metres (ScanRefer: 0.05).

    Raises:
        ValueError: a non-positive or inverted range, or a negative tolerance.
    """

    min_depth: float = 0.1
    max_depth: float = 4.0
    depth_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not (0 < self.min_depth < self.max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if not self.depth_tolerance >= 0:
            raise ValueError(f"depth_tolerance must be >= 0 metres, got {self.depth_tolerance}")


def _as_tensor(value, dtype=torch.float64, device=None) -> Tensor:
    return torch.as_tensor(value, dtype=dtype, device=device)


def _intrinsic_3x3(intrinsic: Tensor) -> Tensor:
    if tuple(intrinsic.shape[-2:]) not in ((3, 3), (4, 4)):
        raise ValueError(f"intrinsic must be (3, 3) or (4, 4), got {tuple(intrinsic.shape)}")
    return intrinsic[..., :3, :3]


def world_to_camera(points: Tensor, poses: Tensor) -> Tensor:
    """Camera coordinates of world points in every frame: ``R^T (p - t)``.

    Shapes:
        points: (P, 3); poses: (V, 4, 4) camera-to-world -> (V, P, 3)
    """
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (P, 3), got {tuple(points.shape)}")
    if poses.dim() != 3 or tuple(poses.shape[1:]) != (4, 4):
        raise ValueError(f"poses must be (V, 4, 4) camera-to-world matrices, got {tuple(poses.shape)}")
    rotation, translation = poses[:, :3, :3], poses[:, :3, 3]
    # (P, 3) - (V, 1, 3) -> (V, P, 3); row vectors times R: (x - t) R = (R^T (x - t))^T
    return (points[None] - translation[:, None]) @ rotation


def project_points(points: Tensor, poses: Tensor, intrinsic: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates and camera depths of world points in every frame.

    Points at or behind the camera (z <= 0) get uv = NaN.

    Shapes:
        points: (P, 3); poses: (V, 4, 4); intrinsic: (3, 3) or (4, 4) -> uv (V, P, 2), z (V, P)
    """
    camera = world_to_camera(points, poses)
    k = _intrinsic_3x3(intrinsic).to(camera)
    z = camera[..., 2]
    safe = torch.where(z > 0, z, torch.full_like(z, float("nan")))
    u = k[0, 0] * camera[..., 0] / safe + k[0, 2]
    v = k[1, 1] * camera[..., 1] / safe + k[1, 2]
    return torch.stack([u, v], dim=-1), z


def _inside_image(uv: Tensor, width: int, height: int) -> Tensor:
    u, v = uv[..., 0], uv[..., 1]  # NaN compares False: points behind the camera are outside
    return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)


def point_visibility(
    points: Tensor, poses: Tensor, intrinsic_depth: Tensor, depths: Tensor, config: VisibilityConfig = VisibilityConfig()
) -> dict[str, Tensor]:
    """Which points each frame sees (frustum, depth range, agreement with the depth map).

    Args:
        points: world points (axis-aligned frame, like the poses).
        poses: camera-to-world matrices.
        intrinsic_depth: K of the depth images.
        depths: depth maps in metres (0 = no measurement).
        config: depth range and tolerance.

    Returns:
        {"visible": (V, P) bool, "uv": (V, P, 2) depth-image pixels, "z": (V, P) camera depth,
         "in_frustum": (V, P) bool (in front and inside the image, before the depth tests)}

    Shapes:
        points: (P, 3); poses: (V, 4, 4); depths: (V, H, W)
    """
    if depths.dim() != 3 or depths.shape[0] != poses.shape[0]:
        raise ValueError(f"depths must be (V, H, W) with V = {poses.shape[0]} frames, got {tuple(depths.shape)}")
    height, width = depths.shape[1:]
    uv, z = project_points(points, poses, intrinsic_depth)
    in_frustum = _inside_image(uv, width, height) & (z > 0)
    column = torch.round(uv[..., 0]).nan_to_num(0).clamp(0, width - 1).long()
    row = torch.round(uv[..., 1]).nan_to_num(0).clamp(0, height - 1).long()
    frame = torch.arange(poses.shape[0], device=depths.device)[:, None].expand_as(row)
    measured = depths[frame, row, column].to(z)  # (V, P): depth map at each point's nearest pixel
    visible = (in_frustum & (z >= config.min_depth) & (z <= config.max_depth) & (measured > 0)
               & ((z - measured).abs() <= config.depth_tolerance))
    return {"visible": visible, "uv": uv, "z": z, "in_frustum": in_frustum}


def box_corners(box_min: Tensor, box_max: Tensor) -> Tensor:
    """The 8 corners of axis-aligned boxes, ordered by the bits (x, y, z) of 0..7.

    Shapes:
        box_min, box_max: (N, 3) -> (N, 8, 3)
    """
    bits = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=box_min.dtype,
                        device=box_min.device)  # (8, 3)
    return box_min[:, None] + bits[None] * (box_max - box_min)[:, None]


_EDGES = torch.tensor([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])  # (12, 2)


def project_boxes(
    box_min: Tensor, box_max: Tensor, poses: Tensor, intrinsic: Tensor, image_size: tuple[int, int],
    near: float = 0.01,
) -> dict[str, Tensor]:
    """Image rectangles of axis-aligned 3D boxes in every frame, and their IoSA with the image.

    The box is clipped at the near plane z = `near` (its 8 corners in front plus the points where its 12 edges
    cross the plane), projected, and bounded by the axis-aligned rectangle of those points: this rectangle
    stands in for the projected hull of MV-ScanQA's score (a superset of it, equal for a box seen face-on).
    ``iosa = area(rect inside image) / min(area(rect), area(image))`` (MV-ScanQA's intersection over smaller
    area), 0 for a box entirely behind the camera.

    Args:
        image_size: (width, height) of the image K belongs to.

    Returns:
        {"rect": (V, N, 4) x0 y0 x1 y1 (unclipped; NaN when nothing is in front), "rect_clipped": (V, N, 4)
         clipped to the image, "iosa": (V, N), "in_front": (V, N) bool}

    Shapes:
        box_min, box_max: (N, 3); poses: (V, 4, 4); intrinsic: (3, 3) or (4, 4)
    """
    width, height = image_size
    corners = box_corners(box_min, box_max)  # (N, 8, 3)
    num_boxes = corners.shape[0]
    camera = world_to_camera(corners.reshape(-1, 3), poses).reshape(poses.shape[0], num_boxes, 8, 3)
    edges = _EDGES.to(camera.device)
    a, b = camera[:, :, edges[:, 0]], camera[:, :, edges[:, 1]]  # (V, N, 12, 3) edge ends
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - near) * (zb - near) < 0
    t = ((near - za) / torch.where(crosses, zb - za, torch.ones_like(za))).unsqueeze(-1)
    crossing = a + t * (b - a)  # (V, N, 12, 3) on the near plane where the edge crosses it
    candidates = torch.cat([camera, crossing], dim=2)  # (V, N, 20, 3)
    keep = torch.cat([camera[..., 2] >= near, crosses], dim=2)  # (V, N, 20)
    k = _intrinsic_3x3(intrinsic).to(camera)
    z = candidates[..., 2].clamp_min(near)
    u = k[0, 0] * candidates[..., 0] / z + k[0, 2]
    v = k[1, 1] * candidates[..., 1] / z + k[1, 2]
    inf = torch.tensor(float("inf"), dtype=u.dtype, device=u.device)
    x0 = torch.where(keep, u, inf).amin(-1)
    y0 = torch.where(keep, v, inf).amin(-1)
    x1 = torch.where(keep, u, -inf).amax(-1)
    y1 = torch.where(keep, v, -inf).amax(-1)
    in_front = keep.any(-1)
    nan = torch.full_like(x0, float("nan"))
    rect = torch.stack([torch.where(in_front, c, nan) for c in (x0, y0, x1, y1)], dim=-1)  # (V, N, 4)
    # the image spans [-0.5, W - 0.5) x [-0.5, H - 0.5)
    bounds = torch.tensor([-0.5, -0.5, width - 0.5, height - 0.5], dtype=rect.dtype, device=rect.device)
    clipped = torch.stack([rect[..., 0].clamp(bounds[0], bounds[2]), rect[..., 1].clamp(bounds[1], bounds[3]),
                           rect[..., 2].clamp(bounds[0], bounds[2]), rect[..., 3].clamp(bounds[1], bounds[3])], -1)
    inter = ((clipped[..., 2] - clipped[..., 0]).clamp_min(0) * (clipped[..., 3] - clipped[..., 1]).clamp_min(0))
    area = (rect[..., 2] - rect[..., 0]).clamp_min(0) * (rect[..., 3] - rect[..., 1]).clamp_min(0)
    smaller = torch.minimum(area, torch.full_like(area, float(width * height)))
    iosa = torch.where(in_front & (smaller > 0), inter / smaller.clamp_min(1e-12), torch.zeros_like(area))
    return {"rect": rect, "rect_clipped": torch.where(in_front[..., None], clipped, nan[..., None]),
            "iosa": iosa.nan_to_num(0.0), "in_front": in_front}


def lift_view_features(features: Tensor, uv: Tensor, visible: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
    """2D feature maps lifted onto points: bilinear samples at the projected pixels, averaged over the views that
    see each point (ScanRefer's multiview features; points no view sees get zeros).

    Args:
        features: per-view feature maps of images of `image_size` (any resolution: the map spans the image).
        uv: pixel coordinates of the points in those images (`project_points` with the same images' K).
        visible: which views see which points (`point_visibility`).
        image_size: (width, height) of the images uv refers to.

    Returns:
        {"features": (P, C) mean over seeing views, "count": (P,) number of seeing views}

    Shapes:
        features: (V, C, h, w); uv: (V, P, 2); visible: (V, P) bool
    """
    width, height = image_size
    # pixel centre u in [-0.5, W-0.5) -> normalised [-1, 1] with align_corners=False
    grid = torch.stack([(uv[..., 0] + 0.5) / width * 2 - 1, (uv[..., 1] + 0.5) / height * 2 - 1], dim=-1)
    grid = grid.nan_to_num(0.0).to(features.dtype)[:, :, None]  # (V, P, 1, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=False)  # (V, C, P, 1)
    sampled = sampled[..., 0].permute(0, 2, 1)  # (V, C, P) -> (V, P, C)
    weights = visible.to(features.dtype)[..., None]  # (V, P, 1)
    count = weights.sum(0)  # (P, 1)
    return {"features": (sampled * weights).sum(0) / count.clamp_min(1), "count": count[:, 0]}
