"""TripletAlignmentLoss: equals the three ClipInfoNCE terms, weights, missing texts, gradients, bad arguments."""
from __future__ import annotations

import pytest
import torch

from common.losses.contrastive import ClipInfoNCELoss
from common.losses.triplet_alignment import TripletAlignmentLoss


def _embeddings(b: int = 5, e: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, e, generator=g, requires_grad=True) for _ in range(3)]


def test_terms_equal_clip_infonce_of_each_pair_times_its_weight():
    a, b, c = _embeddings()
    loss = TripletAlignmentLoss({"ab": 1.0, "ac": 0.5, "bc": 2.0}, names=("view", "object", "text"),
                                gather_distributed=False)
    out = loss(a, b, c[:3], torch.tensor([0, 2, 4]))
    clip = ClipInfoNCELoss(gather_distributed=False)
    assert set(out) == {"view_object_loss", "view_text_loss", "object_text_loss"}
    assert torch.allclose(out["view_object_loss"], clip(a, b)["contrastive_loss"])
    rows = torch.tensor([0, 2, 4])
    assert torch.allclose(out["view_text_loss"], 0.5 * clip(a[rows], c[:3])["contrastive_loss"])
    assert torch.allclose(out["object_text_loss"], 2.0 * clip(b[rows], c[:3])["contrastive_loss"])


def test_matched_embeddings_score_lower_than_shuffled_and_gradients_reach_all():
    a, _, _ = _embeddings()
    loss = TripletAlignmentLoss(gather_distributed=False)
    matched = sum(loss(a, a.detach() * 2, a.detach() + 0.01).values())
    shuffled = sum(loss(a, a.detach()[torch.tensor([1, 2, 3, 4, 0])], a.detach()).values())
    assert matched < shuffled
    matched.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    for parameter in loss.parameters():  # every temperature gets a gradient
        assert parameter.grad is not None


def test_zero_weight_term_is_not_built_and_no_text_leaves_text_terms_out():
    a, b, c = _embeddings()
    loss = TripletAlignmentLoss({"ac": 0.0}, gather_distributed=False)
    assert set(loss(a, b, c)) == {"a_b_loss", "b_c_loss"} and len(list(loss.parameters())) == 2
    assert set(loss(a, b)) == {"a_b_loss"} and set(loss(a, b, c[:0], torch.zeros(0, dtype=torch.long))) == {"a_b_loss"}


@pytest.mark.parametrize("kwargs", [{"weights": {"xy": 1.0}}, {"weights": {"ab": -1.0}},
                                    {"weights": {"ab": 0, "ac": 0, "bc": 0}}, {"names": ("a", "a", "b")}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        TripletAlignmentLoss(**kwargs)


def test_c_rows_of_the_wrong_length_are_refused():
    a, b, c = _embeddings()
    with pytest.raises(ValueError, match="c_rows"):
        TripletAlignmentLoss(gather_distributed=False)(a, b, c[:2], torch.tensor([0]))
