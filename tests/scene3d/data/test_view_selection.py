"""View selection on a hand-made scene: three flat squares, two cameras facing each other, one -inf pose."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scene3d.data.frames import read_scannet_frames, write_scannet_frames
from scene3d.data.view_selection import (
    SceneViews,
    ViewSelectionConfig,
    best_views,
    cover_views,
    scene_views_cached,
    select_scene_views,
)

# (name, centre x, centre y, z of the plane, half width, colour): fronto-parallel squares in the plane z = const
SQUARES = [("A", 0.0, 0.0, 2.0, 0.2, (255, 0, 0)), ("B", 0.6, 0.0, 2.0, 0.1, (0, 255, 0)),
           ("C", 0.0, 0.0, 3.0, 0.15, (0, 0, 255))]
DEPTH_SIZE, COLOR_SIZE = (80, 60), (160, 120)


def _k(width: int, height: int) -> np.ndarray:
    return np.array([[width, 0, width / 2 - 0.5], [0, width, height / 2 - 0.5], [0, 0, 1]], dtype=np.float64)


def _poses() -> np.ndarray:
    front = np.eye(4)  # at the origin looking along +z: sees A and B; C hides behind A
    back = np.eye(4)  # at z = 5 looking along -z (turned about y): sees C and B; A hides behind C
    back[:3, :3] = np.diag([-1.0, 1.0, -1.0])
    back[:3, 3] = [0.0, 0.0, 5.0]
    lost = np.full((4, 4), -np.inf)
    return np.stack([front, lost, back])


def _render(pose: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the squares: camera depth (H, W) and colour (H, W, 3)."""
    width, height = size
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=float)], -1)
    rays = rays @ pose[:3, :3].T  # world directions with camera z = 1
    origin = pose[:3, 3]
    depth = np.full((height, width), np.inf)
    color = np.full((height, width, 3), 40, dtype=np.uint8)
    for _, cx, cy, z, half, rgb in SQUARES:
        t = (z - origin[2]) / rays[..., 2]
        x, y = origin[0] + t * rays[..., 0], origin[1] + t * rays[..., 1]
        hit = (t > 0) & (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half) & (t < depth)
        depth[hit] = t[hit]
        color[hit] = rgb
    return np.where(np.isfinite(depth), depth, 0.0), color


def _square_points(cx: float, cy: float, z: float, half: float, n: int = 9) -> np.ndarray:
    grid = np.linspace(-half * 0.7, half * 0.7, n)  # inset: nearest-pixel depth lookups stay on the square
    xs, ys = np.meshgrid(grid, grid)
    return np.stack([xs.ravel() + cx, ys.ravel() + cy, np.full(n * n, z)], 1)


@pytest.fixture()
def frames(tmp_path):
    poses = _poses()
    depths, colors = [], []
    for pose in poses:
        if np.isfinite(pose).all():
            depth, _ = _render(pose, _k(*DEPTH_SIZE), DEPTH_SIZE)
            _, color = _render(pose, _k(*COLOR_SIZE), COLOR_SIZE)
        else:
            depth, color = np.zeros(DEPTH_SIZE[::-1]), np.zeros((*COLOR_SIZE[::-1], 3), np.uint8)
        depths.append(depth)
        colors.append(color)
    write_scannet_frames(tmp_path / "frames", np.stack(colors), np.stack(depths), poses, _k(*COLOR_SIZE),
                         _k(*DEPTH_SIZE))
    return read_scannet_frames(tmp_path / "frames")


POINTS = [_square_points(cx, cy, z, half) for _, cx, cy, z, half, _ in SQUARES]
CONFIG = ViewSelectionConfig(views_per_object=2, cover_score=0.3, crop_size=8, max_depth=6.0)


def test_scores_follow_occlusion_and_best_views_pick_the_unoccluded_frame(frames):
    assert frames.frame_ids.tolist() == [0, 2] and frames.skipped_invalid_poses == 1
    views = select_scene_views(POINTS, [10, 11, 12], frames, CONFIG)
    share = views.visible_share
    assert share[0, 0] == pytest.approx(1.0) and share[0, 1] == 0.0  # A: seen from the front, hidden behind C
    assert share[2, 0] == 0.0 and share[2, 1] == pytest.approx(1.0)  # C: the other way round
    assert share[1].min() == pytest.approx(1.0)  # B: in both
    assert np.allclose(views.iosa, 1.0)  # every square lies wholly inside both images
    assert views.best.tolist() == [[0, -1], [0, 1], [1, -1]]  # B ties: the lower frame first
    assert views.object_ids.tolist() == [10, 11, 12] and views.frame_ids.tolist() == [0, 2]
    assert views.meta["skipped_invalid_poses"] == 1


def test_crops_show_the_object_in_its_best_view(frames):
    views = select_scene_views(POINTS, [10, 11, 12], frames, CONFIG)
    assert views.crops.shape == (3, 2, 8, 8, 3) and views.crops.dtype == np.uint8
    assert views.crop_valid.tolist() == [[True, False], [True, True], [True, False]]
    for row, channel in ((0, 0), (1, 1), (2, 2)):  # A red, B green, C blue
        mean = views.crops[row, 0].reshape(-1, 3).mean(0)
        assert mean[channel] > 150 and mean[channel] > 2 * np.delete(mean, channel).max(), (row, mean)
    assert np.all(views.crops[~views.crop_valid] == 0)
    # A's points span +-0.14 m at 2 m: +-11.2 px around the centre (79.5, 59.5), padded by 15% of 22.4 px
    assert np.allclose(views.crop_boxes[0, 0], [79.5 - 14.56, 59.5 - 14.56, 79.5 + 14.56, 59.5 + 14.56], atol=0.05)


def test_scene_view_set_covers_every_object_greedily():
    score = torch.tensor([[0.9, 0.0, 0.0], [0.2, 0.6, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.1]])
    assert cover_views(score, 0.3) == [1, 0]  # frame 1 covers objects 1, 2; then frame 0 covers object 0
    assert cover_views(score, 0.3, max_views=1) == [1]
    assert cover_views(score, 0.05) == [0, 1, 2]  # object 3 is covered only by frame 2
    assert best_views(score, 2).tolist() == [[0, -1], [1, 0], [1, -1], [2, -1]]
    assert best_views(torch.zeros(2, 0), 3).tolist() == [[-1, -1, -1], [-1, -1, -1]]


def test_scene_views_are_cached_and_recomputed_when_the_config_changes(frames, tmp_path):
    first = scene_views_cached(tmp_path / "cache", "scene0000_00", POINTS, [10, 11, 12], frames, CONFIG)
    files = list((tmp_path / "cache").glob("scene0000_00_views_*.npz"))
    assert len(files) == 1
    again = scene_views_cached(tmp_path / "cache", "scene0000_00", POINTS, [10, 11, 12], frames, CONFIG)
    assert isinstance(again, SceneViews) and np.array_equal(again.crops, first.crops)
    assert np.array_equal(again.best, first.best) and again.meta == first.meta
    other = ViewSelectionConfig(views_per_object=1, cover_score=0.3, crop_size=8, max_depth=6.0)
    changed = scene_views_cached(tmp_path / "cache", "scene0000_00", POINTS, [10, 11, 12], frames, other)
    assert changed.best.shape == (3, 1) and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_min_visible_points_and_the_depth_range_gate_the_score(frames):
    strict = ViewSelectionConfig(views_per_object=2, min_visible_points=82, max_depth=6.0)  # each square has 81
    assert select_scene_views(POINTS, [0, 1, 2], frames, strict).score.max() == 0.0
    near = ViewSelectionConfig(views_per_object=2, max_depth=2.5)  # B is 3 m from the back camera, C 2 m
    views = select_scene_views(POINTS, [0, 1, 2], frames, near)
    assert views.score[1, 1] == 0.0 and views.best[1].tolist() == [0, -1] and views.best[2].tolist() == [1, -1]


@pytest.mark.parametrize("bad", [{"views_per_object": 0}, {"crop_size": 2}, {"cover_score": 0.0},
                                 {"min_depth": 5.0, "max_depth": 1.0}, {"max_scene_views": 0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        ViewSelectionConfig(**bad)


def test_object_without_points_is_refused(frames):
    with pytest.raises(ValueError, match="object 1"):
        select_scene_views([POINTS[0], np.zeros((0, 3))], [0, 1], frames)
