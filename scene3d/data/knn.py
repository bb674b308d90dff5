"""k-nearest neighbours in pure PyTorch: brute force, chunked over query rows.

Why our own: torch-geometric's `knn` / `knn_graph` / `radius` dispatch to `torch_cluster` / `pyg-lib`, compiled
packages that are not installable here. Why brute force in torch rather than scipy's `cKDTree`:
1. the scene-graph builder ranks neighbours by the gap between boxes of different sizes, which is not a point
   metric a KD-tree can index; a brute-force pass takes any pairwise distance (`knn_from_distance_rows`);
2. it stays in torch on the tensors' device (GPU when the caller is there), with no numpy round trip;
3. object counts are small: a ScanNet scene has at most a few hundred objects, and 1000 objects are 1e6
   distances, a few milliseconds.
Cost: O(N^2 D) time and O(chunk_size * N) memory. For point clouds of ~1e5 points or more a KD-tree
(`scipy.spatial.cKDTree(points).query(points, k + 1)`) is asymptotically faster; use that there.

Distances are computed exactly (`torch.cdist(..., compute_mode="donot_use_mm_for_euclid_dist")`): the
matrix-multiply shortcut ||a||^2 + ||b||^2 - 2ab loses precision for close points and can reorder near
neighbours.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["knn", "knn_from_distance_rows", "knn_graph"]

DEFAULT_CHUNK_SIZE = 1024


def _check_k_and_chunk(k: int, chunk_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


def _check_points(points: Tensor) -> None:
    if not isinstance(points, Tensor):
        raise ValueError(f"points must be a torch.Tensor of shape (N, D), got {type(points).__name__}")
    if points.ndim != 2 or not points.is_floating_point():
        raise ValueError(
            f"points must be a floating-point tensor of shape (N, D), got {points.dtype} {tuple(points.shape)}"
        )
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points contain NaN or inf; remove or fix those points first")


def _check_batch(batch: Tensor | None, num_points: int) -> Tensor | None:
    if batch is None:
        return None
    if not isinstance(batch, Tensor) or batch.shape != (num_points,) or batch.is_floating_point():
        raise ValueError(
            f"batch must be an integer tensor of shape ({num_points},) (one graph id per point), got "
            f"{getattr(batch, 'dtype', type(batch).__name__)} {tuple(getattr(batch, 'shape', ()))}"
        )
    return batch


def _nearest_chunked(
    points: Tensor, k: int, batch: Tensor | None, exclude_self: bool, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Indices and distances of the k nearest points of every point; inf distance marks 'no such neighbour'.

    Shapes:
        points: (N, D); batch: (N,) -> indices (N, K) long, distances (N, K) with K = min(k, N).
    """
    num_points = points.shape[0]
    kept = min(k, num_points)
    all_indices, all_distances = [], []
    for start in range(0, num_points, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_points), device=points.device)
        # (C, D) x (N, D) -> (C, N) exact Euclidean distances
        distances = torch.cdist(points[rows], points, compute_mode="donot_use_mm_for_euclid_dist")
        if exclude_self:
            distances[torch.arange(rows.numel(), device=points.device), rows] = float("inf")
        if batch is not None:
            distances.masked_fill_(batch[rows, None] != batch[None, :], float("inf"))
        values, indices = torch.topk(distances, kept, dim=1, largest=False, sorted=True)
        all_indices.append(indices)
        all_distances.append(values)
    if not all_indices:
        empty = torch.empty(0, kept, dtype=torch.long, device=points.device)
        return empty, empty.to(points.dtype)
    return torch.cat(all_indices), torch.cat(all_distances)


def knn(points: Tensor, k: int, *, exclude_self: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Indices of the k nearest points (Euclidean) of every point, nearest first.

    Args:
        points: point coordinates.
        k: neighbours per point; fewer are returned when the set is smaller (K = min(k, N - 1) with
            `exclude_self`, else min(k, N)).
        exclude_self: leave each point out of its own neighbours (duplicates of it still count).
        chunk_size: query rows per distance block (memory is chunk_size * N distances).

    Shapes:
        points: (N, D) -> (N, K) long.

    Raises:
        ValueError: points not a finite (N, D) float tensor, k < 1, chunk_size < 1.
    """
    _check_points(points)
    _check_k_and_chunk(k, chunk_size)
    num_points = points.shape[0]
    kept = min(k, num_points - 1 if exclude_self else num_points)
    if kept <= 0:
        return torch.empty(num_points, 0, dtype=torch.long, device=points.device)
    indices, _ = _nearest_chunked(points, kept, None, exclude_self, chunk_size)
    return indices


def knn_graph(
    points: Tensor,
    k: int,
    *,
    batch: Tensor | None = None,
    loop: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Edges from every point's k nearest points, with torch-geometric's `knn_graph` conventions.

    Edge (j, i) means "j is one of the k nearest neighbours of i": row 0 holds the neighbour (message source),
    row 1 the query point (target), as `torch_geometric.nn.knn_graph(..., flow="source_to_target")` returns.
    Edges are ordered by query point, then by increasing distance. Points only see points of their own graph
    (`batch`); a graph with fewer than k + 1 points gives its points fewer edges.

    Args:
        points: point coordinates.
        k: neighbours per point.
        batch: graph id of every point (as in a torch_geometric `Batch`), or None for one graph.
        loop: also allow each point as its own neighbour.
        chunk_size: query rows per distance block.

    Shapes:
        points: (N, D); batch: (N,) -> edge_index (2, E) long with E <= N * k.

    Raises:
        ValueError: points not a finite (N, D) float tensor, batch not an (N,) integer tensor, k < 1,
            chunk_size < 1.
    """
    _check_points(points)
    _check_k_and_chunk(k, chunk_size)
    batch = _check_batch(batch, points.shape[0])
    indices, distances = _nearest_chunked(points, k, batch, not loop, chunk_size)
    valid = torch.isfinite(distances)
    queries = torch.arange(points.shape[0], device=points.device)[:, None].expand_as(indices)
    return torch.stack([indices[valid], queries[valid]])


def knn_from_distance_rows(
    distance_rows: Callable[[Tensor], Tensor],
    num_nodes: int,
    k: int,
    *,
    secondary_rows: Callable[[Tensor], Tensor] | None = None,
    exclude_self: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """k nearest nodes under any pairwise distance, with deterministic tie-breaking.

    Neighbours are ranked by `distance_rows`, ties by `secondary_rows` (when given), remaining ties by the
    smaller node index. Per row, `topk` first keeps every node not farther than the k-th nearest (all ties
    included), and only those are sorted lexicographically, so the cost stays near O(N) per row unless many
    nodes tie (box gaps of 0 do).

    Args:
        distance_rows: `rows (C,) long -> (C, num_nodes)` distances from the nodes `rows` to every node.
        num_nodes: N.
        k: neighbours per node; K = min(k, N - 1) with `exclude_self`, else min(k, N).
        secondary_rows: same signature, the tie-breaking distance.
        exclude_self: leave each node out of its own neighbours.
        chunk_size: rows per call of `distance_rows`.

    Shapes:
        -> (N, K) long, nearest first.

    Raises:
        ValueError: num_nodes < 0, k < 1, chunk_size < 1, or a callback returning the wrong shape.
    """
    _check_k_and_chunk(k, chunk_size)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes must be an integer >= 0, got {num_nodes!r}")
    kept = max(min(k, num_nodes - 1 if exclude_self else num_nodes), 0)
    # Rank one more than kept when the row's own node may sit among the nearest and must be dropped.
    ranked = min(kept + int(exclude_self), num_nodes)
    chunks = []
    for start in range(0, num_nodes, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_nodes))
        primary = distance_rows(rows)
        if primary.shape != (rows.numel(), num_nodes):
            raise ValueError(
                f"distance_rows returned shape {tuple(primary.shape)}, expected ({rows.numel()}, {num_nodes})"
            )
        secondary = None if secondary_rows is None else secondary_rows(rows)
        if secondary is not None and secondary.shape != primary.shape:
            raise ValueError(f"secondary_rows returned shape {tuple(secondary.shape)}, expected {tuple(primary.shape)}")
        rows = rows.to(primary.device)
        if ranked == 0:
            chunks.append(torch.empty(rows.numel(), 0, dtype=torch.long, device=primary.device))
            continue
        # Candidates: every node within the ranked-th smallest distance, ties included; M >= ranked columns.
        threshold = torch.topk(primary, ranked, dim=1, largest=False).values[:, -1:]  # (C, 1)
        width = int((primary <= threshold).sum(dim=1).max())
        candidates = torch.topk(primary, width, dim=1, largest=False).indices.sort(dim=1).values  # (C, M) by id
        # Lexicographic order by (primary, secondary, id): stable sorts by the minor key first.
        if secondary is not None:
            order = torch.gather(secondary, 1, candidates).sort(dim=1, stable=True).indices
            candidates = torch.gather(candidates, 1, order)
        order = torch.gather(primary, 1, candidates).sort(dim=1, stable=True).indices
        nearest = torch.gather(candidates, 1, order)  # (C, M) node ids, nearest first
        keep = torch.ones_like(nearest, dtype=torch.bool)
        if exclude_self:
            # Drop each row's own id wherever it ranked (it need not be first: duplicates, inf distances).
            keep = nearest != rows[:, None]
        keep &= keep.cumsum(dim=1) <= kept
        chunks.append(nearest[keep].view(rows.numel(), kept))
    if not chunks:
        return torch.empty(0, kept, dtype=torch.long)
    return torch.cat(chunks)
