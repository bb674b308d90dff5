"""Cross-modal retrieval Recall@K, computed in row chunks so the N x N similarity matrix never exists.

torchmetrics' RetrievalRecall expects one (query, item) score per row, i.e. the full N x N matrix
flattened, and has no notion of "any item of the same group is correct"; hence this small module.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ranks_of_ground_truth", "retrieval_recall_at_k"]


def _all_finite(x: Tensor) -> bool:
    """No NaN / inf in x, without `torch.isfinite`'s full-size temporaries (min and max propagate NaN)."""
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _prepare(
    a: Tensor, b: Tensor, group_ids: Tensor | None, chunk_size: int, normalize: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate inputs; return detached float (>= fp32) versions of a and b (L2-normalised if asked) and group ids."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"a and b must be torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D (N, C), got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape (N, C) with row i of a paired with row i of b, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"a and b must hold at least one non-empty embedding, got shape {tuple(a.shape)}")
    if not a.is_floating_point() or not b.is_floating_point():
        raise ValueError(f"a and b must be floating point, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"a and b must be on the same device, got {a.device} and {b.device}")
    if a.shape[0] >= 2**24:
        raise ValueError(f"at most 2**24 - 1 pairs are supported (ranks are counted in float32), got {a.shape[0]}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for name, x in (("a", a), ("b", b)):
        if not _all_finite(x):
            raise ValueError(
                f"{name} contains NaN or inf; every comparison with NaN is False, so recall would be wrong"
            )

    # fp16 / bf16 would create many spurious ties; fp64 stays fp64.
    dtype = torch.promote_types(a.dtype, torch.float32)
    a, b = a.detach().to(dtype), b.detach().to(dtype)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)

    if group_ids is not None:
        if not isinstance(group_ids, Tensor) or group_ids.shape != (a.shape[0],):
            shape = tuple(group_ids.shape) if isinstance(group_ids, Tensor) else type(group_ids).__name__
            raise ValueError(f"group_ids must be a tensor of shape (N,) = ({a.shape[0]},), got {shape}")
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
        group_ids = group_ids.to(a.device)
    return a, b, group_ids


def _ranks_one_direction(
    queries: Tensor, items: Tensor, group_ids: Tensor | None, chunk_size: int
) -> tuple[Tensor, int]:
    """Rank of the best correct item for every query, plus how many queries had a wrong item tied with it."""
    num = queries.shape[0]
    ranks = torch.empty(num, dtype=torch.long, device=queries.device)
    tied_queries = 0
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        sims = queries[start:stop] @ items.T  # (c, C) @ (C, N) -> (c, N)
        if not _all_finite(sims):
            raise ValueError("similarities overflowed to inf; pass normalize=True or rescale the embeddings")
        rows = torch.arange(stop - start, device=sims.device)
        if group_ids is None:
            best = sims[rows, start + rows].unsqueeze(1)  # (c, 1): the paired item's score
            tied = sims == best  # (c, N)
            tied[rows, start + rows] = False
        else:
            wrong = group_ids[start:stop, None] != group_ids[None, :]  # (c, 1) != (1, N) -> (c, N)
            best = sims.masked_fill(wrong, float("-inf")).amax(dim=1, keepdim=True)  # (c, 1)
            tied = (sims == best) & wrong
        tied_queries += int(tied.any(dim=1).sum())
        # An item scoring strictly above the best correct one is necessarily wrong. Counted in place as
        # 0./1. floats (exact below 2**24 items): a bool .sum() would make an int64 copy of the block.
        ranks[start:stop] = sims.gt_(best).sum(dim=1).long()
        del sims, tied  # free this chunk before the next product allocates its own
    return ranks, tied_queries


def ranks_of_ground_truth(
    a: Tensor,
    b: Tensor,
    *,
    chunk_size: int = 1024,
    group_ids: Tensor | None = None,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """0-based rank of the ground truth for every query, in both directions.

        s_ij = <a_i, b_j>  (cosine similarity if normalize=True)
        G(i) = {i}, or {j : group_ids[j] == group_ids[i]} when group ids are given
        rank_a2b(i) = #{ j : s_ij > max_{g in G(i)} s_ig }
        rank_b2a(j) = #{ i : s_ij > max_{g in G(j)} s_gj }

    Ties: only STRICTLY greater scores push the ground truth down, so a wrong item tied with it does not
    count (optimistic). A warning says how many queries had such ties when they exceed 0.1% of the
    queries in either direction (e.g. duplicated or collapsed embeddings).
    Memory: one chunk_size x N block of similarities at a time (1024 x 10,000 fp32 = 41 MB, plus boolean
    masks of that shape and, with group_ids, a second fp32 block), never N x N; and L2-normalised fp32
    copies of a and b.
    Inputs are upcast to at least float32.

    Args:
        a: embeddings of modality a; row i is paired with row i of b.
        b: embeddings of modality b.
        chunk_size: query rows scored per matrix product.
        group_ids: optional group of every pair (e.g. pairs with identical reports share an id); any item
            of the query's group counts as correct.
        normalize: L2-normalise a and b first (cosine similarity).

    Shapes:
        a, b: (N, C); group_ids: (N,); returns two (N,) int64 tensors (a->b ranks, b->a ranks).

    Raises:
        ValueError: shapes differ or are not 2-D, N or C is 0 (or N >= 2**24), non-float or non-finite
            embeddings, bad chunk_size or group_ids.
    """
    a, b, group_ids = _prepare(a, b, group_ids, chunk_size, normalize)
    ranks_a2b, tied_a2b = _ranks_one_direction(a, b, group_ids, chunk_size)
    ranks_b2a, tied_b2a = _ranks_one_direction(b, a, group_ids, chunk_size)
    # An exact float tie now and then is normal (about one query in 10,000 for random fp32 data); many
    # are a sign of duplicated or collapsed embeddings.
    if max(tied_a2b, tied_b2a) > 0.001 * a.shape[0]:
        warnings.warn(
            f"retrieval: {tied_a2b} a->b and {tied_b2a} b->a queries of {a.shape[0]} have a wrong item whose "
            "score ties with the ground truth; ties count in the ground truth's favour, so recall is optimistic "
            "(identical or collapsed embeddings?)",
            stacklevel=2,
        )
    return ranks_a2b, ranks_b2a


def retrieval_recall_at_k(
    a: Tensor,
    b: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    a_name: str = "a",
    b_name: str = "b",
    chunk_size: int = 1024,
    group_ids: Tensor | None = None,
    normalize: bool = True,
) -> dict[str, float]:
    """Recall@K in both directions as a FRACTION in [0, 1] (not percent).

        R@k(a->b) = (1/N) * #{ i : rank_a2b(i) < k }   (ranks and ties as in `ranks_of_ground_truth`)

    A k >= N gives 1.0 by definition.

    Args:
        a, b, chunk_size, group_ids, normalize: as in `ranks_of_ground_truth`.
        ks: the K values.
        a_name, b_name: names used in the keys, e.g. "image" and "report".

    Shapes:
        a, b: (N, C); group_ids: (N,).

    Returns:
        {f"{a_name}2{b_name}_R@{k}": float, f"{b_name}2{a_name}_R@{k}": float} for every k.

    Raises:
        ValueError: as `ranks_of_ground_truth`, plus empty ks, a k < 1, or a_name == b_name.
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    if a_name == b_name:
        raise ValueError(f"a_name and b_name must differ (both are {a_name!r}), or the keys would collide")
    ranks_a2b, ranks_b2a = ranks_of_ground_truth(
        a, b, chunk_size=chunk_size, group_ids=group_ids, normalize=normalize
    )
    results: dict[str, float] = {}
    for direction, ranks in ((f"{a_name}2{b_name}", ranks_a2b), (f"{b_name}2{a_name}", ranks_b2a)):
        for k in ks:
            results[f"{direction}_R@{k}"] = (ranks < k).double().mean().item()
    return results
