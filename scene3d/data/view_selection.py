"""Per object: how well each frame shows it, its best k views and crops of it there; per scene: a small view set.

For object n and frame v (all frames of a `FrameSet`, projection conventions of `scene3d.data.projection`):

- ``visible_share[n, v]``: share of the object's points visible in v (frustum, depth range, agreement with the
  depth map: `point_visibility`);
- ``iosa[n, v]``: MV-ScanQA's intersection over smaller area of the object's projected 3D box with the colour
  image (`project_boxes`);
- ``score[n, v] = visible_share * iosa`` when at least ``min_visible_points`` points are visible, else 0. A view
  must both show the object unoccluded (visible share) and frame it (IoSA): a close-up that cuts the object off
  scores low on IoSA; a wide shot from behind a wall scores 0 visible share.

``best[n]``: the frames of the k highest positive scores (best first; -1 pads objects seen in fewer than k).
``scene_views``: a greedy set cover: repeatedly the frame that covers (score >= ``cover_score``) the most
objects not yet covered, until every coverable object is covered or ``max_scene_views`` frames are taken.
``crops[n, j]``: the colour image around the object's visible points in its j-th best view (their bounding
rectangle in colour pixels, padded by ``crop_padding`` of its size, at least 2 px), resized to
``crop_size`` x ``crop_size`` (bilinear, antialiased), uint8 (N, k, S, S, 3); ``crop_valid`` (N, k) says which exist.

`scene_views_cached` stores the result per scene in ``<cache_dir>/<scene_id>_views_<key>.npz``, the key hashing
the configuration and the frame set (ids, poses, intrinsics), so a change of either recomputes it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.io import atomic_write_bytes
from scene3d.data.frames import FrameSet
from scene3d.data.projection import VisibilityConfig, point_visibility, project_boxes, project_points

__all__ = ["ViewSelectionConfig", "SceneViews", "object_view_scores", "best_views", "cover_views",
           "object_crops", "select_scene_views", "scene_views_cached"]

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass(frozen=True)
class ViewSelectionConfig:
    """Knobs of the view selection (see the module docstring).

    Args:
        views_per_object: k, best views kept per object (>= 1).
        min_visible_points: fewest visible points for a view to count for an object (>= 1).
        cover_score: score an object needs in a view for that view to cover it in the scene set, in (0, 1].
        max_scene_views: most frames in the scene set (None: as many as the cover needs).
        crop_size: S, side of the square crops in pixels (>= 4).
        crop_padding: padding around the visible points' rectangle, as a share of its width / height (>= 0).
        max_points_per_object: points per object used for scoring (a fixed, evenly spaced subset; >= 1).
        frame_chunk: frames projected at once (bounds memory: chunk x points x 3 doubles).
        min_depth, max_depth, depth_tolerance: `VisibilityConfig` (ScanRefer: 0.1, 4.0, 0.05 m).

    Raises:
        ValueError: a value out of range.
    """

    views_per_object: int = 3
    min_visible_points: int = 3
    cover_score: float = 0.2
    max_scene_views: int | None = None
    crop_size: int = 32
    crop_padding: float = 0.15
    max_points_per_object: int = 256
    frame_chunk: int = 32
    min_depth: float = 0.1
    max_depth: float = 4.0
    depth_tolerance: float = 0.05

    def __post_init__(self) -> None:
        for name in ("views_per_object", "min_visible_points", "max_points_per_object", "frame_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"view selection: {name} must be an int >= 1, got {value!r}")
        if isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int) or self.crop_size < 4:
            raise ValueError(f"view selection: crop_size must be an int >= 4 pixels, got {self.crop_size!r}")
        if not 0 < self.cover_score <= 1:
            raise ValueError(f"view selection: cover_score must be in (0, 1], got {self.cover_score!r}")
        if self.max_scene_views is not None and (not isinstance(self.max_scene_views, int) or self.max_scene_views < 1):
            raise ValueError(f"view selection: max_scene_views must be None or an int >= 1, got {self.max_scene_views!r}")
        if not self.crop_padding >= 0:
            raise ValueError(f"view selection: crop_padding must be >= 0, got {self.crop_padding!r}")
        self.visibility  # checks the depth range

    @property
    def visibility(self) -> VisibilityConfig:
        return VisibilityConfig(self.min_depth, self.max_depth, self.depth_tolerance)


@dataclass
class SceneViews:
    """The view selection of one scene (N objects, V frames, k views per object).

    Attributes:
        object_ids: (N,) objectId of each row. frame_ids: (V,) the frame numbers scored.
        visible_share, iosa, score: (N, V) float32. best: (N, k) int64 indices into frame_ids, -1 = none.
        scene_views: indices into frame_ids of the covering set, in the order chosen.
        crops: (N, k, S, S, 3) uint8. crop_valid: (N, k) bool. crop_boxes: (N, k, 4) x0 y0 x1 y1 colour pixels.
    """

    object_ids: np.ndarray
    frame_ids: np.ndarray
    visible_share: np.ndarray
    iosa: np.ndarray
    score: np.ndarray
    best: np.ndarray
    scene_views: np.ndarray
    crops: np.ndarray
    crop_valid: np.ndarray
    crop_boxes: np.ndarray
    meta: dict = field(default_factory=dict)

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {k: v for k, v in asdict(self).items() if k != "meta"}
        np.savez_compressed(buffer, meta=np.frombuffer(json.dumps(self.meta).encode(), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, path: Path) -> "SceneViews":
        with np.load(path, allow_pickle=False) as data:
            values = {k: data[k] for k in data.files if k != "meta"}
            meta = json.loads(bytes(data["meta"]).decode()) if "meta" in data.files else {}
        return cls(**values, meta=meta)


def _subsample(points: np.ndarray, limit: int) -> np.ndarray:
    if len(points) <= limit:
        return points
    return points[np.linspace(0, len(points) - 1, limit).round().astype(np.int64)]


def object_view_scores(
    object_points: Sequence[np.ndarray], poses: torch.Tensor, intrinsic_depth: torch.Tensor, depths: torch.Tensor,
    intrinsic_color: torch.Tensor, color_size: tuple[int, int], config: ViewSelectionConfig = ViewSelectionConfig(),
) -> dict[str, torch.Tensor]:
    """Visible share, IoSA and score of every object in every frame, plus the colour-pixel coordinates of the
    scored points (for crops).

    Args:
        object_points: N arrays (P_n, 3) of world points (the frame of the poses); each needs P_n >= 1.

    Returns:
        {"visible_share", "iosa", "score": (N, V) float32, "visible": (V, P) bool, "uv_color": (V, P, 2),
         "owner": (P,) row of each scored point}

    Shapes:
        poses: (V, 4, 4); depths: (V, H_d, W_d) metres; intrinsics: (3, 3) or (4, 4).

    Raises:
        ValueError: no objects, or an object without points.
    """
    if not len(object_points):
        raise ValueError("object_view_scores needs at least one object")
    kept = []
    for n, points in enumerate(object_points):
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise ValueError(f"object {n}: points must be (P, 3) with P >= 1, got {points.shape}")
        kept.append(_subsample(points, config.max_points_per_object))
    owner = torch.from_numpy(np.concatenate([[n] * len(p) for n, p in enumerate(kept)]).astype(np.int64))
    points = torch.from_numpy(np.concatenate(kept))
    num_objects, num_views = len(kept), poses.shape[0]
    visible, uv_color = [], []
    for start in range(0, num_views, config.frame_chunk):  # chunks bound the (V, P, 3) intermediates
        stop = start + config.frame_chunk
        vis = point_visibility(points, poses[start:stop], intrinsic_depth, depths[start:stop], config.visibility)
        visible.append(vis["visible"])
        uv_color.append(project_points(points, poses[start:stop], intrinsic_color)[0])
    visible_t = torch.cat(visible) if visible else torch.zeros(0, len(points), dtype=torch.bool)
    uv = torch.cat(uv_color) if uv_color else torch.zeros(0, len(points), 2, dtype=torch.float64)
    counts = torch.zeros(num_views, num_objects, dtype=torch.float64)
    counts.index_add_(1, owner, visible_t.double())  # (V, P) -> (V, N) visible points per object
    sizes = torch.bincount(owner, minlength=num_objects).double()
    share = (counts / sizes).T  # (N, V)
    box_min = torch.stack([torch.from_numpy(p.min(0)) for p in kept])
    box_max = torch.stack([torch.from_numpy(p.max(0)) for p in kept])
    iosa = project_boxes(box_min, box_max, poses, intrinsic_color, color_size)["iosa"].T  # (V, N) -> (N, V)
    score = torch.where(counts.T >= config.min_visible_points, share * iosa, torch.zeros_like(share))
    return {"visible_share": share.float(), "iosa": iosa.float(), "score": score.float(), "visible": visible_t,
            "uv_color": uv, "owner": owner}


def best_views(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of each row's k highest positive scores, best first (ties: lower index first), -1 padded.

    Shapes:
        score: (N, V) -> (N, k) int64
    """
    num_objects, num_views = score.shape
    out = torch.full((num_objects, k), -1, dtype=torch.long)
    if num_views == 0:
        return out
    # stable sort on -score keeps the lower frame index first among equal scores
    order = torch.sort(-score, dim=1, stable=True).indices[:, :k]
    taken = torch.gather(score, 1, order) > 0
    out[:, : order.shape[1]] = torch.where(taken, order, torch.full_like(order, -1))
    return out


def cover_views(score: torch.Tensor, cover_score: float, max_views: int | None = None) -> list[int]:
    """Greedy set cover of the objects by frames (see the module docstring), frames in the order chosen.

    Shapes:
        score: (N, V)
    """
    covers = (score >= cover_score).numpy()  # (N, V)
    uncovered = covers.any(axis=1)
    chosen: list[int] = []
    while uncovered.any() and (max_views is None or len(chosen) < max_views):
        gains = covers[uncovered].sum(axis=0)
        view = int(gains.argmax())  # lowest index among equal gains
        if gains[view] == 0:
            break
        chosen.append(view)
        uncovered &= ~covers[:, view]
    return chosen


def _crop(image: torch.Tensor, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 image -> (S, S, 3) uint8 crop of the pixel box [x0, x1] x [y0, y1] (inclusive)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = image[y0: y1 + 1, x0: x1 + 1].permute(2, 0, 1)[None].float()  # (1, 3, h, w)
    resized = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def object_crops(frames: FrameSet, best: torch.Tensor, scores: dict[str, torch.Tensor],
                 config: ViewSelectionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of every object in its best views (see the module docstring): (N, k, S, S, 3) uint8, (N, k) bool,
    (N, k, 4) float32 boxes."""
    num_objects, k = best.shape
    size = config.crop_size
    width, height = frames.color_size
    crops = np.zeros((num_objects, k, size, size, 3), dtype=np.uint8)
    valid = np.zeros((num_objects, k), dtype=bool)
    boxes = np.zeros((num_objects, k, 4), dtype=np.float32)
    images: dict[int, torch.Tensor] = {}
    owner, visible, uv = scores["owner"], scores["visible"], scores["uv_color"]
    for n in range(num_objects):
        mine = owner == n
        for j in range(k):
            view = int(best[n, j])
            if view < 0:
                continue
            seen = visible[view] & mine
            pixels = uv[view, seen]  # (p, 2) colour pixels of the visible points
            pixels = pixels[torch.isfinite(pixels).all(-1)]
            if len(pixels) == 0:
                continue
            lo, hi = pixels.min(0).values, pixels.max(0).values
            pad = torch.clamp((hi - lo) * config.crop_padding, min=2.0)
            x0, y0 = (lo - pad).tolist()
            x1, y1 = (hi + pad).tolist()
            x0, x1 = max(0.0, x0), min(width - 1.0, x1)
            y0, y1 = max(0.0, y0), min(height - 1.0, y1)
            if x1 < x0 or y1 < y0:
                continue
            if view not in images:
                images[view] = torch.from_numpy(frames.color(view).copy())
            crops[n, j] = _crop(images[view], (x0, y0, x1, y1), size).numpy()
            valid[n, j] = True
            boxes[n, j] = (x0, y0, x1, y1)
    return crops, valid, boxes


def select_scene_views(object_points: Sequence[np.ndarray], object_ids: Sequence[int], frames: FrameSet,
                       config: ViewSelectionConfig = ViewSelectionConfig()) -> SceneViews:
    """The view selection of one scene (module docstring). `object_points` must be in the frame of
    `frames.poses` (read the frames with the scene's axis alignment, as `read_scannet_scene` applies it)."""
    num_objects, k = len(object_points), config.views_per_object
    if len(object_ids) != num_objects:
        raise ValueError(f"{len(object_ids)} object ids for {num_objects} objects")
    if len(frames) == 0:
        log.warning("%s: no usable frame; every object gets no view", frames.root)
        empty = np.zeros((num_objects, 0), np.float32)
        return SceneViews(np.asarray(object_ids, np.int64), frames.frame_ids, empty, empty, empty,
                          np.full((num_objects, k), -1, np.int64), np.zeros(0, np.int64),
                          np.zeros((num_objects, k, config.crop_size, config.crop_size, 3), np.uint8),
                          np.zeros((num_objects, k), bool), np.zeros((num_objects, k, 4), np.float32))
    scores = object_view_scores(object_points, torch.from_numpy(frames.poses),
                                torch.from_numpy(frames.intrinsic_depth), torch.from_numpy(frames.depths()),
                                torch.from_numpy(frames.intrinsic_color), frames.color_size, config)
    best = best_views(scores["score"], k)
    scene_views = cover_views(scores["score"], config.cover_score, config.max_scene_views)
    crops, valid, boxes = object_crops(frames, best, scores, config)
    return SceneViews(
        object_ids=np.asarray(object_ids, dtype=np.int64), frame_ids=frames.frame_ids.copy(),
        visible_share=scores["visible_share"].numpy(), iosa=scores["iosa"].numpy(), score=scores["score"].numpy(),
        best=best.numpy(), scene_views=np.asarray(scene_views, dtype=np.int64), crops=crops, crop_valid=valid,
        crop_boxes=boxes, meta={"skipped_invalid_poses": int(frames.skipped_invalid_poses)},
    )


def _cache_key(object_ids: Sequence[int], frames: FrameSet, config: ViewSelectionConfig) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps({"version": CACHE_VERSION, "config": asdict(config),
                              "object_ids": [int(i) for i in object_ids], "root": str(frames.root.resolve())},
                             sort_keys=True).encode())
    for array in (frames.frame_ids, frames.poses, frames.intrinsic_color, frames.intrinsic_depth):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def scene_views_cached(cache_dir: str | Path | None, scene_id: str, object_points: Sequence[np.ndarray],
                       object_ids: Sequence[int], frames: FrameSet,
                       config: ViewSelectionConfig = ViewSelectionConfig()) -> SceneViews:
    """`select_scene_views`, stored in / read from `cache_dir` (None: no cache); see the module docstring."""
    if cache_dir is None:
        return select_scene_views(object_points, object_ids, frames, config)
    path = Path(cache_dir) / f"{scene_id}_views_{_cache_key(object_ids, frames, config)}.npz"
    if path.is_file():
        try:
            return SceneViews.from_npz(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s: unreadable view cache (%s); recomputing", path, error)
    views = select_scene_views(object_points, object_ids, frames, config)
    atomic_write_bytes(path, views.to_npz())
    return views
