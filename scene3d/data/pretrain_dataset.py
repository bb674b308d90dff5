"""`ScenePretrainDataset`: one item per scene, with its scene graph, masked-object views and descriptions.

Every access to scene i (a `PretrainScene`):
1. samples `points_per_object` points of every object (with replacement when an object has fewer), giving
   (N, P, 6) xyz-relative-to-centre + rgb;
2. (training with `augment`) turns the scene by a random multiple of 90 degrees about z and mirrors x with
   probability 1/2: centres, point offsets and box sizes stay exact for axis-aligned boxes, and the room-frame
   relations (left_of, in_front_of, ...) are recomputed from the moved boxes;
3. builds the scene graph (`scene_graph.build_scene_graph`) class-agnostically: every object gets class 0 and
   0 is in `same_class_ignore_ids`, so `same_class` is never set. Object classes are what masked object
   modelling predicts, and a `same_class` edge would hand the masked object's class to it from a neighbour;
4. builds the masked-object views. A view is the scene graph rebuilt with the masked objects' boxes shrunk to
   their centre points (size 0): every relation and edge feature touching a masked object then depends on its
   position only (its own extent cannot leak through box gaps, `on`, `bigger_than`, volume ratios or the kNN
   choice), and the model replaces the masked objects' point / colour / size features by a mask token
   (`models.components.object_encoder`). Training: one view per scene, each eligible object masked with
   probability `mom_mask_ratio` (at least one). Evaluation: leave-one-out, one view per eligible object with
   only that object masked, so every held-out object is scored once with all its context visible;
5. picks descriptions: up to `max_descriptions` at random for training, all of them for evaluation.

Training draws come from torch's generator (seeded by Lightning per worker); evaluation items are a fixed
function of (seed, index).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from scene3d.data.pretrain_scene import PretrainScene
from scene3d.data.scene_graph import SceneGraphConfig, build_scene_graph

__all__ = ["ScenePretrainDataset", "augment_scene", "sample_object_points"]

_CLASS_AGNOSTIC = 0


def sample_object_points(points: list[np.ndarray], num_points: int, rng: np.random.Generator) -> np.ndarray:
    """`num_points` points of every object: without replacement when it has enough, else with.

    Shapes:
        points: N arrays (P_i, 6) -> (N, num_points, 6) float32
    """
    out = np.empty((len(points), num_points, 6), dtype=np.float32)
    for i, cloud in enumerate(points):
        replace = cloud.shape[0] < num_points
        out[i] = cloud[rng.choice(cloud.shape[0], num_points, replace=replace)]
    return out


def augment_scene(
    centers: np.ndarray, sizes: np.ndarray, points: np.ndarray, quarter_turns: int, mirror_x: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn the scene by `quarter_turns` * 90 degrees about z, then mirror x if `mirror_x` (new arrays).

    Sizes follow exactly: a quarter turn swaps the x and y extents, a mirror keeps them.

    Shapes:
        centers, sizes: (N, 3); points: (N, P, 6) (xyz offsets first) -> same shapes
    """
    cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter_turns % 4]
    matrix = np.array([[cos, -sin], [sin, cos]], dtype=np.float32)
    if mirror_x:
        matrix = np.array([[-1, 0], [0, 1]], dtype=np.float32) @ matrix
    centers, sizes, points = centers.copy(), sizes.copy(), points.copy()
    centers[:, :2] = centers[:, :2] @ matrix.T
    points[..., :2] = points[..., :2] @ matrix.T  # (N, P, 2) @ (2, 2)
    sizes[:, :2] = np.abs(sizes[:, :2] @ matrix.T)  # a signed permutation: |.| gives the swapped extents
    return centers, sizes, points


class ScenePretrainDataset(Dataset):
    """Scenes as pre-training samples (see the module docstring).

    Args:
        scenes: the prepared scenes of one split.
        points_per_object: P, points sampled per object at every access.
        train: random draws and training views (True) or fixed draws and leave-one-out views (False).
        mom_mask_ratio: probability that an eligible object is masked in a training view, in (0, 1).
        max_descriptions: most descriptions per training item (>= 1); evaluation items keep all.
        graph_config: scene-graph thresholds and kNN limit; its `same_class_ignore_ids` is replaced (step 3).
        augment: random quarter turns and mirroring in training.
        seed: seed of the evaluation draws.

    Item (a dict):
        scene_id: str.
        graph: `Data` with points (N, P, 6), pos (N, 3) box centres, box_size (N, 3) (not `size`: a `Data`
            method), y (N,) class ids, mom_eligible (N,) bool,
            edge_index (2, E), edge_attr (E, R) relation flags, edge_geom (E, G).
        mom_views: list of `Data` with edge_index, edge_attr, edge_geom of the masked graph, masked (N,) bool,
            source_node (N,) = arange(N) (the node of `graph` each view node copies), num_nodes N.
        descriptions, phrases: lists of T strings; description_nodes, description_anchors,
            description_relations: lists of T ints (anchor / relation -1 when the text states no triplet).

    Raises:
        ValueError: no scenes, or bad arguments.
    """

    def __init__(
        self,
        scenes: list[PretrainScene],
        *,
        points_per_object: int = 64,
        train: bool = True,
        mom_mask_ratio: float = 0.2,
        max_descriptions: int = 8,
        graph_config: SceneGraphConfig | None = None,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        if not scenes:
            raise ValueError("ScenePretrainDataset needs at least one scene; check the split's scene list")
        for name, value in (("points_per_object", points_per_object), ("max_descriptions", max_descriptions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(mom_mask_ratio, (int, float)) and 0.0 < mom_mask_ratio < 1.0):
            raise ValueError(f"mom_mask_ratio must be in (0, 1) (e.g. 0.2), got {mom_mask_ratio!r}")
        self.graph_config = replace(graph_config or SceneGraphConfig(), same_class_ignore_ids=(_CLASS_AGNOSTIC,))
        self.scenes = scenes
        self.points_per_object = points_per_object
        self.train = train
        self.mom_mask_ratio = float(mom_mask_ratio)
        self.max_descriptions = max_descriptions
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.scenes)

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        return np.random.default_rng([self.seed, index])

    def _graph(self, centers: np.ndarray, sizes: np.ndarray) -> Data:
        graph = build_scene_graph(centers, sizes, torch.full((len(centers),), _CLASS_AGNOSTIC, dtype=torch.long),
                                  config=self.graph_config)
        return Data(edge_index=graph.edge_index, edge_attr=graph.edge_attr, edge_geom=graph.edge_geom,
                    num_nodes=len(centers))

    def _masked_view(self, centers: np.ndarray, sizes: np.ndarray, masked: np.ndarray) -> Data:
        shrunk = sizes.copy()
        shrunk[masked] = 0.0  # the masked objects become points at their centres
        view = self._graph(centers, shrunk)
        view.masked = torch.from_numpy(masked)
        view.source_node = torch.arange(len(centers))
        return view

    def _views(self, scene: PretrainScene, centers: np.ndarray, sizes: np.ndarray,
               rng: np.random.Generator) -> list[Data]:
        eligible = np.flatnonzero(scene.mom_eligible)
        if eligible.size == 0:
            return []
        if not self.train:
            views = []
            for node in eligible:
                masked = np.zeros(scene.num_objects, dtype=bool)
                masked[node] = True
                views.append(self._masked_view(centers, sizes, masked))
            return views
        chosen = eligible[rng.random(eligible.size) < self.mom_mask_ratio]
        if chosen.size == 0:
            chosen = eligible[[rng.integers(eligible.size)]]
        masked = np.zeros(scene.num_objects, dtype=bool)
        masked[chosen] = True
        return [self._masked_view(centers, sizes, masked)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scenes[index]
        rng = self._rng(index)
        points = sample_object_points(scene.points, self.points_per_object, rng)
        centers, sizes = scene.centers, scene.sizes
        if self.train and self.augment:
            turns, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
            centers, sizes, points = augment_scene(centers, sizes, points, turns, mirror)
        graph = self._graph(centers, sizes)
        graph.points = torch.from_numpy(points)
        graph.pos = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
        graph.box_size = torch.from_numpy(np.ascontiguousarray(sizes, dtype=np.float32))
        graph.y = torch.from_numpy(scene.classes)
        graph.mom_eligible = torch.from_numpy(scene.mom_eligible)
        descriptions = scene.descriptions
        if self.train and len(descriptions) > self.max_descriptions:
            keep = np.sort(rng.choice(len(descriptions), self.max_descriptions, replace=False))
            descriptions = [descriptions[i] for i in keep]
        return {
            "scene_id": scene.scene_id,
            "graph": graph,
            "mom_views": self._views(scene, centers, sizes, rng),
            "descriptions": [d.text for d in descriptions],
            "phrases": [d.phrase for d in descriptions],
            "description_nodes": [d.node for d in descriptions],
            "description_anchors": [d.anchor for d in descriptions],
            "description_relations": [d.relation for d in descriptions],
        }
