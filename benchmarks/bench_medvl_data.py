"""CT loading speed and memory: CT-CLIP's per-item loader logic vs `CTReportDataset` (uncached, cached), DICOM decoding.

Usage:
    python benchmarks/bench_medvl_data.py [--size 512] [--volumes 6] [--workers 1,2] [--work-dir DIR]
        [--paths ctclip,uncached,cached,dicom] [--cached-repeats 5] [--train-steps 3]

Inputs are written by the script itself under --work-dir (default: a temporary folder, removed at exit):
`--volumes` int16 NIfTI volumes (.nii.gz) of size x size x round(224 * size / 512) voxels at 0.7 x 0.7 x 1.25 mm
(CT-RATE-like: 512 x 512 x 224 at full size). Their content is the real CT of ../shared/data/ct/example_ct.nii.gz
resampled to that grid plus seeded Gaussian noise of 10 HU (so gzip sees CT-like entropy); without that folder, a
procedural phantom (body, lungs, spine) with the same noise. The geometry of the paths: resample to
0.75 x 0.75 x 1.5 mm, window [-1000, 1000] HU, crop / pad to round((480, 480, 240) * size / 512), as CT-CLIP.

Paths (one fresh subprocess per path and worker count, so each peak RSS is its own):
    baseline  imports only (torch, MONAI, medvl): the memory floor every other row includes.
    ctclip    CT-CLIP's loader logic, re-implemented here from its description (`ctclip_load`): nibabel
              `get_fdata()` (float64), trilinear `torch.nn.functional.interpolate` to the target spacing (float64,
              as the array comes), clip to [-1000, 1000], scale by 1/1000, centre crop / pad (with -1) to the size.
    uncached  `CTReportDataset(cache_dir=None)`: nibabel float32 read, RAS orientation, `SeparableSpacingd`
              (float32, axis by axis), window to [0, 1], crop / pad.
    cached    `CTReportDataset(cache_dir=...)` after the cache was filled (not timed): unorm16 entries read by
              memory map; the dataset is read `--cached-repeats` times (its files are in the page cache: a warm
              read, as from the second epoch on when the cache fits in RAM).
    dicom     the same volumes as DICOM series, uncompressed (Explicit VR Little Endian) and JPEG 2000 Lossless,
              decoded to HU by `medvl.data.volume.load_volume` (pydicom + pylibjpeg-openjpeg); decoding only.

Each row loads through a `torch.utils.data.DataLoader(batch_size=None, num_workers=k)`, so every path pays the same
transfer from worker to main process. volumes/s = items / wall time of the loop (worker start-up included).
Peak RSS: `largest process` is ru_maxrss from `os.wait4` of that row's subprocess (the maximum over the main
process and its reaped DataLoader workers: the per-worker figure); `all processes` is the largest sum of RSS over
the subprocess and its workers, sampled every 50 ms with psutil (shared pages such as the page-cache-backed memory
maps count once per process that touches them, so this sum overstates physical memory).

Last, the training step's consumption rate: the default `python -m medvl.train` config (composed with Hydra)
on 16 demo cases, samples/s of its training step (as benchmarks/bench_medvl_train.py times it) beside the
samples/s of its own train DataLoader (cached, with its augmentation and collate, at the config's
`data.num_workers`), so "the loader keeps up" is a number. `--train-steps 0` skips it.

On a shared machine other processes slow every row; the load average is printed with the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "ct" / "example_ct.nii.gz"
FULL_SHAPE = (512, 512, 224)
SOURCE_SPACING = (0.7, 0.7, 1.25)
TARGET_SPACING = (0.75, 0.75, 1.5)
FULL_TARGET_SIZE = (480, 480, 240)
HU_RANGE = (-1000.0, 1000.0)
NOISE_HU = 10.0
PATHS = ("ctclip", "uncached", "cached", "dicom")


# --------------------------------------------------------------------------------------------------------------
# CT-CLIP's loader logic (re-implemented from its description: get_fdata, trilinear resize, clip, crop / pad)
# --------------------------------------------------------------------------------------------------------------
def center_crop_or_pad(volume: "torch.Tensor", size: tuple[int, int, int], fill: float) -> "torch.Tensor":
    """Centre crop each axis longer than `size`, then pad each shorter one with `fill` (extra voxel after).

    Shapes:
        volume: (X, Y, Z) -> (size[0], size[1], size[2]), same dtype.
    """
    import torch

    slices = []
    for n, target in zip(volume.shape, size):
        start = max((n - target) // 2, 0)
        slices.append(slice(start, start + min(n, target)))
    cropped = volume[tuple(slices)]
    if tuple(cropped.shape) == tuple(size):
        return cropped
    out = torch.full(size, fill, dtype=volume.dtype)
    offsets = [(target - n) // 2 for n, target in zip(cropped.shape, size)]
    out[tuple(slice(o, o + n) for o, n in zip(offsets, cropped.shape))] = cropped
    return out


def ctclip_load(path: str | Path, target_spacing=TARGET_SPACING, size=FULL_TARGET_SIZE) -> "torch.Tensor":
    """CT-CLIP's per-item preprocessing: HU volume -> (1, X', Y', Z') float32, air = -1, +1000 HU = 1.

    nibabel `get_fdata()` (float64, scaled by the header's slope / intercept), trilinear resize of the whole array
    from the header spacing to `target_spacing` (torch `interpolate`, align_corners=False, in the array's float64),
    clip to [-1000, 1000] HU, divide by 1000, centre crop / pad to `size` with -1 (air). Orientation is left as
    stored (CT-CLIP transposes axes but does not reorient).
    """
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    image = nib.load(str(path))
    hu = image.get_fdata()  # float64
    spacing = [float(s) for s in image.header.get_zooms()[:3]]
    shape = [int(round(n * s / t)) for n, s, t in zip(hu.shape, spacing, target_spacing)]
    volume = torch.from_numpy(hu)[None, None]  # (X, Y, Z) -> (1, 1, X, Y, Z) for interpolate
    volume = F.interpolate(volume, size=shape, mode="trilinear", align_corners=False)[0, 0]
    volume = volume.clamp_(*HU_RANGE).div_(1000.0)
    return center_crop_or_pad(volume, tuple(size), fill=-1.0).to(torch.float32)[None]


# --------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------
def geometry(size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(input shape, output spatial size) at `--size`: the full-size geometry scaled by size / 512."""
    f = size / FULL_SHAPE[0]
    shape = (size, size, max(2, round(FULL_SHAPE[2] * f)))
    target = tuple(max(2, round(n * f)) for n in FULL_TARGET_SIZE)
    return shape, target  # type: ignore[return-value]


def _template(shape: tuple[int, int, int]) -> np.ndarray:
    """float32 HU template of `shape`: the real example CT resized to it, or a procedural phantom."""
    import torch
    import torch.nn.functional as F

    if REAL_CT.is_file():
        import nibabel as nib

        real = np.asarray(nib.load(str(REAL_CT)).dataobj, dtype=np.float32)
        t = torch.from_numpy(real)[None, None]
        return F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1.0
    hu[body] = 40.0
    for cx in (-0.4, 0.4):
        hu[((x - cx) / 0.3) ** 2 + (y / 0.4) ** 2 + (z / 0.9) ** 2 < 1.0] = -850.0
    hu[(x / 0.08) ** 2 + ((y + 0.5) / 0.08) ** 2 < 1.0] = 700.0
    return hu


def write_inputs(folder: Path, count: int, size: int, dicom: bool) -> list[Path]:
    """Write `count` int16 .nii.gz volumes (and their DICOM series when `dicom`); returns the NIfTI paths."""
    import nibabel as nib

    shape, _ = geometry(size)
    folder.mkdir(parents=True, exist_ok=True)
    template = None
    paths = []
    affine = np.diag([*SOURCE_SPACING, 1.0])
    for i in range(count):
        path = folder / f"vol{i:02d}.nii.gz"
        paths.append(path)
        if path.is_file() and (not dicom or (folder / f"dicom_j2k_{i:02d}").is_dir()):
            continue
        if template is None:
            template = _template(shape)
        rng = np.random.default_rng(i)
        hu = template + rng.normal(0.0, NOISE_HU, size=shape).astype(np.float32)
        stored = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        image = nib.Nifti1Image(stored, affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, str(path))
        if dicom:
            from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

            write_dicom_series(folder / f"dicom_raw_{i:02d}", stored, ExplicitVRLittleEndian, i)
            write_dicom_series(folder / f"dicom_j2k_{i:02d}", stored, JPEG2000Lossless, i)
    return paths


def write_dicom_series(folder: Path, stored: np.ndarray, transfer_syntax: str, seed: int) -> None:
    """One axial CT series of `stored` (X, Y, Z) int16 HU, one file per z, LPS geometry of the NIfTI's grid.

    NIfTI voxel (i, j, k) sits at RAS (i * sx, j * sy, k * sz) = LPS (-i * sx, -j * sy, k * sz): written as
    columns = i (row direction (-1, 0, 0)) and rows = j (column direction (0, -1, 0)), the same world grid.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[folder.name, str(seed)])
    sx, sy, sz = SOURCE_SPACING
    for k in range(stored.shape[2]):
        uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["bench-study", str(seed)])
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, round(k * sz, 4)]
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        ds.PixelSpacing = [sy, sx]  # (row spacing, column spacing)
        ds.SliceThickness = sz
        plane = np.ascontiguousarray(stored[:, :, k].T)  # (X, Y) -> (rows = Y, columns = X)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, 0.0, "HU"
        ds.PixelData = plane.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        ds.save_as(folder / f"IM{k:05d}.dcm", enforce_file_format=True)


# --------------------------------------------------------------------------------------------------------------
# one measured path (runs in its own subprocess)
# --------------------------------------------------------------------------------------------------------------
class _Items:
    """Map-style dataset: item i = fn(sources[i % len(sources)]), `repeats` passes."""

    def __init__(self, fn, sources: list, repeats: int = 1) -> None:
        self.fn, self.sources, self.repeats = fn, sources, repeats

    def __len__(self) -> int:
        return len(self.sources) * self.repeats

    def __getitem__(self, i: int):
        return self.fn(self.sources[i % len(self.sources)])


def _zero(_: Any) -> int:
    return 0


def _decode_series(folder: Path) -> np.ndarray:
    from medvl.data.volume import load_volume

    return load_volume(folder).array


def _dataset_image(dataset, i: int):
    return dataset[i]["image"]


def _records(paths: list[Path]):
    from medvl.data.manifest import ManifestRecord

    return [ManifestRecord(study_id=f"s{i}", patient_id=f"p{i}", volume_path=p, report="No findings.")
            for i, p in enumerate(paths)]


def _preprocess_config(target: tuple[int, int, int]):
    from medvl.data.transforms import PreprocessConfig

    return PreprocessConfig(orientation="RAS", spacing=TARGET_SPACING, hu_window=HU_RANGE, spatial_size=target)


def build_items(path_name: str, work: Path, size: int, count: int, cached_repeats: int):
    """The dataset a row iterates (the child builds it; nothing is loaded yet)."""
    import functools

    _, target = geometry(size)
    nifti = [work / f"vol{i:02d}.nii.gz" for i in range(count)]
    if path_name == "baseline":
        import medvl.data.dataset  # noqa: F401  (the imports every other row pays)

        return _Items(_zero, nifti[:1])
    if path_name == "ctclip":
        return _Items(functools.partial(ctclip_load, size=target), nifti)
    if path_name in ("dicom_raw", "dicom_j2k"):
        series = [work / f"{path_name}_{i:02d}" for i in range(count)]
        return _Items(_decode_series, series)
    from medvl.data.dataset import CTReportDataset

    cache_dir = work / "cache" if path_name == "cached" else None
    dataset = CTReportDataset(_records(nifti), _preprocess_config(target), cache_dir=cache_dir)
    repeats = cached_repeats if path_name == "cached" else 1
    return _Items(functools.partial(_dataset_image, dataset), list(range(count)), repeats)


def child_main(args: argparse.Namespace) -> None:
    """Run one row: iterate its DataLoader, print {"items", "seconds", "shape", "dtype"} as JSON."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    work = Path(args.work_dir)
    if args.child == "fill_cache":
        items = build_items("cached", work, args.size, args.volumes, 1)
        for i in range(args.volumes):
            items[i]
        print(json.dumps({"items": args.volumes}))
        return
    items = build_items(args.child, work, args.size, args.volumes, args.cached_repeats)
    import resource

    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # after every import (Linux: KiB)
    loader = DataLoader(items, batch_size=None, num_workers=args.child_workers, shuffle=False)
    start = time.perf_counter()
    n, shape, dtype = 0, None, None
    for out in loader:
        n += 1
        shape, dtype = tuple(getattr(out, "shape", ())), str(getattr(out, "dtype", type(out).__name__))
        del out
    seconds = time.perf_counter() - start
    print(json.dumps({"items": n, "seconds": seconds, "shape": shape, "dtype": dtype, "floor": floor}))


# --------------------------------------------------------------------------------------------------------------
# parent: one subprocess per row, RSS by wait4 and by sampling
# --------------------------------------------------------------------------------------------------------------
def _sample_tree_rss(pid: int, stop: threading.Event, result: list[int]) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            total = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            result[0] = max(result[0], total)
        except psutil.Error:
            pass
        stop.wait(0.05)


def run_child(name: str, workers: int, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Run one row in a fresh interpreter; its JSON result plus peak RSS (largest process, sampled sum)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-workers", str(workers),
           "--work-dir", str(args.work_dir), "--size", str(args.size), "--volumes", str(args.volumes),
           "--cached-repeats", str(args.cached_repeats)]
    env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    stop, tree = threading.Event(), [0]
    sampler = threading.Thread(target=_sample_tree_rss, args=(proc.pid, stop, tree), daemon=True)
    sampler.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"row {name} (workers={workers}) failed with exit code {proc.returncode}:\n"
                           f"{err.decode(errors='replace')[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["maxrss"] = usage.ru_maxrss * 1024  # Linux: KiB
    result["tree_rss"] = tree[0]
    return result


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def train_consumption(steps: int, root: Path) -> dict[str, Any]:
    """Samples/s of the default config's training step and of its own train DataLoader (see the docstring)."""
    import statistics

    import lightning as L
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_medvl_train import make_train_step  # the same step as the training benchmark

    overrides = [f"paths.root_dir={root}", f"paths.output_dir={root / 'outputs'}", "data.demo.num_cases=16"]
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_train", overrides=overrides)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batch = next(iter(loader))  # fills the cache of the batch's cases (not timed)
    for _ in loader:  # fill the rest of the cache
        pass
    start, samples = time.perf_counter(), 0
    for b in loader:
        samples += int(b["image"].shape[0])
    loader_rate = samples / (time.perf_counter() - start)
    model = instantiate(cfg.model, **datamodule.model_kwargs())
    model.train()
    step, _ = make_train_step(cfg, model, batch, torch.device("cpu"), "fp32")
    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    bsz = int(batch["image"].shape[0])
    return {
        "model": cfg.model.get("_target_", "?"), "volume_encoder": cfg.model.volume_encoder.get("_target_", "?"),
        "shape": tuple(batch["image"].shape), "step_rate": bsz / statistics.median(times),
        "loader_rate": loader_rate, "loader_workers": int(cfg.data.num_workers), "threads": torch.get_num_threads(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="in-plane voxels of the inputs (default 512: "
                        "512x512x224 -> 480x480x240); smaller sizes scale the whole geometry by size/512")
    parser.add_argument("--volumes", type=int, default=6, help="input volumes (default 6)")
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader num_workers (default 1,2)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"rows among {PATHS} (default: all)")
    parser.add_argument("--cached-repeats", type=int, default=5, help="passes over the cached set (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per process (default 1)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (0: skip; default 3)")
    parser.add_argument("--work-dir", default=None, help="folder for inputs and cache (kept; default: temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size < 8:
        parser.error(f"--size must be >= 8, got {args.size}")
    if args.volumes < 1 or args.cached_repeats < 1:
        parser.error("--volumes and --cached-repeats must be >= 1")
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not args.workers or min(args.workers) < 0:
        parser.error(f"--workers must list counts >= 0, got {args.workers}")
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"--paths: unknown {unknown}; choose from {PATHS}")
    return args


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child_main(args)
        return
    from common.benchmarking import print_table

    with tempfile.TemporaryDirectory(prefix="bench_medvl_data_") as tmp:
        args.work_dir = Path(args.work_dir).resolve() if args.work_dir else Path(tmp)
        load_start = os.getloadavg()
        t0 = time.perf_counter()
        write_inputs(args.work_dir, args.volumes, args.size, dicom="dicom" in args.paths)
        written_s = time.perf_counter() - t0
        if "cached" in args.paths:
            run_child("fill_cache", 0, args, args.threads)
        rows_spec = [("baseline", 0)]
        for name in args.paths:
            for sub in (("dicom_raw", "dicom_j2k") if name == "dicom" else (name,)):
                rows_spec += [(sub, w) for w in args.workers]
        results = {}
        for name, workers in rows_spec:
            results[(name, workers)] = run_child(name, workers, args, args.threads)
            r = results[(name, workers)]
            print(f"  {name} workers={workers}: {r.get('items')} items in {r.get('seconds', 0):.2f} s, "
                  f"maxrss {_gb(r['maxrss'])}", file=sys.stderr, flush=True)
        train = train_consumption(args.train_steps, args.work_dir / "train") if args.train_steps > 0 else None
        load_end = os.getloadavg()

    shape, target = geometry(args.size)
    labels = {
        "baseline": "imports only (torch, MONAI, medvl)", "ctclip": "CT-CLIP's per-item loader logic",
        "uncached": "this project, uncached", "cached": "this project, cached (unorm16)",
        "dicom_raw": "DICOM series decode, uncompressed", "dicom_j2k": "DICOM series decode, JPEG 2000 lossless",
    }
    reference = {w: results.get(("ctclip", w)) for w in args.workers}
    rows = []
    for (name, workers), r in results.items():
        rate = r["items"] / r["seconds"] if r.get("seconds") else float("nan")
        ref = reference.get(workers)
        if name == "baseline":
            vs_rate = vs_mem = ""
        elif ref is not None:
            vs_rate = f"{rate / (ref['items'] / ref['seconds']):.2f}x"
            vs_mem = f"{r['maxrss'] / ref['maxrss']:.2f}x"
        else:
            vs_rate = vs_mem = "n/a"
        above = r["maxrss"] - r["floor"]
        ref_above = ref["maxrss"] - ref["floor"] if ref is not None else 0
        vs_above = f"{above / ref_above:.2f}x" if ref_above > 0 and name != "baseline" else ""
        rows.append([labels[name], workers if name != "baseline" else "-", r["items"],
                     f"{rate:.2f}" if name != "baseline" else "", vs_rate, _gb(r["maxrss"]), vs_mem,
                     _gb(r["floor"]), _gb(above), vs_above, _gb(r["tree_rss"]),
                     "x".join(map(str, r.get("shape") or ())), r.get("dtype", "").removeprefix("torch.")])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.threads} thread(s) per process; "
          f"inputs written in {written_s:.0f} s")
    print_table(
        f"CT loading: {args.volumes} int16 .nii.gz volumes {'x'.join(map(str, shape))} at "
        f"{'x'.join(map(str, SOURCE_SPACING))} mm -> {'x'.join(map(str, TARGET_SPACING))} mm, "
        f"crop/pad {'x'.join(map(str, target))}",
        ["path", "workers", "items", "volumes/s", "vs CT-CLIP", "peak RSS (largest process)", "vs CT-CLIP",
         "RSS after imports", "peak above imports", "vs CT-CLIP", "peak RSS (all processes, sampled)",
         "item shape", "dtype"],
        rows,
        caption=(
            f"cached: {args.cached_repeats} passes over the warm cache. 'RSS after imports': the row's process "
            "before its first item (`import monai` alone is ~0.5 GB: MONAI imports all its submodules); DataLoader "
            "workers are forked from it. 'vs CT-CLIP' compares with the CT-CLIP row "
            "of the same worker count. Goals (issue 15): uncached >= 1x at <= 0.5x memory; cached >= 30x at "
            f"<= 0.25x per worker. Load average (1 min) {load_start[0]:.2f} at start, {load_end[0]:.2f} at end "
            f"on {os.cpu_count()} cores: other processes share them, so rates are lower bounds."
        ),
    )
    if train is not None:
        print_table(
            "training step consumption (default `python -m medvl.train` config, CPU, fp32)",
            ["model / volume encoder", "batch shape", "training step samples/s", "its train DataLoader samples/s",
             "loader workers", "loader / step"],
            [[f"{train['model'].rsplit('.', 1)[-1]} / {train['volume_encoder'].rsplit('.', 1)[-1]}",
              "x".join(map(str, train["shape"])), f"{train['step_rate']:.1f}", f"{train['loader_rate']:.1f}",
              train["loader_workers"], f"{train['loader_rate'] / train['step_rate']:.1f}x"]],
            caption=(f"{args.train_steps} timed steps (median), {train['threads']} torch thread(s); the loader "
                     "reads its warm cache with the config's augmentation and collate. loader / step >= 1: the "
                     "loader keeps up."),
        )


if __name__ == "__main__":
    main()
