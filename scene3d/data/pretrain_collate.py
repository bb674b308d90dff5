"""Batch `ScenePretrainDataset` items: graphs with torch_geometric's `Batch` (no padding), texts as flat lists."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch_geometric.data import Batch

__all__ = ["collate_pretrain_scenes"]

_REQUIRED = ("scene_id", "graph", "mom_views", "descriptions", "phrases", "description_nodes",
             "description_anchors", "description_relations")


def collate_pretrain_scenes(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge B scene items into one batch.

    Node indices become batch-wide: `description_nodes` / `description_anchors` and every view's `source_node`
    are shifted by the number of nodes of the scenes before theirs (anchors of -1 stay -1).

    Returns:
        scene_ids: list of B ids (first key: the logger reads the batch size from it).
        graph: `Batch` of the B scene graphs (points (N, P, 6), pos, box_size, y, mom_eligible, batch, ptr, edges).
        mom: `Batch` of all masked-object views (masked (M,), source_node (M,) into `graph`'s nodes), or None
            when no scene has an eligible object.
        descriptions, phrases: lists of T strings.
        description_nodes, description_anchors, description_relations, description_scene: (T,) long.

    Raises:
        ValueError: an empty batch, an item missing a key, or description lists of different lengths.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of scenes")
    for index, sample in enumerate(samples):
        missing = [key for key in _REQUIRED if key not in sample]
        if missing:
            raise ValueError(f"sample {index} lacks {missing}; items must come from ScenePretrainDataset")
        lengths = {len(sample[key]) for key in _REQUIRED[3:]}
        if len(lengths) != 1:
            raise ValueError(f"sample {index} ({sample['scene_id']}): description lists differ in length")
    graph = Batch.from_data_list([sample["graph"] for sample in samples])
    offsets = graph.ptr[:-1].tolist()
    views = []
    texts: dict[str, list] = {key: [] for key in _REQUIRED[3:]}
    scene_of_text: list[int] = []
    for index, (sample, offset) in enumerate(zip(samples, offsets)):
        for view in sample["mom_views"]:
            view = view.clone()
            view.source_node = view.source_node + offset
            views.append(view)
        texts["descriptions"].extend(sample["descriptions"])
        texts["phrases"].extend(sample["phrases"])
        texts["description_nodes"].extend(node + offset for node in sample["description_nodes"])
        texts["description_anchors"].extend(a + offset if a >= 0 else -1 for a in sample["description_anchors"])
        texts["description_relations"].extend(sample["description_relations"])
        scene_of_text.extend([index] * len(sample["descriptions"]))
    return {
        "scene_ids": [sample["scene_id"] for sample in samples],
        "graph": graph,
        "mom": Batch.from_data_list(views) if views else None,
        "descriptions": texts["descriptions"],
        "phrases": texts["phrases"],
        "description_nodes": torch.tensor(texts["description_nodes"], dtype=torch.long),
        "description_anchors": torch.tensor(texts["description_anchors"], dtype=torch.long),
        "description_relations": torch.tensor(texts["description_relations"], dtype=torch.long),
        "description_scene": torch.tensor(scene_of_text, dtype=torch.long),
    }
