"""Tests for common/distributed.py: single-process identity and a real 2-process gloo run on CPU."""
from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common.distributed import gather_rows_with_grad, gather_sizes, gather_with_grad, world_info


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init_gloo_and_run(
    rank: int, world_size: int, port: int, worker: Callable[..., Any], out_dir: Path, args: tuple
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.save(worker(*args), out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_gloo_ranks(worker: Callable[..., Any], world_size: int, out_dir: Path, *args: Any) -> list[Any]:
    """Run `worker(*args)` in `world_size` spawned CPU processes joined by a gloo process group on 127.0.0.1.

    `worker` must be a module-level function returning tensors / plain containers; its return values come
    back through files in `out_dir`, in rank order. A failing rank raises here with its traceback.
    """
    mp.spawn(
        _init_gloo_and_run,
        args=(world_size, free_local_port(), worker, out_dir, args),
        nprocs=world_size,
        join=True,
    )
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world_size)]


def test_not_distributed_is_identity() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert world_info() == (0, 1)
    assert gather_with_grad(x) is x
    gathered = gather_rows_with_grad(x)
    assert gathered.rows is x and gathered.local_offset == 0 and gathered.sizes == (3,)
    assert gather_sizes(x) == (3,)


def test_zero_dim_input_raises() -> None:
    with pytest.raises(ValueError, match="batch dimension"):
        gather_with_grad(torch.tensor(1.0))
    with pytest.raises(ValueError, match="batch dimension"):
        gather_sizes(torch.tensor(1.0))


ROWS_PER_RANK = (3, 1)  # unequal on purpose: the last batch of an epoch
BASE_WEIGHT = torch.arange(1.0, 1.0 + sum(ROWS_PER_RANK) * 2).reshape(sum(ROWS_PER_RANK), 2)


def _gather_worker() -> dict[str, Any]:
    rank, world_size = world_info()
    offset = sum(ROWS_PER_RANK[:rank])
    x = (torch.arange(ROWS_PER_RANK[rank] * 2, dtype=torch.float32).reshape(-1, 2) + 10 * offset).requires_grad_()
    gathered = gather_rows_with_grad(x)
    # each rank weights the gathered rows differently, so the local gradient must be the sum over ranks
    (gathered.rows * BASE_WEIGHT * (rank + 1)).sum().backward()
    return {
        "world": (rank, world_size),
        "rows": gathered.rows.detach(),
        "offset": gathered.local_offset,
        "sizes": gathered.sizes,
        "grad": x.grad,
        "plain": gather_with_grad(x.detach()),
    }


def test_gather_unequal_sizes_two_ranks(tmp_path: Path) -> None:
    results = run_on_gloo_ranks(_gather_worker, 2, tmp_path)
    expected_rows = torch.cat(
        [
            torch.arange(n * 2, dtype=torch.float32).reshape(-1, 2) + 10 * sum(ROWS_PER_RANK[:r])
            for r, n in enumerate(ROWS_PER_RANK)
        ]
    )
    for rank, result in enumerate(results):
        assert result["world"] == (rank, 2)
        assert result["sizes"] == ROWS_PER_RANK
        assert result["offset"] == sum(ROWS_PER_RANK[:rank])
        torch.testing.assert_close(result["rows"], expected_rows)  # padding cut away, rank order kept
        torch.testing.assert_close(result["plain"], expected_rows)
        local = slice(result["offset"], result["offset"] + ROWS_PER_RANK[rank])
        torch.testing.assert_close(result["grad"], BASE_WEIGHT[local] * (1 + 2))  # ranks' weights 1 and 2 summed
