"""Tests for scene3d.data.knn: brute-force kNN equals a full sort, PyG knn_graph conventions, tie-breaking."""
from __future__ import annotations

import pytest
import torch

from scene3d.data.knn import knn, knn_from_distance_rows, knn_graph


def _brute_force(points: torch.Tensor, k: int, exclude_self: bool = True) -> torch.Tensor:
    """Reference: the full distance matrix from explicit differences, sorted per row."""
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1).sqrt()  # (N, N)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    return distances.argsort(dim=1, stable=True)[:, :k]


@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_knn_equals_brute_force_on_random_points(chunk_size: int) -> None:
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = knn(points, 5, chunk_size=chunk_size)
    assert result.shape == (300, 5)
    assert torch.equal(result, _brute_force(points, 5))
    assert not (result == torch.arange(300)[:, None]).any()


def test_knn_can_include_self_and_clamps_k() -> None:
    points = torch.rand(6, 2, generator=torch.Generator().manual_seed(1))
    with_self = knn(points, 3, exclude_self=False)
    assert torch.equal(with_self[:, 0], torch.arange(6))
    assert knn(points, 50).shape == (6, 5)
    assert knn(points[:1], 3).shape == (1, 0)


def test_knn_graph_follows_pyg_conventions_per_graph() -> None:
    generator = torch.Generator().manual_seed(2)
    points = torch.rand(23, 3, generator=generator, dtype=torch.float64)
    batch = torch.tensor([0] * 10 + [1] * 11 + [2] * 2)  # the last graph has fewer than k + 1 points
    edge_index = knn_graph(points, 4, batch=batch, chunk_size=5)
    expected = []
    for graph in range(3):
        members = (batch == graph).nonzero().flatten()
        nearest = _brute_force(points[members], min(4, members.numel() - 1))
        for query, row in zip(members.tolist(), nearest.tolist()):
            expected += [(members[j].item(), query) for j in row]
    assert edge_index.T.tolist() == [list(edge) for edge in expected]
    assert (batch[edge_index[0]] == batch[edge_index[1]]).all()


def test_knn_graph_loop_includes_self() -> None:
    points = torch.rand(5, 3, generator=torch.Generator().manual_seed(3))
    edge_index = knn_graph(points, 1, loop=True)
    assert torch.equal(edge_index, torch.stack([torch.arange(5), torch.arange(5)]))


def test_knn_from_distance_rows_breaks_ties_by_secondary_then_index() -> None:
    primary = torch.tensor([[0.0, 1.0, 1.0, 1.0], [2.0, 0.0, 2.0, 2.0], [5.0, 5.0, 0.0, 5.0], [1.0, 1.0, 1.0, 0.0]])
    secondary = torch.tensor([[0.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    result = knn_from_distance_rows(
        lambda rows: primary[rows], 4, 2, secondary_rows=lambda rows: secondary[rows], chunk_size=3
    )
    # row 0: all tie at 1 -> by secondary (3: 1.0, 2: 2.0); row 1: full tie -> by index (0, 2);
    # row 2: tie at 5, secondary 1 < 3 on index -> (1, 3); row 3: tie -> by index (0, 1).
    assert result.tolist() == [[3, 2], [0, 2], [1, 3], [0, 1]]


def test_knn_from_distance_rows_never_returns_self_even_among_infinite_distances() -> None:
    primary = torch.full((3, 3), float("inf"))
    result = knn_from_distance_rows(lambda rows: primary[rows], 3, 5)
    assert result.tolist() == [[1, 2], [0, 2], [0, 1]]


def test_bad_arguments_raise() -> None:
    points = torch.rand(4, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn(points, 0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        knn(torch.rand(4), 2)
    with pytest.raises(ValueError, match="NaN"):
        knn(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="chunk_size"):
        knn(points, 1, chunk_size=0)
    with pytest.raises(ValueError, match="batch"):
        knn_graph(points, 1, batch=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="distance_rows returned shape"):
        knn_from_distance_rows(lambda rows: torch.zeros(rows.numel(), 2), 4, 1)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_knn_from_distance_rows_equals_full_lexicographic_sort_with_many_ties(exclude_self: bool) -> None:
    generator = torch.Generator().manual_seed(4)
    primary = torch.randint(0, 4, (50, 50), generator=generator).double()  # heavy ties
    secondary = torch.randint(0, 3, (50, 50), generator=generator).double()
    result = knn_from_distance_rows(
        lambda rows: primary[rows], 50, 6, secondary_rows=lambda rows: secondary[rows],
        exclude_self=exclude_self, chunk_size=7,
    )
    expected = [
        sorted(
            (j for j in range(50) if not (exclude_self and j == i)), key=lambda j: (primary[i, j], secondary[i, j], j)
        )[:6]
        for i in range(50)
    ]
    assert result.tolist() == expected
