"""Tests for common/metrics/retrieval.py."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from common.metrics.retrieval import ranks_of_ground_truth, retrieval_recall_at_k


def _brute_force_ranks(a: torch.Tensor, b: torch.Tensor, group_ids: torch.Tensor | None = None):
    """Naive reference: the full N x N cosine matrix and a Python loop over queries."""
    sims = F.normalize(a.double(), dim=1) @ F.normalize(b.double(), dim=1).T
    n = sims.shape[0]
    groups = torch.arange(n) if group_ids is None else group_ids
    ranks_a2b, ranks_b2a = [], []
    for i in range(n):
        correct = groups == groups[i]
        best_row = sims[i][correct].max()
        ranks_a2b.append(int((sims[i] > best_row).sum()))
        best_col = sims[:, i][correct].max()
        ranks_b2a.append(int((sims[:, i] > best_col).sum()))
    return torch.tensor(ranks_a2b), torch.tensor(ranks_b2a)


@pytest.mark.parametrize("n, chunk_size", [(1, 1), (7, 3), (50, 16), (64, 1024), (37, 37)])
def test_ranks_match_brute_force(n: int, chunk_size: int) -> None:
    generator = torch.Generator().manual_seed(n)
    a = torch.randn(n, 8, generator=generator, dtype=torch.float64)
    b = a + 1.5 * torch.randn(n, 8, generator=generator, dtype=torch.float64)
    expected_a2b, expected_b2a = _brute_force_ranks(a, b)
    ranks_a2b, ranks_b2a = ranks_of_ground_truth(a, b, chunk_size=chunk_size)
    assert torch.equal(ranks_a2b, expected_a2b)
    assert torch.equal(ranks_b2a, expected_b2a)
    if n > 10:
        assert ranks_a2b.max() > 0  # the noise level makes the test non-trivial


def test_recall_matches_brute_force_with_names_and_fraction_values() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(45, 6, generator=generator)
    b = a + torch.randn(45, 6, generator=generator)
    ranks_a2b, ranks_b2a = _brute_force_ranks(a, b)
    result = retrieval_recall_at_k(a, b, ks=(1, 5), a_name="image", b_name="report", chunk_size=8)
    assert set(result) == {"image2report_R@1", "image2report_R@5", "report2image_R@1", "report2image_R@5"}
    for k in (1, 5):
        assert result[f"image2report_R@{k}"] == pytest.approx((ranks_a2b < k).double().mean().item())
        assert result[f"report2image_R@{k}"] == pytest.approx((ranks_b2a < k).double().mean().item())
    assert all(0.0 <= value <= 1.0 for value in result.values())
    assert 0.0 < result["image2report_R@1"] < 1.0


def test_group_ids_match_brute_force_and_only_help() -> None:
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(30, 5, generator=generator)
    b = a + 2.0 * torch.randn(30, 5, generator=generator)
    group_ids = torch.randint(0, 8, (30,), generator=generator)
    expected = _brute_force_ranks(a, b, group_ids)
    got = ranks_of_ground_truth(a, b, chunk_size=7, group_ids=group_ids)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    plain = ranks_of_ground_truth(a, b, chunk_size=7)
    assert (got[0] <= plain[0]).all() and (got[0] < plain[0]).any()


def test_hand_made_group_example() -> None:
    # Items 0 and 1 have identical reports (group 0). Query a_0 is closest to b_1: correct only with groups.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8], [1.0, 0.1], [-1.0, 0.0]])
    without = retrieval_recall_at_k(a, b, ks=(1,))
    with_groups = retrieval_recall_at_k(a, b, ks=(1,), group_ids=torch.tensor([0, 0, 1]))
    # a->b: a_0 best is b_1 (wrong without groups), a_1 best is b_0 (wrong), a_2 best is b_2.
    assert without["a2b_R@1"] == pytest.approx(1 / 3)
    assert with_groups["a2b_R@1"] == pytest.approx(1.0)


def test_identity_embeddings_give_perfect_recall() -> None:
    eye = torch.eye(20)
    result = retrieval_recall_at_k(eye, eye.clone(), ks=(1, 5, 10), chunk_size=6)
    assert all(value == 1.0 for value in result.values())


def test_ties_are_counted_in_favour_of_ground_truth_with_a_warning() -> None:
    same = torch.ones(4, 3)
    with pytest.warns(UserWarning, match="4 a->b and 4 b->a queries"):
        result = retrieval_recall_at_k(same, same, ks=(1,))
    assert result["a2b_R@1"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retrieval_recall_at_k(torch.eye(4), torch.eye(4), ks=(1,))  # no ties -> no warning


@pytest.mark.parametrize("n, warns", [(20, True), (2000, False)])
def test_a_single_tie_warns_only_above_one_in_a_thousand_queries(n: int, warns: bool) -> None:
    a = torch.randn(n, 8, generator=torch.Generator().manual_seed(4))
    b = a.clone()
    b[1] = a[0]  # query a_0 now ties its pair b_0 with the wrong item b_1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranks_a2b, _ = ranks_of_ground_truth(a, b)
    assert ranks_a2b[0] == 0
    assert any("ties" in str(w.message) for w in caught) == warns


def test_bfloat16_is_upcast_before_ranking() -> None:
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(16, 8, generator=generator)
    b = a + torch.randn(16, 8, generator=generator)
    ranks = ranks_of_ground_truth(a.bfloat16(), b.bfloat16())
    expected = _brute_force_ranks(a.bfloat16().float(), b.bfloat16().float())
    assert torch.equal(ranks[0], expected[0]) and ranks[0].dtype == torch.long


@pytest.mark.parametrize(
    "a, b, kwargs, message",
    [
        (torch.randn(4, 3), torch.randn(5, 3), {}, "same shape"),
        (torch.randn(4, 3), torch.randn(4, 2), {}, "same shape"),
        (torch.randn(4), torch.randn(4), {}, "2-D"),
        (torch.randn(0, 3), torch.randn(0, 3), {}, "at least one"),
        (torch.randint(0, 3, (4, 3)), torch.randn(4, 3), {}, "floating point"),
        (torch.full((2, 2), float("nan")), torch.randn(2, 2), {}, "NaN"),
        (torch.randn(4, 3), torch.randn(4, 3), {"chunk_size": 0}, "chunk_size"),
        (torch.randn(4, 3), torch.randn(4, 3), {"group_ids": torch.zeros(3, dtype=torch.long)}, "group_ids"),
        (torch.randn(4, 3), torch.randn(4, 3), {"group_ids": torch.zeros(4)}, "integer"),
        (torch.randn(4, 3), torch.randn(4, 3), {"ks": (0,)}, "ks"),
        (torch.randn(4, 3), torch.randn(4, 3), {"a_name": "x", "b_name": "x"}, "must differ"),
    ],
)
def test_bad_inputs_raise(a, b, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_recall_at_k(a, b, **kwargs)
