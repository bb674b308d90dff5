"""Batch collation for `CTReportDataset` items.

Tensors of fixed shape are stacked; texts and findings have a variable length per study and stay
Python lists (the text tokenizer pads them later, per batch, to the longest report).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

UNKNOWN_MASK_VALUE = -1


def collate_ct_reports(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate dataset items into one batch dict.

    Stacked: "image" (B, 1, D, H, W) float32, "labels" (B, K) float32, "index" (B,) int64,
    "affine" (B, 4, 4) float64, and, when at least one item has one, "organ_mask" (B, 1, D, H, W)
    int64 with "organ_mask_valid" (B,) bool: items without a mask get a mask full of -1 and False.
    Lists of length B: "report" (str), "study_id" (str), "sentences" (list[str] each, variable
    length), "findings" (list[dict] each, variable length).

    Args:
        items: dicts from `CTReportDataset.__getitem__`.

    Raises:
        ValueError: empty batch, or images / labels of different shapes (set a fixed
            `spatial_size` in the preprocessing config so that every volume has one size).
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    image_shapes = {tuple(item["image"].shape) for item in items}
    if len(image_shapes) != 1:
        raise ValueError(
            f"images of different shapes {sorted(image_shapes)} cannot be stacked; set preprocess.spatial_size "
            f"so that every volume is cropped / padded to one size"
        )
    label_shapes = {tuple(item["labels"].shape) for item in items}
    if len(label_shapes) != 1:
        raise ValueError(f"label vectors of different lengths {sorted(label_shapes)}: use one label_names list")
    batch: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in items]),  # B x (1, D, H, W) -> (B, 1, D, H, W)
        "labels": torch.stack([item["labels"] for item in items]),  # B x (K,) -> (B, K)
        "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.int64),
        "affine": torch.stack([torch.as_tensor(item["affine"], dtype=torch.float64) for item in items]),
        "report": [item["report"] for item in items],
        "study_id": [item["study_id"] for item in items],
        "sentences": [list(item["sentences"]) for item in items],
        "findings": [list(item["findings"]) for item in items],
    }
    if any("organ_mask" in item for item in items):
        image_shape = items[0]["image"].shape
        masks = []
        for item in items:
            mask = item.get("organ_mask")
            if mask is None:
                mask = torch.full(image_shape, UNKNOWN_MASK_VALUE, dtype=torch.int64)
            elif mask.shape != image_shape:
                raise ValueError(
                    f"study {item['study_id']!r}: organ_mask shape {tuple(mask.shape)} != image shape "
                    f"{tuple(image_shape)}"
                )
            masks.append(mask.to(torch.int64))
        batch["organ_mask"] = torch.stack(masks)  # B x (1, D, H, W) -> (B, 1, D, H, W)
        batch["organ_mask_valid"] = torch.tensor(["organ_mask" in item for item in items], dtype=torch.bool)
    return batch
