"""Speed and memory of the shared core: CLIP InfoNCE loss (forward + backward) and chunked Recall@K.

Usage:
    python benchmarks/bench_common.py [--device cpu|cuda] [--quick]

Also measures the fp32 matmul peak in the same run (before and after the other benchmarks; the higher
value is the ceiling, since other processes on a shared machine can only slow a run down), so the loss
throughput reads as a share of what this machine's matrix products reach. FLOPs are counted by
torch.utils.flop_counter (matrix products only), not estimated by hand. Timings on a shared machine
vary: tables give the median and the fastest run, and GFLOP/s uses the fastest (as the peak does).
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.benchmarking import (
    parse_device,
    describe_environment,
    format_bytes,
    measure_matmul_peak_gflops,
    peak_memory_bytes,
    print_table,
    time_samples,
)
from common.losses.contrastive import ClipInfoNCELoss
from common.metrics.retrieval import retrieval_recall_at_k

EMBED_DIM = 512


@dataclass
class Measurement:
    """Timing (seconds), counted matmul FLOPs and peak tensor memory (bytes) of one benchmarked call."""

    median_s: float
    fastest_s: float
    flops: int
    peak_bytes: int


def _measure(fn: Callable[[], object], device: torch.device, repeats: int, reset: Callable[[], None]) -> Measurement:
    """Time fn, count its FLOPs, then measure its peak memory after `reset` (which frees kept results)."""
    samples = time_samples(fn, warmup=2, repeats=repeats, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    reset()
    peak_bytes = peak_memory_bytes(fn, device)
    return Measurement(statistics.median(samples), min(samples), counter.get_total_flops(), peak_bytes)


def bench_contrastive(device: torch.device, batch_sizes: list[int], repeats: int) -> dict[int, Measurement]:
    """ClipInfoNCELoss forward + backward on random (B, 512) pairs, for every batch size B."""
    loss_fn = ClipInfoNCELoss().to(device)
    results = {}
    for batch in batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        a = torch.randn(batch, EMBED_DIM, generator=generator).to(device).requires_grad_(True)
        b = torch.randn(batch, EMBED_DIM, generator=generator).to(device).requires_grad_(True)

        def clear_grads() -> None:
            a.grad = b.grad = None
            loss_fn.zero_grad(set_to_none=True)

        def step() -> None:
            clear_grads()
            loss_fn(a, b)["contrastive_loss"].backward()

        results[batch] = _measure(step, device, repeats, reset=clear_grads)
    return results


def bench_retrieval(device: torch.device, num_pairs: int, chunk_size: int, repeats: int) -> tuple[Measurement, float]:
    """Recall@1/5/10 both ways over N synthetic pairs (b = a + noise); also returns a->b R@1 as a sanity value."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(num_pairs, EMBED_DIM, generator=generator)
    b = a + 6.0 * torch.randn(num_pairs, EMBED_DIM, generator=generator)  # noisy enough that R@1 < 1
    a, b = a.to(device), b.to(device)
    results: dict[str, float] = {}

    def run() -> None:
        results.update(retrieval_recall_at_k(a, b, ks=(1, 5, 10), chunk_size=chunk_size))

    return _measure(run, device, repeats, reset=lambda: None), results["a2b_R@1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke run)")
    args = parser.parse_args()
    device = parse_device(parser, args.device)

    batch_sizes = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    num_pairs = 2_000 if args.quick else 10_000
    repeats = 3 if args.quick else 7
    matmul_n = 1024 if args.quick else 2048
    chunk_size = 1024
    devices = [device] if device.type == "cpu" else [device, torch.device("cpu")]

    def matmul_peaks() -> list[float]:
        return [measure_matmul_peak_gflops(n=matmul_n, device=on, repeats=10) for on in devices]

    print(describe_environment(device))
    peaks_before = matmul_peaks()
    contrastive = bench_contrastive(device, batch_sizes, repeats)
    retrieval, recall_at_1 = bench_retrieval(device, num_pairs, chunk_size, repeats)
    peaks_after = matmul_peaks()
    peak = max(peaks_before[0], peaks_after[0])

    print_table(
        f"fp32 matmul peak: {matmul_n}×{matmul_n} @ {matmul_n}×{matmul_n}, fastest of 10 runs",
        ["device", "GFLOP/s at start", "GFLOP/s at end"],
        [[str(on), f"{before:.0f}", f"{after:.0f}"] for on, before, after in zip(devices, peaks_before, peaks_after)],
    )
    print_table(
        f"ClipInfoNCELoss forward + backward, dim {EMBED_DIM}, fp32, {device}",
        [
            "batch B", "median ms", "fastest ms", "matmul GFLOP", "GFLOP/s (fastest)", "% of matmul peak",
            "peak memory", "one B×B fp32 matrix",
        ],
        [
            [
                batch,
                f"{m.median_s * 1e3:.1f}",
                f"{m.fastest_s * 1e3:.1f}",
                f"{m.flops / 1e9:.2f}",
                f"{m.flops / m.fastest_s / 1e9:.0f}",
                f"{100 * m.flops / m.fastest_s / 1e9 / peak:.0f}%",
                format_bytes(m.peak_bytes),
                format_bytes(batch * batch * 4),
            ]
            for batch, m in contrastive.items()
        ],
        caption=f"% of the higher matmul peak ({peak:.0f} GFLOP/s); peak memory: tensors allocated during the step "
        "(logits, softmax, gradients of a and b)",
    )
    print_table(
        f"Recall@1/5/10 in both directions, {num_pairs:,} pairs × dim {EMBED_DIM}, fp32, {device}",
        [
            "pairs N", "chunk rows", "median ms", "fastest ms", "matmul GFLOP", "peak memory",
            "full N×N fp32 matrix (avoided)", "a2b R@1 (synthetic)",
        ],
        [
            [
                num_pairs,
                chunk_size,
                f"{retrieval.median_s * 1e3:.0f}",
                f"{retrieval.fastest_s * 1e3:.0f}",
                f"{retrieval.flops / 1e9:.1f}",
                format_bytes(retrieval.peak_bytes),
                format_bytes(num_pairs**2 * 4),
                f"{recall_at_1:.3f}",
            ]
        ],
        caption="peak memory includes the L2-normalised fp32 copies of a and b (2 × N × dim × 4 bytes)",
    )


if __name__ == "__main__":
    main()
