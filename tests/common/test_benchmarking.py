"""Tests for common/benchmarking.py."""
from __future__ import annotations

import io
import time

import pytest
import torch
from rich.console import Console

from common.benchmarking import (
    format_bytes,
    measure_matmul_peak_gflops,
    peak_memory_bytes,
    print_table,
    time_fn,
    time_samples,
)


def test_time_fn_returns_the_median_and_counts_calls() -> None:
    calls = []

    def sleep_briefly() -> None:
        calls.append(1)
        time.sleep(0.002)

    seconds = time_fn(sleep_briefly, warmup=2, repeats=3)
    assert len(calls) == 5
    assert 0.002 <= seconds < 0.5
    samples = time_samples(sleep_briefly, warmup=0, repeats=4)
    assert len(samples) == 4 and len(calls) == 9
    assert all(sample >= 0.002 for sample in samples)


@pytest.mark.parametrize("kwargs", [dict(warmup=-1), dict(repeats=0)])
def test_time_fn_bad_arguments_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        time_fn(lambda: None, **kwargs)


def test_matmul_peak_is_positive_and_checks_arguments() -> None:
    assert measure_matmul_peak_gflops(n=64, repeats=2, warmup=1) > 0
    with pytest.raises(ValueError, match="n must be"):
        measure_matmul_peak_gflops(n=0)
    with pytest.raises(ValueError, match="floating"):
        measure_matmul_peak_gflops(n=8, dtype=torch.int32)


def test_cpu_peak_memory_counts_the_high_water_mark_of_tensor_allocations() -> None:
    def allocate() -> torch.Tensor:
        first = torch.empty(250_000, dtype=torch.float32)  # 1,000,000 bytes
        kept = torch.empty(500_000, dtype=torch.float32)  # 2,000,000 bytes
        del first
        scratch = torch.empty(125_000, dtype=torch.float32)  # 500,000 bytes, after the 3 MB peak
        del scratch
        return kept

    assert peak_memory_bytes(allocate, "cpu") == 3_000_000
    with pytest.raises(ValueError, match="cpu"):
        peak_memory_bytes(allocate, "meta")


def test_print_table_shows_title_columns_and_values() -> None:
    buffer = io.StringIO()
    print_table(
        "Speed", ["batch", "time (ms)", "note"], [[256, 1.23456, "ok"], [512, 2.5, "x"]],
        console=Console(file=buffer, width=120),
    )
    text = buffer.getvalue()
    for expected in ("Speed", "batch", "time (ms)", "256", "1.235", "512", "2.5", "ok"):
        assert expected in text
    with pytest.raises(ValueError, match="row 0 has 1 values for 2 columns"):
        print_table("t", ["a", "b"], [[1]], console=Console(file=io.StringIO()))


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_parse_device_accepts_cpu_and_rejects_bad_values():
    import argparse

    import pytest
    import torch

    from common.benchmarking import parse_device

    parser = argparse.ArgumentParser()
    assert parse_device(parser, "cpu") == torch.device("cpu")
    for bad in ("gpu0", "meta"):
        with pytest.raises(SystemExit):
            parse_device(parser, bad)
