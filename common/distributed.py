"""Small helpers for data-parallel training: who am I, and gathering rows from every rank with gradients.

Everything here is the identity when `torch.distributed` is not initialised, so the same code runs in a
single process, under Lightning's DDP strategy, or under `torchrun`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor

class GatheredRows(NamedTuple):
    """Rows of a tensor gathered from every rank.

    Attributes:
        rows: the rows of all ranks concatenated in rank order, (sum(sizes), *trailing dims).
        local_offset: index in `rows` of this rank's first row (its rows are
            `rows[local_offset : local_offset + sizes[rank]]`).
        sizes: number of rows each rank contributed, in rank order.
    """

    rows: Tensor
    local_offset: int
    sizes: tuple[int, ...]


def is_distributed() -> bool:
    """True when `torch.distributed` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_info(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Return `(rank, world_size)` of this process in `group` (default: the world); `(0, 1)` when not distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(group=group), dist.get_world_size(group=group)


def gather_sizes(x: Tensor, group: dist.ProcessGroup | None = None) -> tuple[int, ...]:
    """Number of rows (dim 0) of `x` on every rank, in rank order; `(len(x),)` when not distributed.

    Every rank must call this (it is a collective). Trailing dimensions must agree across ranks.

    Raises:
        ValueError: `x` is 0-d, or its trailing dimensions differ between ranks.
    """
    if x.dim() == 0:
        raise ValueError("gather_sizes needs a tensor with a batch dimension (dim 0); got a 0-d tensor")
    rank, world_size = world_info(group)
    if world_size == 1:
        return (x.shape[0],)
    local_shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(local_shape) for _ in range(world_size)]
    dist.all_gather(shapes, local_shape, group=group)
    shapes_list = [tuple(s.tolist()) for s in shapes]
    if any(s[1:] != shapes_list[rank][1:] for s in shapes_list):
        raise ValueError(
            f"cannot gather rows: the trailing dimensions differ between ranks (shapes in rank order: {shapes_list}); "
            "only the batch dimension (dim 0) may differ"
        )
    return tuple(s[0] for s in shapes_list)


def gather_rows_with_grad(
    x: Tensor, *, sizes: Sequence[int] | None = None, group: dist.ProcessGroup | None = None
) -> GatheredRows:
    """Concatenate `x` from all ranks along dim 0, keeping the autograd graph to every rank's local rows.

    Ranks may hold different numbers of rows (e.g. the last, smaller batch): the sizes are gathered
    first, each rank pads its rows to the largest size, all ranks gather the padded tensors, and the
    padding is cut away again. In backward, the gradient of each rank's slice is summed over all ranks
    (all-gather's adjoint is reduce-scatter), which is what a loss computed on every rank needs.

    Args:
        x: this rank's rows.
        sizes: rows per rank in rank order if already known (e.g. from an earlier `gather_sizes` call on
            a tensor with the same batch size); saves one collective. Must be identical on every rank.
        group: process group (default: the world).

    Shapes:
        x: (B, *) with B = sizes[rank] -> rows: (sum(sizes), *)

    Raises:
        ValueError: `x` is 0-d, `sizes` does not fit the world size or this rank's batch, or trailing
            dimensions differ between ranks.
    """
    if x.dim() == 0:
        raise ValueError("gather_rows_with_grad needs a tensor with a batch dimension (dim 0); got a 0-d tensor")
    rank, world_size = world_info(group)
    if world_size == 1:
        return GatheredRows(rows=x, local_offset=0, sizes=(x.shape[0],))
    if sizes is None:
        sizes = gather_sizes(x, group=group)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != world_size or sizes[rank] != x.shape[0]:
        raise ValueError(
            f"sizes={sizes} does not match world size {world_size} and this rank's {x.shape[0]} rows "
            f"(rank {rank}); pass sizes=None to gather them"
        )
    max_rows = max(sizes)
    padded = x
    if x.shape[0] < max_rows:
        # (B, *) -> (max_rows, *): zero rows appended so that every rank sends the same shape
        padded = torch.cat([x, x.new_zeros((max_rows - x.shape[0], *x.shape[1:]))], dim=0)
    with warnings.catch_warnings():
        # Recent torch marks this public op deprecated in favour of `_functional_collectives`, a private module
        # whose all-gather only recently gained autograd; this op works with autograd on every torch >= 2.2.
        warnings.filterwarnings(
            "ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated", category=FutureWarning
        )
        pieces = dist_nn.all_gather(padded, group=group if group is not None else dist.group.WORLD)
    # world_size x (max_rows, *) -> (sum(sizes), *): drop each rank's padding
    rows = torch.cat([piece[:size] for piece, size in zip(pieces, sizes)], dim=0)
    return GatheredRows(rows=rows, local_offset=sum(sizes[:rank]), sizes=sizes)


def gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """`gather_rows_with_grad(x).rows`: all ranks' rows concatenated along dim 0; `x` itself when not distributed.

    Shapes:
        x: (B, *) -> (sum of B over ranks, *)
    """
    return gather_rows_with_grad(x, group=group).rows


def gather_objects(obj: Any, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Every rank's `obj` (any picklable value), in rank order; `[obj]` when not distributed.

    Every rank must call this (it is a collective). For evaluation results that are not one tensor (lists of
    strings, per-example records), e.g. to compute epoch metrics over the whole split on every rank.
    """
    _, world_size = world_info(group)
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj, group=group)
    return gathered
