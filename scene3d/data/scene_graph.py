"""Scene graph of a 3D indoor scene: objects (axis-aligned boxes) are nodes, spatial relations are edges.

Frame and units: metres, z up (ScanNet after axis alignment). The room frame is the view of a canonical
viewer standing far away on the -y side, looking towards +y: +x is right, -x left, smaller y is in front
(nearer that viewer), larger y is behind. (This is the view-dependent rule below with forward = +y, so the
two forms agree for that viewer.)

Direction: an edge (i, j) of `edge_index` with relation r reads "i r j" (subject i = `edge_index[0]`, object
j = `edge_index[1]`); a triplet (i, "on", j) is "i is on j" ("lamp on table"). In message passing the subject
is the source and the object the target. Every relation comes with its inverse on the reversed pair
(`INVERSE_RELATION`): (lamp, on, table) <=> (table, supports, lamp).

Per pair, with centres c, sizes s, boxes [c - s/2, c + s/2], bottom b = c_z - s_z/2, top t = c_z + s_z/2,
volume v = max(prod(s), min_volume) (thresholds: fields of `SceneGraphConfig`):
- footprint_overlap = area(xy-box_i & xy-box_j) / min(area_i, area_j), in [0, 1];
  vertical_overlap = length(z-range_i & z-range_j) / min(height_i, height_j), in [0, 1]
  (0 for a box without horizontal extent / height: such boxes never get above / on / next_to);
- box_gap = || max(0, |c_i - c_j| - (s_i + s_j) / 2) || (Euclidean distance between the boxes, 0 if they touch).
- above(i, j): b_i >= t_j - contact_tolerance, footprint_overlap >= min_footprint_overlap, c_i,z > c_j,z;
  below(i, j) = above(j, i).
- on(i, j): above(i, j) and |b_i - t_j| <= contact_tolerance (vertical contact; so on implies above);
  supports(i, j) = on(j, i). (The issue's "supported-by" is `on`: "lamp supported by table" = "lamp on table";
  the inverse is named `supports` because "table supported_by lamp" would read backwards.)
- near(i, j): box_gap < near_threshold.
- next_to(i, j): near, vertical_overlap >= next_to_min_vertical_overlap (roughly the same height) and
  footprint_overlap <= next_to_max_footprint_overlap (side by side, not stacked or tucked under).
- room frame: left_of(i, j): c_i,x - c_j,x < -direction_margin; right_of: > direction_margin;
  in_front_of(i, j): c_i,y - c_j,y < -direction_margin; behind: > direction_margin.
- view frame (only when a viewpoint p is given; all view_* flags are 0 otherwise): the viewer at p looks at
  a target (`view_target`: "pair" = the midpoint of the two centres, "scene" = the centre of the box around
  all objects); forward f = the horizontal part of (target - p), normalised; right r = f x z = (f_y, -f_x, 0).
  view_left_of(i, j): (c_i - c_j).r < -direction_margin; view_right_of: > direction_margin;
  view_in_front_of(i, j): (c_i - c_j).f < -direction_margin (nearer the viewer); view_behind: > margin.
  A pair whose target lies straight above or below p (no horizontal direction) gets no view flags.
- bigger_than(i, j): v_i > size_ratio * v_j; smaller_than(i, j) = bigger_than(j, i).
- same_class(i, j): y_i == y_j and y_i not in same_class_ignore_ids.

Which pairs become edges: all ordered pairs i != j when `k` is None or N - 1 <= k. Otherwise each node's k
nearest (by box gap, ties by centre distance, or by centre distance: `knn_metric`), made symmetric, plus
the bypass pairs: every pair with an `on` contact (`support_bypasses_knn`), every same_class pair
(`same_class_bypasses_knn`) and every pair named in `gt_relations`, each in both directions. Guarantees for
the kNN part: every node keeps its min(k, N - 1) nearest, so its degree is >= min(k, N - 1); the graph is
symmetric; at most N * k unordered pairs, so E <= 2 * N * k directed edges (mean degree <= 2k) before
bypass pairs. A single node's degree is not bounded by 2k (a hub can be among the nearest of many nodes).
Every kept pair carries all its relation flags, so a limited graph is a sub-graph of the full one with
identical edge_attr and edge_geom (when no gt_relations are given). Kept pairs may have no flag at all.

Ground-truth relations (3DSSG `relationships.json`, after the caller maps its object ids to node indices):
(subject_idx, object_idx, predicate). Predicates are matched after lower-casing and "_" -> " ", onto:
  "supported by", "standing on", "lying on" -> on;  "left" -> left_of;  "right" -> right_of;
  "front" -> in_front_of;  "behind" -> behind;  "close by" -> near;  "bigger than" -> bigger_than;
  "smaller than" -> smaller_than;  "same as" -> same_class;  any name in RELATIONS ("left_of", ...) -> itself.
  "none" (3DSSG's no-relation class) is dropped. Every other predicate ("attached to", "hanging on",
  "connected to", "leaning against", "part of", "belonging to", "build in", "standing in", "cover",
  "lying in", "hanging in", "inside", "higher than", "lower than", "same symmetry as", ...) is kept verbatim
  in `data.extra_relations` as (subject_idx, predicate, object_idx). ("higher than" is not `above`: 3DSSG
  does not require the footprints to overlap.) 3DSSG's left / right / front / behind were annotated in its
  own frame, not necessarily this room frame. `gt_mode` "add" ORs the mapped ground truth into the geometric
  flags; "replace" keeps only ground-truth flags in edge_attr (geometry still fills edge_geom).

All pairwise work is vectorised in torch over all pairs (in row chunks of `chunk_size` where it is N x N),
in float64 so that the thresholds apply exactly as written; outputs are float32.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, to_undirected

from scene3d.data.knn import knn, knn_from_distance_rows

if TYPE_CHECKING:  # the reader is only needed for the type of `build_scene_graph_for_scene`'s argument
    from scene3d.data.scannet import Scene

__all__ = [
    "EDGE_GEOMETRY_FEATURES",
    "INVERSE_RELATION",
    "RELATIONS",
    "RELATION_TO_ID",
    "THREE_DSSG_PREDICATE_TO_RELATION",
    "SceneGraphConfig",
    "build_scene_graph",
    "build_scene_graph_for_scene",
    "relation_triplets",
    "typed_edges",
]

RELATIONS: tuple[str, ...] = (
    "above", "below", "on", "supports", "near", "next_to",
    "left_of", "right_of", "in_front_of", "behind",
    "view_left_of", "view_right_of", "view_in_front_of", "view_behind",
    "bigger_than", "smaller_than", "same_class",
)
RELATION_TO_ID = MappingProxyType({name: index for index, name in enumerate(RELATIONS)})
INVERSE_RELATION = MappingProxyType({
    "above": "below", "below": "above", "on": "supports", "supports": "on", "near": "near", "next_to": "next_to",
    "left_of": "right_of", "right_of": "left_of", "in_front_of": "behind", "behind": "in_front_of",
    "view_left_of": "view_right_of", "view_right_of": "view_left_of",
    "view_in_front_of": "view_behind", "view_behind": "view_in_front_of",
    "bigger_than": "smaller_than", "smaller_than": "bigger_than", "same_class": "same_class",
})
# Common 3DSSG predicates (normalised spelling) -> RELATIONS; predicates absent here go to `extra_relations`.
THREE_DSSG_PREDICATE_TO_RELATION = MappingProxyType({
    "supported by": "on", "standing on": "on", "lying on": "on",
    "left": "left_of", "right": "right_of", "front": "in_front_of", "behind": "behind",
    "close by": "near", "bigger than": "bigger_than", "smaller than": "smaller_than", "same as": "same_class",
})
_NO_RELATION_PREDICATE = "none"
# Columns of edge_geom, for the pair (subject i, object j).
EDGE_GEOMETRY_FEATURES: tuple[str, ...] = (
    "offset_x", "offset_y", "offset_z",  # c_i - c_j (where the subject is, seen from the object)
    "center_distance",  # ||c_i - c_j||
    "box_gap",  # distance between the boxes, 0 when they touch or overlap
    "vertical_gap",  # b_i - t_j: > 0 when the subject floats above the object's top
    "vertical_overlap",  # shared z-range / the smaller height, in [0, 1]
    "footprint_overlap",  # shared xy-area / the smaller footprint, in [0, 1]
    "log_volume_ratio",  # log(v_i / v_j)
)
_EPS = 1e-12  # denominators of the overlap ratios and the view direction's norm
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class SceneGraphConfig:
    """Thresholds (metres unless said otherwise) and edge-selection rules of `build_scene_graph`.

    Args:
        contact_tolerance: |b_i - t_j| <= this is vertical contact (`on`); also the allowed interpenetration
            for `above`. 0.10 m absorbs the noise of boxes fitted to ScanNet mesh segments.
        min_footprint_overlap: `above` / `on` need at least this share of the smaller footprint in common (0.1).
        near_threshold: `near` when the box gap is below this (0.5 m).
        next_to_min_vertical_overlap: `next_to` needs at least this share of the smaller height in common (0.5).
        next_to_max_footprint_overlap: `next_to` allows at most this share of the smaller footprint in common
            (0.1): side by side, not stacked nor tucked under.
        direction_margin: left / right / front / behind need the centres this far apart along the axis (0.1 m).
        size_ratio: `bigger_than` when the subject's volume exceeds this multiple of the object's (1.5, unitless).
        min_volume: volumes are clamped to at least this (1e-6 m^3 = 1 cm^3) so flat boxes get finite ratios.
        same_class_ignore_ids: class ids never linked by `same_class` (e.g. a catch-all "others" id).
        k: kNN edge limit per node (16); None keeps all N (N - 1) ordered pairs.
        knn_metric: "gap" (box gap, ties by centre distance) or "center" (centre distance).
        support_bypasses_knn: keep every pair with an `on` contact even beyond the k nearest (True).
        same_class_bypasses_knn: keep every same_class pair even beyond the k nearest (False: a scene of many
            objects of one class would become dense).
        view_target: what the viewer looks at for the view_* relations: "pair" (the two objects' midpoint)
            or "scene" (the centre of the box around all objects).
        gt_mode: "add" (ground-truth flags OR geometric ones) or "replace" (edge_attr holds only ground truth).
        chunk_size: rows per block of N x N computations (memory ~ chunk_size * N).

    Raises:
        ValueError: a negative or non-finite threshold, a ratio outside its range, k < 1, an unknown mode.
    """

    contact_tolerance: float = 0.10
    min_footprint_overlap: float = 0.1
    near_threshold: float = 0.5
    next_to_min_vertical_overlap: float = 0.5
    next_to_max_footprint_overlap: float = 0.1
    direction_margin: float = 0.1
    size_ratio: float = 1.5
    min_volume: float = 1e-6
    same_class_ignore_ids: tuple[int, ...] = ()
    k: int | None = 16
    knn_metric: Literal["gap", "center"] = "gap"
    support_bypasses_knn: bool = True
    same_class_bypasses_knn: bool = False
    view_target: Literal["pair", "scene"] = "pair"
    gt_mode: Literal["add", "replace"] = "add"
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("contact_tolerance", "near_threshold", "direction_margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"SceneGraphConfig.{name} must be a finite number >= 0 (metres), got {value!r}")
        for name in ("min_footprint_overlap", "next_to_min_vertical_overlap", "next_to_max_footprint_overlap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"SceneGraphConfig.{name} is a share and must lie in [0, 1], got {value!r}")
        if not isinstance(self.size_ratio, (int, float)) or not math.isfinite(self.size_ratio) or self.size_ratio < 1:
            raise ValueError(f"SceneGraphConfig.size_ratio must be a finite number >= 1, got {self.size_ratio!r}")
        if not isinstance(self.min_volume, (int, float)) or not math.isfinite(self.min_volume) or self.min_volume <= 0:
            raise ValueError(f"SceneGraphConfig.min_volume must be a finite number > 0 (m^3), got {self.min_volume!r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.same_class_ignore_ids):
            raise ValueError(
                f"SceneGraphConfig.same_class_ignore_ids must be a tuple of ints, got {self.same_class_ignore_ids!r}"
            )
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"SceneGraphConfig.k must be an integer >= 1, or None for all pairs, got {self.k!r}")
        choices = {"knn_metric": ("gap", "center"), "view_target": ("pair", "scene"), "gt_mode": ("add", "replace")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SceneGraphConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"SceneGraphConfig.chunk_size must be an integer >= 1, got {self.chunk_size!r}")


class _PairGeometry(NamedTuple):
    """Geometry of (subject i, object j) pairs; every field broadcasts like the inputs (shape (...) or (..., 3))."""

    offset: Tensor  # c_i - c_j, (..., 3)
    center_distance: Tensor
    box_gap: Tensor
    vertical_gap: Tensor  # b_i - t_j
    reverse_vertical_gap: Tensor  # b_j - t_i
    vertical_overlap: Tensor
    footprint_overlap: Tensor
    volume_i: Tensor  # max(prod(s_i), min_volume)
    volume_j: Tensor
    log_volume_ratio: Tensor


def _shared_extent(center_i: Tensor, size_i: Tensor, center_j: Tensor, size_j: Tensor) -> Tensor:
    """Length of the overlap of the two boxes along each axis (0 when apart), (..., A) for (..., A) inputs."""
    low = torch.maximum(center_i - size_i / 2, center_j - size_j / 2)
    high = torch.minimum(center_i + size_i / 2, center_j + size_j / 2)
    return (high - low).clamp_min(0)


def _footprint_overlap(shared_xy: Tensor, size_i: Tensor, size_j: Tensor) -> Tensor:
    """Shared xy-area / the smaller footprint area, from (..., 2) shared extents and (..., >=2) sizes."""
    smaller_area = torch.minimum(size_i[..., 0] * size_i[..., 1], size_j[..., 0] * size_j[..., 1])
    return shared_xy[..., 0] * shared_xy[..., 1] / smaller_area.clamp_min(_EPS)


def _pair_geometry(
    center_i: Tensor, size_i: Tensor, center_j: Tensor, size_j: Tensor, min_volume: float
) -> _PairGeometry:
    """Pairwise box geometry (module docstring); inputs broadcast: (E, 3) each."""
    offset = center_i - center_j
    half_sum = (size_i + size_j) / 2
    min_i, max_i = center_i - size_i / 2, center_i + size_i / 2
    min_j, max_j = center_j - size_j / 2, center_j + size_j / 2
    shared = _shared_extent(center_i, size_i, center_j, size_j)  # (..., 3) per-axis overlap
    smaller_height = torch.minimum(size_i[..., 2], size_j[..., 2])
    volume_i = size_i.prod(dim=-1).clamp_min(min_volume)
    volume_j = size_j.prod(dim=-1).clamp_min(min_volume)
    return _PairGeometry(
        offset=offset,
        center_distance=torch.linalg.vector_norm(offset, dim=-1),
        box_gap=torch.linalg.vector_norm((offset.abs() - half_sum).clamp_min(0), dim=-1),
        vertical_gap=min_i[..., 2] - max_j[..., 2],
        reverse_vertical_gap=min_j[..., 2] - max_i[..., 2],
        vertical_overlap=shared[..., 2] / smaller_height.clamp_min(_EPS),
        footprint_overlap=_footprint_overlap(shared[..., :2], size_i, size_j),
        volume_i=volume_i,
        volume_j=volume_j,
        log_volume_ratio=torch.log(volume_i) - torch.log(volume_j),
    )


def _above(vertical_gap: Tensor, footprint_overlap: Tensor, rise: Tensor, config: SceneGraphConfig) -> Tensor:
    """above(i, j) from b_i - t_j, the footprint overlap and rise = c_i,z - c_j,z."""
    return (
        (vertical_gap >= -config.contact_tolerance)
        & (footprint_overlap >= config.min_footprint_overlap)
        & (rise > 0)
    )


def _on(vertical_gap: Tensor, footprint_overlap: Tensor, rise: Tensor, config: SceneGraphConfig) -> Tensor:
    """on(i, j): above(i, j) with vertical contact |b_i - t_j| <= contact_tolerance."""
    return _above(vertical_gap, footprint_overlap, rise, config) & (vertical_gap <= config.contact_tolerance)


def _relation_flags(
    geometry: _PairGeometry,
    class_i: Tensor,
    class_j: Tensor,
    view_forward: Tensor | None,
    config: SceneGraphConfig,
) -> Tensor:
    """Multi-hot flags of the pairs, columns in RELATIONS order.

    Shapes:
        geometry fields: (E,) / (E, 3); class_i, class_j: (E,); view_forward: (E, 2) unit vectors, zero rows
        for pairs without a view direction, or None -> (E, R) bool.
    """
    offset, margin = geometry.offset, config.direction_margin
    rise = offset[:, 2]
    above = _above(geometry.vertical_gap, geometry.footprint_overlap, rise, config)
    below = _above(geometry.reverse_vertical_gap, geometry.footprint_overlap, -rise, config)
    on = _on(geometry.vertical_gap, geometry.footprint_overlap, rise, config)
    supports = _on(geometry.reverse_vertical_gap, geometry.footprint_overlap, -rise, config)
    near = geometry.box_gap < config.near_threshold
    next_to = (
        near
        & (geometry.vertical_overlap >= config.next_to_min_vertical_overlap)
        & (geometry.footprint_overlap <= config.next_to_max_footprint_overlap)
    )
    if view_forward is None:
        lateral = depth = torch.zeros_like(rise)
    else:
        right = torch.stack([view_forward[:, 1], -view_forward[:, 0]], dim=1)  # f x z, (E, 2)
        lateral = (offset[:, :2] * right).sum(dim=1)
        depth = (offset[:, :2] * view_forward).sum(dim=1)
    same_class = class_i == class_j
    if config.same_class_ignore_ids:
        ignored = torch.tensor(config.same_class_ignore_ids, dtype=class_i.dtype, device=class_i.device)
        same_class &= ~torch.isin(class_i, ignored)
    columns = {
        "above": above, "below": below, "on": on, "supports": supports, "near": near, "next_to": next_to,
        "left_of": offset[:, 0] < -margin, "right_of": offset[:, 0] > margin,
        "in_front_of": offset[:, 1] < -margin, "behind": offset[:, 1] > margin,
        "view_left_of": lateral < -margin, "view_right_of": lateral > margin,
        "view_in_front_of": depth < -margin, "view_behind": depth > margin,
        "bigger_than": geometry.volume_i > config.size_ratio * geometry.volume_j,
        "smaller_than": geometry.volume_j > config.size_ratio * geometry.volume_i,
        "same_class": same_class,
    }
    return torch.stack([columns[name] for name in RELATIONS], dim=1)


def _view_forward(
    centers: Tensor, subjects: Tensor, objects: Tensor, sizes: Tensor, viewpoint: Tensor, view_target: str
) -> Tensor:
    """Unit horizontal viewing direction per pair; zero where the target lies straight above/below the viewer.

    Shapes:
        centers, sizes: (N, 3); subjects, objects: (E,); viewpoint: (3,) -> (E, 2).
    """
    if view_target == "pair":
        target = (centers[subjects] + centers[objects]) / 2  # (E, 3)
    else:
        low = (centers - sizes / 2).min(dim=0).values
        high = (centers + sizes / 2).max(dim=0).values
        target = ((low + high) / 2).expand(subjects.numel(), 3)  # (3,) -> (E, 3)
    direction = (target - viewpoint)[:, :2]
    norm = torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    return torch.where(norm > _EPS, direction / norm.clamp_min(_EPS), torch.zeros_like(direction))


def _as_float_array(value: Any, name: str) -> Tensor:
    """`value` (tensor, array or nested sequence of numbers) as a float64 tensor."""
    if not isinstance(value, Tensor):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:  # ragged nested sequences
            raise ValueError(f"{name} must be an array of numbers (metres): {error}") from error
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold numbers (metres), got numpy dtype {array.dtype}")
        value = torch.from_numpy(array)
    if not (value.is_floating_point() or value.dtype in _INTEGER_DTYPES):
        raise ValueError(f"{name} must hold numbers (metres), got dtype {value.dtype}")
    return value.to(torch.float64)


def _check_objects(centers: Any, sizes: Any, class_ids: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Validated float64 centres and sizes, int64 class ids, on the centres' device."""
    centers = _as_float_array(centers, "centers")
    sizes = _as_float_array(sizes, "sizes").to(centers.device)
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise ValueError(f"centers must have shape (N, 3), got {tuple(centers.shape)}")
    if centers.shape[0] == 0:
        raise ValueError("scene with no objects: centers is (0, 3); a scene graph needs at least one object")
    num_objects = centers.shape[0]
    if sizes.shape != centers.shape:
        raise ValueError(f"sizes must have the shape of centers {tuple(centers.shape)}, got {tuple(sizes.shape)}")
    for name, tensor in (("centers", centers), ("sizes", sizes)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contain NaN or inf (objects {_bad_rows(~torch.isfinite(tensor))})")
    if bool((sizes < 0).any()):
        raise ValueError(f"sizes must be >= 0 (box edge lengths), negative for objects {_bad_rows(sizes < 0)}")
    classes = torch.as_tensor(np.asarray(class_ids) if not isinstance(class_ids, Tensor) else class_ids)
    if classes.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"class_ids must be integers, got dtype {classes.dtype}")
    if classes.shape != (num_objects,):
        raise ValueError(f"class_ids must have shape ({num_objects},) (one per object), got {tuple(classes.shape)}")
    return centers, sizes, classes.to(device=centers.device, dtype=torch.long)


def _bad_rows(mask: Tensor) -> list[int]:
    return mask.reshape(mask.shape[0], -1).any(dim=1).nonzero().flatten()[:10].tolist()


def _check_viewpoint(viewpoint: Any, device: torch.device) -> Tensor | None:
    if viewpoint is None:
        return None
    point = _as_float_array(viewpoint, "viewpoint").to(device)
    if point.shape != (3,) or not bool(torch.isfinite(point).all()):
        raise ValueError(f"viewpoint must be a finite (3,) position (x, y, z in metres), got {point.tolist()}")
    return point


def _normalise_predicate(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


_PREDICATE_TO_RELATION = {
    **THREE_DSSG_PREDICATE_TO_RELATION,
    **{_normalise_predicate(name): name for name in RELATIONS},
}


def _parse_gt_relations(
    gt_relations: Sequence[tuple[int, int, str]] | None, num_objects: int
) -> tuple[list[tuple[int, int, int]], list[tuple[int, str, int]]]:
    """(subject, object, relation id) for mapped predicates, and (subject, predicate, object) for the others."""
    mapped: list[tuple[int, int, int]] = []
    extra: list[tuple[int, str, int]] = []
    if gt_relations is None:
        return mapped, extra
    for position, entry in enumerate(gt_relations):
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(
                f"gt_relations[{position}] must be (subject_idx, object_idx, predicate), got {entry!r}; "
                "map 3DSSG's [subject_id, object_id, predicate_idx, name] rows to node indices first"
            )
        subject, obj, predicate = entry
        valid_index = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in (subject, obj))
        if not valid_index or not (0 <= subject < num_objects and 0 <= obj < num_objects):
            raise ValueError(
                f"gt_relations[{position}] = {entry!r}: subject and object must be node indices in [0, {num_objects})"
            )
        if subject == obj:
            raise ValueError(f"gt_relations[{position}] = {entry!r}: an object cannot relate to itself")
        if not isinstance(predicate, str) or not predicate.strip():
            raise ValueError(f"gt_relations[{position}] = {entry!r}: the predicate must be a non-empty string")
        normalised = _normalise_predicate(predicate)
        if normalised == _NO_RELATION_PREDICATE:
            continue
        if normalised in _PREDICATE_TO_RELATION:
            mapped.append((int(subject), int(obj), RELATION_TO_ID[_PREDICATE_TO_RELATION[normalised]]))
        else:
            extra.append((int(subject), predicate, int(obj)))
    return mapped, extra


def _gap_rows(centers: Tensor, sizes: Tensor) -> Callable[[Tensor], Tensor]:
    """`rows (C,) -> (C, N)` box gaps from the objects `rows` to every object, for `knn_from_distance_rows`."""

    def rows_to_all(rows: Tensor) -> Tensor:
        # (C, 1, 3) against (1, N, 3) -> (C, N)
        offset = (centers[rows, None] - centers[None]).abs()
        return torch.linalg.vector_norm((offset - (sizes[rows, None] + sizes[None]) / 2).clamp_min(0), dim=-1)

    return rows_to_all


def _center_distance_rows(centers: Tensor) -> Callable[[Tensor], Tensor]:
    """`rows (C,) -> (C, N)` centre distances from the objects `rows` to every object."""

    def rows_to_all(rows: Tensor) -> Tensor:
        return torch.cdist(centers[rows], centers, compute_mode="donot_use_mm_for_euclid_dist")  # (C, N)

    return rows_to_all


def _bypass_pairs(centers: Tensor, sizes: Tensor, classes: Tensor, config: SceneGraphConfig) -> Tensor:
    """Pairs (i, j) with on(i, j) and/or same_class(i, j), per the config's bypass switches, (2, E) long."""
    num_objects = centers.shape[0]
    found = []
    for start in range(0, num_objects, config.chunk_size):
        rows = torch.arange(start, min(start + config.chunk_size, num_objects), device=centers.device)
        keep = torch.zeros(rows.numel(), num_objects, dtype=torch.bool, device=centers.device)
        if config.support_bypasses_knn:
            # (C, 1, 3) against (1, N, 3): on(i, j) for every row i of the chunk and every j.
            center_i, size_i, center_j, size_j = centers[rows, None], sizes[rows, None], centers[None], sizes[None]
            shared_xy = _shared_extent(center_i[..., :2], size_i[..., :2], center_j[..., :2], size_j[..., :2])
            footprint = _footprint_overlap(shared_xy, size_i, size_j)  # (C, N)
            vertical_gap = (center_i[..., 2] - size_i[..., 2] / 2) - (center_j[..., 2] + size_j[..., 2] / 2)
            keep |= _on(vertical_gap, footprint, center_i[..., 2] - center_j[..., 2], config)
        if config.same_class_bypasses_knn:
            same = classes[rows, None] == classes[None]  # (C, N)
            if config.same_class_ignore_ids:
                ignored = torch.tensor(config.same_class_ignore_ids, dtype=classes.dtype, device=classes.device)
                same &= ~torch.isin(classes[rows], ignored)[:, None]
            keep |= same
        keep[torch.arange(rows.numel(), device=centers.device), rows] = False
        local, columns = keep.nonzero(as_tuple=True)
        found.append(torch.stack([rows[local], columns]))
    return torch.cat(found, dim=1)


def _candidate_pairs(centers: Tensor, sizes: Tensor, classes: Tensor, config: SceneGraphConfig) -> Tensor:
    """Ordered pairs before ground truth: all of them, or kNN (symmetric) plus bypass pairs, (2, E) long."""
    num_objects = centers.shape[0]
    device = centers.device
    if config.k is None or num_objects - 1 <= config.k:
        subjects, objects = torch.meshgrid(
            torch.arange(num_objects, device=device), torch.arange(num_objects, device=device), indexing="ij"
        )
        off_diagonal = subjects != objects
        return torch.stack([subjects[off_diagonal], objects[off_diagonal]])
    if config.knn_metric == "center":
        neighbours = knn(centers, config.k, chunk_size=config.chunk_size)
    else:
        neighbours = knn_from_distance_rows(
            _gap_rows(centers, sizes),
            num_objects,
            config.k,
            secondary_rows=_center_distance_rows(centers),
            chunk_size=config.chunk_size,
        )
    # (N, K) neighbour table -> (2, N*K) pairs (node, neighbour)
    pairs = torch.stack([
        torch.arange(num_objects, device=device).repeat_interleave(neighbours.shape[1]),
        neighbours.reshape(-1).to(device),
    ])
    if config.support_bypasses_knn or config.same_class_bypasses_knn:
        pairs = torch.cat([pairs, _bypass_pairs(centers, sizes, classes, config)], dim=1)
    return to_undirected(pairs, num_nodes=num_objects)


def build_scene_graph(
    centers: Tensor | np.ndarray,
    sizes: Tensor | np.ndarray,
    class_ids: Tensor | np.ndarray | Sequence[int],
    *,
    config: SceneGraphConfig | None = None,
    viewpoint: Tensor | np.ndarray | Sequence[float] | None = None,
    gt_relations: Sequence[tuple[int, int, str]] | None = None,
) -> Data:
    """Build the scene graph of N axis-aligned object boxes (relations and edge rules: module docstring).

    Args:
        centers: box centres (x, y, z), metres, z up.
        sizes: box edge lengths (>= 0), metres.
        class_ids: class id per object (e.g. an index into `labels.SCANREFER_CLASSES`).
        config: thresholds and edge rules; `SceneGraphConfig()` when None.
        viewpoint: viewer position for the view_* relations; None leaves them 0.
        gt_relations: ground-truth (subject_idx, object_idx, predicate) triplets, e.g. from 3DSSG.

    Returns:
        `torch_geometric.data.Data` with pos = centres, size, y = class ids, edge_index (subject, object),
        edge_attr = multi-hot flags in RELATIONS order, edge_geom = EDGE_GEOMETRY_FEATURES, relations = the
        list RELATIONS, extra_relations = unmapped ground-truth (subject_idx, predicate, object_idx). Batches
        with `torch_geometric.data.Batch` (extra_relations then keeps per-graph indices).

    Shapes:
        centers, sizes: (N, 3); class_ids: (N,); viewpoint: (3,) -> pos, size: (N, 3) float32; y: (N,) long;
        edge_index: (2, E) long, sorted by subject then object; edge_attr: (E, R) float32 with
        R = len(RELATIONS); edge_geom: (E, G) float32 with G = len(EDGE_GEOMETRY_FEATURES).

    Raises:
        ValueError: no objects ("scene with no objects"), shapes that do not match, NaN / inf, negative sizes,
            non-integer class ids, a bad viewpoint, or a malformed / out-of-range ground-truth relation.
    """
    config = SceneGraphConfig() if config is None else config
    if not isinstance(config, SceneGraphConfig):
        raise ValueError(f"config must be a SceneGraphConfig, got {type(config).__name__}")
    centers, sizes, classes = _check_objects(centers, sizes, class_ids)
    num_objects, device = centers.shape[0], centers.device
    view_point = _check_viewpoint(viewpoint, device)
    gt_mapped, gt_extra = _parse_gt_relations(gt_relations, num_objects)

    pairs = _candidate_pairs(centers, sizes, classes, config)
    if gt_mapped:
        gt_pairs = torch.tensor([(s, o) for s, o, _ in gt_mapped], dtype=torch.long, device=device).T  # (2, X)
        pairs = torch.cat([pairs, gt_pairs, gt_pairs.flip(0)], dim=1)
    edge_index = coalesce(pairs, num_nodes=num_objects)  # sorted by (subject, object), duplicates removed
    subjects, objects = edge_index
    geometry = _pair_geometry(centers[subjects], sizes[subjects], centers[objects], sizes[objects], config.min_volume)
    forward = None
    if view_point is not None:
        forward = _view_forward(centers, subjects, objects, sizes, view_point, config.view_target)
    flags = _relation_flags(geometry, classes[subjects], classes[objects], forward, config)
    if config.gt_mode == "replace" and gt_relations is not None:
        flags.zero_()
    if gt_mapped:
        _set_gt_flags(flags, edge_index, gt_mapped, num_objects)
    edge_geom = torch.cat(
        [
            geometry.offset,
            torch.stack(
                [
                    geometry.center_distance, geometry.box_gap, geometry.vertical_gap,
                    geometry.vertical_overlap, geometry.footprint_overlap, geometry.log_volume_ratio,
                ],
                dim=1,
            ),
        ],
        dim=1,
    )
    return Data(
        pos=centers.float(),
        size=sizes.float(),
        y=classes,
        edge_index=edge_index,
        edge_attr=flags.float(),
        edge_geom=edge_geom.float(),
        relations=list(RELATIONS),
        extra_relations=gt_extra,
        num_nodes=num_objects,
    )


def _set_gt_flags(flags: Tensor, edge_index: Tensor, gt_mapped: list[tuple[int, int, int]], num_objects: int) -> None:
    """Set each ground-truth flag on its pair and the inverse flag on the reversed pair, in place."""
    inverse_ids = [RELATION_TO_ID[INVERSE_RELATION[name]] for name in RELATIONS]
    subjects, objects, relation_ids = (list(column) for column in zip(*gt_mapped))
    subjects, objects = subjects + objects, objects + subjects  # both directions
    relation_ids = relation_ids + [inverse_ids[r] for r in relation_ids]
    device = edge_index.device
    keys = edge_index[0] * num_objects + edge_index[1]  # sorted, since edge_index is coalesced
    wanted = torch.tensor(subjects, device=device) * num_objects + torch.tensor(objects, device=device)
    rows = torch.searchsorted(keys, wanted)
    flags[rows, torch.tensor(relation_ids, device=device)] = True


def _relation_names(data: Data) -> list[str]:
    """The relation names of `data` (a single Data or a Batch, whose `relations` is one list per graph)."""
    names = getattr(data, "relations", None)
    if names is None:
        names = list(RELATIONS)
    elif names and isinstance(names[0], (list, tuple)):
        if any(list(graph_names) != list(names[0]) for graph_names in names):
            raise ValueError("the graphs of this batch use different relation lists; build them with one RELATIONS")
        names = list(names[0])
    if data.edge_attr is None or data.edge_attr.ndim != 2 or data.edge_attr.shape[1] != len(names):
        raise ValueError(
            f"data.edge_attr must be (E, {len(names)}) relation flags, got "
            f"{None if data.edge_attr is None else tuple(data.edge_attr.shape)}; build data with build_scene_graph"
        )
    return list(names)


def relation_triplets(data: Data) -> list[tuple[int, str, int]]:
    """All (subject_idx, relation_name, object_idx) whose flag is set, ordered by edge then RELATIONS order.

    A triplet reads "subject relation object": (lamp_idx, "on", table_idx) is "the lamp is on the table".

    Works on a Batch too (indices are then batch-wide node indices). Unmapped ground-truth predicates are not
    included: they are in `data.extra_relations`.

    Raises:
        ValueError: `data` lacks (E, R) relation flags in edge_attr.
    """
    names = _relation_names(data)
    edges, relation_ids = (data.edge_attr > 0).nonzero(as_tuple=True)
    subjects = data.edge_index[0, edges].tolist()
    objects = data.edge_index[1, edges].tolist()
    return [(s, names[r], o) for s, r, o in zip(subjects, relation_ids.tolist(), objects)]


def typed_edges(data: Data) -> tuple[Tensor, Tensor]:
    """One edge per (pair, set relation), for relational message passing (e.g. `torch_geometric.nn.RGCNConv`).

    Returns:
        edge_index (subject, object) and edge_type = index into RELATIONS, ordered by edge then relation.

    Shapes:
        data.edge_index: (2, E); data.edge_attr: (E, R) -> edge_index (2, E'), edge_type (E',) long,
        E' = number of set flags.

    Raises:
        ValueError: `data` lacks (E, R) relation flags in edge_attr.
    """
    _relation_names(data)
    edges, edge_type = (data.edge_attr > 0).nonzero(as_tuple=True)
    return data.edge_index[:, edges], edge_type


def build_scene_graph_for_scene(
    scene: Scene,
    *,
    class_field: Literal["scanrefer", "nyu40"] = "scanrefer",
    config: SceneGraphConfig | None = None,
    viewpoint: Tensor | np.ndarray | Sequence[float] | None = None,
    gt_relations: Sequence[tuple[int, int, str]] | None = None,
) -> Data:
    """`build_scene_graph` on the axis-aligned boxes of a `scannet.Scene`'s objects.

    Node i is `scene.objects[i]`; `data.object_ids` (N,) holds their ScanNet `object_id`s (what ScanRefer and
    ScanQA refer to) and `data.scene_id` the scene id.

    Args:
        scene: a scene from `scene3d.data.scannet.read_scannet_scene`.
        class_field: y = index into `labels.SCANREFER_CLASSES` ("scanrefer") or the NYU40 id ("nyu40").
        config, viewpoint: as in `build_scene_graph`.
        gt_relations: (subject_object_id, object_object_id, predicate) with ScanNet object ids (not node
            indices); relations naming an object the scene lacks raise.

    Raises:
        ValueError: an unknown class_field, an object id absent from the scene, or `build_scene_graph`'s errors
            (a scene with no objects included).
    """
    from scene3d.data.labels import SCANREFER_CLASS_TO_ID

    if class_field not in ("scanrefer", "nyu40"):
        raise ValueError(f"class_field must be 'scanrefer' or 'nyu40', got {class_field!r}")
    objects = list(scene.objects)
    if not objects:
        raise ValueError(f"scene with no objects: {scene.scene_id} has no objects to build a graph from")
    centers = np.stack([np.asarray(obj.center, dtype=np.float64) for obj in objects])
    sizes = np.stack([np.asarray(obj.size, dtype=np.float64) for obj in objects])
    bad = ~(np.isfinite(centers).all(axis=1) & np.isfinite(sizes).all(axis=1))  # (N,)
    if bad.any():
        ids = [objects[i].object_id for i in np.flatnonzero(bad)[:10]]
        raise ValueError(
            f"scene {scene.scene_id}: objects {ids} have NaN or infinite box centres / sizes (their points hold "
            "NaN or inf); repair the scene's mesh"
        )
    if class_field == "scanrefer":
        class_ids = [SCANREFER_CLASS_TO_ID[obj.scanrefer_class] for obj in objects]
    else:
        class_ids = [int(obj.nyu40_id) for obj in objects]
    node_of_object = {obj.object_id: index for index, obj in enumerate(objects)}
    relations = None
    if gt_relations is not None:
        relations = []
        for entry in gt_relations:
            if not isinstance(entry, (tuple, list)) or len(entry) != 3:
                raise ValueError(
                    f"gt_relations entries must be (subject_object_id, object_object_id, predicate), got {entry!r}"
                )
            subject_id, object_id, predicate = entry
            missing = [i for i in (subject_id, object_id) if i not in node_of_object]
            if missing:
                raise ValueError(
                    f"gt relation ({subject_id}, {object_id}, {predicate!r}): object id(s) {missing} not in scene "
                    f"{scene.scene_id} (absent from its aggregation file or skipped by the reader: see scene.meta)"
                )
            relations.append((node_of_object[subject_id], node_of_object[object_id], predicate))
    data = build_scene_graph(
        centers, sizes, torch.tensor(class_ids, dtype=torch.long),
        config=config, viewpoint=viewpoint, gt_relations=relations,
    )
    data.object_ids = torch.tensor([obj.object_id for obj in objects], dtype=torch.long)
    data.scene_id = scene.scene_id
    return data
