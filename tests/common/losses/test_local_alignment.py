"""Tests for the GLoRIA-style local alignment loss."""
from __future__ import annotations

import math

import pytest
import torch

from common.losses.local_alignment import LocalAlignmentLoss

G1, G2, G3 = 4.0, 5.0, 10.0


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


def _reference_score(units: list[torch.Tensor], regions: list[torch.Tensor]) -> float:
    """R = log sum_k exp(g2 cos(q_k, v_k)), v_k = sum_m softmax_m(g1 cos(q_k, c_m)) c_m, one pair at a time."""
    total = 0.0
    for unit in units:
        exps = [math.exp(G1 * _cos(unit, region)) for region in regions]
        weights = [e / sum(exps) for e in exps]
        context = sum(w * region for w, region in zip(weights, regions))
        total += math.exp(G2 * _cos(unit, context))
    return math.log(total)


def _reference(q, q_mask, c, c_mask) -> tuple[float, torch.Tensor]:
    """Naive loss and (B, B) score matrix (nan where undefined), python loops over pairs and units."""
    batch = q.shape[0]
    scores = torch.full((batch, batch), float("nan"), dtype=torch.float64)
    for i in range(batch):
        for j in range(batch):
            units = [q[i, k] for k in range(q.shape[1]) if q_mask[i, k]]
            regions = [c[j, m] for m in range(c.shape[1]) if c_mask[j, m]]
            if units and regions:
                scores[i, j] = _reference_score(units, regions)
    kept = [i for i in range(batch) if q_mask[i].any() and c_mask[i].any()]
    logits = G3 * scores[kept][:, kept]
    n = len(kept)
    row_ce = sum(-logits[a, a] + math.log(sum(math.exp(x) for x in logits[a])) for a in range(n)) / n
    col_ce = sum(-logits[a, a] + math.log(sum(math.exp(x) for x in logits[:, a])) for a in range(n)) / n
    return 0.5 * float(row_ce + col_ce), scores


def _inputs(batch=3, units=4, regions=5, channels=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, units, channels, generator=g, dtype=dtype)
    c = torch.randn(batch, regions, channels, generator=g, dtype=dtype)
    return q, c


def _masks():
    q_mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    c_mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True], [False, True, True, False, True]])
    return q_mask, c_mask


def test_matches_naive_reference_without_masks():
    q, c = _inputs()
    q_mask = torch.ones(3, 4, dtype=torch.bool)
    expected, expected_scores = _reference(q, q_mask, c, torch.ones(3, 5, dtype=torch.bool))
    loss = LocalAlignmentLoss()
    assert float(loss(q, q_mask, c)["local_alignment_loss"]) == pytest.approx(expected, rel=1e-9)
    torch.testing.assert_close(loss.pair_scores(q, q_mask, c), expected_scores)


def test_matches_naive_reference_with_masks():
    q, c = _inputs()
    q_mask, c_mask = _masks()
    expected, expected_scores = _reference(q, q_mask, c, c_mask)
    loss = LocalAlignmentLoss()
    assert float(loss(q, q_mask, c, c_mask)["local_alignment_loss"]) == pytest.approx(expected, rel=1e-9)
    torch.testing.assert_close(loss.pair_scores(q, q_mask, c, c_mask), expected_scores)


def test_garbage_in_padding_changes_nothing_and_gets_no_gradient():
    q, c = _inputs()
    q_mask, c_mask = _masks()
    loss = LocalAlignmentLoss()
    clean = loss(q, q_mask, c, c_mask)["local_alignment_loss"]
    q_garbage = q.masked_fill(~q_mask[:, :, None], 1e6).clone()
    q_garbage[0, 0] = q[0, 0]
    q_garbage[2, 3, 0] = float("nan")
    c_garbage = c.masked_fill(~c_mask[:, :, None], -3e5)
    c_garbage[2, 0, 1] = float("inf")
    q_garbage.requires_grad_(True)
    c_garbage.requires_grad_(True)
    dirty = loss(q_garbage, q_mask, c_garbage, c_mask)["local_alignment_loss"]
    torch.testing.assert_close(dirty, clean)
    dirty.backward()
    assert torch.isfinite(q_garbage.grad).all() and torch.isfinite(c_garbage.grad).all()
    assert (q_garbage.grad[~q_mask] == 0).all() and (c_garbage.grad[~c_mask] == 0).all()
    assert (q_garbage.grad[q_mask].abs().sum(-1) > 0).all() and (c_garbage.grad[c_mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("chunk", [1, 2, 5, 7])
@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_equals_unchunked_with_gradients(chunk, recompute):
    q, c = _inputs(batch=4, seed=1)
    q_mask = torch.tensor([[True, True, True, False], [True, False, False, False], [True] * 4, [True, True, False, True]])
    c_mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    c_mask[:, 0] = True

    def run(pair_chunk_size):
        q_leaf, c_leaf = q.clone().requires_grad_(True), c.clone().requires_grad_(True)
        module = LocalAlignmentLoss(pair_chunk_size=pair_chunk_size, recompute_in_backward=recompute)
        value = module(q_leaf, q_mask, c_leaf, c_mask)["local_alignment_loss"]
        value.backward()
        return value.detach(), q_leaf.grad, c_leaf.grad, module.pair_scores(q, q_mask, c, c_mask)

    for got, want in zip(run(chunk), run(10_000)):
        torch.testing.assert_close(got, want)


def test_attention_rows_are_distributions_over_own_valid_regions():
    q, c = _inputs(dtype=torch.float32)
    q_mask, c_mask = _masks()
    c_mask[1] = False  # a sample without regions gets all-zero maps
    attention = LocalAlignmentLoss().attention(q, q_mask, c, c_mask)
    assert attention.shape == (3, 4, 5)
    assert (attention[~c_mask[:, None, :].expand(-1, 4, -1)] == 0).all()
    assert (attention[~q_mask] == 0).all()
    sums = attention.sum(-1)
    rows_with_regions = q_mask & c_mask.any(1)[:, None]
    torch.testing.assert_close(sums[rows_with_regions], torch.ones(int(rows_with_regions.sum())))
    assert (sums[~rows_with_regions] == 0).all()
    # known value: sample 2, unit 0 over its own regions 1, 2, 4
    cos = torch.nn.functional.cosine_similarity(q[2, 0][None], c[2, [1, 2, 4]], dim=-1)
    torch.testing.assert_close(attention[2, 0, [1, 2, 4]], torch.softmax(G1 * cos, dim=0))


def test_samples_without_units_or_regions_are_dropped_with_finite_gradients():
    q, c = _inputs(batch=4, seed=3)
    q_mask = torch.ones(4, 4, dtype=torch.bool)
    c_mask = torch.ones(4, 5, dtype=torch.bool)
    q_mask[1] = False  # no text units
    c_mask[3] = False  # no regions
    q.requires_grad_(True)
    c.requires_grad_(True)
    module = LocalAlignmentLoss(pair_chunk_size=3)
    value = module(q, q_mask, c, c_mask)["local_alignment_loss"]
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(q.grad).all() and torch.isfinite(c.grad).all()
    assert (q.grad[[1, 3]] == 0).all() and (c.grad[[1, 3]] == 0).all()
    assert (q.grad[[0, 2]].abs().sum(-1) > 0).all()
    kept = torch.tensor([0, 2])
    subset = module(q[kept], q_mask[kept], c[kept], c_mask[kept])["local_alignment_loss"]
    torch.testing.assert_close(value, subset)
    scores = module.pair_scores(q, q_mask, c, c_mask)
    assert torch.isinf(scores[1]).all() and torch.isinf(scores[:, 3]).all()
    assert torch.isfinite(scores[[0, 2]][:, [0, 1, 2]]).all()


def test_pair_scores_gradient_is_finite_through_undefined_entries():
    q, c = _inputs(seed=4)
    q.requires_grad_(True)
    q_mask = torch.ones(3, 4, dtype=torch.bool)
    q_mask[0] = False
    scores = LocalAlignmentLoss(pair_chunk_size=2).pair_scores(q, q_mask, c)
    scores[1:].sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[0] == 0).all()


def test_no_valid_sample_raises():
    q, c = _inputs()
    with pytest.raises(ValueError, match="no sample"):
        LocalAlignmentLoss()(q, torch.zeros(3, 4, dtype=torch.bool), c)


def test_aligned_pairs_get_lower_loss_than_shuffled():
    g = torch.Generator().manual_seed(5)
    regions = torch.randn(6, 8, 16, generator=g)
    # each text unit is a noisy copy of one region of its own sample
    units = regions[:, :3] + 0.1 * torch.randn(6, 3, 16, generator=g)
    q_mask = torch.ones(6, 3, dtype=torch.bool)
    loss = LocalAlignmentLoss()
    aligned = loss(units, q_mask, regions)["local_alignment_loss"]
    shuffled = loss(units, q_mask, regions[torch.tensor([1, 2, 3, 4, 5, 0])])["local_alignment_loss"]
    assert aligned < 0.1 < shuffled


def test_low_precision_inputs_are_scored_in_float32():
    q, c = _inputs(dtype=torch.float32)
    q_mask, c_mask = _masks()
    loss = LocalAlignmentLoss()
    half = loss(q.bfloat16(), q_mask, c.bfloat16(), c_mask)["local_alignment_loss"]
    full = loss(q.bfloat16().float(), q_mask, c.bfloat16().float(), c_mask)["local_alignment_loss"]
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full)


@pytest.mark.parametrize(
    "q_shape, c_shape, q_mask_shape, c_mask_shape, match",
    [
        ((3, 6), (3, 5, 6), (3, 4), None, "expects q"),
        ((3, 4, 6), (2, 5, 6), (3, 4), None, "batch size"),
        ((3, 4, 6), (3, 5, 7), (3, 4), None, "channel size"),
        ((3, 4, 6), (3, 5, 6), (3, 5), None, "q_mask must have shape"),
        ((3, 4, 6), (3, 5, 6), (3, 4), (3, 4), "c_mask must have shape"),
        ((3, 0, 6), (3, 5, 6), (3, 0), None, "L >= 1"),
    ],
)
def test_bad_shapes_raise(q_shape, c_shape, q_mask_shape, c_mask_shape, match):
    q, c = torch.randn(q_shape), torch.randn(c_shape)
    q_mask = torch.ones(q_mask_shape, dtype=torch.bool)
    c_mask = None if c_mask_shape is None else torch.ones(c_mask_shape, dtype=torch.bool)
    module = LocalAlignmentLoss()
    for method in (module.forward, module.pair_scores, module.attention):
        with pytest.raises(ValueError, match=match):
            method(q, q_mask, c, c_mask)


def test_bad_dtypes_raise():
    q, c = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="bool"):
        LocalAlignmentLoss()(q, torch.ones(3, 4, dtype=torch.long), c)
    with pytest.raises(ValueError, match="floating-point"):
        LocalAlignmentLoss()(q.long(), torch.ones(3, 4, dtype=torch.bool), c)


@pytest.mark.parametrize(
    "kwargs", [{"gamma1": 0.0}, {"gamma2": -1.0}, {"gamma3": float("inf")}, {"pair_chunk_size": 0}, {"loss_name": "local"}]
)
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        LocalAlignmentLoss(**kwargs)
