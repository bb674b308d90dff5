"""`FinetuneDataset`: one item per scene, its proposals as a scene graph plus the scene's queries.

A query is one description (grounding) or one question (QA), a plain dict that the task's datamodule builds
(keys listed there); this dataset only samples them. Every access to scene i:
1. samples `points_per_object` points of every proposal (`pretrain_dataset.sample_object_points`);
2. (training with `augment`) turns / mirrors the scene (`pretrain_dataset.augment_scene`). Off by default for
   fine-tuning: a mirror swaps "left" and "right", which view-dependent descriptions rely on;
3. builds the class-agnostic scene graph of the proposal boxes (as in pre-training);
4. keeps up to `max_queries` queries at random for training, all of them for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data

from scene3d.data.pretrain_dataset import augment_scene, sample_object_points
from scene3d.data.proposals import ProposalSet
from scene3d.data.scene_graph import SceneGraphConfig, build_scene_graph

__all__ = ["FinetuneDataset", "TaskScene", "collate_finetune_scenes"]

_CLASS_AGNOSTIC = 0


@dataclass
class TaskScene:
    """A scene of a fine-tuning split: id, frame origin (ScanNet axis-aligned = scene frame + origin), proposals,
    queries."""

    scene_id: str
    origin: np.ndarray
    proposals: ProposalSet
    queries: list[dict[str, Any]]


class FinetuneDataset(Dataset):
    """Scenes with proposals and queries (module docstring).

    Item: {"scene_id", "origin" (3,), "graph": `Data` with points (K, P, 6), pos (K, 3), box_size (K, 3),
    y (K,) proposal classes, edge_index / edge_attr / edge_geom; "queries": list of dicts}.
    """

    def __init__(self, scenes: list[TaskScene], *, points_per_object: int = 32, train: bool = True,
                 max_queries: int = 8, graph_config: SceneGraphConfig | None = None, augment: bool = False,
                 seed: int = 0) -> None:
        if not scenes:
            raise ValueError("FinetuneDataset needs at least one scene with queries; check the split's files")
        self.scenes = scenes
        self.points_per_object = points_per_object
        self.train = train
        self.max_queries = max_queries
        self.graph_config = replace(graph_config or SceneGraphConfig(), same_class_ignore_ids=(_CLASS_AGNOSTIC,))
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scenes[index]
        rng = (np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if self.train
               else np.random.default_rng([self.seed, index]))
        proposals = scene.proposals
        points = sample_object_points(proposals.points, self.points_per_object, rng)
        centers, sizes = proposals.centers, proposals.sizes
        if self.train and self.augment:
            centers, sizes, points = augment_scene(centers, sizes, points, int(rng.integers(4)), bool(rng.random() < 0.5))
        built = build_scene_graph(centers, sizes, torch.zeros(len(centers), dtype=torch.long), config=self.graph_config)
        graph = Data(edge_index=built.edge_index, edge_attr=built.edge_attr, edge_geom=built.edge_geom,
                     num_nodes=len(centers))
        graph.points = torch.from_numpy(points)
        graph.pos = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
        graph.box_size = torch.from_numpy(np.ascontiguousarray(sizes, dtype=np.float32))
        graph.y = torch.from_numpy(np.asarray(proposals.classes, dtype=np.int64))
        queries = scene.queries
        if self.train and len(queries) > self.max_queries:
            queries = [queries[i] for i in np.sort(rng.choice(len(queries), self.max_queries, replace=False))]
        return {"scene_id": scene.scene_id, "origin": scene.origin, "graph": graph, "queries": list(queries)}


def collate_finetune_scenes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge B scene items: {"scene_ids", "origins" (B, 3), "graph" (`Batch`), "queries" (flat list of T dicts),
    "query_scene" (T,) long}. Proposal indices inside queries stay local to their scene."""
    if not samples:
        raise ValueError("cannot collate an empty list of scenes")
    queries, scene_of = [], []
    for index, sample in enumerate(samples):
        queries.extend(sample["queries"])
        scene_of.extend([index] * len(sample["queries"]))
    return {
        "scene_ids": [s["scene_id"] for s in samples],
        "origins": torch.tensor(np.stack([s["origin"] for s in samples]), dtype=torch.float64),
        "graph": Batch.from_data_list([s["graph"] for s in samples]),
        "queries": queries,
        "query_scene": torch.tensor(scene_of, dtype=torch.long),
    }
