"""Tests of medvl.data.collate.collate_ct_reports."""
from __future__ import annotations

import pytest
import torch

from medvl.data.collate import collate_ct_reports


def _item(index: int, with_mask: bool = True, size: int = 4, n_sentences: int = 2) -> dict:
    item = {
        "image": torch.full((1, size, size, size), float(index)),
        "report": f"report {index}",
        "sentences": [f"sentence {s}" for s in range(n_sentences)],
        "labels": torch.tensor([1.0, -1.0, float(index % 2)]),
        "study_id": f"s{index}",
        "index": index,
        "affine": torch.eye(4, dtype=torch.float64) * (index + 1),
        "findings": [{"name": "nodule"}] * index,
    }
    if with_mask:
        item["organ_mask"] = torch.full((1, size, size, size), index + 1, dtype=torch.int64)
    return item


def test_stacks_tensors_and_keeps_variable_length_lists():
    batch = collate_ct_reports([_item(0, n_sentences=1), _item(1, n_sentences=3), _item(2, n_sentences=2)])
    assert batch["image"].shape == (3, 1, 4, 4, 4)
    assert torch.equal(batch["image"][:, 0, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert batch["labels"].shape == (3, 3) and torch.equal(batch["labels"][:, 2], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(batch["index"], torch.tensor([0, 1, 2]))
    assert batch["affine"].shape == (3, 4, 4) and batch["affine"].dtype == torch.float64
    assert batch["organ_mask"].shape == (3, 1, 4, 4, 4) and batch["organ_mask"].dtype == torch.int64
    assert batch["organ_mask_valid"].tolist() == [True, True, True]
    assert [len(s) for s in batch["sentences"]] == [1, 3, 2]
    assert [len(f) for f in batch["findings"]] == [0, 1, 2]
    assert batch["report"] == ["report 0", "report 1", "report 2"] and batch["study_id"] == ["s0", "s1", "s2"]


def test_items_without_mask_get_minus_one_and_invalid_flag():
    batch = collate_ct_reports([_item(0), _item(1, with_mask=False)])
    assert batch["organ_mask_valid"].tolist() == [True, False]
    assert torch.all(batch["organ_mask"][1] == -1) and torch.all(batch["organ_mask"][0] == 1)
    assert "organ_mask" not in collate_ct_reports([_item(0, with_mask=False)])


def test_refuses_mixed_image_shapes_and_empty_batches():
    with pytest.raises(ValueError, match="spatial_size"):
        collate_ct_reports([_item(0, size=4), _item(1, size=5)])
    with pytest.raises(ValueError, match="empty batch"):
        collate_ct_reports([])
