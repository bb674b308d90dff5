"""Projection on hand-made cameras and the SensReader reader on a tiny written frame set."""
import numpy as np
import torch

from scene3d.data.frames import read_scannet_frames, write_scannet_frames
from scene3d.data.projection import point_visibility, project_points

K = torch.tensor([[100.0, 0, 40.0], [0, 100.0, 30.0], [0, 0, 1]], dtype=torch.float64)


def test_point_ahead_lands_at_principal_point_and_behind_is_invisible():
    poses = torch.eye(4, dtype=torch.float64)[None]
    points = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [0.1, 0.0, 1.0]], dtype=torch.float64)
    uv, z = project_points(points, poses, K)
    assert torch.allclose(uv[0, 0], torch.tensor([40.0, 30.0], dtype=torch.float64))
    assert torch.allclose(uv[0, 2], torch.tensor([50.0, 30.0], dtype=torch.float64))  # 100 * 0.1 / 1 + 40
    depth = torch.full((1, 60, 80), 2.0, dtype=torch.float64)
    visible = point_visibility(points, poses, K, depth)["visible"][0]
    assert visible.tolist() == [True, False, False]  # the third point is 1 m away where the map says 2 m: occluded


def test_reader_skips_inf_pose_orders_numerically_and_aligns(tmp_path):
    views = 3
    poses = np.stack([np.eye(4)] * views)
    poses[1] = -np.inf
    poses[2][:3, 3] = [1.0, 2.0, 3.0]
    write_scannet_frames(tmp_path, np.zeros((views, 12, 16, 3), np.uint8), np.full((views, 6, 8), 1.5), poses,
                         np.eye(3), np.eye(3), frame_ids=np.array([2, 10, 9]))
    alignment = np.eye(4)
    alignment[:3, 3] = [5.0, 0.0, 0.0]
    frames = read_scannet_frames(tmp_path, axis_alignment=alignment)
    assert frames.frame_ids.tolist() == [2, 9]
    assert frames.skipped_invalid_poses == 1
    assert np.allclose(frames.poses[1][:3, 3], [6.0, 2.0, 3.0])
    assert frames.color_size == (16, 12) and frames.depth_size == (8, 6)
    assert np.allclose(frames.depth(0), 1.5)
