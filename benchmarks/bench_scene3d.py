"""Speed of the scene3d data path and pre-training step: scene-graph building, the ScanNet reader, samples/s.

Usage:
    python benchmarks/bench_scene3d.py [--device cpu|cuda] [--quick]

1. `build_scene_graph` on N = 50 / 200 / 1000 random boxes (centres uniform in a room whose floor grows with N,
   so that the object density stays that of a furnished room: 0.5 objects per m^2; sizes 0.2 .. 1.5 m), once
   with all N (N - 1) ordered pairs (k = None) and once with the default kNN limit (k = 16).
2. `read_scannet_scene` on a 100k-vertex, 50-object scene written with `write_scannet_scene` to a temp dir.
3. One pre-training step of `scene3d.models.scene3d_module` (if it and configs/scene3d_train.yaml exist and compose):
   configs/scene3d_train.yaml composed with Hydra as `python -m scene3d.train` does (small demo set under a temp
   dir), one batch from the datamodule, then zero_grad + compute_losses + backward + gradient clipping (the
   config's trainer.gradient_clip_val) + the configured AdamW step, timed. If any of that fails the table says why.
Timings are medians over the repeats (1 with --quick) after one warm-up call.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.benchmarking import describe_environment, parse_device, format_bytes, print_table, time_samples
from scene3d.data.scannet import read_scannet_scene, write_scannet_scene
from scene3d.data.scene_graph import SceneGraphConfig, build_scene_graph

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAPH_SIZES = (50, 200, 1000)
OBJECTS_PER_M2 = 0.5
READER_VERTICES = 100_000
READER_OBJECTS = 50


def random_boxes(num_objects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (N, 3), sizes (N, 3) and class ids (N,) of N random boxes standing on the floor of a square room."""
    rng = np.random.default_rng(seed)
    side = math.sqrt(num_objects / OBJECTS_PER_M2)
    sizes = rng.uniform(0.2, 1.5, size=(num_objects, 3))
    centers = np.column_stack([rng.uniform(0, side, size=(num_objects, 2)), sizes[:, 2] / 2])
    return centers, sizes, rng.integers(0, 18, size=num_objects)


def bench_scene_graph(device: torch.device, repeats: int) -> list[list[Any]]:
    """Rows: objects, k, directed edges, median ms, edges per second."""
    rows = []
    for num_objects in GRAPH_SIZES:
        centers, sizes, classes = (torch.as_tensor(a).to(device) for a in random_boxes(num_objects))
        for k in (None, SceneGraphConfig.k):
            config = SceneGraphConfig(k=k)
            graph = build_scene_graph(centers, sizes, classes, config=config)
            seconds = statistics.median(time_samples(
                lambda: build_scene_graph(centers, sizes, classes, config=config), warmup=1, repeats=repeats,
                device=device))
            edges = graph.edge_index.shape[1]
            rows.append([num_objects, "all pairs" if k is None else f"k={k}", edges, f"{seconds * 1e3:.1f}",
                         f"{edges / seconds / 1e6:.2f}"])
    return rows


def write_reader_scene(root: Path) -> Path:
    """A 100k-vertex scene of 50 box-shaped objects (2000 vertices, 4 segments each) in ScanNet's format."""
    rng = np.random.default_rng(0)
    centers, sizes, _ = random_boxes(READER_OBJECTS)
    per_object = READER_VERTICES // READER_OBJECTS
    xyz = np.vstack([rng.uniform(c - s / 2, c + s / 2, size=(per_object, 3)) for c, s in zip(centers, sizes)])
    segments_per_object = 4
    seg_indices = np.arange(READER_VERTICES) // (per_object // segments_per_object)
    groups = [{"objectId": i, "label": "chair", "segments": list(range(i * segments_per_object,
                                                                        (i + 1) * segments_per_object))}
              for i in range(READER_OBJECTS)]
    rgb = rng.integers(0, 256, size=(READER_VERTICES, 3), dtype=np.uint8)
    return write_scannet_scene(root, "scene0000_00", xyz, rgb, seg_indices, groups, axis_alignment=np.eye(4))


def bench_reader(root: Path, repeats: int) -> list[Any]:
    """Row: vertices, objects, bytes on disk, median ms, vertices per second."""
    scene_dir = write_reader_scene(root)
    on_disk = sum(path.stat().st_size for path in scene_dir.iterdir())
    scene = read_scannet_scene(scene_dir)
    seconds = statistics.median(time_samples(lambda: read_scannet_scene(scene_dir), warmup=1, repeats=repeats))
    return [READER_VERTICES, len(scene.objects), format_bytes(on_disk), f"{seconds * 1e3:.1f}",
            f"{READER_VERTICES / seconds / 1e6:.2f}"]


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors and torch-geometric batches moved to `device`; everything else (lists of strings, None) as is."""
    return value.to(device) if hasattr(value, "to") and not isinstance(value, (str, bytes)) else value


def make_train_step(root: Path, device: torch.device, quick: bool) -> tuple[Callable[[], None], int, int, int]:
    """The composed scene3d pre-training step on one batch: (step, batch size, parameters, loss terms).

    Raises:
        FileNotFoundError: the module or the config is missing. Anything the composition raises passes through.
    """
    for needed in (REPO_ROOT / "scene3d/models/scene3d_module.py", REPO_ROOT / "configs/scene3d_train.yaml"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed.relative_to(REPO_ROOT)} does not exist")
    import lightning as L
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from common.lightning.vlp_module import sum_losses

    overrides = [
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'outputs'}",  # outside @hydra.main there is no ${hydra:runtime.output_dir}
        # >= 8 train scenes (one full batch of 8); the step's cost does not depend on the size of the set
        f"data.demo.num_scenes={12 if quick else 20}",
        f"data.demo.points_per_scene={8000 if quick else 30000}",
    ]
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="scene3d_train", overrides=overrides)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))  # as scene3d.train does
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch = {key: _to_device(value, device) for key, value in batch.items()}
    model = instantiate(cfg.model, **datamodule.model_kwargs()).to(device)
    model.train()
    factory = model.optimizer_factory
    optimizer = factory(model.parameter_groups()) if factory is not None else torch.optim.AdamW(
        model.parameter_groups(), lr=1e-4)
    clip = cfg.trainer.get("gradient_clip_val")
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss_names: list[str] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        outputs = model.compute_losses(batch, "train")
        loss_names[:] = [key for key in outputs if key.endswith("_loss")]
        sum_losses(outputs, where="Scene3DPretrainModule.compute_losses (train)").backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, float(clip))
        optimizer.step()

    step()  # creates the AdamW state; fills loss_names
    return step, len(batch["scene_ids"]), sum(p.numel() for p in model.parameters()), len(loss_names)


def bench_training(device: torch.device, quick: bool, repeats: int) -> list[Any]:
    """Row: status, batch, parameters, loss terms, median s per step, samples/s (or why there is no number)."""
    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_scene3d_train_") as root:
            step, batch_size, params, loss_terms = make_train_step(Path(root), device, quick)
            seconds = statistics.median(time_samples(step, warmup=1, repeats=repeats, device=device))
            return [f"ok ({torch.get_num_threads()} torch threads)", batch_size, f"{params / 1e3:.1f} K", loss_terms,
                    f"{seconds:.3f}", f"{batch_size / seconds:.1f}"]
    except Exception as error:  # noqa: BLE001 - the model is still being written: report why, keep the other rows
        return [f"not measured: {type(error).__name__}: {str(error).splitlines()[0][:140] if str(error) else ''}",
                "-", "-", "-", "-", "-"]
    finally:
        torch.set_num_threads(threads)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="1 timed repeat per row and a smaller demo set for the training step")
    args = parser.parse_args()
    args.device = parse_device(parser, args.device)
    return args


def main() -> None:
    args = parse_args()
    repeats = 1 if args.quick else 5
    graph_rows = bench_scene_graph(args.device, repeats)
    with tempfile.TemporaryDirectory(prefix="bench_scene3d_reader_") as root:
        reader_row = bench_reader(Path(root), repeats)
    training_row = bench_training(args.device, args.quick, repeats)

    print(describe_environment(args.device))
    print_table(
        f"build_scene_graph on random boxes ({OBJECTS_PER_M2} objects/m^2), median of {repeats}, {args.device}",
        ["objects", "pairs", "directed edges", "ms", "M edges/s"], graph_rows,
    )
    print_table(
        f"read_scannet_scene (PLY + segs + aggregation + axisAlignment), median of {repeats}, cpu",
        ["vertices", "objects", "on disk", "ms", "M vertices/s"], [reader_row],
    )
    print_table(
        f"scene3d pre-training step (configs/scene3d_train.yaml, forward + backward + AdamW), median of {repeats}, "
        f"{args.device}",
        ["status", "batch (scenes)", "params", "loss terms", "s / step", "samples/s"], [training_row],
    )


if __name__ == "__main__":
    main()
