"""Speed and memory of one medvl pre-training step (MedVLPretrainModule): samples/s, peak memory, GFLOP/s, top ops.

Usage:
    python benchmarks/bench_medvl_train.py [--device cpu|cuda] [--configs tiny,larger] [--objectives full,clip_global]
        [--steps N] [--quick] [--precision fp32|bf16] [--data-root DIR]

Every setting composes configs/medvl_train.yaml with Hydra (as `python -m medvl.train` does) plus these overrides:

    tiny    model=medvl_tiny at the default data size: 64^3 voxels of 5 mm, batch 8 (the default CPU run).
    larger  model=medvl_tiny with model.volume_encoder.feature_size=24 (Swin stage widths 24/48/96/192/384) and
            model.text_encoder.hidden_size=128; 96^3 voxels of 3.33 mm (the same 320 mm field), batch 2.
    velvet  (cuda only) model=medvl_velvet (Swin feature_size 48 with gradient checkpointing, BERT-base-sized
            TriBERT); 96^3 voxels of 3.33 mm, batch 4.

and one objective set each (configs/experiment/): full = velvet_full (all nine objectives), clip_global = the
report-level InfoNCE only, so the difference between the two rows is what the hierarchical alignment, matching,
MLM and vision self-supervision objectives cost.

The demo set is built with 16 cases under --data-root (default: a temporary folder, removed at exit); a step's
cost does not depend on the number of cases. One step is what Lightning runs per training batch, without the
Trainer: zero_grad, compute_losses, sum of the `*_loss` terms, backward, gradient-norm clipping (the config's
trainer.gradient_clip_val) and the configured AdamW step, on one fixed batch already on the device.

Per setting and objective set, after the AdamW state is created: one untimed step that counts FLOPs with
torch.utils.flop_counter.FlopCounterMode (counted, not estimated) and peak memory with
common.benchmarking.peak_memory_bytes, and also warms up; `--steps` timed steps (after one more warm-up step without
--quick); one step under torch.profiler for the top 3 operators by self time. The fp32 matmul peak is measured in the
same run (before and after; the higher is the ceiling, as in bench_common.py).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile
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
from common.lightning.vlp_module import sum_losses

DEMO_CASES = 16
FINER_GRID = [
    "data.demo.size=96",
    "data.demo.spacing_mm=3.3333333",  # 96 x 3.33 mm = the 320 mm field of the default 64 x 5 mm
    "data.preprocess.spacing=[3.3333333,3.3333333,3.3333333]",
    "data.preprocess.spatial_size=[96,96,96]",
]
SETTINGS: dict[str, list[str]] = {
    "tiny": ["model=medvl_tiny"],
    "larger": [
        "model=medvl_tiny", "model.volume_encoder.feature_size=24", "model.text_encoder.hidden_size=128",
        *FINER_GRID, "data.batch_size=2",
    ],
    "velvet": ["model=medvl_velvet", *FINER_GRID, "data.batch_size=4"],
}
CUDA_ONLY_SETTINGS = {"velvet"}
OBJECTIVE_SETS = {"full": "velvet_full", "clip_global": "clip_global"}


@dataclass
class StepResult:
    """Measurements of one (setting, objective set) training step."""

    setting: str
    objectives: str
    loss_terms: int
    input_shape: tuple[int, ...]
    params: int
    step_samples_s: list[float]
    flops: int
    peak_bytes: int
    top_ops: list[tuple[str, float, int]]  # (operator, share of the profiled step's wall time, calls)

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]


def compose_config(setting: str, objectives: str, root: Path) -> DictConfig:
    """configs/medvl_train.yaml with the setting's and objective set's overrides, data and runs under `root`."""
    overrides = [
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'outputs'}",  # outside @hydra.main there is no ${hydra:runtime.output_dir}
        f"data.demo.num_cases={DEMO_CASES}",
        f"experiment={OBJECTIVE_SETS[objectives]}",
        *SETTINGS[setting],
    ]
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="medvl_train", overrides=overrides)


def first_train_batch(cfg: DictConfig, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first training batch on `device` and the model's data-derived kwargs (as common.lightning.runner)."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    return batch, datamodule.model_kwargs()


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast of the forward pass (Lightning's `bf16-mixed`; backward runs outside it), or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_train_step(
    cfg: DictConfig, model: torch.nn.Module, batch: Mapping[str, Any], device: torch.device, precision: str
) -> tuple[Callable[[], dict[str, torch.Tensor]], torch.optim.Optimizer]:
    """One optimisation step on `batch` as Lightning runs it (see the module docstring), and its optimiser."""
    factory = model.optimizer_factory  # the config's AdamW partial, with VLPModule's no-weight-decay group
    optimizer = factory(model.parameter_groups()) if factory is not None else torch.optim.AdamW(
        model.parameter_groups(), lr=1e-4)
    clip = cfg.trainer.get("gradient_clip_val")
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Create the AdamW moments now, with one step on zero gradients (no update beyond a weight decay of lr * wd),
    # so that the first measured step does not count their allocation as step memory.
    for param in trainable:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    def step() -> dict[str, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, precision):
            outputs = model.compute_losses(batch, "train")
            loss = sum_losses(outputs, where="MedVLPretrainModule.compute_losses (train)")
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, float(clip))
        optimizer.step()
        return outputs

    return step, optimizer


def top_ops_by_self_time(step: Callable[[], Any], device: torch.device, k: int = 3) -> list[tuple[str, float, int]]:
    """The k operators with the most self time in one profiled step, with their share of the step's wall time.

    Self time is CPU time on CPU and kernel time on CUDA (the kernels an operator launched itself).
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6  # profiler times are in microseconds

    def self_us(event: Any) -> float:
        return event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total

    # operators only: drop the optimiser's record_function ranges and the CUDA kernels' own rows
    ops = [
        event for event in prof.key_averages()
        if not getattr(event, "is_user_annotation", False) and event.device_type == torch.autograd.DeviceType.CPU
    ]
    ops.sort(key=self_us, reverse=True)
    return [(event.key, self_us(event) / wall_us, event.count) for event in ops[:k]]


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_setting(
    setting: str, objective_sets: list[str], root: Path, device: torch.device, precision: str, warmup: int,
    steps: int,
) -> Iterator[StepResult]:
    """Measure one step of the setting for every objective set (one datamodule and batch shared by all)."""
    batch: dict[str, Any] | None = None
    model_kwargs: dict[str, Any] = {}
    for objectives in objective_sets:
        cfg = compose_config(setting, objectives, root)
        if cfg.get("float32_matmul_precision"):
            torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))  # as the training runner does
        L.seed_everything(int(cfg.seed), verbose=False)  # the shuffled first batch and the initial weights
        if batch is None:
            batch, model_kwargs = first_train_batch(cfg, device)
        model = instantiate(cfg.model, **model_kwargs).to(device)
        model.train()
        step, optimizer = make_train_step(cfg, model, batch, device, precision)

        # The first step counts FLOPs and peak memory at once (neither is a timing, and the FLOP counter allocates
        # no tensors); it is also the warm-up of the timed steps.
        counter = FlopCounterMode(display=False)
        loss_names: list[str] = []

        def counted_step() -> None:
            with counter:
                loss_names[:] = [key for key in step() if key.endswith("_loss")]

        peak_bytes = peak_memory_bytes(counted_step, device)
        samples = time_samples(step, warmup=warmup, repeats=steps, device=device)
        top_ops = top_ops_by_self_time(step, device)
        yield StepResult(
            setting=setting, objectives=objectives, loss_terms=len(loss_names), input_shape=tuple(batch["image"].shape),
            params=sum(p.numel() for p in model.parameters()), step_samples_s=samples,
            flops=counter.get_total_flops(), peak_bytes=peak_bytes, top_ops=top_ops,
        )
        del model, optimizer, step, counted_step  # counted_step holds step, which holds the model
        release(device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--configs", default="tiny,larger",
                        help=f"comma-separated settings from {sorted(SETTINGS)} (velvet: cuda only; "
                        "default: tiny,larger)")
    parser.add_argument("--objectives", default="full,clip_global",
                        help=f"comma-separated objective sets from {sorted(OBJECTIVE_SETS)} (default: both)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per row (default: 5, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step and no extra warm-up step per row, smaller matmul for the peak")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32, or bf16 autocast of the forward pass as trainer=gpu's bf16-mixed (cuda only)")
    parser.add_argument("--data-root", default=None,
                        help="folder for the demo sets and their caches (reused across runs; default: a temp dir)")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    args.device = device
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    args.objectives = [name.strip() for name in args.objectives.split(",") if name.strip()]
    unknown = [name for name in args.configs if name not in SETTINGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown or no settings {unknown}; choose from {sorted(SETTINGS)}")
    if device.type != "cuda" and CUDA_ONLY_SETTINGS & set(args.configs):
        parser.error(f"--configs {sorted(CUDA_ONLY_SETTINGS & set(args.configs))} is for --device cuda only "
                     "(a GPU-sized model; use tiny or larger on CPU)")
    unknown = [name for name in args.objectives if name not in OBJECTIVE_SETS]
    if unknown or not args.objectives:
        parser.error(f"--objectives: unknown or no objective sets {unknown}; choose from {sorted(OBJECTIVE_SETS)}")
    if args.precision == "bf16":
        if device.type != "cuda":
            parser.error("--precision bf16 is for --device cuda: bf16 matmuls are ~100x slower than fp32 on CPU")
        if not torch.cuda.is_bf16_supported():
            parser.error(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support (use fp32)")
    if args.steps is None:
        args.steps = 1 if args.quick else 5
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main() -> None:
    args = parse_args()
    device: torch.device = args.device
    warmup = 0 if args.quick else 1  # on top of the FLOP and memory step, which already warms up
    matmul_n = (4096 if args.quick else 8192) if device.type == "cuda" else (1024 if args.quick else 2048)
    peak_dtypes = [torch.float32] + ([torch.bfloat16] if args.precision == "bf16" else [])
    load_start = os.getloadavg()

    with contextlib.ExitStack() as stack:
        if args.data_root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_medvl_train_")))
        else:
            root = Path(args.data_root).expanduser().resolve()

        def matmul_peaks() -> list[float]:
            return [measure_matmul_peak_gflops(n=matmul_n, dtype=dtype, device=device, repeats=10)
                    for dtype in peak_dtypes]

        # the step configs set float32_matmul_precision; set it first so that the peak is measured the same way
        torch.set_float32_matmul_precision(str(compose_config(args.configs[0], args.objectives[0], root)
                                               .get("float32_matmul_precision") or "highest"))
        peaks_before = matmul_peaks()
        results: list[StepResult] = []
        for setting in args.configs:
            # one data folder per setting: ensure_demo_dataset rebuilds a folder built with other arguments
            results.extend(bench_setting(setting, args.objectives, root / setting, device, args.precision,
                                         warmup, args.steps))
        peaks_after = matmul_peaks()
    load_end = os.getloadavg()
    peaks = [max(before, after) for before, after in zip(peaks_before, peaks_after)]

    print(describe_environment(device) + f" | float32_matmul_precision: {torch.get_float32_matmul_precision()}")
    print_table(
        f"matmul peak: {matmul_n}×{matmul_n} @ {matmul_n}×{matmul_n}, fastest of 10 runs, {device}",
        ["dtype", "GFLOP/s at start", "GFLOP/s at end"],
        [[str(dtype).removeprefix("torch."), f"{before:.0f}", f"{after:.0f}"]
         for dtype, before, after in zip(peak_dtypes, peaks_before, peaks_after)],
    )
    peak_columns = ["% of fp32 peak"] + (["% of bf16 peak"] if args.precision == "bf16" else [])
    rows = []
    for r in results:
        median_s, fastest_s = statistics.median(r.step_samples_s), min(r.step_samples_s)
        gflops_s = r.flops / fastest_s / 1e9
        rows.append([
            r.setting, f"{r.objectives} ({r.loss_terms})", "×".join(map(str, r.input_shape[:1] + r.input_shape[2:])),
            f"{r.params / 1e6:.2f}", f"{median_s:.2f}", f"{fastest_s:.2f}", f"{r.batch_size / median_s:.2f}",
            f"{r.flops / 1e9:.1f}", f"{gflops_s:.1f}", *[f"{100 * gflops_s / peak:.1f}%" for peak in peaks],
            format_bytes(r.peak_bytes),
        ])
    memory_note = (
        "tensors allocated by PyTorch's CPU allocator during one step (activations, gradients, temporaries) above "
        "what was held before it (weights, AdamW state, the batch); not the process RSS"
        if device.type == "cpu" else
        "torch.cuda.max_memory_allocated during one step minus the allocation before it (weights, AdamW state, batch)"
    )
    print_table(
        f"medvl pre-training step (forward + backward + clip + AdamW), {args.precision}, {device}",
        ["setting", "objectives (terms)", "B×D×H×W", "params M", "median s", "fastest s", "samples/s",
         "GFLOP/step", "GFLOP/s", *peak_columns, "peak memory"],
        rows,
        caption=(
            f"{args.steps} timed step(s) per row{' (--quick)' if args.quick else ''}; samples/s from the median "
            "step, GFLOP/s from the fastest. terms: the `*_loss` terms the step optimised. FLOPs counted by "
            "FlopCounterMode (matmul, convolution, attention; elementwise ops are not counted). % of the higher "
            f"matmul peak ({', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s). Peak memory: {memory_note}. "
            f"Load average (1 min) {load_start[0]:.2f} at start, {load_end[0]:.2f} at end on {os.cpu_count()} "
            "cores: other processes share them, so times are upper bounds."
        ),
    )
    print_table(
        f"top 3 operators by self {'CUDA' if device.type == 'cuda' else 'CPU'} time in one profiled step",
        ["setting", "objectives", "#1", "#2", "#3"],
        [[r.setting, r.objectives, *[f"{name} {100 * share:.0f}% ({calls} calls)" for name, share, calls in r.top_ops]]
         + [""] * (3 - len(r.top_ops)) for r in results],
        caption="share = the operator's self time / wall time of the profiled step (profiler overhead included)",
    )


if __name__ == "__main__":
    main()
