"""Check the projection against the demo renderer's ground truth (issue 18, measured claim 1).

    python benchmarks/check_multiview_projection.py DEMO_ROOT [--split val] [--max-scenes N]

DEMO_ROOT is a demo scene set with rendered frames in DEMO_ROOT/frames (built by `python -m scene3d.train
experiment=multiview`, or `scene3d.data.demo_frames.ensure_demo_frames`). For every (object point, frame) pair
inside the frustum and the depth range, "truly visible" means the renderer's instance map at the point's nearest
depth pixel is the point's own object. Printed:

- precision of `point_visibility`: share of the pairs it calls visible whose pixel is on the point's own mask
  (recall against the masks is not meaningful: the far faces of an object project onto its own near faces and are
  rightly invisible; the depth test itself compares with the rendered depth, so it agrees with it by construction);
- box IoU: for object-frame pairs where no point of the object is hidden by another object (its pixel showing
  another object nearer than the point by more than the tolerance) and its projected box lies inside the image,
  IoU of `project_boxes`' rectangle (depth-image pixels) with the bounding box of the
  object's ground-truth mask pixels (each pixel spanning +-0.5).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from scene3d.data.frames import read_scannet_frames
from scene3d.data.projection import VisibilityConfig, point_visibility, project_boxes
from scene3d.data.scannet import read_scannet_scene


def check_scene(scene_dir: Path, frames_dir: Path, config: VisibilityConfig) -> dict[str, list[float] | np.ndarray]:
    scene = read_scannet_scene(scene_dir, scene_id=scene_dir.name)
    frames = read_scannet_frames(frames_dir, axis_alignment=scene.axis_alignment)
    points = torch.from_numpy(np.concatenate([o.points for o in scene.objects])).double()
    owner = np.concatenate([[i] * len(o.points) for i, o in enumerate(scene.objects)])
    ids = np.array([o.object_id for o in scene.objects])
    poses, k_depth = torch.from_numpy(frames.poses), torch.from_numpy(frames.intrinsic_depth)
    vis = point_visibility(points, poses, k_depth, torch.from_numpy(frames.depths()), config)
    width, height = frames.depth_size
    box_min = torch.from_numpy(np.stack([o.box_min for o in scene.objects])).double()
    box_max = torch.from_numpy(np.stack([o.box_max for o in scene.objects])).double()
    boxes = project_boxes(box_min, box_max, poses, k_depth, (width, height))
    confusion = np.zeros((2, 2), dtype=np.int64)  # [predicted visible][truly visible]
    ious = []
    for view in range(len(frames)):
        instance = frames.instance(view)
        uv, z = vis["uv"][view].numpy(), vis["z"][view].numpy()
        candidate = vis["in_frustum"][view].numpy() & (z >= config.min_depth) & (z <= config.max_depth)
        col = np.clip(np.round(np.nan_to_num(uv[:, 0])), 0, width - 1).astype(int)
        row = np.clip(np.round(np.nan_to_num(uv[:, 1])), 0, height - 1).astype(int)
        truth = instance[row, col] == ids[owner]
        predicted = vis["visible"][view].numpy()
        np.add.at(confusion, (predicted[candidate].astype(int), truth[candidate].astype(int)), 1)
        depth = frames.depth(view)[row, col]
        hidden = candidate & ~truth & (instance[row, col] >= 0) & (depth > 0) & (depth < z - config.depth_tolerance)
        hidden_count = np.bincount(owner, weights=hidden, minlength=len(ids))
        seen_count = np.bincount(owner, weights=predicted, minlength=len(ids))
        rect = boxes["rect"][view].numpy()
        inside = (rect[:, 0] >= -0.5) & (rect[:, 1] >= -0.5) & (rect[:, 2] <= width - 0.5) & (rect[:, 3] <= height - 0.5)
        for n in np.flatnonzero((hidden_count == 0) & (seen_count >= 10) & inside):
            rows, cols = np.nonzero(instance == ids[n])
            if rows.size == 0:
                continue
            mask_box = np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
            x0, y0 = np.maximum(rect[n, :2], mask_box[:2])
            x1, y1 = np.minimum(rect[n, 2:], mask_box[2:])
            inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            ious.append(inter / (area(rect[n]) + area(mask_box) - inter))
    return {"confusion": confusion, "ious": ious}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_root", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-scenes", type=int, default=None)
    args = parser.parse_args(argv)
    config = VisibilityConfig()
    scene_ids = (args.demo_root / f"scannetv2_{args.split}.txt").read_text().split()[: args.max_scenes]
    confusion, ious = np.zeros((2, 2), dtype=np.int64), []
    for scene_id in scene_ids:
        result = check_scene(args.demo_root / "scans" / scene_id, args.demo_root / "frames" / scene_id, config)
        confusion += result["confusion"]
        ious += result["ious"]
    total = confusion.sum()
    table = Table(title=f"projection vs renderer ground truth: {len(scene_ids)} {args.split} scenes")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(point, frame) pairs in frustum and depth range", f"{total}")
    table.add_row("pairs called visible", f"{confusion[1].sum()}")
    table.add_row("precision (visible -> own mask)", f"{confusion[1, 1] / confusion[1].sum():.4f}")
    table.add_row("unoccluded, fully framed object-frame pairs", f"{len(ious)}")
    table.add_row("box IoU mean / median", f"{np.mean(ious):.3f} / {np.median(ious):.3f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
