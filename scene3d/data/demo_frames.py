"""Rendered RGB-D frames of the demo rooms, written in ScanNet's SensReader layout (`scene3d.data.frames`).

For every scene of a demo set (`scene3d.data.demo`) the room is rebuilt from the set's seed (the layout, the
floor and walls and the scan transform are functions of (seed, scene index), exactly as `make_scene` draws
them) and ray-cast from a camera path inside the room:

- path: ``frames_per_scene`` cameras on an ellipse around the room centre (radii 0.3 x the room's width / depth,
  height ``camera_height``), each looking across the room (yaw towards the centre, +/- 35 degrees of sweep),
  pitched ``pitch_deg`` down; positions inside furniture are skipped;
- colour (``color_size``) and depth (``depth_size``, another size and its own intrinsics, as in ScanNet) are
  traced separately; the depth is the camera z of the nearest surface, 0 where a ray hits nothing;
- ``instance/<i>.png``: objectId + 1 of the nearest surface per depth pixel (the renderer's ground-truth object
  masks, used to check the projection);
- poses are camera-to-SCAN-frame (the stored, unaligned frame of the PLY), so the reader must apply the scene's
  axisAlignment to put cameras and points in one frame, as with real ScanNet.

**What the views carry that the points do not:** every furniture object gets a surface pattern, one of
`PATTERNS` (plain, striped = horizontal bands, checkered, dotted; 8 cm period), drawn at random per object. The
patterns exist only in the rendered images: the PLY's vertex colours are the object's plain colour (plus
noise), and 32-64 sampled points per object could not resolve 8 cm bands anyway. ``object_phrases.json``
gives each referable object an appearance phrase "<pattern> <colour> <noun>" (e.g. "striped red chair",
"plain blue chair"); same-noun, same-colour objects then differ only by what the views show.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from common.build_once import build_folder_once, read_json_file
from common.io import atomic_write_json
from scene3d.data.demo.build import (
    INFO_NAME,
    STRUCTURE_LABELS,
    _random_alignment,
    _rng,
)
from scene3d.data.demo.primitives import Box, Cylinder, shade_color
from scene3d.data.demo.rooms import ROOM_TYPES, generate_room, in_openings, structure_parts
from scene3d.data.frames import write_scannet_frames

__all__ = ["PATTERNS", "FRAMES_SUBDIR", "render_scene_frames", "build_demo_frames", "ensure_demo_frames",
           "demo_camera_path", "pinhole"]

FRAMES_SUBDIR = "frames"
FRAMES_INFO = "frames_info.json"
PATTERNS_FILE = "patterns.json"
PHRASES_FILE = "object_phrases.json"
FRAMES_VERSION = 1
CREATED_WITH = "scene3d.data.demo_frames"
PATTERNS = ("plain", "striped", "checkered", "dotted")
PATTERN_PERIOD = 0.08  # metres
PATTERN_DARKNESS = 0.35  # pattern pixels: colour x this
_STREAM = 11  # the rng stream of the patterns and camera jitter (build.py uses 0..5)
_LIGHT = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])


def pinhole(width: int, height: int, fov_x_deg: float = 58.0) -> np.ndarray:
    """A (3, 3) pinhole K with horizontal field of view `fov_x_deg` (ScanNet's colour camera: ~58 degrees) and a
    principal point slightly off the image centre, like a calibrated camera."""
    fx = width / 2 / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[fx, 0, width / 2 - 0.3], [0, fx, height / 2 + 0.4], [0, 0, 1]], dtype=np.float64)


def _look_pose(position: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world (4, 4) of an OpenCV camera at `position` looking along (yaw, pitch), world z up."""
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)  # columns: camera x, y, z in world
    pose[:3, 3] = position
    return pose


def demo_camera_path(layout, frames: int, rng: np.random.Generator, *, camera_height: float = 1.4,
                     pitch_deg: float = 25.0) -> np.ndarray:
    """Room-frame camera-to-world poses (V, 4, 4) on an ellipse inside the room, skipping spots inside objects."""
    w, d = layout.width, layout.depth
    centre = np.array([w / 2, d / 2])
    boxes = [obj.bounds for obj in layout.objects]
    poses = []
    for k in range(frames * 4):
        if len(poses) == frames:
            break
        angle = 2 * math.pi * k / frames + (0.5 * math.pi / frames if k >= frames else 0.0) * (k // frames)
        xy = centre + 0.3 * np.array([w * math.cos(angle), d * math.sin(angle)])
        position = np.array([xy[0], xy[1], camera_height])
        if any(np.all(position >= lo - 0.15) and np.all(position <= hi + 0.15) for lo, hi in boxes):
            continue
        yaw = math.atan2(centre[1] - xy[1], centre[0] - xy[0]) + math.radians(35) * math.sin(3 * angle)
        yaw += float(rng.uniform(-0.1, 0.1))
        poses.append(_look_pose(position, yaw, -math.radians(pitch_deg)))
    if not poses:
        raise RuntimeError(f"no free camera position in the {layout.room_type}")
    return np.stack(poses)


def _pattern_mask(pattern: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dark pixels of `pattern` at surface coordinates (a, b) in metres."""
    s = PATTERN_PERIOD
    if pattern == "striped":
        return np.floor(b / s * 2) % 2 == 1  # bands of half a period
    if pattern == "checkered":
        return (np.floor(a / s) + np.floor(b / s)) % 2 == 1
    if pattern == "dotted":
        fa, fb = a / s - np.floor(a / s) - 0.5, b / s - np.floor(b / s) - 0.5
        return fa ** 2 + fb ** 2 < 0.3 ** 2
    return np.zeros(a.shape, dtype=bool)


class _Surfaces:
    """Every part of the room as arrays for vectorised ray casting (boxes by slabs, cylinders analytically)."""

    def __init__(self, layout, patterns: dict[int, str], structure: list[tuple[int, str, Any, int | None, str]]):
        self.layout = layout
        boxes, cylinders = [], []
        for object_id, obj in enumerate(layout.objects):
            for part in obj.parts:
                rgb = shade_color(obj.color, part.shade)
                entry = (object_id, rgb, patterns.get(object_id, "plain"), None)
                (boxes if isinstance(part, Box) else cylinders).append((part, entry))
        for object_id, _, box, wall, color in structure:
            boxes.append((box, (object_id, shade_color(color, 1.0), "plain", wall)))
        self.box_lo = np.array([p.lo for p, _ in boxes], dtype=np.float64).reshape(-1, 3)
        self.box_hi = np.array([p.hi for p, _ in boxes], dtype=np.float64).reshape(-1, 3)
        self.box_info = [e for _, e in boxes]
        self.cylinders = cylinders

    def cast(self, origin: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        """Nearest hit of rays origin + t * direction (t > 0); direction z-component in camera = 1, so t = depth.

        Shapes: origin (3,), directions (R, 3) -> t (R,) (inf: no hit), part (R,) index, normal_axis (R,),
        point (R, 3), kind (R,) 0 box / 1 cylinder side / 2 cylinder cap.
        """
        eps = 1e-4
        safe = np.where(np.abs(directions) < 1e-12, 1e-12, directions)
        t1 = (self.box_lo[None] - origin) / safe[:, None]  # (R, B, 3)
        t2 = (self.box_hi[None] - origin) / safe[:, None]
        t_lo, t_hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, t_far = t_lo.max(-1), t_hi.min(-1)  # (R, B)
        hit = (t_near <= t_far + 1e-9) & (t_near > eps)
        t_box = np.where(hit, t_near, np.inf)
        points = origin + t_box[..., None] * directions[:, None]  # (R, B, 3)
        for index, (_, _, _, wall) in enumerate(self.box_info):  # walls have holes at doors and windows
            if wall is not None:
                blocked = np.isfinite(t_box[:, index])
                holes = np.zeros_like(blocked)
                holes[blocked] = in_openings(self.layout, wall, points[blocked, index])
                t_box[holes, index] = np.inf
        best_box = t_box.argmin(-1) if t_box.shape[1] else np.zeros(len(directions), dtype=np.int64)
        t = t_box[np.arange(len(directions)), best_box] if t_box.shape[1] else np.full(len(directions), np.inf)
        axis = t_lo[np.arange(len(directions)), best_box].argmax(-1) if t_box.shape[1] else np.zeros_like(best_box)
        part = best_box.copy()
        kind = np.zeros(len(directions), dtype=np.int64)
        for c, (cylinder, _) in enumerate(self.cylinders):
            cx, cy = cylinder.center
            ox, oy = origin[0] - cx, origin[1] - cy
            dx, dy, dz = directions[:, 0], directions[:, 1], directions[:, 2]
            qa = dx ** 2 + dy ** 2
            qb = 2 * (ox * dx + oy * dy)
            qc = ox ** 2 + oy ** 2 - cylinder.radius ** 2
            disc = qb ** 2 - 4 * qa * qc
            root = np.sqrt(np.clip(disc, 0, None))
            t_side = np.full(len(directions), np.inf)
            for sign in (-1.0, 1.0):
                ts = (-qb + sign * root) / np.maximum(2 * qa, 1e-12)
                z = origin[2] + ts * dz
                ok = (disc >= 0) & (ts > eps) & (z >= cylinder.z0) & (z <= cylinder.z1) & (ts < t_side)
                t_side = np.where(ok, ts, t_side)
            t_cap = np.full(len(directions), np.inf)
            for height in (cylinder.z0, cylinder.z1):
                tc = (height - origin[2]) / np.where(np.abs(dz) < 1e-12, 1e-12, dz)
                px, py = ox + tc * dx, oy + tc * dy
                ok = (tc > eps) & (px ** 2 + py ** 2 <= cylinder.radius ** 2) & (tc < t_cap)
                t_cap = np.where(ok, tc, t_cap)
            for value, kind_id in ((t_side, 1), (t_cap, 2)):
                closer = value < t
                t = np.where(closer, value, t)
                part = np.where(closer, len(self.box_info) + c, part)
                kind = np.where(closer, kind_id, kind)
                axis = np.where(closer, 2, axis)
        point = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * directions
        return {"t": t, "part": part, "axis": axis, "kind": kind, "point": point}

    def info(self, part: int) -> tuple[int, np.ndarray, str, int | None]:
        if part < len(self.box_info):
            return self.box_info[part]
        return self.cylinders[part - len(self.box_info)][1]

    def shade(self, origin: np.ndarray, directions: np.ndarray, hits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Colour (R, 3) in [0, 1] and objectId (R,) (-1: nothing) of the hits."""
        rays = len(directions)
        rgb = np.zeros((rays, 3))
        ids = np.full(rays, -1, dtype=np.int64)
        finite = np.isfinite(hits["t"])
        point, axis, kind = hits["point"], hits["axis"], hits["kind"]
        normal = np.zeros((rays, 3))
        normal[np.arange(rays), axis] = 1.0
        side = kind == 1
        for part in np.unique(hits["part"][finite]):
            rows = finite & (hits["part"] == part)
            object_id, base, pattern, _ = self.info(int(part))
            ids[rows] = object_id
            p = point[rows]
            tangent = [i for i in range(3)]
            a = np.where(axis[rows] == 0, p[:, 1], p[:, 0])
            b = np.where(axis[rows] == 2, p[:, 1], p[:, 2])
            if part >= len(self.box_info):
                cylinder = self.cylinders[int(part) - len(self.box_info)][0]
                angle = np.arctan2(p[:, 1] - cylinder.center[1], p[:, 0] - cylinder.center[0])
                lateral = side[rows]
                a = np.where(lateral, angle * cylinder.radius, p[:, 0])
                b = np.where(lateral, p[:, 2], p[:, 1])
                n = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], 1)
                normal[rows] = np.where(lateral[:, None], n, [0.0, 0.0, 1.0])
            del tangent
            dark = _pattern_mask(pattern, a, b)
            light = 0.55 + 0.45 * np.abs(normal[rows] @ _LIGHT)
            rgb[rows] = base[None] * light[:, None] * np.where(dark, PATTERN_DARKNESS, 1.0)[:, None]
        return np.clip(rgb, 0, 1), ids


def _rays(pose: np.ndarray, k: np.ndarray, width: int, height: int) -> np.ndarray:
    """World directions (H*W, 3) of every pixel centre, scaled so that their camera z is 1."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    camera = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    return camera @ pose[:3, :3].T


def render_scene_frames(seed: int, index: int, *, frames_per_scene: int = 12, color_size=(192, 144),
                        depth_size=(96, 72), camera_height: float = 1.4, pitch_deg: float = 25.0) -> dict[str, Any]:
    """Render demo scene `index` of a set built with `seed` (see the module docstring).

    Returns:
        colors (V, Hc, Wc, 3) uint8, depths (V, Hd, Wd) metres, instances (V, Hd, Wd) objectId or -1,
        poses (V, 4, 4) camera-to-scan-frame, intrinsic_color, intrinsic_depth (3, 3), patterns {objectId: name},
        layout, axis_alignment (4, 4).
    """
    room_type = ROOM_TYPES[(index + seed) % len(ROOM_TYPES)]
    layout = generate_room(_rng(seed, index, 0), room_type)
    alignment = _random_alignment(_rng(seed, index, 2))
    rng = _rng(seed, index, _STREAM)
    patterns = {i: str(rng.choice(PATTERNS)) for i in range(len(layout.objects))}
    # structure ids and colours exactly as make_scene assigns them (colours come from its own rng stream: the
    # renderer reads them back from objects.json via `structure_colors`; grey here is only the fallback)
    surfaces = structure_parts(layout)
    flat = [(label, box, wall) for label in STRUCTURE_LABELS for box, wall in surfaces[label]]
    structure = [(len(layout.objects) + i, label, box, wall, "grey") for i, (label, box, wall) in enumerate(flat)]
    return {"room_type": room_type, "layout": layout, "axis_alignment": alignment, "patterns": patterns,
            "structure": structure, "rng": rng, "frames_per_scene": frames_per_scene, "color_size": color_size,
            "depth_size": depth_size, "camera_height": camera_height, "pitch_deg": pitch_deg}


def _render(plan: dict[str, Any], structure_colors: dict[int, str]) -> dict[str, Any]:
    layout = plan["layout"]
    structure = [(i, label, box, wall, structure_colors.get(i, color)) for i, label, box, wall, color in plan["structure"]]
    scene = _Surfaces(layout, plan["patterns"], structure)
    poses_room = demo_camera_path(layout, plan["frames_per_scene"], plan["rng"], camera_height=plan["camera_height"],
                                  pitch_deg=plan["pitch_deg"])
    (wc, hc), (wd, hd) = plan["color_size"], plan["depth_size"]
    k_color, k_depth = pinhole(wc, hc), pinhole(wd, hd)
    colors, depths, instances = [], [], []
    for pose in poses_room:
        origin = pose[:3, 3]
        rays = _rays(pose, k_color, wc, hc)
        hits = scene.cast(origin, rays)
        rgb, _ = scene.shade(origin, rays, hits)
        colors.append((rgb.reshape(hc, wc, 3) * 255).round().astype(np.uint8))
        rays = _rays(pose, k_depth, wd, hd)
        hits = scene.cast(origin, rays)
        _, ids = scene.shade(origin, rays, hits)
        depth = np.where(np.isfinite(hits["t"]), hits["t"], 0.0)  # t = camera z (rays have camera z = 1)
        depths.append(depth.reshape(hd, wd))
        instances.append(ids.reshape(hd, wd))
    # room frame -> scan frame: the scan stores x_scan = A^-1 x_room, so a camera-to-room pose becomes A^-1 pose
    poses_scan = np.linalg.inv(plan["axis_alignment"])[None] @ poses_room
    return {"colors": np.stack(colors), "depths": np.stack(depths), "instances": np.stack(instances),
            "poses": poses_scan, "intrinsic_color": k_color, "intrinsic_depth": k_depth}


def demo_frames_args(*, frames_per_scene: int = 12, color_size=(192, 144), depth_size=(96, 72),
                     camera_height: float = 1.4, pitch_deg: float = 25.0) -> dict[str, Any]:
    """The checked render arguments, as recorded in frames_info.json.

    Raises:
        ValueError: a value out of range.
    """
    if isinstance(frames_per_scene, bool) or not isinstance(frames_per_scene, int) or frames_per_scene < 1:
        raise ValueError(f"frames_per_scene must be an int >= 1, got {frames_per_scene!r}")
    sizes = {}
    for name, size in (("color_size", color_size), ("depth_size", depth_size)):
        size = [int(v) for v in size]
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"{name} must be (width, height) with both >= 8, got {size}")
        sizes[name] = size
    if not 0.3 <= float(camera_height) <= 2.5 or not 0 <= float(pitch_deg) <= 80:
        raise ValueError(f"camera_height must be in [0.3, 2.5] m and pitch_deg in [0, 80], got {camera_height}, "
                         f"{pitch_deg}")
    return {"frames_per_scene": frames_per_scene, **sizes, "camera_height": float(camera_height),
            "pitch_deg": float(pitch_deg)}


def build_demo_frames(demo_root: str | Path, out_dir: str | Path, *, progress: bool = True, **render) -> Path:
    """Render every scene of the demo set at `demo_root` into `out_dir`/<scene_id>/ (SensReader layout), with
    patterns.json, object_phrases.json and frames_info.json (written last)."""
    args = demo_frames_args(**render)
    demo_root, out_dir = Path(demo_root), Path(out_dir)
    info = read_json_file(demo_root / INFO_NAME)
    if info is None or "args" not in info:
        raise ValueError(f"{demo_root / INFO_NAME}: not a demo scene set (build it with python -m scene3d.data.demo)")
    seed = int(info["args"]["seed"])
    table = json.loads((demo_root / "objects.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    patterns, phrases = {}, {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("rendering demo frames", total=len(table))
        for scene_id, entry in sorted(table.items()):
            index = int(scene_id[len("scene"):].split("_")[0])
            plan = render_scene_frames(seed, index, color_size=tuple(args["color_size"]),
                                       depth_size=tuple(args["depth_size"]),
                                       **{k: args[k] for k in ("frames_per_scene", "camera_height", "pitch_deg")})
            structure_colors = {o["object_id"]: o["color"] for o in entry["objects"] if not o["referable"]}
            frames = _render(plan, structure_colors)
            write_scannet_frames(out_dir / scene_id, frames["colors"], frames["depths"], frames["poses"],
                                 frames["intrinsic_color"], frames["intrinsic_depth"], instances=frames["instances"])
            patterns[scene_id] = {str(i): p for i, p in plan["patterns"].items()}
            phrases[scene_id] = {str(o["object_id"]): f"{plan['patterns'][o['object_id']]} {o['color']} {o['label']}"
                                 for o in entry["objects"] if o["referable"]}
            bar.advance(task)
    atomic_write_json(out_dir / PATTERNS_FILE, patterns)
    atomic_write_json(out_dir / PHRASES_FILE, phrases)
    atomic_write_json(out_dir / FRAMES_INFO, {"created_with": CREATED_WITH, "version": FRAMES_VERSION, "args": args,
                                              "demo_args": info["args"]})
    return out_dir


def ensure_demo_frames(demo_root: str | Path, *, progress: bool = True, force: bool = False, **render) -> Path:
    """`<demo_root>/frames`, rendered first when absent or made with other arguments (same locking as the scenes)."""
    args = demo_frames_args(**render)
    demo_root = Path(demo_root)
    demo_args = (read_json_file(demo_root / INFO_NAME) or {}).get("args")

    def current(folder: Path) -> bool:
        info = read_json_file(folder / FRAMES_INFO)
        return (info is not None and info.get("version") == FRAMES_VERSION and info.get("args") == args
                and info.get("demo_args") == demo_args)

    return build_folder_once(
        demo_root / FRAMES_SUBDIR, force=force, what="demo frame set", is_current=current,
        is_ours=lambda folder: (read_json_file(folder / FRAMES_INFO) or {}).get("created_with") == CREATED_WITH,
        build=lambda staging: build_demo_frames(demo_root, staging, progress=progress, **render))
