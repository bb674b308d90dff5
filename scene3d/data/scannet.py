"""Read (and write) one ScanNet v2 scene folder as a list of objects with points, colours, boxes and classes.

A ScanNet scene folder `<scene>/` (e.g. `scans/scene0000_00/`) holds:
- `<scene>_vh_clean_2.ply`: the mesh; binary little-endian PLY, vertices `float x y z, uchar red green blue
  alpha`, faces `list uchar int vertex_indices`.
- `<scene>_vh_clean_2.0.010000.segs.json`: `{"segIndices": [one segment id per vertex], ...}`.
- `<scene>.aggregation.json` (some releases: `<scene>_vh_clean.aggregation.json`):
  `{"segGroups": [{"objectId": int, "label": raw category, "segments": [segment ids]}, ...]}`.
- `<scene>.txt` (optional): a line `axisAlignment = m00 m01 ... m33`, the row-major 4x4 matrix that aligns
  the scan with the room's axes (x, y along the walls, z up). Applied to every point here; identity when the
  file or the line is missing (recorded in `Scene.meta["axis_alignment_source"]`).

An object gets every vertex whose segment is in its `segments`, in mesh order. Raw labels are mapped to NYU40
and to ScanRefer's 18 classes by `scene3d.data.labels` (see there for the rule).

The PLY is parsed here from its header and a numpy structured array rather than with open3d: open3d drops the
alpha channel, and on a truncated or corrupt file it only prints a warning and returns a partly filled cloud
(checked with open3d 0.20), where this reader must fail naming the file. The writer exists because open3d
cannot write ScanNet's exact vertex layout (float xyz + uchar rgba).
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.io import atomic_write_bytes, atomic_write_text
from scene3d.data.labels import UNKNOWN_ENTRY, LabelMapError, load_label_map

logger = logging.getLogger(__name__)

MESH_SUFFIX = "_vh_clean_2.ply"
SEGMENTS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIXES = (".aggregation.json", "_vh_clean.aggregation.json")
ALIGNMENT_SUFFIX = ".txt"
AXIS_ALIGNMENT_KEY = "axisAlignment"
# A PLY header longer than this is not a PLY header.
_MAX_PLY_HEADER_BYTES = 1 << 16
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}


class SceneReadError(ValueError):
    """A scene could not be read; the message names the file and the problem."""


class SkippedObjectWarning(UserWarning):
    """Issued when an object is left out of a scene because it has fewer points than `min_points`."""


class UnmatchedSegmentWarning(UserWarning):
    """Issued (with `allow_unmatched_segments=True`) when a segGroup lists segment ids the mesh does not have."""


@dataclass
class SceneObject:
    """One annotated object of a scene.

    Args:
        object_id: `objectId` from the aggregation file (what ScanRefer's `object_id` refers to).
        label: raw category from the aggregation file.
        nyu40_id: NYU40 id (`labels.UNKNOWN_NYU40_ID` when the label map lacks `label`).
        nyu40_class: NYU40 class name.
        scanrefer_class: one of `labels.SCANREFER_CLASSES` ("others" for everything outside the 17).
        points: xyz after axis alignment, converted to float32.
        colors: rgb in [0, 1], converted to float32.

    Shapes:
        points: (P, 3); colors: (P, 3); box_min, box_max, center, size: (3,).

    Raises:
        ValueError: `points` or `colors` is not (P, 3) with P >= 1, or their P differ.
    """

    object_id: int
    label: str
    nyu40_id: int
    nyu40_class: str
    scanrefer_class: str
    points: np.ndarray
    colors: np.ndarray

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.colors = np.asarray(self.colors, dtype=np.float32)
        for name, array in (("points", self.points), ("colors", self.colors)):
            if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
                raise ValueError(f"SceneObject {self.object_id}: {name} must be (P, 3) with P >= 1, got {array.shape}")
        if self.points.shape[0] != self.colors.shape[0]:
            raise ValueError(
                f"SceneObject {self.object_id}: {self.points.shape[0]} points but {self.colors.shape[0]} colours"
            )
        if not np.isfinite(self.points).all():
            n_bad = int((~np.isfinite(self.points).all(axis=1)).sum())
            raise ValueError(f"SceneObject {self.object_id}: {n_bad} of its points have NaN or infinite coordinates")

    @property
    def box_min(self) -> np.ndarray:
        """Lower corner of the axis-aligned box of the points, (3,)."""
        return self.points.min(axis=0)

    @property
    def box_max(self) -> np.ndarray:
        """Upper corner of the axis-aligned box of the points, (3,)."""
        return self.points.max(axis=0)

    @property
    def center(self) -> np.ndarray:
        """Box centre (box_min + box_max) / 2, (3,)."""
        return (self.box_min + self.box_max) / 2

    @property
    def size(self) -> np.ndarray:
        """Box edge lengths box_max - box_min, (3,)."""
        return self.box_max - self.box_min


@dataclass
class Scene:
    """A scene as a list of objects.

    Args:
        scene_id: e.g. "scene0000_00".
        objects: the objects kept, in aggregation-file order.
        axis_alignment: the (4, 4) matrix applied to the points (identity when the scene has none).
        meta: JSON-serialisable facts: `n_vertices`, `n_objects`, `files`, `axis_alignment_source`,
            `label_map`, `unknown_label_counts` ({raw label: number of objects}), `skipped_objects`
            ([{object_id, label, n_points, reason}]), `unmatched_segments` ({object_id: number of its segment
            ids absent from segIndices}), `n_unassigned_vertices`, `n_shared_vertices` (in two objects or more).
    """

    scene_id: str
    objects: list[SceneObject]
    axis_alignment: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def get_object(self, object_id: int) -> SceneObject | None:
        """The object with this `object_id`, or None (absent or skipped by the reader)."""
        return next((obj for obj in self.objects if obj.object_id == object_id), None)


def scene_file_names(scene_id: str) -> dict[str, str]:
    """File names of a ScanNet scene folder: mesh, segments, aggregation (first spelling), alignment."""
    return {
        "mesh": scene_id + MESH_SUFFIX,
        "segments": scene_id + SEGMENTS_SUFFIX,
        "aggregation": scene_id + AGGREGATION_SUFFIXES[0],
        "alignment": scene_id + ALIGNMENT_SUFFIX,
    }


def read_scannet_scene(
    scene_dir: str | os.PathLike,
    *,
    scene_id: str | None = None,
    label_map_path: str | os.PathLike | None = None,
    min_points: int = 1,
    on_too_few_points: Literal["skip", "error"] = "skip",
    allow_unmatched_segments: bool = False,
) -> Scene:
    """Read a ScanNet scene folder into per-object points, colours, boxes and classes.

    Args:
        scene_dir: the scene folder, e.g. `scans/scene0000_00`.
        scene_id: file name prefix; defaults to the folder's name.
        label_map_path: a `scannetv2-labels.combined.tsv`; None uses the copy inside the open3d wheel.
        min_points: objects with fewer points are skipped (a `SkippedObjectWarning`, and an entry in
            `meta["skipped_objects"]`), or raise, see `on_too_few_points`. Objects with no points are always
            skipped: they have no box.
        on_too_few_points: "skip" (default) or "error" for objects with 1 .. min_points - 1 points.
        allow_unmatched_segments: accept segGroups listing segment ids that segIndices does not have (their
            counts go to `meta["unmatched_segments"]`, with an `UnmatchedSegmentWarning`). By default that is
            an error: the aggregation and the segmentation do not belong together (another scan or
            over-segmentation), so the object's points would silently be incomplete.

    Returns:
        the `Scene`; labels missing from the label map become "others" / `UNKNOWN_NYU40_CLASS`, counted in the
        log and in `meta["unknown_label_counts"]`.

    Shapes:
        each object's points and colors: (P, 3); Scene.axis_alignment: (4, 4).

    Raises:
        ValueError: `min_points` < 1 or `on_too_few_points` is not "skip" / "error".
        SceneReadError: the folder or a required file is missing (the message lists the expected files), a
            file is malformed (bad PLY header, truncated PLY, invalid JSON, wrong JSON keys or types, an
            axisAlignment that is not 16 finite numbers of an affine matrix), segIndices' length differs from
            the PLY's vertex count, a vertex has NaN / infinite coordinates (the message names the scene, the
            PLY and the objects hit), two segGroups share an objectId, an object has too few points and
            `on_too_few_points="error"`, the scene has no objects left, the label map cannot be read, or a
            segGroup lists a segment id absent from segIndices (unless `allow_unmatched_segments`; the message
            names the aggregation file, the object and the segment ids).
    """
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 1:
        raise ValueError(f"min_points must be an int >= 1, got {min_points!r}")
    if on_too_few_points not in ("skip", "error"):
        raise ValueError(f"on_too_few_points must be 'skip' or 'error', got {on_too_few_points!r}")
    scene_dir = Path(scene_dir)
    scene_id = scene_id or scene_dir.resolve().name
    if not scene_dir.is_dir():
        raise SceneReadError(f"{scene_dir}: scene folder not found")
    paths = _locate_scene_files(scene_dir, scene_id)
    try:
        label_map = load_label_map(label_map_path)
    except LabelMapError as error:
        raise SceneReadError(f"{scene_dir}: {error}") from error

    xyz, rgb = read_ply_vertices(paths["mesh"])
    seg_indices = _read_segment_indices(paths["segments"])
    if seg_indices.shape[0] != xyz.shape[0]:
        raise SceneReadError(
            f"{paths['segments']}: segIndices has {seg_indices.shape[0]} entries but the mesh "
            f"{paths['mesh'].name} has {xyz.shape[0]} vertices (one segment id per vertex expected)"
        )
    groups = _read_segment_groups(paths["aggregation"])
    if not groups:
        raise SceneReadError(f"{paths['aggregation']}: segGroups is empty, the scene has no objects")
    axis_alignment, alignment_source = _read_axis_alignment(paths["alignment"])
    # (V, 3) @ (3, 3)^T + (3,): x' = R x + t for every vertex, in float64 then back to float32.
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf vertices are refused below, by name
        xyz = (xyz.astype(np.float64) @ axis_alignment[:3, :3].T + axis_alignment[:3, 3]).astype(np.float32)
    colors = rgb.astype(np.float32) / 255.0

    vertex_lists, unmatched = _vertices_per_group(seg_indices, [segments for _, _, segments in groups])
    for index, absent in unmatched.items():
        object_id, label, segments = groups[index]
        shown = ", ".join(str(s) for s in absent[:10])
        if len(absent) > 10:
            shown += f", ... ({len(absent) - 10} more)"
        problem = (
            f"{paths['aggregation']}: object {object_id} ({label!r}) lists {len(absent)} of its "
            f"{len(np.unique(segments))} segment id(s) that {paths['segments'].name} does not have: {shown}"
        )
        if not allow_unmatched_segments:
            raise SceneReadError(
                f"{problem}; the aggregation and the segmentation do not belong together (another scan or "
                "over-segmentation?); pass allow_unmatched_segments=True to read the object without them"
            )
        warnings.warn(problem, UnmatchedSegmentWarning, stacklevel=2)
    _check_finite_vertices(scene_id, paths["mesh"], xyz, groups, vertex_lists)
    objects: list[SceneObject] = []
    skipped: list[dict[str, Any]] = []
    unknown: Counter[str] = Counter()
    for (object_id, label, _), vertices in zip(groups, vertex_lists):
        n_points = int(vertices.shape[0])
        if n_points < min_points:
            reason = "no points" if n_points == 0 else f"{n_points} points < min_points={min_points}"
            if n_points > 0 and on_too_few_points == "error":
                raise SceneReadError(
                    f"{paths['aggregation']}: object {object_id} ({label!r}) has {reason}; lower min_points or "
                    f"pass on_too_few_points='skip'"
                )
            warnings.warn(
                f"{paths['aggregation']}: object {object_id} ({label!r}) skipped: {reason}",
                SkippedObjectWarning,
                stacklevel=2,
            )
            skipped.append({"object_id": object_id, "label": label, "n_points": n_points, "reason": reason})
            continue
        entry = label_map.get(label)
        if entry is None:
            unknown[label] += 1
            entry = UNKNOWN_ENTRY
        objects.append(SceneObject(
            object_id=object_id,
            label=label,
            nyu40_id=entry.nyu40_id,
            nyu40_class=entry.nyu40_class,
            scanrefer_class=entry.scanrefer_class,
            points=xyz[vertices],
            colors=colors[vertices],
        ))
    if unknown:
        logger.warning(
            "%s: %d object(s) with labels missing from %s mapped to 'others': %s",
            scene_id, sum(unknown.values()), label_map.source, dict(unknown),
        )
    if not objects:
        raise SceneReadError(
            f"{paths['aggregation']}: no object of {len(groups)} has at least min_points={min_points} points "
            f"(skipped: {skipped})"
        )

    # (sum of P over objects,) -> (V,): how many objects each vertex belongs to.
    memberships = np.bincount(np.concatenate(vertex_lists), minlength=xyz.shape[0])
    meta = {
        "scene_id": scene_id,
        "files": {key: (path.name if path is not None else None) for key, path in paths.items()},
        "n_vertices": int(xyz.shape[0]),
        "n_objects": len(objects),
        "axis_alignment_source": alignment_source,
        "label_map": str(label_map.source),
        "unknown_label_counts": dict(unknown),
        "skipped_objects": skipped,
        "unmatched_segments": {groups[i][0]: len(absent) for i, absent in unmatched.items()},
        "n_unassigned_vertices": int((memberships == 0).sum()),
        "n_shared_vertices": int((memberships > 1).sum()),
    }
    return Scene(scene_id=scene_id, objects=objects, axis_alignment=axis_alignment, meta=meta)


def _check_finite_vertices(
    scene_id: str, mesh: Path, xyz: np.ndarray, groups: Sequence[tuple[int, str, np.ndarray]],
    vertex_lists: Sequence[np.ndarray],
) -> None:
    """Refuse a mesh with NaN / infinite vertex coordinates, naming the scene, the file and the objects hit.

    Shapes:
        xyz: (V, 3); vertex_lists[i]: (P_i,) vertex indices of group i.
    """
    bad = ~np.isfinite(xyz).all(axis=1)  # (V, 3) -> (V,)
    if not bad.any():
        return
    where = np.flatnonzero(bad)
    hit = [f"{object_id} ({label!r})" for (object_id, label, _), vertices in zip(groups, vertex_lists)
           if bad[vertices].any()]
    objects = f"objects hit: {', '.join(hit[:10])}{' ...' if len(hit) > 10 else ''}" if hit else "in no object"
    raise SceneReadError(
        f"{mesh}: scene {scene_id}: {where.size} of {xyz.shape[0]} vertices have NaN or infinite coordinates "
        f"(vertex indices {where[:10].tolist()}{' ...' if where.size > 10 else ''}; {objects}); "
        "re-export or repair the mesh"
    )


def _locate_scene_files(scene_dir: Path, scene_id: str) -> dict[str, Path | None]:
    """Paths of the scene's files; raises listing every expected file when a required one is missing."""
    names = scene_file_names(scene_id)
    mesh, segments = scene_dir / names["mesh"], scene_dir / names["segments"]
    aggregation = next(
        (scene_dir / (scene_id + suffix) for suffix in AGGREGATION_SUFFIXES
         if (scene_dir / (scene_id + suffix)).is_file()),
        None,
    )
    missing = [path.name for path in (mesh, segments) if not path.is_file()]
    if aggregation is None:
        missing.append(" or ".join(scene_id + suffix for suffix in AGGREGATION_SUFFIXES))
    if missing:
        raise SceneReadError(
            f"{scene_dir}: missing {', '.join(missing)}. A ScanNet scene folder holds {names['mesh']}, "
            f"{names['segments']}, {names['aggregation']} (or {scene_id}{AGGREGATION_SUFFIXES[1]}) and, "
            f"optionally, {names['alignment']}"
        )
    alignment = scene_dir / names["alignment"]
    return {
        "mesh": mesh,
        "segments": segments,
        "aggregation": aggregation,
        "alignment": alignment if alignment.is_file() else None,
    }


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise SceneReadError(
            f"{path}: invalid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SceneReadError(f"{path}: cannot read ({error})") from error


def _read_segment_indices(path: Path) -> np.ndarray:
    """segIndices of a `.segs.json` as an int64 array (V,)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("segIndices"), list):
        raise SceneReadError(f"{path}: expected a JSON object with a list 'segIndices' (one segment id per vertex)")
    values = data["segIndices"]
    try:
        seg_indices = np.asarray(values)
    except (ValueError, OverflowError):  # ragged nesting, integers beyond int64
        seg_indices = None
    if seg_indices is None or seg_indices.ndim != 1 or (values and not np.issubdtype(seg_indices.dtype, np.integer)):
        raise SceneReadError(f"{path}: segIndices must be a flat list of integers")
    return seg_indices.astype(np.int64)


def _read_segment_groups(path: Path) -> list[tuple[int, str, np.ndarray]]:
    """(objectId, label, segments) of each segGroup of an aggregation file, in file order."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("segGroups"), list):
        raise SceneReadError(f"{path}: expected a JSON object with a list 'segGroups'")
    groups: list[tuple[int, str, np.ndarray]] = []
    seen: dict[int, int] = {}
    for index, group in enumerate(data["segGroups"]):
        where = f"{path}: segGroups[{index}]"
        if not isinstance(group, dict):
            raise SceneReadError(f"{where} is not an object")
        object_id, label, segments = group.get("objectId"), group.get("label"), group.get("segments")
        if isinstance(object_id, bool) or not isinstance(object_id, int):
            raise SceneReadError(f"{where}: 'objectId' must be an integer, got {object_id!r}")
        if not isinstance(label, str):
            raise SceneReadError(f"{where}: 'label' must be a string, got {label!r}")
        if not isinstance(segments, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in segments
        ):
            raise SceneReadError(f"{where}: 'segments' must be a list of integers")
        if object_id in seen:
            raise SceneReadError(f"{where}: objectId {object_id} already used by segGroups[{seen[object_id]}]")
        seen[object_id] = index
        groups.append((object_id, label, np.asarray(segments, dtype=np.int64)))
    return groups


def _read_axis_alignment(path: Path | None) -> tuple[np.ndarray, str]:
    """The axisAlignment matrix (4, 4) of `<scene>.txt` and where it came from (identity when absent)."""
    if path is None:
        return np.eye(4), "identity: no <scene>.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SceneReadError(f"{path}: cannot read ({error})") from error
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or key.strip() != AXIS_ALIGNMENT_KEY:
            continue
        try:
            numbers = [float(token) for token in value.split()]
        except ValueError:
            raise SceneReadError(
                f"{path}: {AXIS_ALIGNMENT_KEY} holds a value that is not a number: {value.strip()!r}"
            ) from None
        if len(numbers) != 16 or not np.all(np.isfinite(numbers)):
            raise SceneReadError(
                f"{path}: {AXIS_ALIGNMENT_KEY} must be 16 finite numbers, got {len(numbers)}: {value.strip()!r}"
            )
        matrix = np.asarray(numbers, dtype=np.float64).reshape(4, 4)  # (16,) -> (4, 4), row-major
        if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0)):
            raise SceneReadError(f"{path}: {AXIS_ALIGNMENT_KEY}'s last row must be 0 0 0 1, got {matrix[3].tolist()}")
        return matrix, f"{path.name}"
    return np.eye(4), f"identity: no {AXIS_ALIGNMENT_KEY} line in {path.name}"


def _vertices_per_group(
    seg_indices: np.ndarray, group_segments: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], dict[int, list[int]]]:
    """Vertex indices (sorted) of each group, and {group index: its segment ids absent from the mesh, sorted}.

    Vertices are sorted by segment id once; each group's vertices are then the concatenation of its segments'
    runs, gathered without a Python loop over segments.
    """
    order = np.argsort(seg_indices, kind="stable")  # (V,) vertex ids grouped by segment
    unique_segments, run_starts, run_lengths = np.unique(seg_indices[order], return_index=True, return_counts=True)
    vertex_lists: list[np.ndarray] = []
    unmatched: dict[int, list[int]] = {}
    for index, segments in enumerate(group_segments):
        segments = np.unique(segments)
        position = np.minimum(np.searchsorted(unique_segments, segments), max(len(unique_segments) - 1, 0))
        found = unique_segments[position] == segments if len(unique_segments) else np.zeros(len(segments), bool)
        if not found.all():
            unmatched[index] = [int(s) for s in segments[~found]]
        position = position[found]
        lengths = run_lengths[position]
        # Concatenated runs [start_k, start_k + length_k): output slot j of run k holds start_k + (j - offset_k).
        offsets = np.cumsum(lengths) - lengths
        slots = np.repeat(run_starts[position] - offsets, lengths) + np.arange(lengths.sum())
        vertex_lists.append(np.sort(order[slots]))
    return vertex_lists, unmatched


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy type); list properties have type "list"


def _parse_ply_header(path: Path, raw: bytes) -> tuple[str | None, list[_PlyElement], int]:
    """(byte order "<" / ">" or None for ascii, elements, header length in bytes) of a PLY file."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise SceneReadError(
            f"{path}: not a PLY file (no 'ply' magic or no 'end_header' in the first {len(raw)} bytes)"
        )
    newline = raw.find(b"\n", end)
    header_length = (newline if newline >= 0 else len(raw)) + 1
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    byte_order: str | None = None
    has_format = False
    elements: list[_PlyElement] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _PLY_FORMATS:
                raise SceneReadError(f"{path}: unsupported PLY format line {line!r}")
            byte_order, has_format = _PLY_FORMATS[words[1]], True
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_PlyElement(words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _PLY_TYPES:
            elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1].properties.append((words[4], "list"))
        else:
            raise SceneReadError(f"{path}: cannot parse PLY header line {line!r}")
    if not has_format:
        raise SceneReadError(f"{path}: PLY header has no 'format' line")
    return byte_order, elements, header_length


def read_ply_vertices(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertex positions and colours of a PLY file (binary little / big endian or ascii).

    Args:
        path: a PLY whose vertex element has float or double x y z and uchar red green blue (other vertex
            properties, such as alpha or normals, and other elements, such as faces, are read past).

    Returns:
        (xyz float32, rgb uint8) in file order.

    Shapes:
        xyz: (V, 3); rgb: (V, 3).

    Raises:
        SceneReadError: not a PLY, no vertex element, x y z or red green blue missing or of the wrong type,
            list properties before or in the vertex element of a binary file, or the file is truncated.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_MAX_PLY_HEADER_BYTES)
    except OSError as error:
        raise SceneReadError(f"{path}: cannot read ({error})") from error
    byte_order, elements, header_length = _parse_ply_header(path, head)
    names = [element.name for element in elements]
    if "vertex" not in names:
        raise SceneReadError(f"{path}: PLY has no 'vertex' element (elements: {names})")
    vertex_index = names.index("vertex")
    vertex = elements[vertex_index]
    types = dict(vertex.properties)
    missing = [name for name in ("x", "y", "z", "red", "green", "blue") if name not in types]
    if missing:
        raise SceneReadError(f"{path}: PLY vertices lack properties {missing} (have {list(types)})")
    if any(types[name] not in ("f4", "f8") for name in "xyz"):
        raise SceneReadError(f"{path}: PLY x y z must be float or double, got {[types[n] for n in 'xyz']}")
    if any(types[name] != "u1" for name in ("red", "green", "blue")):
        raise SceneReadError(f"{path}: PLY red green blue must be uchar (ScanNet's layout)")

    if byte_order is None:
        table = _read_ascii_vertices(path, elements[:vertex_index], vertex, header_length)
        columns = [name for name, _ in vertex.properties]
        xyz = table[:, [columns.index(n) for n in "xyz"]]
        rgb = table[:, [columns.index(n) for n in ("red", "green", "blue")]]
        if np.any((rgb < 0) | (rgb > 255) | (rgb != np.round(rgb))):
            raise SceneReadError(f"{path}: PLY colours must be integers in 0..255")
        return xyz.astype(np.float32), rgb.astype(np.uint8)

    if any(kind == "list" for element in elements[: vertex_index + 1] for _, kind in element.properties):
        raise SceneReadError(f"{path}: binary PLY has list properties before or in its vertex element")
    dtypes = [np.dtype([(name, byte_order + kind) for name, kind in element.properties])
              for element in elements[: vertex_index + 1]]
    offset = header_length + sum(element.count * dt.itemsize for element, dt in zip(elements, dtypes[:-1]))
    dtype = dtypes[-1]
    expected = offset + vertex.count * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise SceneReadError(
            f"{path}: truncated PLY: {vertex.count} vertices need {expected} bytes up to the end of the vertex "
            f"data, the file has {size}"
        )
    data = np.fromfile(path, dtype=dtype, count=vertex.count, offset=offset)
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)  # 3 x (V,) -> (V, 3)
    rgb = np.stack([data["red"], data["green"], data["blue"]], axis=1)  # 3 x (V,) -> (V, 3)
    return xyz, rgb


def _read_ascii_vertices(
    path: Path, preceding: list[_PlyElement], vertex: _PlyElement, header_length: int
) -> np.ndarray:
    """The vertex rows (V, n_properties) of an ascii PLY, as float64."""
    with path.open("rb") as handle:
        handle.seek(header_length)
        lines: Iterator[bytes] = iter(handle)
        for element in preceding:  # one line per row of each earlier element
            for _ in islice(lines, element.count):
                pass
        rows = [line.split() for line in islice(lines, vertex.count)]
    if len(rows) < vertex.count or any(len(row) < len(vertex.properties) for row in rows):
        raise SceneReadError(f"{path}: truncated ascii PLY: expected {vertex.count} vertex rows of "
                             f"{len(vertex.properties)} values")
    try:
        return np.array([row[: len(vertex.properties)] for row in rows], dtype=np.float64).reshape(
            vertex.count, len(vertex.properties)
        )
    except ValueError:
        raise SceneReadError(f"{path}: ascii PLY vertex rows hold values that are not numbers") from None


def write_ply_mesh(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray, faces: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY in ScanNet's layout (float x y z, uchar red green blue alpha=255).

    Args:
        path: output file (written atomically).
        xyz: vertex positions. rgb: colours, integers in 0..255. faces: vertex indices of triangles, or None.

    Shapes:
        xyz: (V, 3); rgb: (V, 3); faces: (F, 3).

    Raises:
        ValueError: see `write_scannet_scene`.
    """
    xyz, rgb, faces = _check_mesh_arrays(xyz, rgb, faces)
    vertices = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                             ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    vertices["x"], vertices["y"], vertices["z"] = xyz.T
    vertices["red"], vertices["green"], vertices["blue"] = rgb.T
    vertices["alpha"] = 255
    triangles = np.empty(faces.shape[0], dtype=[("n", "u1"), ("vertex_indices", "<i4", (3,))])
    triangles["n"] = 3
    triangles["vertex_indices"] = faces
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {xyz.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {faces.shape[0]}\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    # The structured dtypes name their byte order ("<"), so the bytes are little-endian on any machine.
    return atomic_write_bytes(path, header.encode("ascii") + vertices.tobytes() + triangles.tobytes())


def _check_mesh_arrays(
    xyz: np.ndarray, rgb: np.ndarray, faces: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] == 0 or not np.issubdtype(xyz.dtype, np.number):
        raise ValueError(f"xyz must be a numeric (V, 3) array with V >= 1, got shape {xyz.shape}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("xyz holds NaN or infinite values")
    if rgb.shape != xyz.shape:
        raise ValueError(f"rgb must have xyz's shape {xyz.shape}, got {rgb.shape}")
    if not np.issubdtype(rgb.dtype, np.integer) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError("rgb must hold integers in 0..255 (convert colours in [0, 1] with np.round(c * 255))")
    if faces is None:
        faces = np.zeros((0, 3), dtype=np.int64)
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not (np.issubdtype(faces.dtype, np.integer) or faces.size == 0):
        raise ValueError(f"faces must be an integer (F, 3) array, got shape {faces.shape} dtype {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= xyz.shape[0]):
        raise ValueError(f"faces index vertices outside 0..{xyz.shape[0] - 1}")
    return xyz.astype(np.float32), rgb.astype(np.uint8), faces.astype(np.int32)


def write_scannet_scene(
    out_dir: str | os.PathLike,
    scene_id: str,
    xyz: np.ndarray,
    rgb: np.ndarray,
    seg_indices: np.ndarray,
    seg_groups: Sequence[dict[str, Any]],
    axis_alignment: np.ndarray | None = None,
    faces: np.ndarray | None = None,
) -> Path:
    """Write a scene in ScanNet's file format (the inverse of `read_scannet_scene`, for tests and demo data).

    Files go into `out_dir/<scene_id>/` (ScanNet's `scans/<scene_id>/` layout), or into `out_dir` itself when
    it is already named `<scene_id>`: `<scene>_vh_clean_2.ply`, `<scene>_vh_clean_2.0.010000.segs.json`,
    `<scene>.aggregation.json` and, when `axis_alignment` is given, `<scene>.txt`.

    Args:
        out_dir: parent folder (created if needed).
        scene_id: e.g. "scene0000_00".
        xyz: vertex positions in the scan's own (unaligned) frame.
        rgb: vertex colours, integers in 0..255 (alpha is written as 255).
        seg_indices: segment id of each vertex.
        seg_groups: ScanNet segGroups: dicts with `objectId` (int), `label` (str), `segments` (list of ints).
        axis_alignment: the 4x4 matrix for `<scene>.txt`, or None to write no `.txt`.
        faces: triangles as vertex indices, or None for a mesh without faces.

    Returns:
        the scene folder, ready for `read_scannet_scene`.

    Shapes:
        xyz: (V, 3); rgb: (V, 3); seg_indices: (V,); axis_alignment: (4, 4); faces: (F, 3).

    Raises:
        ValueError: a bad scene_id, array shape, dtype or value range, or a seg_group without the keys above.
    """
    if not scene_id or not re.fullmatch(r"[\w.\-]+", scene_id):
        raise ValueError(f"scene_id must be a non-empty file-name-safe string such as 'scene0000_00', got {scene_id!r}")
    xyz, rgb, faces = _check_mesh_arrays(xyz, rgb, faces)
    seg_indices = np.asarray(seg_indices)
    if seg_indices.shape != (xyz.shape[0],) or not np.issubdtype(seg_indices.dtype, np.integer):
        raise ValueError(f"seg_indices must be an integer array of shape ({xyz.shape[0]},), got {seg_indices.shape}")
    groups = []
    for index, group in enumerate(seg_groups):
        if not isinstance(group, dict) or not {"objectId", "label", "segments"} <= group.keys():
            raise ValueError(f"seg_groups[{index}] must be a dict with objectId, label and segments, got {group!r}")
        groups.append({
            "id": int(group["objectId"]),
            "objectId": int(group["objectId"]),
            "segments": [int(s) for s in group["segments"]],
            "label": str(group["label"]),
        })
    if axis_alignment is not None:
        axis_alignment = np.asarray(axis_alignment, dtype=np.float64)
        if axis_alignment.shape != (4, 4) or not np.all(np.isfinite(axis_alignment)):
            raise ValueError(f"axis_alignment must be a finite (4, 4) array, got shape {axis_alignment.shape}")

    out_dir = Path(out_dir)
    scene_dir = out_dir if out_dir.name == scene_id else out_dir / scene_id
    names = scene_file_names(scene_id)
    write_ply_mesh(scene_dir / names["mesh"], xyz, rgb, faces)
    atomic_write_text(scene_dir / names["segments"], json.dumps(
        {"sceneId": f"{scene_id}_vh_clean_2", "segIndices": seg_indices.astype(np.int64).tolist()}
    ))
    atomic_write_text(scene_dir / names["aggregation"], json.dumps(
        {"sceneId": f"scannet.{scene_id}", "segGroups": groups,
         "segmentsFile": f"scannet.{scene_id}{SEGMENTS_SUFFIX}"}, indent=1
    ))
    if axis_alignment is not None:
        values = " ".join(repr(float(v)) for v in axis_alignment.reshape(-1))  # (4, 4) -> (16,), row-major
        atomic_write_text(scene_dir / names["alignment"], f"{AXIS_ALIGNMENT_KEY} = {values}\n")
    return scene_dir
