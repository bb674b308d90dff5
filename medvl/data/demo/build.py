"""Build the demo CT + report dataset on disk (NIfTI + manifest.jsonl), and reuse it across runs.

`build_demo_dataset` writes a dataset into an empty folder; `ensure_demo_dataset` is what training
calls: it returns the existing build when `dataset_info.json` records the same arguments and version,
and otherwise rebuilds under an exclusive file lock into a temporary folder that is renamed into place,
so concurrent callers (several DDP ranks, two jobs) never see a half-written dataset.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.build_once import build_folder_once, read_json_file
from medvl.data.demo.findings import FINDING_NAMES, Finding, InsertionContext, insert_findings, sample_finding_plan
from medvl.data.demo.phantom import ORGAN_LABELS, generate_phantom
from medvl.data.demo.real_anatomy import RealAnatomy, available_real_findings, load_real_anatomy
from medvl.data.demo.report_writer import PHRASINGS, Report, write_report

log = logging.getLogger(__name__)

#: Bump when the generated data changes for the same arguments (ensure_demo_dataset then rebuilds).
DEMO_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "dataset_info.json"
README_NAME = "README.txt"
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
NORMAL_FRACTION = 0.3
_PHANTOM_HU_RANGE = (-1024, 3071)  # the 12-bit range of CT scanners


@dataclass
class DemoCase:
    """One generated study, ready to write.

    Attributes:
        study_id, patient_id, split: identifiers (synthetic, no real patient data) and the split.
        hu: int16 (X, Y, Z) HU volume; organs: int16 organ label map; finding_mask: uint8 (0 = none,
            k = the finding with `mask_id` k).
        affine: (4, 4) voxel -> RAS mm.
        findings, labels, report: ground truth and the report written from it.
        extras: further manifest fields (contrast phase, noise level, anatomy source, ...).
    """

    study_id: str
    patient_id: str
    split: str
    hu: np.ndarray
    organs: np.ndarray
    finding_mask: np.ndarray
    affine: np.ndarray
    findings: list[Finding]
    labels: dict[str, int]
    report: Report
    extras: dict


def assign_splits(num_patients: int, seed: int) -> list[str]:
    """Split of each patient index: a seeded permutation cut 70/15/15 (val and test get at least one
    patient each once there are 3 or more patients)."""
    n_val = round(SPLIT_FRACTIONS["val"] * num_patients)
    n_test = round(SPLIT_FRACTIONS["test"] * num_patients)
    if num_patients >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_patients)
    splits = ["train"] * num_patients
    for rank, patient in enumerate(order):
        if rank < n_val:
            splits[patient] = "val"
        elif rank < n_val + n_test:
            splits[patient] = "test"
    return splits


def _phrasing_set(split: str, holdout_phrasings: bool) -> str:
    if not holdout_phrasings:
        return "all"
    return "test" if split == "test" else "train"


def _case_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, case, purpose): a case never depends on how many cases are built."""
    return np.random.default_rng([seed, index, stream])


def make_phantom_case(index: int, *, seed: int, size: int, spacing_mm: float, split: str,
                      holdout_phrasings: bool, anatomy_variation: float = 1.0, lesion_scale: float = 1.0) -> DemoCase:
    """Generate phantom case `index`: plan findings, build anatomy, insert findings, add noise, report."""
    plan = sample_finding_plan(_case_rng(seed, index, 0), FINDING_NAMES, NORMAL_FRACTION)
    phantom = generate_phantom(size, spacing_mm, _case_rng(seed, index, 1), splenomegaly="splenomegaly" in plan,
                               anatomy_variation=anatomy_variation)
    finding_mask = np.zeros(phantom.hu.shape, dtype=np.uint8)
    ctx = InsertionContext(phantom.hu, phantom.organs, ORGAN_LABELS, (spacing_mm,) * 3, finding_mask,
                           anatomy_scale=phantom.anatomy_scale, lesion_noise_hu=0.0, lesion_scale=lesion_scale)
    findings = insert_findings(ctx, plan, _case_rng(seed, index, 2))
    hu = phantom.hu + _case_rng(seed, index, 3).normal(0.0, phantom.noise_hu, size=phantom.hu.shape).astype(np.float32)
    labels = {name: int(any(f.name == name for f in findings)) for name in FINDING_NAMES}
    report = write_report(findings, labels, _case_rng(seed, index, 4),
                          phrasing_set=_phrasing_set(split, holdout_phrasings),
                          contrast_phase=phantom.contrast_phase, include_context=True)
    return DemoCase(
        study_id=f"demo_{index:05d}",
        patient_id=f"demo_patient_{index:05d}",
        split=split,
        hu=np.clip(np.rint(hu), *_PHANTOM_HU_RANGE).astype(np.int16),
        organs=phantom.organs,
        finding_mask=finding_mask,
        affine=phantom.affine,
        findings=findings,
        labels=labels,
        report=report,
        extras={"anatomy": "phantom", "contrast_phase": phantom.contrast_phase,
                "noise_hu": round(phantom.noise_hu, 2), "anatomy_scale": round(phantom.anatomy_scale, 4)},
    )


def make_real_case(index: int, anatomy: RealAnatomy, *, seed: int, split: str, holdout_phrasings: bool,
                   lesion_scale: float = 1.0) -> DemoCase:
    """Variant `index` of a real CT: findings inserted into its real organs (noise matched to the organ)."""
    available = available_real_findings(anatomy)
    plan = sample_finding_plan(_case_rng(seed, index, 0), available, NORMAL_FRACTION)
    hu = anatomy.hu.copy()
    finding_mask = np.zeros(hu.shape, dtype=np.uint8)
    ctx = InsertionContext(hu, anatomy.organs, ORGAN_LABELS, anatomy.spacing_mm, finding_mask,
                           anatomy_scale=1.0, lesion_noise_hu=None, lesion_scale=lesion_scale)
    findings = insert_findings(ctx, plan, _case_rng(seed, index, 2))
    # Only findings we could have inserted are labelled; the others are unknown for a real patient.
    labels = {name: int(any(f.name == name for f in findings)) for name in available}
    report = write_report(findings, labels, _case_rng(seed, index, 4),
                          phrasing_set=_phrasing_set(split, holdout_phrasings),
                          contrast_phase=None, include_context=False)
    int16 = np.iinfo(np.int16)
    return DemoCase(
        study_id=f"real_{index:05d}",
        patient_id="real_patient_00000",
        split=split,
        hu=np.clip(np.rint(hu), int16.min, int16.max).astype(np.int16),
        organs=anatomy.organs,
        finding_mask=finding_mask,
        affine=anatomy.affine,
        findings=findings,
        labels=labels,
        report=report,
        extras={"anatomy": "real", "source": anatomy.source},
    )


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def write_case(case: DemoCase, out_dir: Path) -> dict:
    """Write the case's NIfTI files under `out_dir` and return its manifest row (paths relative)."""
    paths = {
        "volume": f"volumes/{case.study_id}.nii.gz",
        "organ_mask": f"organ_masks/{case.study_id}.nii.gz",
        "finding_mask": f"finding_masks/{case.study_id}.nii.gz",
    }
    _save_nifti(case.hu, case.affine, out_dir / paths["volume"])
    _save_nifti(case.organs.astype(np.int16), case.affine, out_dir / paths["organ_mask"])
    _save_nifti(case.finding_mask, case.affine, out_dir / paths["finding_mask"])
    spacing = [round(float(s), 4) for s in np.sqrt((case.affine[:3, :3] ** 2).sum(axis=0))]
    return {
        "study_id": case.study_id,
        "patient_id": case.patient_id,
        "split": case.split,
        "volume": paths["volume"],
        "report": case.report.text,
        "labels": case.labels,
        "organ_mask": paths["organ_mask"],
        "organ_labels": dict(ORGAN_LABELS),
        "finding_mask": paths["finding_mask"],
        "findings": [f.to_json() for f in case.findings],
        "findings_text": case.report.findings_text,
        "impression_text": case.report.impression_text,
        "normal_sentences": case.report.normal_sentences,
        "phrasing_set": case.report.phrasing_set,
        "spacing_mm": spacing,
        "shape": [int(s) for s in case.hu.shape],
        **case.extras,
    }


def _file_fingerprint(path: str | Path) -> dict:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"real-anatomy input file {resolved} does not exist")
    stat = resolved.stat()
    return {"path": str(resolved), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def demo_build_args(*, num_cases: int = 160, size: int = 64, spacing_mm: float = 5.0, seed: int = 0,
                    holdout_phrasings: bool = True, anatomy_variation: float = 1.0, lesion_scale: float = 1.0,
                    real_ct: str | Path | None = None, real_mask: str | Path | None = None,
                    real_labels: str | Path | None = None) -> dict:
    """Check the build arguments and return them as the JSON dict recorded in `dataset_info.json`.

    In real-anatomy mode `size` and `spacing_mm` do not apply (the CT keeps its grid) and are recorded
    as None; the real files are recorded by path, size and modification time.

    Raises:
        ValueError: a bad value, only some of the three real-anatomy files, or a missing file.
    """
    if isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    real = [real_ct, real_mask, real_labels]
    if any(p is not None for p in real) and not all(p is not None for p in real):
        raise ValueError("real-anatomy mode needs all of real_ct, real_mask and real_labels (or none of them)")
    if (isinstance(lesion_scale, bool) or not isinstance(lesion_scale, (int, float, np.floating))
            or not math.isfinite(lesion_scale) or not 0.25 <= lesion_scale <= 4.0):
        raise ValueError(f"lesion_scale must be a number in [0.25, 4], got {lesion_scale!r}")
    args: dict = {"num_cases": int(num_cases), "seed": int(seed), "holdout_phrasings": bool(holdout_phrasings)}
    if lesion_scale != 1.0:  # recorded only when set, so builds made before the option stay current
        args["lesion_scale"] = float(lesion_scale)
    if real_ct is not None:
        args.update(size=None, spacing_mm=None, real_ct=_file_fingerprint(real_ct),
                    real_mask=_file_fingerprint(real_mask), real_labels=_file_fingerprint(real_labels))
        return args
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 512:
        raise ValueError(f"size must be an integer in [16, 512] voxels per axis, got {size!r}")
    if not (isinstance(spacing_mm, (int, float, np.floating)) and math.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"spacing_mm must be a finite number > 0, got {spacing_mm!r}")
    if not (isinstance(anatomy_variation, (int, float, np.floating)) and 0.0 <= anatomy_variation <= 1.0):
        raise ValueError(f"anatomy_variation must be a number in [0, 1], got {anatomy_variation!r}")
    args.update(size=int(size), spacing_mm=float(spacing_mm), real_ct=None, real_mask=None, real_labels=None)
    if anatomy_variation != 1.0:  # recorded only when set, so builds made before the option stay current
        args["anatomy_variation"] = float(anatomy_variation)
    return args


def _readme(args: dict, rows: list[dict]) -> str:
    counts = {split: sum(r["split"] == split for r in rows) for split in SPLIT_FRACTIONS}
    prevalence = "\n".join(
        f"    {name:<30} {sum(r['labels'].get(name, 0) for r in rows):>5} / "
        f"{sum(name in r['labels'] for r in rows)} cases" for name in FINDING_NAMES
    )
    organ_table = "\n".join(f"    {label:>3}  {name}" for name, label in ORGAN_LABELS.items())
    phrasing_counts = "\n".join(
        f"    {key:<45} train {len(sets['train'])}, test {len(sets['test'])}" for key, sets in PHRASINGS.items()
    )
    mode = "real anatomy (findings inserted into a real CT)" if args["real_ct"] else "procedural phantoms"
    return f"""medvl demo CT dataset (version {DEMO_VERSION}), built by medvl.data.demo
=====================================================================
Synthetic data for development and smoke tests; NOT for clinical use. Mode: {mode}.
Build arguments: {json.dumps(args)}
Cases: {len(rows)} (train {counts['train']}, val {counts['val']}, test {counts['test']}), one study per patient;
splits are assigned per patient by a seeded permutation (70/15/15).

Files
  manifest.jsonl        one JSON object per study (fields below); paths are relative to this folder
  volumes/*.nii.gz      CT volume, int16 Hounsfield units, RAS affine (voxel size = spacing in mm)
  organ_masks/*.nii.gz  int16 organ label map (table below), same grid
  finding_masks/*.nii.gz uint8: 0 = no finding, k = voxels of the finding whose mask_id is k
  dataset_info.json     build arguments, version, tables (read by ensure_demo_dataset to reuse the build)

Manifest fields
  study_id, patient_id, split ("train"/"val"/"test"), volume, report ("Findings: ...\\nImpression: ...")
  labels            {{finding name: 0 or 1}}; a finding missing from a real-anatomy case is unknown
  organ_mask, organ_labels ({{organ: label id}}), finding_mask
  findings          one entry per report sentence: name, organ (label name at center_vox), side, lobe,
                    size_mm (diameter / effusion thickness / spleen length, measured on the grid),
                    center_vox [i, j, k], sentence, impression, mask_id, plus count, density, hu, instances
  findings_text, impression_text, normal_sentences ({{finding: negated statement used}}), phrasing_set,
  spacing_mm, shape, anatomy ("phantom"/"real"), contrast_phase, noise_hu, anatomy_scale (phantom)

Findings (positives / cases labelled)
{prevalence}

Organ labels (0 = outside the body, or an unlisted structure in real anatomy)
{organ_table}

Phantom anatomy is drawn in a 320 mm reference field of view and scaled to size x spacing; finding
sizes in reports and in `findings` are measured in mm on the stored grid. About 30% of cases are normal.

Report phrasings: every template key has a "train" and a disjoint "test" list. With
holdout_phrasings=true the test split uses only the "test" phrasings and train/val only the "train"
ones, so no test sentence occurs in a train report; otherwise every split draws from both.
This build: holdout_phrasings={str(args['holdout_phrasings']).lower()}.
{phrasing_counts}
"""


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def build_demo_dataset(out_dir: str | Path, *, num_cases: int = 160, size: int = 64, spacing_mm: float = 5.0,
                       seed: int = 0, holdout_phrasings: bool = True, anatomy_variation: float = 1.0,
                       lesion_scale: float = 1.0, real_ct: str | Path | None = None,
                       real_mask: str | Path | None = None, real_labels: str | Path | None = None,
                       progress: bool = True) -> Path:
    """Write the demo dataset into `out_dir` (created; must be absent or empty) and return its manifest.

    Args:
        out_dir: dataset folder.
        num_cases: studies to generate (phantoms) or variants of the real CT.
        size, spacing_mm: phantom grid `size`^3 voxels of `spacing_mm` (ignored in real-anatomy mode).
        seed: everything (anatomy, findings, noise, reports, splits) is a function of the seed.
        holdout_phrasings: the test split uses held-out report phrasings (see `report_writer`).
        anatomy_variation: phantom anatomy variation in [0, 1] (see `phantom.generate_phantom`; 1 = full).
        lesion_scale: multiplies the diameters of liver lesions, kidney cysts, lung nodules and calcified
            plaques, in [0.25, 4] (1 = reference sizes: 12-35 mm lesions are 2-7 voxels at 5 mm).
        real_ct, real_mask, real_labels: real-anatomy mode (a CT, its label map, its label names JSON).
            All variants come from one patient, so they share one patient_id and the train split.
        progress: show a rich progress bar on stderr.

    Raises:
        ValueError: bad arguments (see `demo_build_args`), or `out_dir` exists and is not empty.
    """
    args = demo_build_args(num_cases=num_cases, size=size, spacing_mm=spacing_mm, seed=seed,
                           holdout_phrasings=holdout_phrasings, anatomy_variation=anatomy_variation,
                           lesion_scale=lesion_scale, real_ct=real_ct, real_mask=real_mask, real_labels=real_labels)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder; build the demo dataset into a new folder")
    for sub in ("volumes", "organ_masks", "finding_masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)

    anatomy = load_real_anatomy(real_ct, real_mask, real_labels) if real_ct is not None else None
    splits = ["train"] * num_cases if anatomy is not None else assign_splits(num_cases, seed)
    rows = []
    with _progress(progress) as bar:
        task = bar.add_task(f"building demo CT dataset in {out_dir.name}", total=num_cases)
        for index in range(num_cases):
            if anatomy is None:
                case = make_phantom_case(index, seed=seed, size=size, spacing_mm=spacing_mm, split=splits[index],
                                         holdout_phrasings=holdout_phrasings, anatomy_variation=anatomy_variation,
                                         lesion_scale=lesion_scale)
            else:
                case = make_real_case(index, anatomy, seed=seed, split=splits[index],
                                      holdout_phrasings=holdout_phrasings, lesion_scale=lesion_scale)
            rows.append(write_case(case, out_dir))
            bar.advance(task)

    manifest = out_dir / MANIFEST_NAME
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out_dir / README_NAME).write_text(_readme(args, rows))
    info = {
        "created_with": "medvl.data.demo",
        "version": DEMO_VERSION,
        "args": args,
        "num_cases": len(rows),
        "split_counts": {split: sum(r["split"] == split for r in rows) for split in SPLIT_FRACTIONS},
        "finding_names": list(FINDING_NAMES),
        "organ_labels": dict(ORGAN_LABELS),
        "phrasing_counts": {key: {s: len(v) for s, v in sets.items()} for key, sets in PHRASINGS.items()},
    }
    # Written last: a folder with dataset_info.json is a complete build.
    (out_dir / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return manifest


def _is_current(root: Path, args: dict) -> bool:
    info = read_json_file(root / INFO_NAME)
    return (info is not None and info.get("version") == DEMO_VERSION and info.get("args") == args
            and (root / MANIFEST_NAME).is_file())


def ensure_demo_dataset(root: str | Path, *, num_cases: int = 160, size: int = 64, spacing_mm: float = 5.0,
                        seed: int = 0, holdout_phrasings: bool = True, anatomy_variation: float = 1.0,
                        lesion_scale: float = 1.0, real_ct: str | Path | None = None,
                        real_mask: str | Path | None = None, real_labels: str | Path | None = None,
                        progress: bool = True, force: bool = False) -> Path:
    """Return `root`/manifest.jsonl, building the dataset first if it is absent, was built with other
    arguments or by another version of this code (or `force`).

    Concurrency: see `common.build_once.build_folder_once` (exclusive lock, build in a temporary sibling
    folder, rename into place; a caller that waited for the lock finds the fresh build).

    Args: as `build_demo_dataset`; `force` rebuilds even when the existing build matches.

    Raises:
        ValueError: bad arguments, or `root` exists, is not empty and is not a demo dataset (never deleted).
    """
    args = demo_build_args(num_cases=num_cases, size=size, spacing_mm=spacing_mm, seed=seed,
                           holdout_phrasings=holdout_phrasings, anatomy_variation=anatomy_variation,
                           lesion_scale=lesion_scale, real_ct=real_ct, real_mask=real_mask, real_labels=real_labels)
    root = build_folder_once(
        root, force=force, what="demo dataset",
        is_current=lambda folder: _is_current(folder, args),
        is_ours=lambda folder: (read_json_file(folder / INFO_NAME) or {}).get("created_with") == "medvl.data.demo",
        build=lambda staging: build_demo_dataset(
            staging, num_cases=num_cases, size=size, spacing_mm=spacing_mm, seed=seed,
            holdout_phrasings=holdout_phrasings, anatomy_variation=anatomy_variation, lesion_scale=lesion_scale,
            real_ct=real_ct, real_mask=real_mask, real_labels=real_labels, progress=progress),
    )
    return root / MANIFEST_NAME
