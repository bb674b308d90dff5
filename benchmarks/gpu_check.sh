#!/usr/bin/env bash
# GPU check (issue 15 part 4): one script, at most ~8 minutes, on a machine with a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh                 # uses $PYTHON (default: .venv/bin/python, else python3)
#   PYTHON=/opt/conda/bin/python STEPS=30 bash benchmarks/gpu_check.sh
#
# 1. Checks that a CUDA GPU is visible to torch; without one it stops at once with exit code 2 and says so.
# 2. Installs nothing beyond this project: if `import medvl` fails it runs `pip install --no-deps -e .` (the
#    dependencies, torch with CUDA included, must already be there: see README "Install on a GPU server").
# 3. Training step of `model=medvl_velvet trainer=gpu` (precision from the config: bf16-mixed) at 96^3 voxels
#    (3.33 mm, the 320 mm field of the default 64 x 5 mm), batch $BATCH (default 4), all nine objectives
#    (experiment=velvet_full), on one fixed batch: $WARMUP (3) untimed then $STEPS (20) timed steps of
#    zero_grad + forward under bf16 autocast + backward + clip + AdamW, exactly benchmarks/bench_medvl_train.py's
#    step. Prints samples/s, achieved TFLOP/s (FLOPs counted by torch.utils.flop_counter on one step: matmul,
#    convolution, attention), the share of the card's dense bf16 peak (table below, by device name) and of the
#    bf16 matmul peak measured on this card, and the peak GPU memory (torch.cuda.max_memory_allocated).
# 4. The cached loader at CT-CLIP's geometry with 8 DataLoader workers: benchmarks/bench_medvl_data.py
#    --paths cached --workers 8 (writes its own inputs; $LOADER_SIZE, default 512: 512x512x224 -> 480x480x240).
#
# Each stage runs under `timeout` ($TRAIN_TIMEOUT 300 s, $LOADER_TIMEOUT 150 s) so the whole check stays under
# 8 minutes plus start-up. Exit code: 0 all stages ran, 2 no GPU, 3 the project cannot be imported, else the
# failing stage's code (124: it ran out of time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-3}"
BATCH="${BATCH:-4}"
LOADER_SIZE="${LOADER_SIZE:-512}"
LOADER_VOLUMES="${LOADER_VOLUMES:-8}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-300}"
LOADER_TIMEOUT="${LOADER_TIMEOUT:-150}"

if ! "$PYTHON" - <<'PY'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: FAILED: torch is not installed for this python (set PYTHON=...)")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: FAILED: no CUDA GPU visible to torch {torch.__version__} "
             f"(torch.version.cuda={torch.version.cuda}); this check needs a machine with an NVIDIA GPU and a CUDA "
             f"build of torch")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
then
  exit 2
fi

if ! "$PYTHON" -c "import medvl, monai, lightning, hydra" 2>/dev/null; then
  echo "gpu_check: installing the project only (pip install --no-deps -e .)"
  "$PYTHON" -m pip install --disable-pip-version-check -q --no-deps -e . \
    || { echo "gpu_check: FAILED: cannot install the project" >&2; exit 3; }
  "$PYTHON" -c "import medvl, monai, lightning, hydra" \
    || { echo "gpu_check: FAILED: the project's dependencies are missing (see README, Install on a GPU server)" >&2; exit 3; }
fi

echo "gpu_check: [1/2] training step, model=medvl_velvet trainer=gpu, 96^3, batch $BATCH, $STEPS timed steps"
STEPS="$STEPS" WARMUP="$WARMUP" BATCH="$BATCH" timeout "$TRAIN_TIMEOUT" "$PYTHON" - <<'PY'
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, "benchmarks")
from bench_medvl_train import FINER_GRID, autocast_context, first_train_batch, make_train_step  # noqa: E402
from common.benchmarking import measure_matmul_peak_gflops  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks with fp32 accumulation from the vendors' data sheets, TFLOP/s.
# Checked in order: the first name fragment found in torch.cuda.get_device_name() wins.
BF16_PEAK_TFLOPS = [
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),  # SXM
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX A6000", 155.0), ("A40", 150.0), ("A30", 165.0),
]

device = torch.device("cuda")
name = torch.cuda.get_device_name(device)
spec_peak = next((peak for fragment, peak in BF16_PEAK_TFLOPS if fragment in name), None)
steps, warmup, batch_size = int(os.environ["STEPS"]), int(os.environ["WARMUP"]), int(os.environ["BATCH"])

with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
    root = Path(tmp)
    overrides = [f"paths.root_dir={root}", f"paths.output_dir={root / 'outputs'}", "data.demo.num_cases=16",
                 "model=medvl_velvet", "trainer=gpu", "experiment=velvet_full", *FINER_GRID,
                 f"data.batch_size={batch_size}"]
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_train", overrides=overrides)
    precision = str(cfg.trainer.precision)
    if not precision.startswith("bf16"):
        sys.exit(f"gpu_check: FAILED: trainer=gpu has precision {precision!r}, expected bf16-mixed")
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    L.seed_everything(int(cfg.seed), verbose=False)
    t0 = time.perf_counter()
    batch, model_kwargs = first_train_batch(cfg, device)
    model = instantiate(cfg.model, **model_kwargs).to(device)
    model.train()
    step, _ = make_train_step(cfg, model, batch, device, "bf16")
    print(f"gpu_check: demo set + model ready in {time.perf_counter() - t0:.0f} s; "
          f"input {tuple(batch['image'].shape)}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params")
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak_mem = torch.cuda.max_memory_allocated()
    measured_peak = measure_matmul_peak_gflops(n=8192, dtype=torch.bfloat16, device=device, repeats=10) / 1e3

tflops = flops / seconds / 1e12
rows = [
    ("device", name),
    ("config", f"model=medvl_velvet trainer=gpu ({precision}), experiment=velvet_full, 96^3, batch {batch_size}"),
    ("step time (mean of timed steps)", f"{seconds * 1e3:.1f} ms over {steps} steps after {warmup + 1} untimed"),
    ("samples/s", f"{batch_size / seconds:.2f}"),
    ("counted FLOPs per step", f"{flops / 1e12:.3f} TFLOP (FlopCounterMode: matmul, conv, attention)"),
    ("achieved TFLOP/s", f"{tflops:.1f}"),
    ("share of dense bf16 peak (data sheet)",
     f"{100 * tflops / spec_peak:.1f}% of {spec_peak:.0f} TFLOP/s" if spec_peak else
     "unknown card: add it to BF16_PEAK_TFLOPS in benchmarks/gpu_check.sh"),
    ("share of measured bf16 matmul peak", f"{100 * tflops / measured_peak:.1f}% of {measured_peak:.0f} TFLOP/s "
                                           "(8192^3 bf16 matmul, fastest of 10)"),
    ("peak GPU memory (max_memory_allocated)", f"{peak_mem / 2**30:.2f} GiB"),
]
width = max(len(k) for k, _ in rows)
print("gpu_check: training step")
for key, value in rows:
    print(f"  {key:<{width}}  {value}")
PY

echo "gpu_check: [2/2] cached loader, 8 workers, ${LOADER_SIZE}-voxel inputs"
timeout "$LOADER_TIMEOUT" "$PYTHON" benchmarks/bench_medvl_data.py --paths cached --workers 8 \
  --size "$LOADER_SIZE" --volumes "$LOADER_VOLUMES" --train-steps 0
echo "gpu_check: done"
