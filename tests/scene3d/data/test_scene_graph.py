"""Tests for scene3d.data.scene_graph: hand-checked relations, kNN limit, naive reference, ground truth, batching."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from scene3d.data.scene_graph import (
    EDGE_GEOMETRY_FEATURES,
    INVERSE_RELATION,
    RELATIONS,
    SceneGraphConfig,
    build_scene_graph,
    build_scene_graph_for_scene,
    relation_triplets,
    typed_edges,
)

TABLE, CHAIR, LAMP, BOX = 4, 2, 30, 31
# A 1.2 x 0.8 x 0.75 m table standing on the floor at the origin.
TABLE_CENTER, TABLE_SIZE = [0.0, 0.0, 0.375], [1.2, 0.8, 0.75]


def _triplets(centers, sizes, classes, **kwargs) -> set[tuple[int, str, int]]:
    data = build_scene_graph(
        torch.tensor(centers, dtype=torch.float64), torch.tensor(sizes, dtype=torch.float64),
        torch.tensor(classes), **kwargs,
    )
    return set(relation_triplets(data))


def _relations_between(triplets: set, subject: int, obj: int) -> set[str]:
    return {name for s, name, o in triplets if (s, o) == (subject, obj)}


def test_lamp_resting_on_table_is_on_and_above_it() -> None:
    # Lamp 0.2 x 0.2 x 0.4 m whose bottom (0.75 + 0.02 m scan noise) touches the table top.
    lamp_center = [0.3, 0.1, 0.77 + 0.2]
    triplets = _triplets([lamp_center, TABLE_CENTER], [[0.2, 0.2, 0.4], TABLE_SIZE], [LAMP, TABLE])
    assert {"on", "above", "near", "smaller_than"} <= _relations_between(triplets, 0, 1)
    assert {"supports", "below", "near", "bigger_than"} <= _relations_between(triplets, 1, 0)
    assert not {"next_to", "below", "supports"} & _relations_between(triplets, 0, 1)
    assert (0, "on", 1) in triplets  # (subject, predicate, object): "lamp on table"


def test_floating_box_is_above_but_not_on() -> None:
    box_center = [0.0, 0.0, 0.75 + 0.5 + 0.1]  # bottom 0.5 m above the table top
    triplets = _triplets([box_center, TABLE_CENTER], [[0.2, 0.2, 0.2], TABLE_SIZE], [BOX, TABLE])
    assert "above" in _relations_between(triplets, 0, 1)
    assert "below" in _relations_between(triplets, 1, 0)
    assert not {"on", "supports"} & (_relations_between(triplets, 0, 1) | _relations_between(triplets, 1, 0))


def test_thin_objects_in_contact_stack_one_way_only() -> None:
    # A 3 cm book on a 2 cm mat: both are within the contact tolerance of each other's top, but only the higher
    # one is on / above the other.
    triplets = _triplets([[0.0, 0.0, 0.035], [0.0, 0.0, 0.01]], [[0.3, 0.2, 0.03], [1.0, 1.0, 0.02]], [BOX, 0])
    assert {"on", "above"} <= _relations_between(triplets, 0, 1)
    assert not {"on", "above"} & _relations_between(triplets, 1, 0)


def test_box_above_but_beside_the_footprint_is_not_above() -> None:
    box_center = [2.0, 0.0, 1.5]
    triplets = _triplets([box_center, TABLE_CENTER], [[0.2, 0.2, 0.2], TABLE_SIZE], [BOX, TABLE])
    assert not {"above", "below", "on", "supports"} & _relations_between(triplets, 0, 1)


def test_two_chairs_close_together_are_near_next_to_and_same_class() -> None:
    # Two 0.5 m chairs whose boxes are 0.3 m apart along x.
    triplets = _triplets([[0.0, 0.0, 0.45], [0.8, 0.0, 0.45]], [[0.5, 0.5, 0.9]] * 2, [CHAIR, CHAIR])
    for subject, obj in ((0, 1), (1, 0)):
        assert {"near", "next_to", "same_class"} <= _relations_between(triplets, subject, obj)
        assert not {"above", "below", "on", "supports", "bigger_than", "smaller_than"} & _relations_between(
            triplets, subject, obj
        )


def test_far_objects_are_not_near() -> None:
    triplets = _triplets([[0.0, 0.0, 0.45], [3.0, 0.0, 0.45]], [[0.5, 0.5, 0.9]] * 2, [CHAIR, CHAIR])
    assert not {"near", "next_to"} & _relations_between(triplets, 0, 1)
    assert "same_class" in _relations_between(triplets, 0, 1)


def test_room_frame_left_right_front_behind() -> None:
    # Chair at smaller x (left) and smaller y (in front, nearer the canonical viewer on the -y side).
    triplets = _triplets([[-1.5, -1.0, 0.45], TABLE_CENTER], [[0.5, 0.5, 0.9], TABLE_SIZE], [CHAIR, TABLE])
    assert {"left_of", "in_front_of"} <= _relations_between(triplets, 0, 1)
    assert {"right_of", "behind"} <= _relations_between(triplets, 1, 0)
    assert not {"right_of", "behind"} & _relations_between(triplets, 0, 1)
    # Within the margin along y: neither in front nor behind.
    triplets = _triplets([[-1.5, 0.05, 0.45], TABLE_CENTER], [[0.5, 0.5, 0.9], TABLE_SIZE], [CHAIR, TABLE])
    assert not {"in_front_of", "behind"} & _relations_between(triplets, 0, 1)


@pytest.mark.parametrize("view_target", ["pair", "scene"])
def test_view_dependent_relations_flip_for_a_viewer_on_the_other_side(view_target: str) -> None:
    centers = [[-1.5, -1.0, 0.45], TABLE_CENTER]
    sizes = [[0.5, 0.5, 0.9], TABLE_SIZE]
    config = SceneGraphConfig(view_target=view_target)
    front_viewer = _triplets(centers, sizes, [CHAIR, TABLE], viewpoint=[0.0, -5.0, 1.6], config=config)
    back_viewer = _triplets(centers, sizes, [CHAIR, TABLE], viewpoint=[0.0, 5.0, 1.6], config=config)
    no_viewer = _triplets(centers, sizes, [CHAIR, TABLE], config=config)
    # Seen from the -y side the view frame is the room frame; from the +y side left/right and front/behind swap.
    assert {"view_left_of", "view_in_front_of"} <= _relations_between(front_viewer, 0, 1)
    assert {"view_right_of", "view_behind"} <= _relations_between(back_viewer, 0, 1)
    assert not {"view_right_of", "view_behind"} & _relations_between(front_viewer, 0, 1)
    assert not {"view_left_of", "view_in_front_of"} & _relations_between(back_viewer, 0, 1)
    # The room frame does not depend on the viewer, and without a viewer there are no view relations.
    assert {"left_of", "in_front_of"} <= _relations_between(back_viewer, 0, 1)
    assert not any(name.startswith("view_") for _, name, _ in no_viewer)


def test_view_from_the_side_turns_left_right_into_front_behind() -> None:
    # Viewer far on the -x side looking towards +x: right = (0, -1), so the chair (smaller x) is in front.
    triplets = _triplets(
        [[-1.5, -1.0, 0.45], TABLE_CENTER], [[0.5, 0.5, 0.9], TABLE_SIZE], [CHAIR, TABLE], viewpoint=[-8.0, -0.5, 1.6]
    )
    assert {"view_in_front_of", "view_right_of"} <= _relations_between(triplets, 0, 1)


def test_bigger_and_smaller_follow_the_volume_ratio() -> None:
    sizes = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.6], [1.0, 1.0, 0.5]]  # volumes 1.0, 0.6, 0.5
    triplets = _triplets([[0.0, 0.0, 0.5], [3.0, 0.0, 0.3], [6.0, 0.0, 0.25]], sizes, [0, 1, 2])
    assert {(0, "bigger_than", 1), (1, "smaller_than", 0), (0, "bigger_than", 2), (2, "smaller_than", 0)} <= triplets
    assert not {"bigger_than", "smaller_than"} & _relations_between(triplets, 1, 2)  # ratio 1.2 < 1.5


def test_same_class_ignore_ids() -> None:
    config = SceneGraphConfig(same_class_ignore_ids=(CHAIR,))
    triplets = _triplets([[0.0, 0.0, 0.45], [0.8, 0.0, 0.45]], [[0.5, 0.5, 0.9]] * 2, [CHAIR, CHAIR], config=config)
    assert "same_class" not in _relations_between(triplets, 0, 1)


def test_output_fields_shapes_and_dtypes() -> None:
    data = build_scene_graph(np.zeros((3, 3)) + np.arange(3)[:, None], np.ones((3, 3)), np.array([1, 2, 1]))
    assert data.num_nodes == 3 and data.pos.dtype == torch.float32 and data.y.dtype == torch.long
    assert data.edge_index.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert data.edge_attr.shape == (6, len(RELATIONS)) and data.edge_attr.dtype == torch.float32
    assert set(data.edge_attr.unique().tolist()) <= {0.0, 1.0}
    assert data.edge_geom.shape == (6, len(EDGE_GEOMETRY_FEATURES))
    assert data.relations == list(RELATIONS) and data.extra_relations == []
    # Object 0 at (0,0,0) and 1 at (1,1,1), unit boxes: offset -1, distance sqrt(3), touching corners.
    assert data.edge_geom[0].tolist() == pytest.approx([-1, -1, -1, math.sqrt(3), 0, -2, 0, 0, 0])


def test_single_object_scene_has_no_edges() -> None:
    data = build_scene_graph([[0.0, 0.0, 0.5]], [[1.0, 1.0, 1.0]], [3])
    assert data.edge_index.shape == (2, 0) and data.edge_attr.shape == (0, len(RELATIONS))
    assert relation_triplets(data) == []


def test_every_relation_has_its_inverse_on_the_reversed_pair() -> None:
    triplets = set(relation_triplets(build_scene_graph(*_random_scene(15, seed=3), viewpoint=[0.0, -4.0, 1.5])))
    assert triplets
    assert {(o, INVERSE_RELATION[name], s) for s, name, o in triplets} == triplets


# ---------------------------------------------------------------- naive reference ---------------------------------


def _random_scene(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objects in a 4 x 4 m room: on the floor, stacked on an earlier object (with scan noise) or floating."""
    rng = np.random.default_rng(seed)
    centers, sizes = np.zeros((n, 3)), rng.uniform(0.1, 1.0, size=(n, 3))
    for i in range(n):
        mode = rng.integers(3) if i else 0
        if mode == 1:  # stacked on object j: footprint near j's centre, bottom within 5 cm of j's top
            j = rng.integers(i)
            centers[i, :2] = centers[j, :2] + rng.uniform(-0.2, 0.2, size=2)
            bottom = centers[j, 2] + sizes[j, 2] / 2 + rng.uniform(-0.05, 0.05)
        else:
            centers[i, :2] = rng.uniform(0, 4, size=2)
            bottom = 0.0 if mode == 0 else rng.uniform(0.0, 2.0)
        centers[i, 2] = bottom + sizes[i, 2] / 2
    classes = rng.integers(0, 4, size=n)
    return torch.from_numpy(centers), torch.from_numpy(sizes), torch.from_numpy(classes)


def _reference_pair(ci, si, cj, sj, yi, yj, viewpoint, scene_center, config: SceneGraphConfig) -> set[str]:
    """The module docstring's definitions, one pair at a time with python floats."""
    lo_i = [ci[a] - si[a] / 2 for a in range(3)]
    hi_i = [ci[a] + si[a] / 2 for a in range(3)]
    lo_j = [cj[a] - sj[a] / 2 for a in range(3)]
    hi_j = [cj[a] + sj[a] / 2 for a in range(3)]
    shared = [max(0.0, min(hi_i[a], hi_j[a]) - max(lo_i[a], lo_j[a])) for a in range(3)]
    footprint = shared[0] * shared[1] / max(min(si[0] * si[1], sj[0] * sj[1]), 1e-12)
    vertical = shared[2] / max(min(si[2], sj[2]), 1e-12)
    gap = math.sqrt(sum(max(0.0, abs(ci[a] - cj[a]) - (si[a] + sj[a]) / 2) ** 2 for a in range(3)))
    volume_i = max(si[0] * si[1] * si[2], config.min_volume)
    volume_j = max(sj[0] * sj[1] * sj[2], config.min_volume)
    tol, margin = config.contact_tolerance, config.direction_margin

    def above(bottom_s, top_o, rise):
        return bottom_s >= top_o - tol and footprint >= config.min_footprint_overlap and rise > 0

    names = set()
    if above(lo_i[2], hi_j[2], ci[2] - cj[2]):
        names.add("above")
        if abs(lo_i[2] - hi_j[2]) <= tol:
            names.add("on")
    if above(lo_j[2], hi_i[2], cj[2] - ci[2]):
        names.add("below")
        if abs(lo_j[2] - hi_i[2]) <= tol:
            names.add("supports")
    if gap < config.near_threshold:
        names.add("near")
        if vertical >= config.next_to_min_vertical_overlap and footprint <= config.next_to_max_footprint_overlap:
            names.add("next_to")
    dx, dy = ci[0] - cj[0], ci[1] - cj[1]
    for value, negative, positive in ((dx, "left_of", "right_of"), (dy, "in_front_of", "behind")):
        if value < -margin:
            names.add(negative)
        if value > margin:
            names.add(positive)
    if viewpoint is not None:
        target = [(ci[a] + cj[a]) / 2 for a in range(2)] if scene_center is None else scene_center[:2]
        fx, fy = target[0] - viewpoint[0], target[1] - viewpoint[1]
        length = math.hypot(fx, fy)
        if length > 1e-12:
            fx, fy = fx / length, fy / length
            lateral, depth = dx * fy - dy * fx, dx * fx + dy * fy  # right = (fy, -fx)
            for value, negative, positive in (
                (lateral, "view_left_of", "view_right_of"), (depth, "view_in_front_of", "view_behind")
            ):
                if value < -margin:
                    names.add(negative)
                if value > margin:
                    names.add(positive)
    if volume_i > config.size_ratio * volume_j:
        names.add("bigger_than")
    if volume_j > config.size_ratio * volume_i:
        names.add("smaller_than")
    if yi == yj and yi not in config.same_class_ignore_ids:
        names.add("same_class")
    return names


@pytest.mark.parametrize("view_target", ["pair", "scene"])
def test_vectorised_equals_naive_double_loop(view_target: str) -> None:
    centers, sizes, classes = _random_scene(15, seed=0)
    config = SceneGraphConfig(k=None, view_target=view_target)
    viewpoint = [-1.0, -3.0, 1.6]
    data = build_scene_graph(centers, sizes, classes, config=config, viewpoint=viewpoint)
    c, s, y = centers.tolist(), sizes.tolist(), classes.tolist()
    scene_center = None
    if view_target == "scene":
        scene_center = [
            (min(c[i][a] - s[i][a] / 2 for i in range(15)) + max(c[i][a] + s[i][a] / 2 for i in range(15))) / 2
            for a in range(3)
        ]
    expected = {
        (i, name, j)
        for i in range(15)
        for j in range(15)
        if i != j
        for name in _reference_pair(c[i], s[i], c[j], s[j], y[i], y[j], viewpoint, scene_center, config)
    }
    assert set(relation_triplets(data)) == expected
    assert {name for _, name, _ in expected} == set(RELATIONS)  # the scene exercises every relation
    # Geometry columns for one pair, by hand from the definitions.
    i, j = data.edge_index[:, 5].tolist()
    offset = [c[i][a] - c[j][a] for a in range(3)]
    assert data.edge_geom[5, :4].tolist() == pytest.approx(offset + [math.dist(c[i], c[j])], abs=1e-5)
    assert data.edge_geom[5, 8].item() == pytest.approx(math.log(np.prod(s[i]) / np.prod(s[j])), abs=1e-5)


# ---------------------------------------------------------------- kNN limit ---------------------------------------


def _edge_keys(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    return edge_index[0] * n + edge_index[1]


def test_knn_limit_on_a_large_scene_is_a_symmetric_subgraph_of_the_full_graph() -> None:
    n, k = 1000, 2
    generator = torch.Generator().manual_seed(0)
    centers = torch.rand(n, 3, generator=generator, dtype=torch.float64) * torch.tensor([30.0, 30.0, 3.0])
    sizes = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 0.5 + 0.05
    classes = torch.randint(0, 18, (n,), generator=generator)
    limited = build_scene_graph(centers, sizes, classes, config=SceneGraphConfig(k=k, support_bypasses_knn=False))
    full = build_scene_graph(centers, sizes, classes, config=SceneGraphConfig(k=None))
    keys, full_keys = _edge_keys(limited.edge_index, n), _edge_keys(full.edge_index, n)
    # Guarantees: E <= 2 N k, symmetric, every node keeps its k nearest by box gap (so degree >= k).
    assert keys.numel() <= 2 * n * k
    assert torch.equal(keys.sort().values, _edge_keys(limited.edge_index.flip(0), n).sort().values)
    assert (torch.bincount(limited.edge_index[0], minlength=n) >= k).all()
    gaps = ((centers[:, None] - centers[None]).abs() - (sizes[:, None] + sizes[None]) / 2).clamp_min(0).norm(dim=-1)
    gaps.fill_diagonal_(float("inf"))
    nearest = gaps.argsort(dim=1)[:, :k]  # (N, k) brute force
    assert torch.isin(torch.arange(n)[:, None] * n + nearest, keys).all()
    # Subgraph with identical flags and geometry.
    positions = torch.searchsorted(full_keys, keys)
    assert torch.equal(full_keys[positions], keys)
    assert torch.equal(full.edge_attr[positions], limited.edge_attr)
    assert torch.equal(full.edge_geom[positions], limited.edge_geom)


def _stacked_scene() -> tuple[list, list, list]:
    """Table 0 with a chair 1 pushed into it, lamp 2 on the table, tiny box 3 inside the lamp's box."""
    centers = [TABLE_CENTER, [0.0, 0.0, 0.375], [0.4, 0.3, 0.95], [0.4, 0.3, 1.0]]
    sizes = [TABLE_SIZE, [0.5, 0.5, 0.75], [0.1, 0.1, 0.4], [0.05, 0.05, 0.05]]
    return centers, sizes, [TABLE, CHAIR, LAMP, BOX]


def test_support_pairs_bypass_the_knn_limit() -> None:
    # With k = 1 the lamp's nearest is the box inside it and the table's the chair: "lamp on table" needs bypass.
    centers, sizes, classes = _stacked_scene()
    kept = _triplets(centers, sizes, classes, config=SceneGraphConfig(k=1))
    dropped = _triplets(centers, sizes, classes, config=SceneGraphConfig(k=1, support_bypasses_knn=False))
    assert (2, "on", 0) in kept and (0, "supports", 2) in kept
    assert not _relations_between(dropped, 2, 0)


def test_same_class_pairs_can_bypass_the_knn_limit() -> None:
    centers = [[0.0, 0.0, 0.45], [0.6, 0.0, 0.45], [9.0, 0.0, 0.45]]
    sizes, classes = [[0.5, 0.5, 0.9]] * 3, [CHAIR, TABLE, CHAIR]
    limited = _triplets(centers, sizes, classes, config=SceneGraphConfig(k=1))
    bypassed = _triplets(centers, sizes, classes, config=SceneGraphConfig(k=1, same_class_bypasses_knn=True))
    assert (0, "same_class", 2) not in limited
    assert {(0, "same_class", 2), (2, "same_class", 0)} <= bypassed


def test_center_metric_knn() -> None:
    centers = [[0.0, 0.0, 0.5], [1.0, 0.0, 0.5], [2.1, 0.0, 0.5], [10.0, 0.0, 0.5]]
    config = SceneGraphConfig(k=1, knn_metric="center")
    data = build_scene_graph(centers, [[0.2, 0.2, 0.2]] * 4, [0, 1, 2, 3], config=config)
    # Nearest centres: 0 -> 1, 1 -> 0, 2 -> 1 (1.1 m), 3 -> 2; made symmetric.
    assert data.edge_index.tolist() == [[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]


# ---------------------------------------------------------------- ground truth ------------------------------------


def test_3dssg_ground_truth_relations_are_mapped_or_kept_as_extra() -> None:
    centers, sizes, classes = _stacked_scene()
    centers.append([20.0, 20.0, 0.5])  # object 4, far from everything: beyond any kNN limit
    sizes.append([0.5, 0.5, 1.0])
    classes.append(CHAIR)
    gt = [
        (4, 0, "standing on"),  # geometrically false, but ground truth wins in "add" mode
        (1, 4, "same as"),
        (2, 0, "lying_on"),
        (4, 2, "attached to"),
        (3, 2, "none"),
        (0, 4, "Left"),
        (4, 1, "close by"),
    ]
    data = build_scene_graph(centers, sizes, classes, config=SceneGraphConfig(k=1), gt_relations=gt)
    triplets = set(relation_triplets(data))
    assert {(4, "on", 0), (0, "supports", 4), (1, "same_class", 4), (4, "same_class", 1), (2, "on", 0),
            (0, "left_of", 4), (4, "right_of", 0), (4, "near", 1), (1, "near", 4)} <= triplets
    assert data.extra_relations == [(4, "attached to", 2)]
    assert all(name != "none" for _, name, _ in triplets)  # 3DSSG's "none" is dropped, not kept as extra

    replaced = build_scene_graph(
        centers, sizes, classes, config=SceneGraphConfig(k=1, gt_mode="replace"), gt_relations=gt
    )
    expected = {(4, "on", 0), (0, "supports", 4), (1, "same_class", 4), (4, "same_class", 1), (2, "on", 0),
                (0, "supports", 2), (0, "left_of", 4), (4, "right_of", 0), (4, "near", 1), (1, "near", 4)}
    assert set(relation_triplets(replaced)) == expected
    assert replaced.edge_index.shape[1] > len({(s, o) for s, _, o in expected})  # kNN pairs are still edges


@pytest.mark.parametrize(
    ("gt", "match"),
    [
        ([(0, 5, "left")], r"node indices in \[0, 2\)"),
        ([(1, 1, "left")], "itself"),
        ([(0, 1)], "subject_idx, object_idx, predicate"),
        ([(0, 1, "")], "non-empty string"),
        ([(0.0, 1, "left")], "node indices"),
    ],
)
def test_bad_ground_truth_raises(gt, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_scene_graph([[0.0, 0.0, 0.5], [1.0, 0.0, 0.5]], [[0.5, 0.5, 1.0]] * 2, [0, 1], gt_relations=gt)


# ---------------------------------------------------------------- bad inputs --------------------------------------


@pytest.mark.parametrize(
    ("centers", "sizes", "classes", "match"),
    [
        (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=int), "scene with no objects"),
        (np.zeros((2, 3)), np.ones((3, 3)), [0, 1], "sizes must have the shape"),
        (np.zeros((2, 2)), np.ones((2, 2)), [0, 1], r"centers must have shape \(N, 3\)"),
        (np.zeros((2, 3)), np.ones((2, 3)), [0, 1, 2], r"class_ids must have shape \(2,\)"),
        (np.zeros((2, 3)), np.array([[1.0, 1.0, 1.0], [1.0, -0.2, 1.0]]), [0, 1], r"negative for objects \[1\]"),
        (np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]]), np.ones((2, 3)), [0, 1], "NaN or inf"),
        (np.zeros((2, 3)), np.ones((2, 3)), [0.0, 1.0], "class_ids must be integers"),
        (np.array([["a", "b", "c"]]), np.ones((1, 3)), [0], "must hold numbers"),
    ],
)
def test_bad_objects_raise(centers, sizes, classes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_scene_graph(centers, sizes, classes)


def test_bad_viewpoint_and_config_raise() -> None:
    with pytest.raises(ValueError, match="viewpoint"):
        build_scene_graph([[0.0, 0.0, 0.5]], [[1.0, 1.0, 1.0]], [0], viewpoint=[0.0, 1.0])
    for bad in (
        {"near_threshold": -0.1}, {"min_footprint_overlap": 1.5}, {"size_ratio": 0.5}, {"k": 0},
        {"knn_metric": "manhattan"}, {"view_target": "camera"}, {"gt_mode": "merge"}, {"chunk_size": 0},
        {"min_volume": 0.0}, {"same_class_ignore_ids": ("others",)},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SceneGraphConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SceneGraphConfig().k = 3  # type: ignore[misc]


# ---------------------------------------------------------------- batching, typed edges ---------------------------


def test_batching_typed_edges_and_triplets() -> None:
    first = build_scene_graph(*_random_scene(6, seed=1), viewpoint=[0.0, -3.0, 1.5])
    second = build_scene_graph(*_random_scene(4, seed=2))
    batch = Batch.from_data_list([first, second])
    assert batch.num_graphs == 2 and batch.edge_attr.shape == (first.num_edges + second.num_edges, len(RELATIONS))
    assert batch.edge_geom.shape[0] == batch.edge_index.shape[1]
    shifted = {(s + 6, name, o + 6) for s, name, o in relation_triplets(second)}
    assert set(relation_triplets(batch)) == set(relation_triplets(first)) | shifted

    edge_index, edge_type = typed_edges(batch)
    assert edge_index.shape == (2, int(batch.edge_attr.sum())) and edge_type.shape == (edge_index.shape[1],)
    assert {(s, RELATIONS[t], o) for (s, o), t in zip(edge_index.T.tolist(), edge_type.tolist())} == set(
        relation_triplets(batch)
    )


def test_typed_edges_feed_rgcn() -> None:
    from torch_geometric.nn import RGCNConv

    data = build_scene_graph(*_random_scene(8, seed=4), viewpoint=[0.0, -3.0, 1.5])
    edge_index, edge_type = typed_edges(data)
    torch.manual_seed(0)
    conv = RGCNConv(3, 4, num_relations=len(RELATIONS))
    out = conv(data.pos, edge_index, edge_type)
    out.sum().backward()
    assert out.shape == (8, 4) and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in conv.parameters())


def test_relation_triplets_rejects_data_without_flags() -> None:
    data = build_scene_graph([[0.0, 0.0, 0.5], [1.0, 0.0, 0.5]], [[0.5, 0.5, 1.0]] * 2, [0, 1])
    data.edge_attr = data.edge_attr[:, :3]
    with pytest.raises(ValueError, match="relation flags"):
        relation_triplets(data)


def test_deterministic() -> None:
    scene = _random_scene(40, seed=5)
    first = build_scene_graph(*scene, config=SceneGraphConfig(k=3), viewpoint=[0.0, -3.0, 1.5])
    second = build_scene_graph(*scene, config=SceneGraphConfig(k=3), viewpoint=[0.0, -3.0, 1.5])
    assert torch.equal(first.edge_index, second.edge_index) and torch.equal(first.edge_attr, second.edge_attr)


# ---------------------------------------------------------------- from a scannet.Scene ----------------------------


def test_build_scene_graph_for_scene() -> None:
    scannet = pytest.importorskip("scene3d.data.scannet")

    def box_object(object_id: int, label: str, nyu40_id: int, scanrefer_class: str, low, high):
        points = np.array([low, high], dtype=np.float32)
        return scannet.SceneObject(object_id, label, nyu40_id, label, scanrefer_class, points, np.zeros((2, 3)))

    table = box_object(7, "table", 7, "table", [-0.6, -0.4, 0.0], [0.6, 0.4, 0.75])
    lamp = box_object(3, "lamp", 35, "others", [0.2, 0.0, 0.75], [0.4, 0.2, 1.15])
    scene = scannet.Scene("scene0001_00", [table, lamp], np.eye(4))
    data = build_scene_graph_for_scene(scene, gt_relations=[(3, 7, "attached to")])
    assert data.y.tolist() == [4, 17] and data.object_ids.tolist() == [7, 3] and data.scene_id == "scene0001_00"
    assert (1, "on", 0) in relation_triplets(data) and data.extra_relations == [(1, "attached to", 0)]
    assert build_scene_graph_for_scene(scene, class_field="nyu40").y.tolist() == [7, 35]
    with pytest.raises(ValueError, match=r"object id\(s\) \[99\] not in scene scene0001_00"):
        build_scene_graph_for_scene(scene, gt_relations=[(99, 7, "left")])
    with pytest.raises(ValueError, match="scene with no objects"):
        build_scene_graph_for_scene(scannet.Scene("scene0002_00", [], np.eye(4)))
