"""Tests for common/losses/matching.py: hard-negative sampling, MatchingHead and ImageTextMatchingLoss."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from common.losses.matching import ImageTextMatchingLoss, MatchingHead, sample_hard_negatives


def _masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    weights = mask.float().unsqueeze(-1)  # (B, L) -> (B, L, 1)
    return (tokens * weights).sum(1) / weights.sum(1)


def mean_fuse(text: Tensor, text_mask: Tensor, visual: Tensor, visual_mask: Tensor) -> Tensor:
    """A fixed, parameter-free fusion: masked mean of text tokens times masked mean of visual tokens."""
    return _masked_mean(text, text_mask) * _masked_mean(visual, visual_mask)


class LinearFuse(nn.Module):
    """A tiny trainable fusion for gradient checks."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text_proj = nn.Linear(dim, dim)
        self.visual_proj = nn.Linear(dim, dim)

    def forward(self, text: Tensor, text_mask: Tensor, visual: Tensor, visual_mask: Tensor) -> Tensor:
        pooled_text, pooled_visual = _masked_mean(text, text_mask), _masked_mean(visual, visual_mask)
        return torch.tanh(self.text_proj(pooled_text) + self.visual_proj(pooled_visual))


def test_hard_negatives_never_pick_positives() -> None:
    batch = 6
    for seed in range(100):
        generator = torch.Generator().manual_seed(seed)
        similarity = 5 * torch.randn(batch, batch, generator=generator)
        positive_mask = torch.rand(batch, batch, generator=generator) < 0.5  # e.g. duplicate reports
        positive_mask[torch.arange(batch), (torch.arange(batch) + 1) % batch] = False  # >= 1 negative per row/column
        neg_text, neg_image = sample_hard_negatives(similarity, positive_mask, generator=generator)
        assert neg_text.shape == neg_image.shape == (batch,) and neg_text.dtype == torch.long
        invalid = positive_mask | torch.eye(batch, dtype=torch.bool)
        assert not invalid[torch.arange(batch), neg_text].any(), seed
        assert not invalid[neg_image, torch.arange(batch)].any(), seed


def test_sampling_follows_softmax_of_similarity() -> None:
    # Cyclic batch: image i scores text i+1 with ln 3 and text i+2 with 0 (others -1000, i.e. never drawn),
    # so the softmax over its negatives gives text i+1 probability 3/4; column-wise, text j gets image j-1
    # with probability 3/4. 4 calls x 1000 rows = 4000 draws per side.
    batch = 1000
    rows = torch.arange(batch)
    similarity = torch.full((batch, batch), -1000.0)
    similarity[rows, rows] = 50.0  # positives: the highest score, yet never sampled
    similarity[rows, (rows + 1) % batch] = math.log(3.0)
    similarity[rows, (rows + 2) % batch] = 0.0
    generator = torch.Generator().manual_seed(0)
    text_hits = image_hits = 0
    for _ in range(4):
        neg_text, neg_image = sample_hard_negatives(similarity, generator=generator)
        assert torch.isin(neg_text - rows, torch.tensor([1, 2, 1 - batch, 2 - batch])).all()
        text_hits += int((neg_text == (rows + 1) % batch).sum())
        image_hits += int((neg_image == (rows - 1) % batch).sum())
    assert text_hits / 4000 == pytest.approx(0.75, abs=0.03)  # 4.4 standard deviations
    assert image_hits / 4000 == pytest.approx(0.75, abs=0.03)


def test_sampling_is_seeded_and_gradient_free() -> None:
    similarity = torch.randn(8, 8, requires_grad=True)
    first = sample_hard_negatives(similarity, generator=torch.Generator().manual_seed(3))
    second = sample_hard_negatives(similarity, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not first[0].requires_grad


@pytest.mark.parametrize(
    ("similarity", "positive_mask", "message"),
    [
        (torch.zeros(1, 1), None, "no valid hard negative"),
        (torch.zeros(3, 3), torch.tensor([[1, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool), r"text for images \[0\]"),
        (torch.zeros(3, 3), torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool), r"image for texts \[0\]"),
        (torch.zeros(2, 3), None, "square"),
        (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), None, "NaN"),
        (torch.zeros(2, 2), torch.zeros(2, 2), "bool"),
    ],
)
def test_sampling_bad_inputs_raise(similarity: Tensor, positive_mask: Tensor | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_hard_negatives(similarity, positive_mask)


def test_loss_known_value_with_fixed_fuse() -> None:
    # B = 2: the only negative of each sample is the other one, so sampling is deterministic.
    visual = torch.tensor([[[1.0, 2.0], [9.0, 9.0]], [[3.0, -1.0], [1.0, 1.0]]])  # (2, 2, 2)
    visual_mask = torch.tensor([[True, False], [True, True]])  # means: (1, 2) and (2, 0)
    text = torch.tensor([[[2.0, 1.0]], [[-1.0, 3.0]]])  # (2, 1, 2)
    text_mask = torch.ones(2, 1, dtype=torch.bool)
    loss_fn = ImageTextMatchingLoss(dim=2)
    with torch.no_grad():
        loss_fn.head.classifier.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # logit_match - logit_no = x0 + x1
        loss_fn.head.classifier.bias.zero_()
    out = loss_fn(mean_fuse, visual, visual_mask, text, text_mask, similarity=torch.zeros(2, 2))
    # fused = text mean * visual mean, margin m = sum(fused), for the pairs
    # (v0,t0) (v1,t1) | (v0,t1) (v1,t0) | (v1,t0) (v0,t1)
    margins_pos = [2 * 1 + 1 * 2, -1 * 2 + 3 * 0]  # 4, -2
    margins_neg = [-1 * 1 + 3 * 2, 2 * 2 + 1 * 0, 2 * 2 + 1 * 0, -1 * 1 + 3 * 2]  # 5, 4, 4, 5

    def nll(margin: float, label: int) -> float:  # 2-class CE with logits (0, margin)
        return math.log(1 + math.exp(margin)) - (margin if label == 1 else 0.0)

    expected = (sum(nll(m, 1) for m in margins_pos) + sum(nll(m, 0) for m in margins_neg)) / 6
    assert set(out) == {"matching_loss", "matching_acc"}
    assert out["matching_loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["matching_acc"].item() == pytest.approx(1 / 6)  # only (v0, t0) is classified right
    assert not out["matching_acc"].requires_grad


def test_gradients_reach_head_and_fuse() -> None:
    torch.manual_seed(0)
    dim, batch = 4, 3
    fuse = LinearFuse(dim)
    loss_fn = ImageTextMatchingLoss(dim=dim, loss_name="scene_matching_loss")
    visual, text = torch.randn(batch, 5, dim), torch.randn(batch, 3, dim)
    visual_mask, text_mask = torch.ones(batch, 5, dtype=torch.bool), torch.ones(batch, 3, dtype=torch.bool)
    text_mask[0, 2] = False
    out = loss_fn(fuse, visual, visual_mask, text, text_mask, torch.randn(batch, batch))
    assert set(out) == {"scene_matching_loss", "scene_matching_acc"}
    out["scene_matching_loss"].backward()
    for name, param in [*loss_fn.named_parameters(), *fuse.named_parameters()]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_fuse_sees_the_right_pairs() -> None:
    """The 3B pairs are [positives; (image i, hard text); (hard image, text j)] with matching masks."""
    batch, seen = 3, {}

    def recording_fuse(text: Tensor, text_mask: Tensor, visual: Tensor, visual_mask: Tensor) -> Tensor:
        seen.update(text=text, text_mask=text_mask, visual=visual, visual_mask=visual_mask)
        return torch.zeros(text.shape[0], 2)

    ids = torch.arange(batch, dtype=torch.float32)
    visual = ids.view(batch, 1, 1).expand(batch, 2, 2)  # every token of sample i holds i
    text = ids.view(batch, 1, 1).expand(batch, 4, 2)
    visual_mask = torch.tensor([[True, False], [True, True], [True, True]])
    text_mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    ImageTextMatchingLoss(dim=2)(
        recording_fuse, visual, visual_mask, text, text_mask, torch.randn(batch, batch),
        generator=torch.Generator().manual_seed(0),
    )
    text_ids, visual_ids = seen["text"][:, 0, 0].long(), seen["visual"][:, 0, 0].long()
    arange = torch.arange(batch)
    assert torch.equal(text_ids[:batch], arange) and torch.equal(visual_ids[:batch], arange)
    assert torch.equal(visual_ids[batch : 2 * batch], arange) and not (text_ids[batch : 2 * batch] == arange).any()
    assert torch.equal(text_ids[2 * batch :], arange) and not (visual_ids[2 * batch :] == arange).any()
    assert torch.equal(seen["text_mask"], text_mask[text_ids])
    assert torch.equal(seen["visual_mask"], visual_mask[visual_ids])


def test_batch_of_one_raises() -> None:
    loss_fn = ImageTextMatchingLoss(dim=2)
    with pytest.raises(ValueError, match="batch size >= 2"):
        loss_fn(
            mean_fuse,
            torch.ones(1, 2, 2),
            torch.ones(1, 2, dtype=torch.bool),
            torch.ones(1, 3, 2),
            torch.ones(1, 3, dtype=torch.bool),
            torch.zeros(1, 1),
        )


def test_bad_arguments_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="_loss"):
        ImageTextMatchingLoss(dim=4, loss_name="matching")
    with pytest.raises(ValueError, match="dim"):
        MatchingHead(0)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        MatchingHead(3)(torch.ones(2, 4))
    loss_fn = ImageTextMatchingLoss(dim=2)
    ok = {
        "visual_tokens": torch.ones(2, 3, 2),
        "visual_mask": torch.ones(2, 3, dtype=torch.bool),
        "text_tokens": torch.ones(2, 4, 2),
        "text_mask": torch.ones(2, 4, dtype=torch.bool),
        "similarity": torch.zeros(2, 2),
    }
    for key, bad, message in [
        ("visual_tokens", torch.ones(2, 3), r"visual_tokens must be \(B, M, C\)"),
        ("text_tokens", torch.ones(3, 4, 2), "text_tokens has 3"),
        ("visual_mask", torch.ones(2, 3), "visual_mask must be bool"),
        ("text_mask", torch.ones(2, 5, dtype=torch.bool), "text_mask must be bool"),
        ("similarity", torch.zeros(2, 3), r"similarity must be \(2, 2\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            loss_fn(mean_fuse, **{**ok, key: bad})
    with pytest.raises(ValueError, match=r"fuse must return .*\(6, 2\)"):
        loss_fn(lambda t, tm, v, vm: torch.zeros(2, 2), **ok)


def test_head_shape() -> None:
    assert MatchingHead(5)(torch.randn(7, 5)).shape == (7, 2)


def test_matching_accepts_missing_visual_mask_and_per_query_text_mask():
    from common.losses.matching import ImageTextMatchingLoss

    torch.manual_seed(0)
    b, m, l, c = 3, 4, 5, 8
    loss = ImageTextMatchingLoss(c)
    seen = {}

    def fuse(text, text_mask, visual, visual_mask):
        seen["text_mask"], seen["visual_mask"] = text_mask, visual_mask
        return text.mean(1) + visual.mean(1)

    out = loss(fuse, torch.randn(b, m, c), None, torch.randn(b, l, c), torch.ones(b, l, l, dtype=torch.bool),
               torch.randn(b, b))
    assert torch.isfinite(out["matching_loss"])
    assert seen["visual_mask"].shape == (3 * b, m) and seen["visual_mask"].all()
    assert seen["text_mask"].shape == (3 * b, l, l)
