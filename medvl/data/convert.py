"""`python -m medvl.data.convert DICOM_DIR OUT.nii.gz [--series-uid UID]`: DICOM series -> NIfTI in HU.

The NIfTI keeps the volume's voxel order and its RAS affine (sform, and qform when there is no gantry-tilt
shear), units mm. Nothing from the DICOM headers is written into the NIfTI header (descrip, aux_file,
db_name and intent_name are empty, no extensions), so no patient identifier reaches the file.

Bad paths and unreadable data exit with code 2 and a one-line message naming the path.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from medvl.data.dicom import read_dicom_series
from medvl.data.volume import Volume, VolumeReadError, is_nifti_path, write_nifti


def convert_dicom_to_nifti(
    dicom_dir: str | Path,
    out_path: str | Path,
    *,
    series_uid: str | None = None,
    allow_uneven_spacing: bool = False,
    stored_values_are_hu: bool = False,
) -> Volume:
    """Read a DICOM series folder and write it as NIfTI (`medvl.data.volume.write_nifti`).

    Args:
        dicom_dir: folder of DICOM slice files.
        out_path: output file ending in .nii or .nii.gz (its folder must exist).
        series_uid: SeriesInstanceUID to convert when the folder holds several series.
        allow_uneven_spacing: resample unevenly spaced slices instead of failing.
        stored_values_are_hu: accept CT files without RescaleSlope / RescaleIntercept (stored values = HU).

    Returns:
        The volume that was written.

    Raises:
        VolumeReadError: the folder cannot be read as one series, or the output cannot be written (the
            message names the path).
    """
    out_path = Path(out_path)
    if not is_nifti_path(out_path):
        raise VolumeReadError(f"{out_path}: the output file name must end in .nii or .nii.gz")
    if not out_path.parent.is_dir():
        raise VolumeReadError(f"{out_path}: the output folder {out_path.parent} does not exist")
    volume = read_dicom_series(
        dicom_dir, series_uid=series_uid, allow_uneven_spacing=allow_uneven_spacing,
        stored_values_are_hu=stored_values_are_hu,
    )
    try:
        write_nifti(volume, out_path)
    except OSError as exc:
        raise VolumeReadError(f"{out_path}: cannot write the NIfTI file ({exc.strerror or exc})") from None
    return volume


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvl.data.convert",
        description="Convert a DICOM CT series folder to a NIfTI file in HU with its RAS affine.",
    )
    parser.add_argument("dicom_dir", help="folder of DICOM slice files")
    parser.add_argument("out", help="output file, ending in .nii or .nii.gz")
    parser.add_argument("--series-uid", default=None, help="SeriesInstanceUID to convert when the folder holds several")
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
    """Run the command line; returns the exit code (0, or 2 for unreadable input / unwritable output)."""
    args = _parser().parse_args(argv)
    prog = "medvl.data.convert"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volume = convert_dicom_to_nifti(
                args.dicom_dir, args.out, series_uid=args.series_uid, allow_uneven_spacing=args.allow_uneven_spacing,
                stored_values_are_hu=args.stored_values_are_hu,
            )
        except VolumeReadError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    for warning in caught:
        print(f"{prog}: warning: {warning.message}", file=sys.stderr)
    meta = volume.meta
    print(
        f"wrote {args.out}: shape {meta['shape']}, spacing {meta['spacing']} mm, orientation {meta['orientation']}, "
        f"{meta['n_slices']} slices, {len(meta['slices_skipped'])} skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
