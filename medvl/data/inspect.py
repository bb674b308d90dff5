"""`python -m medvl.data.inspect PATH`: print a JSON summary of a DICOM series folder or a NIfTI file.

Example:
    python -m medvl.data.inspect /data/ct/case_001/            # DICOM folder
    python -m medvl.data.inspect scan.nii.gz
    python -m medvl.data.inspect /data/mixed/ --series-uid 1.2.840...   # folder with several series

Bad paths and unreadable data exit with code 2 and a one-line message naming the path. The summary never
holds patient identifiers. Voxels that are NaN or infinite are counted ("n_nan", "n_posinf", "n_neginf";
"hu_min" / "hu_max" are then those of the finite voxels) and a warning on stderr says so: training refuses
such a volume.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

import numpy as np

from medvl.data.volume import Volume, VolumeReadError, load_volume


def summarize_volume(volume: Volume) -> dict[str, Any]:
    """JSON-ready summary: geometry, HU range and the DICOM series facts (from `Volume.meta`).

    Returns:
        {"path", "format", "shape", "spacing", "orientation", "hu_min", "hu_max" (of the finite voxels),
        "n_nan", "n_posinf", "n_neginf", "series_uid", "series_description", "modality", "transfer_syntaxes",
        "n_slices", "n_slices_skipped", "slices_skipped", "other_series", "resampled"}; DICOM-only entries are
        None for NIfTI.
    """
    meta = volume.meta
    is_finite = np.isfinite(volume.array)
    finite = volume.array[is_finite]
    skipped = list(meta.get("slices_skipped", []))
    return {
        "path": meta.get("source"),
        "format": meta.get("format"),
        "shape": [int(n) for n in volume.array.shape],
        "spacing": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "hu_min": float(finite.min()) if finite.size else None,
        "hu_max": float(finite.max()) if finite.size else None,
        "n_nan": int(np.isnan(volume.array).sum()),
        "n_posinf": int(np.isposinf(volume.array).sum()),
        "n_neginf": int(np.isneginf(volume.array).sum()),
        "series_uid": meta.get("series_uid"),
        "series_description": meta.get("series_description"),
        "modality": meta.get("modality"),
        "transfer_syntaxes": meta.get("transfer_syntaxes"),
        "n_slices": meta.get("n_slices"),
        "n_slices_skipped": len(skipped),
        "slices_skipped": skipped,
        "other_series": meta.get("other_series", []),
        "resampled": meta.get("resampled_from") is not None,
    }


def non_finite_message(summary: dict[str, Any]) -> str | None:
    """A sentence about the NaN / infinite voxels of a `summarize_volume` summary, or None when there are none."""
    n_bad = summary["n_nan"] + summary["n_posinf"] + summary["n_neginf"]
    if not n_bad:
        return None
    total = int(np.prod(summary["shape"]))
    finite_range = (
        f"hu_min / hu_max ({summary['hu_min']}, {summary['hu_max']}) are those of the finite voxels only"
        if summary["hu_min"] is not None else "no voxel is finite"
    )
    return (
        f"{summary['path']}: {n_bad} of {total} voxels are not finite ({summary['n_nan']} NaN, "
        f"{summary['n_posinf']} +inf, {summary['n_neginf']} -inf); {finite_range}; training refuses this volume"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvl.data.inspect",
        description="Print a JSON summary (shape, spacing, orientation, HU range, series, skipped slices) "
        "of a DICOM series folder or a NIfTI file.",
    )
    parser.add_argument("path", help="a folder of DICOM slice files, or a .nii / .nii.gz file")
    parser.add_argument("--series-uid", default=None, help="SeriesInstanceUID to read when the folder holds several")
    parser.add_argument(
        "--allow-uneven-spacing",
        action="store_true",
        help="resample unevenly spaced slices to the median spacing instead of failing",
    )
    parser.add_argument(
        "--stored-values-are-hu",
        action="store_true",
        help="accept CT DICOM files without RescaleSlope / RescaleIntercept, taking their stored values as HU "
        "(without this flag such files are an error)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 for unreadable input)."""
    args = _parser().parse_args(argv)
    prog = "medvl.data.inspect"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volume = load_volume(
                args.path, series_uid=args.series_uid, allow_uneven_spacing=args.allow_uneven_spacing,
                stored_values_are_hu=args.stored_values_are_hu,
            )
        except VolumeReadError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    for warning in caught:
        print(f"{prog}: warning: {warning.message}", file=sys.stderr)
    summary = summarize_volume(volume)
    non_finite = non_finite_message(summary)
    if non_finite is not None:
        print(f"{prog}: warning: {non_finite}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
