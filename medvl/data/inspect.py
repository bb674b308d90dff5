"""`python -m medvl.data.inspect PATH`: print a JSON summary of a DICOM series folder or a NIfTI file.

Example:
    python -m medvl.data.inspect /data/ct/case_001/            # DICOM folder
    python -m medvl.data.inspect scan.nii.gz
    python -m medvl.data.inspect /data/mixed/ --series-uid 1.2.840...   # folder with several series

Bad paths and unreadable data exit with code 2 and a one-line message naming the path. The summary never
holds patient identifiers.
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
        {"path", "format", "shape", "spacing", "orientation", "hu_min", "hu_max", "series_uid",
        "series_description", "modality", "transfer_syntaxes", "n_slices", "n_slices_skipped",
        "slices_skipped", "other_series", "resampled"}; DICOM-only entries are None for NIfTI.
    """
    meta = volume.meta
    finite = volume.array[np.isfinite(volume.array)]
    skipped = list(meta.get("slices_skipped", []))
    return {
        "path": meta.get("source"),
        "format": meta.get("format"),
        "shape": [int(n) for n in volume.array.shape],
        "spacing": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "hu_min": float(finite.min()) if finite.size else None,
        "hu_max": float(finite.max()) if finite.size else None,
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
    print(json.dumps(summarize_volume(volume), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
