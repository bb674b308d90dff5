"""ScanNet RGB-D frames in the SensReader export layout: read (`read_scannet_frames`) and write (`write_scannet_frames`).

Layout of one scene's frame folder (what ScanNet's ``SensReader/python/reader.py --export_*`` writes)::

    color/<i>.jpg                    colour frame i (e.g. 1296 x 968)
    depth/<i>.png                    uint16 depth in millimetres (divide by the depth shift, 1000); 0 = no depth
    pose/<i>.txt                     4x4 camera-to-world matrix of frame i (4 rows of 4 numbers)
    intrinsic/intrinsic_color.txt    4x4 pinhole matrix K of the colour camera, for the colour size
    intrinsic/intrinsic_depth.txt    4x4 K of the depth camera, for the depth size (e.g. 640 x 480)
    intrinsic/extrinsic_color.txt    4x4 (read and kept; identity in ScanNet's export)
    intrinsic/extrinsic_depth.txt    4x4 (idem)
    instance/<i>.png                 optional (the demo writes it): uint16 objectId + 1 per depth pixel, 0 = none

Frame names are unpadded integers ("0", "1", ..., "10"): frames are ordered numerically, never as strings.

Conventions: the camera frame is OpenCV's (x right, y down, z forward). `pose` maps camera coordinates to the
scan's world frame; with `axis_alignment` A (the scene's ``axisAlignment``, which `read_scannet_scene` applies to
the points) the reader returns ``A @ pose``, so the points and the cameras share the axis-aligned frame. Both
cameras use the same pose (ScanNet's export has identity extrinsics; ScanRefer's projection does the same); a
non-identity extrinsic is logged.

Real ScanNet holds frames whose pose is all ``-inf`` (tracking lost): they are skipped and counted
(`FrameSet.skipped_invalid_poses`, one log line per scene), never used.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.io import atomic_write_bytes, atomic_write_text

__all__ = ["DEPTH_SHIFT", "FrameSet", "FramesReadError", "read_scannet_frames", "write_scannet_frames",
           "read_matrix_file"]

log = logging.getLogger(__name__)

DEPTH_SHIFT = 1000.0  # ScanNet: depth png value / 1000 = metres
COLOR_DIR, DEPTH_DIR, POSE_DIR, INTRINSIC_DIR, INSTANCE_DIR = "color", "depth", "pose", "intrinsic", "instance"
MATRIX_FILES = ("intrinsic_color", "intrinsic_depth", "extrinsic_color", "extrinsic_depth")


class FramesReadError(ValueError):
    """A frame folder that cannot be read; the message names the file and the problem."""


def read_matrix_file(path: Path) -> np.ndarray:
    """A 4x4 matrix written as 4 lines of 4 numbers (ScanNet's pose / intrinsic files), float64 (4, 4).

    Non-finite entries (``-inf``, ``nan``) are returned as they are; the caller decides.

    Raises:
        FramesReadError: missing file, or not 16 numbers.
    """
    if not path.is_file():
        raise FramesReadError(f"{path}: file not found")
    try:
        values = [float(v) for v in path.read_text().split()]
    except ValueError:
        raise FramesReadError(f"{path}: not a 4x4 matrix of numbers (4 lines of 4 numbers)") from None
    if len(values) != 16:
        raise FramesReadError(f"{path}: expected 16 numbers (a 4x4 matrix), found {len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def _frame_ids(folder: Path, suffix: str) -> dict[int, Path]:
    """Frame id -> file of a folder of `<i><suffix>` files; names that are not integers are an error."""
    if not folder.is_dir():
        raise FramesReadError(f"{folder}: folder not found (SensReader layout: color/, depth/, pose/, intrinsic/)")
    out = {}
    for path in folder.iterdir():
        if path.suffix.lower() != suffix:
            continue
        try:
            out[int(path.stem)] = path
        except ValueError:
            raise FramesReadError(f"{path}: frame names must be integers (e.g. 0{suffix}, 17{suffix})") from None
    return out


@dataclass
class FrameSet:
    """The usable frames of one scene (valid poses, after subsampling), loaded lazily.

    Attributes:
        root: the frame folder.
        frame_ids: (V,) int64 frame numbers, ascending.
        poses: (V, 4, 4) float64 camera-to-world, axis alignment applied when it was given.
        intrinsic_color, intrinsic_depth, extrinsic_color, extrinsic_depth: (4, 4) float64.
        color_size, depth_size: (width, height) of the colour and depth images (from frame `frame_ids[0]`).
        skipped_invalid_poses: frames dropped for a non-finite pose (after subsampling).
        depth_shift: depth png value / depth_shift = metres.
    """

    root: Path
    frame_ids: np.ndarray
    poses: np.ndarray
    intrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_color: np.ndarray
    extrinsic_depth: np.ndarray
    color_size: tuple[int, int]
    depth_size: tuple[int, int]
    skipped_invalid_poses: int = 0
    depth_shift: float = DEPTH_SHIFT
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame_ids.size)

    def color_path(self, view: int) -> Path:
        return self.root / COLOR_DIR / f"{int(self.frame_ids[view])}.jpg"

    def depth_path(self, view: int) -> Path:
        return self.root / DEPTH_DIR / f"{int(self.frame_ids[view])}.png"

    def color(self, view: int) -> np.ndarray:
        """Colour image of view `view` (an index into frame_ids), (H_c, W_c, 3) uint8."""
        path = self.color_path(view)
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise FramesReadError(f"{path}: cannot read the colour image ({error})") from None
        if (array.shape[1], array.shape[0]) != self.color_size:
            raise FramesReadError(f"{path}: size {array.shape[1]}x{array.shape[0]} differs from the scene's colour "
                                  f"size {self.color_size[0]}x{self.color_size[1]}")
        return array

    def depth(self, view: int) -> np.ndarray:
        """Depth of view `view` in metres (0 = no measurement), (H_d, W_d) float32."""
        path = self.depth_path(view)
        try:
            with Image.open(path) as image:
                array = np.asarray(image)
        except (OSError, ValueError) as error:
            raise FramesReadError(f"{path}: cannot read the depth image ({error})") from None
        if array.ndim != 2 or array.dtype not in (np.uint16, np.int32, np.uint8):
            raise FramesReadError(f"{path}: depth must be a single-channel 16-bit png (millimetres), got "
                                  f"{array.dtype} with shape {array.shape}")
        if (array.shape[1], array.shape[0]) != self.depth_size:
            raise FramesReadError(f"{path}: size {array.shape[1]}x{array.shape[0]} differs from the scene's depth "
                                  f"size {self.depth_size[0]}x{self.depth_size[1]}")
        return array.astype(np.float32) / np.float32(self.depth_shift)

    def depths(self) -> np.ndarray:
        """All depth maps, (V, H_d, W_d) float32 metres."""
        return np.stack([self.depth(v) for v in range(len(self))]) if len(self) else np.zeros((0, *self.depth_size[::-1]), np.float32)

    def instance(self, view: int) -> np.ndarray | None:
        """The optional instance map of view `view` (objectId per depth pixel, -1 = none), (H_d, W_d) int64."""
        path = self.root / INSTANCE_DIR / f"{int(self.frame_ids[view])}.png"
        if not path.is_file():
            return None
        with Image.open(path) as image:
            return np.asarray(image).astype(np.int64) - 1


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as error:
        raise FramesReadError(f"{path}: cannot read the image ({error})") from None


def read_scannet_frames(
    frames_dir: str | os.PathLike,
    *,
    axis_alignment: np.ndarray | None = None,
    frame_skip: int = 1,
    depth_shift: float = DEPTH_SHIFT,
) -> FrameSet:
    """Read a SensReader export folder (see the module docstring).

    Args:
        frames_dir: the folder holding color/, depth/, pose/, intrinsic/.
        axis_alignment: the scene's (4, 4) axisAlignment (`Scene.axis_alignment`), applied to every pose; None
            keeps the scan frame.
        frame_skip: keep every k-th frame (of the frames sorted by number, before invalid poses are dropped),
            as ScanRefer's ``frame_skip``.
        depth_shift: depth png value / depth_shift = metres (ScanNet: 1000).

    Returns:
        a `FrameSet` (images are read on access).

    Raises:
        FramesReadError: a missing folder or intrinsic file, a colour frame without its depth or pose, a frame
            name that is not an integer, a malformed matrix, or a bad argument.
    """
    root = Path(frames_dir)
    if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
        raise FramesReadError(f"frame_skip must be an int >= 1 (every k-th frame), got {frame_skip!r}")
    if not (isinstance(depth_shift, (int, float)) and depth_shift > 0):
        raise FramesReadError(f"depth_shift must be > 0 (ScanNet: 1000), got {depth_shift!r}")
    if not root.is_dir():
        raise FramesReadError(f"{root}: frame folder not found")
    colors = _frame_ids(root / COLOR_DIR, ".jpg")
    depths = _frame_ids(root / DEPTH_DIR, ".png")
    poses = _frame_ids(root / POSE_DIR, ".txt")
    if not colors:
        raise FramesReadError(f"{root / COLOR_DIR}: no <i>.jpg frames")
    for name, files, suffix in ((DEPTH_DIR, depths, ".png"), (POSE_DIR, poses, ".txt")):
        missing = sorted(set(colors) - set(files))
        if missing:
            raise FramesReadError(f"{root / name / (str(missing[0]) + suffix)}: missing ({len(missing)} colour "
                                  f"frames have no {name} file)")
    matrices = {}
    for name in MATRIX_FILES:
        path = root / INTRINSIC_DIR / f"{name}.txt"
        if name.startswith("extrinsic") and not path.is_file():
            matrices[name] = np.eye(4)
            continue
        matrix = read_matrix_file(path)
        if not np.isfinite(matrix).all():
            raise FramesReadError(f"{path}: holds non-finite values")
        matrices[name] = matrix
    for name in ("extrinsic_color", "extrinsic_depth"):
        if not np.allclose(matrices[name], np.eye(4), atol=1e-6):
            log.warning("%s: %s.txt is not the identity; both cameras use pose/<i>.txt (as ScanNet's tools do)",
                        root, name)
    if axis_alignment is not None:
        axis_alignment = np.asarray(axis_alignment, dtype=np.float64)
        if axis_alignment.shape != (4, 4) or not np.isfinite(axis_alignment).all():
            raise FramesReadError(f"axis_alignment must be a finite (4, 4) matrix, got shape {axis_alignment.shape}")
    ordered = sorted(colors)[::int(frame_skip)]  # numeric order: 2 before 10
    kept, kept_poses, skipped = [], [], 0
    for frame in ordered:
        pose = read_matrix_file(poses[frame])
        if not np.isfinite(pose).all():
            skipped += 1
            continue
        kept.append(frame)
        kept_poses.append(pose if axis_alignment is None else axis_alignment @ pose)
    if skipped:
        log.warning("%s: skipped %d of %d frames with a non-finite (-inf / NaN) pose", root, skipped, len(ordered))
    if kept:
        color_size = _image_size(colors[kept[0]])
        depth_size = _image_size(depths[kept[0]])
    else:
        color_size = depth_size = (0, 0)
    return FrameSet(
        root=root, frame_ids=np.asarray(kept, dtype=np.int64),
        poses=np.stack(kept_poses) if kept_poses else np.zeros((0, 4, 4)),
        intrinsic_color=matrices["intrinsic_color"], intrinsic_depth=matrices["intrinsic_depth"],
        extrinsic_color=matrices["extrinsic_color"], extrinsic_depth=matrices["extrinsic_depth"],
        color_size=color_size, depth_size=depth_size, skipped_invalid_poses=skipped, depth_shift=float(depth_shift),
        meta={"frames_on_disk": len(colors), "frame_skip": int(frame_skip)},
    )


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(matrix, dtype=np.float64))


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_scannet_frames(
    out_dir: str | os.PathLike,
    colors: np.ndarray,
    depths_m: np.ndarray,
    poses: np.ndarray,
    intrinsic_color: np.ndarray,
    intrinsic_depth: np.ndarray,
    *,
    instances: np.ndarray | None = None,
    frame_ids: np.ndarray | None = None,
    depth_shift: float = DEPTH_SHIFT,
    jpeg_quality: int = 95,
) -> Path:
    """Write frames in the SensReader layout (the demo renderer and the tests use it).

    Args:
        out_dir: the scene's frame folder (created).
        colors: (V, H_c, W_c, 3) uint8. depths_m: (V, H_d, W_d) metres (0 = none), stored as uint16 millimetres.
        poses: (V, 4, 4) camera-to-world (any non-finite pose is written as it is, like ScanNet's -inf poses).
        intrinsic_color, intrinsic_depth: (4, 4) or (3, 3) pinhole matrices for the colour / depth sizes.
        instances: optional (V, H_d, W_d) int objectId per depth pixel (-1 = none), written as uint16 id + 1.
        frame_ids: (V,) frame numbers (default 0 .. V-1).

    Raises:
        ValueError: arrays of inconsistent shapes, or depths beyond the uint16 range.
    """
    out = Path(out_dir)
    colors, depths_m, poses = np.asarray(colors), np.asarray(depths_m), np.asarray(poses, dtype=np.float64)
    views = colors.shape[0]
    if colors.ndim != 4 or colors.shape[3] != 3 or colors.dtype != np.uint8:
        raise ValueError(f"colors must be (V, H, W, 3) uint8, got {colors.dtype} {colors.shape}")
    if depths_m.ndim != 3 or depths_m.shape[0] != views or poses.shape != (views, 4, 4):
        raise ValueError(f"depths_m must be (V, H, W) and poses (V, 4, 4) with V = {views}, got {depths_m.shape}, "
                         f"{poses.shape}")
    millimetres = np.round(np.nan_to_num(depths_m, nan=0.0, posinf=0.0) * depth_shift)
    if millimetres.min(initial=0) < 0 or millimetres.max(initial=0) > 65535:
        raise ValueError("depths_m must lie in [0, 65.535] m to fit uint16 millimetres")
    ids = np.arange(views) if frame_ids is None else np.asarray(frame_ids, dtype=np.int64)
    for name in (COLOR_DIR, DEPTH_DIR, POSE_DIR, INTRINSIC_DIR) + ((INSTANCE_DIR,) if instances is not None else ()):
        (out / name).mkdir(parents=True, exist_ok=True)
    for name, matrix in (("intrinsic_color", intrinsic_color), ("intrinsic_depth", intrinsic_depth),
                         ("extrinsic_color", np.eye(4)), ("extrinsic_depth", np.eye(4))):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape == (3, 3):
            full = np.eye(4)
            full[:3, :3] = matrix
            matrix = full
        atomic_write_text(out / INTRINSIC_DIR / f"{name}.txt", _matrix_text(matrix))
    import io

    for v, frame in enumerate(ids):
        buffer = io.BytesIO()
        Image.fromarray(colors[v]).save(buffer, format="JPEG", quality=jpeg_quality)
        atomic_write_bytes(out / COLOR_DIR / f"{int(frame)}.jpg", buffer.getvalue())
        atomic_write_bytes(out / DEPTH_DIR / f"{int(frame)}.png", _png_bytes(millimetres[v].astype(np.uint16)))
        atomic_write_text(out / POSE_DIR / f"{int(frame)}.txt", _matrix_text(poses[v]))
        if instances is not None:
            atomic_write_bytes(out / INSTANCE_DIR / f"{int(frame)}.png",
                               _png_bytes((np.asarray(instances[v]) + 1).astype(np.uint16)))
    return out
