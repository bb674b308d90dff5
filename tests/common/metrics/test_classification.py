"""Tests for common/metrics/classification.py."""
from __future__ import annotations

import math

import pytest
import torch

from common.metrics.classification import multilabel_auroc


def test_hand_computed_four_sample_values() -> None:
    # Label "a": positives score 0.35, 0.8; negatives 0.1, 0.4 -> 3 of 4 (pos, neg) pairs ordered: 0.75.
    # Label "b": positives 0.5, 0.9; negatives 0.5, 0.5 -> 0.9 beats both (2), 0.5 ties both (2 * 0.5): 0.75.
    scores = torch.tensor([[0.1, 0.5], [0.4, 0.5], [0.35, 0.5], [0.8, 0.9]])
    targets = torch.tensor([[0, 1], [0, 0], [1, 0], [1, 1]])
    result = multilabel_auroc(scores, targets, ["a", "b"])
    assert result == pytest.approx({"auroc_a": 0.75, "auroc_b": 0.75, "auroc_mean": 0.75})


def test_perfect_inverted_and_saturating_logits() -> None:
    targets = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]])
    # Column 2: logits whose float32 sigmoid is exactly 1.0 for all four; order must still count.
    scores = torch.tensor([[0.1, 0.9, 20.0], [0.2, 0.8, 21.0], [0.7, 0.3, 30.0], [0.8, 0.2, 31.0]])
    result = multilabel_auroc(scores, targets, ["perfect", "inverted", "logits"])
    assert result["auroc_perfect"] == pytest.approx(1.0)
    assert result["auroc_inverted"] == pytest.approx(0.0)
    assert result["auroc_logits"] == pytest.approx(1.0)
    assert result["auroc_mean"] == pytest.approx(2.0 / 3.0)


def test_single_class_label_is_nan_excluded_and_named_in_warning() -> None:
    scores = torch.tensor([[0.1, 0.3], [0.9, 0.2], [0.4, 0.8]])
    targets = torch.tensor([[0, 0], [1, 0], [0, 0]])
    with pytest.warns(UserWarning, match="only one class.*'liver lesion'"):
        result = multilabel_auroc(scores, targets, ["effusion", "liver lesion"])
    assert math.isnan(result["auroc_liver lesion"])
    assert result["auroc_effusion"] == pytest.approx(1.0)
    assert result["auroc_mean"] == pytest.approx(1.0)
    with pytest.warns(UserWarning):
        assert math.isnan(multilabel_auroc(scores[:, 1:], targets[:, 1:], ["x"])["auroc_mean"])


@pytest.mark.parametrize(
    "scores, targets, names, message",
    [
        (torch.rand(4, 2), torch.ones(4, 3), ["a", "b"], "shape"),
        (torch.rand(4), torch.ones(4), ["a"], "shape"),
        (torch.rand(0, 2), torch.ones(0, 2), ["a", "b"], "no samples"),
        (torch.rand(4, 2), torch.ones(4, 2), ["a"], "one name per column"),
        (torch.rand(4, 2), torch.ones(4, 2), ["a", "a"], "unique"),
        (torch.rand(4, 1), torch.ones(4, 1), ["mean"], "collide"),
        (torch.full((4, 1), float("nan")), torch.ones(4, 1), ["a"], "finite"),
        (torch.rand(4, 1), torch.full((4, 1), 2), ["a"], "0 or 1"),
    ],
)
def test_bad_inputs_raise(scores, targets, names, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        multilabel_auroc(scores, targets, names)
