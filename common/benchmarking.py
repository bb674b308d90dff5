"""Helpers shared by the benchmark scripts: timing, peak memory, matmul peak and rich tables."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

__all__ = [
    "describe_environment",
    "format_bytes",
    "measure_matmul_peak_gflops",
    "peak_memory_bytes",
    "print_table",
    "time_fn",
    "time_samples",
]


def _as_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"not a torch device: {device!r} (use e.g. 'cpu' or 'cuda:0')") from error


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timings(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls of fn after `warmup` untimed calls."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)  # CUDA kernels run asynchronously: wait for them before stopping the clock
        samples.append(time.perf_counter() - start)
    return samples


def time_samples(
    fn: Callable[[], Any], warmup: int = 1, repeats: int = 5, *, device: str | torch.device = "cpu"
) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls.

    On a CUDA `device` the clock stops only after the call's kernels finish.

    Raises:
        ValueError: warmup < 0, repeats < 1 or a bad device.
    """
    return _timings(fn, warmup, repeats, _as_device(device))


def time_fn(
    fn: Callable[[], Any], warmup: int = 1, repeats: int = 5, *, device: str | torch.device = "cpu"
) -> float:
    """Median wall-clock seconds of one call of `fn` (see `time_samples`).

    Raises:
        ValueError: warmup < 0, repeats < 1 or a bad device.
    """
    return statistics.median(time_samples(fn, warmup, repeats, device=device))


def measure_matmul_peak_gflops(
    n: int = 2048,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    repeats: int = 5,
    warmup: int = 2,
) -> float:
    """Achievable matmul throughput: 2 * n^3 FLOP of an (n, n) @ (n, n) product over its FASTEST run.

    The fastest run (not the median) is used because this is a ceiling to compare other timings against.
    On CPU it depends on torch's thread count (`torch.get_num_threads()`).

    Raises:
        ValueError: n < 1, a non-floating dtype or a bad device.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    device = _as_device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    y = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    best = min(_timings(lambda: x @ y, warmup, repeats, device))
    return 2.0 * n**3 / best / 1e9


def peak_memory_bytes(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak tensor memory allocated by one call of `fn`, above what was allocated before the call.

    Memory that the call keeps (its returned tensors) counts; memory freed before the peak does not.

    - CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the allocation
      at the start. Counts tensors from PyTorch's caching allocator, not its reserved-but-free cache,
      memory allocated outside it (by other libraries) or other processes.
    - CPU: replays the allocation / free events that `torch.profiler` (profile_memory=True) records from
      PyTorch's CPU allocator and takes the maximum running total. Counts torch tensors only (not NumPy
      arrays, Python objects, or allocator fragmentation / RSS); frees of tensors allocated BEFORE the
      call are not recorded, so releasing them does not lower the count (torch warns once about this);
      the profiler slows the call, so time it separately. A process-wide RSS high-water mark was not
      used: glibc reuses freed heap pages, so it undercounts, and other threads' allocations leak into it.

    Raises:
        ValueError: a device other than CPU or CUDA.
    """
    device = _as_device(device)
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type != "cpu":
        raise ValueError(f"peak_memory_bytes supports 'cpu' and 'cuda' devices, got {device}")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # The raw kineto events keep every allocation (+bytes) and free (-bytes) with its time stamp; the
    # public `prof.events()` folds them into per-operator totals, which hides peaks inside an operator.
    events = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda item: item[0])
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return int(peak)


def format_bytes(num_bytes: float) -> str:
    """Human-readable size with binary units, e.g. 1536 -> '1.5 KiB'."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cpu_model_name() -> str:
    """CPU model from /proc/cpuinfo on Linux, else the platform's processor / machine string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment(device: str | torch.device = "cpu") -> str:
    """One line naming torch, the device and the thread count, to print above benchmark tables."""
    device = _as_device(device)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{_cpu_model_name()}, {os.cpu_count()} cores"
    return f"torch {torch.__version__} | {device} ({hardware}) | torch threads: {torch.get_num_threads()}"


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str | None = None,
    console: Console | None = None,
) -> None:
    """Print a rich table; floats are shown with 4 significant digits, everything else with str().

    Raises:
        ValueError: no columns, or a row whose length differs from the number of columns.
    """
    if not columns:
        raise ValueError("print_table needs at least one column")
    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(str(column), justify="right")
    for index, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {index} has {len(row)} values for {len(columns)} columns: {row!r}")
        table.add_row(*(f"{value:.4g}" if isinstance(value, float) else str(value) for value in row))
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped to a file: rich would squeeze the table into 80 columns
            console = Console(width=160)
    console.print(table)


def parse_device(parser: argparse.ArgumentParser, value: str) -> torch.device:
    """The ``--device`` argument of a benchmark script as a torch device, or ``parser.error`` saying why not."""
    try:
        device = torch.device(value)
    except RuntimeError:
        parser.error(f"--device {value!r} is not a torch device (use e.g. cpu or cuda:0)")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {value}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {value}: CUDA is not available in this torch build / on this machine")
    return device
