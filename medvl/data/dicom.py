"""Read a folder of single-slice DICOM files (one CT series) into a `Volume` in HU with a RAS affine.

DICOM conventions used here (PS3.3 C.7.6.2):
- ImageOrientationPatient = (r, c): r (first triplet) is the direction of increasing column index (along a
  row), c (second triplet) that of increasing row index; both in LPS+ world (+x Left, +y Posterior).
- PixelSpacing = (row spacing, column spacing): the distance between rows (along c), then between columns
  (along r).
- The world position of pixel (row, col) of a slice is ImagePositionPatient + col * dcol * r + row * drow * c.

The volume's voxel axes are i = column index, j = row index, k = slice, with slices ordered by their
position projected on the normal n = r x c (never by file name or InstanceNumber). Hence, in LPS,
affine[:, 0] = r * dcol, affine[:, 1] = c * drow, affine[:, 2] = step between slices, affine[:, 3] = position
of the first slice; the RAS affine negates its x and y rows.

Stored values are converted to HU exactly once, by `pydicom.pixels.apply_modality_lut` (RescaleSlope /
RescaleIntercept, or a Modality LUT) on the raw decoded pixels: `pydicom.pixels.pixel_array` applies no
rescaling, so nothing here rescales twice.

The rescale is checked per file before decoding (`check_rescale`): a RescaleSlope / RescaleIntercept that is
text, several values, non-finite, or (slope) zero is refused for every modality. A CT file (Modality CT, or a
CT SOP class) without RescaleSlope / RescaleIntercept and without a Modality LUT is refused too, since its
stored values are not known to be HU (read raw, air would be 0 instead of -1000), unless the caller passes
`stored_values_are_hu=True` (the stored values then are taken as HU: slope 1, intercept 0). Other
modalities without a rescale keep their stored values (DICOM makes the rescale optional there).
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medvl.data.phi import collect_identifier_values, scrub, scrub_text
from medvl.data.volume import Volume, VolumeReadError, geometry_meta

# Slice steps may differ from the median step by this fraction of it (DICOM positions are decimal strings
# rounded by the scanner) ...
SPACING_TOLERANCE = 0.01
# ... but never less than this many mm.
MIN_POSITION_TOLERANCE_MM = 0.005
# Two ImageOrientationPatient values are the same orientation when no component differs by more than this.
ORIENTATION_TOLERANCE = 1e-3
# Images whose orientation differs from the majority are skipped as localizers when they are at most this
# share of the series; a larger share is a mixed-orientation series and an error.
MAX_LOCALIZER_FRACTION = 0.25
MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
# Pixel data larger than this is read from the file only when the slice is decoded (saves memory while
# the headers of every file in the folder are examined).
_DEFER_SIZE = "64 KB"
_MAX_POSITIONS_SHOWN = 24
_T = TypeVar("_T")
_CT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
})


class UnevenSpacingWarning(UserWarning):
    """Issued when slices with uneven spacing are resampled (`allow_uneven_spacing=True`)."""


@dataclass
class _ImageFile:
    """One DICOM file with pixel data, its header read (pixel data deferred)."""

    name: str
    ds: Dataset


@dataclass
class _FolderScan:
    """Result of examining every file of a folder: image files and skipped files."""

    images: list[_ImageFile]
    skipped: list[dict[str, str]]
    n_subfolders: int


def _sniff(path: Path) -> tuple[bool, str | None]:
    """(has the DICM preamble, why the file cannot be DICOM or None), from its first bytes.

    A DICOM file has "DICM" at byte 128 (after the preamble); files written without the preamble start
    directly with an element of group 0x0002 (file meta) or 0x0008 (identifying attributes).
    """
    with open(path, "rb") as handle:
        head = handle.read(132)
    if not head:
        return False, "empty file"
    if len(head) == 132 and head[128:132] == b"DICM":
        return True, None
    if len(head) >= 8 and int.from_bytes(head[:2], "little") in (0x0002, 0x0008):
        return False, None
    return False, "not a DICOM file (no DICM preamble and no DICOM element at its start)"


def _sop_class(ds: Dataset) -> UID:
    file_meta = getattr(ds, "file_meta", None) or {}
    return UID(str(ds.get("SOPClassUID", "") or file_meta.get("MediaStorageSOPClassUID", "") or ""))


def _damage_reason(ds: Dataset) -> str | None:
    """Why a file that pydicom parsed (it stops silently at a truncation) is damaged; None when it looks whole."""
    sop_class = _sop_class(ds)
    tags = ds.keys()  # noqa: SIM118 - the tags only: iterating a Dataset would convert every element
    if not sop_class and not any(dictionary_has_tag(tag) for tag in tags):
        return "no readable DICOM attribute"
    if "PixelData" not in ds and "Image Storage" in sop_class.name:
        return f"{sop_class.name} file without pixel data (truncated?)"
    return None


def _non_image_reason(ds: Dataset) -> str | None:
    """Why a parsed, undamaged DICOM file is not a slice of a CT image series; None when it is one."""
    sop_class = _sop_class(ds)
    if sop_class == MEDIA_STORAGE_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory index, not an image)"
    if "PixelData" not in ds:
        kind = sop_class.name if sop_class else "unknown SOP class"
        return f"no pixel data ({kind})"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer / scout image (ImageType contains LOCALIZER)"
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        return f"not a grayscale image (SamplesPerPixel={samples}, e.g. a screen capture)"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return (
            f"multi-frame image ({frames} frames): enhanced multi-frame DICOM is not supported, "
            "only series stored as one slice per file"
        )
    return None


def _scan_folder(folder: Path, identifiers: set[str]) -> _FolderScan:
    """Read the header of every file directly inside `folder` (sorted by name; subfolders are not read).

    Non-DICOM files are skipped (recorded with the reason). A file that claims to be DICOM (preamble) but
    holds no readable attribute, or an image file without pixel data, is damaged: an error, not a skip,
    since skipping it would silently drop a slice.

    Args:
        folder: the folder to examine.
        identifiers: filled with the patient identifier values of every file read (as soon as each is
            read, so that a later error can still be scrubbed of them).

    Raises:
        VolumeReadError: a DICOM file cannot be read, parsed, or is damaged (the message names it).
    """
    images: list[_ImageFile] = []
    skipped: list[dict[str, str]] = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise VolumeReadError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    for path in (p for p in entries if p.is_file()):
        try:
            has_preamble, reason = _sniff(path)
            if reason is None:
                ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_SIZE)
                identifiers |= collect_identifier_values(ds)
                damage = _damage_reason(ds)
                if damage is not None and (has_preamble or _sop_class(ds)):
                    raise VolumeReadError(f"{folder}: DICOM file {path.name} is damaged: {damage}")
                reason = "not a DICOM file (no readable DICOM attribute)" if damage else _non_image_reason(ds)
        except VolumeReadError:
            raise
        except Exception as exc:  # pydicom raises many types for damaged files: report them all with the file
            problem = f"{type(exc).__name__}: {exc}"
            raise VolumeReadError(f"{folder}: cannot read DICOM file {path.name} ({problem})") from None
        if reason is not None:
            skipped.append({"file": path.name, "reason": reason})
        else:
            images.append(_ImageFile(path.name, ds))
    n_subfolders = sum(1 for p in entries if p.is_dir())
    return _FolderScan(images, skipped, n_subfolders)


def _series_uid(image: _ImageFile) -> str:
    return str(image.ds.get("SeriesInstanceUID", "") or "")


def _summarise_series(images: list[_ImageFile]) -> list[dict[str, Any]]:
    """One entry per SeriesInstanceUID: uid, description, modality, number of image files (no patient data)."""
    by_uid: dict[str, list[_ImageFile]] = {}
    for image in images:
        by_uid.setdefault(_series_uid(image), []).append(image)
    return [
        {
            "series_uid": uid,
            "description": str(members[0].ds.get("SeriesDescription", "") or ""),
            "modality": str(members[0].ds.get("Modality", "") or ""),
            "n_images": len(members),
        }
        for uid, members in by_uid.items()
    ]


def _format_series_list(series: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{s['series_uid'] or '(no SeriesInstanceUID)'} ('{s['description']}', {s['n_images']} slices)" for s in series
    )


def list_series(folder: str | Path) -> list[dict[str, Any]]:
    """The image series found in a DICOM folder, without patient data.

    Args:
        folder: a folder of DICOM files.

    Returns:
        One dict per SeriesInstanceUID: {"series_uid", "description", "modality", "n_images"}.

    Raises:
        VolumeReadError: the folder does not exist or a DICOM file in it cannot be parsed.
    """
    folder = _check_folder(Path(folder))

    def summarise(identifiers: set[str]) -> list[dict[str, Any]]:
        return scrub(_summarise_series(_scan_folder(folder, identifiers).images), identifiers)

    return _scrubbed(summarise)


def _check_folder(folder: Path) -> Path:
    if not folder.exists():
        raise VolumeReadError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise VolumeReadError(f"{folder}: not a folder (pass the folder that holds the DICOM slice files)")
    return folder


def _select_series(folder: Path, scan: _FolderScan, series_uid: str | None) -> list[_ImageFile]:
    """The image files of the requested series, or of the only series present."""
    if not scan.images:
        if not scan.skipped:
            hint = ""
            if scan.n_subfolders:
                hint = f" (it has {scan.n_subfolders} subfolder(s): pass the folder that holds the slices)"
            raise VolumeReadError(f"{folder}: folder is empty, no DICOM files found{hint}")
        reasons = Counter(entry["reason"] for entry in scan.skipped)
        summary = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
        raise VolumeReadError(
            f"{folder}: no DICOM image slices found ({len(scan.skipped)} file(s) skipped: {summary})"
        )
    series = _summarise_series(scan.images)
    if series_uid is not None:
        chosen = [image for image in scan.images if _series_uid(image) == series_uid]
        if not chosen:
            raise VolumeReadError(
                f"{folder}: no series with SeriesInstanceUID {series_uid}; "
                f"series found: {_format_series_list(series)}"
            )
        return chosen
    if len(series) > 1:
        raise VolumeReadError(
            f"{folder}: holds {len(series)} image series, choose one with series_uid (--series-uid): "
            f"{_format_series_list(series)}"
        )
    return scan.images


def _required_floats(folder: Path, image: _ImageFile, keyword: str, length: int) -> np.ndarray:
    """A numeric multi-valued attribute as float64, or a VolumeReadError naming the file."""
    try:
        values = np.asarray([float(v) for v in image.ds[keyword].value], dtype=np.float64)
    except KeyError:
        raise VolumeReadError(f"{folder}: {image.name} has no {keyword}: cannot place the slice in space") from None
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(f"{folder}: {image.name} has an unreadable {keyword} ({exc})") from None
    if values.shape != (length,) or not np.isfinite(values).all():
        raise VolumeReadError(
            f"{folder}: {image.name} has an invalid {keyword} {values.tolist()} ({length} numbers expected)"
        )
    return values


def _format_orientation(iop: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in np.round(iop, 3) + 0.0) + "]"


def _drop_off_orientation(
    folder: Path, images: list[_ImageFile], skipped: list[dict[str, str]]
) -> tuple[list[_ImageFile], np.ndarray]:
    """Keep the images of the majority orientation; skip a small minority as localizers, else fail.

    Returns:
        The kept images and the majority ImageOrientationPatient (6,), rows normalised.
    """
    iops = np.stack([_required_floats(folder, image, "ImageOrientationPatient", 6) for image in images])
    groups: list[list[int]] = []
    for index, iop in enumerate(iops):
        for group in groups:
            if np.abs(iops[group[0]] - iop).max() <= ORIENTATION_TOLERANCE:
                group.append(index)
                break
        else:
            groups.append([index])
    groups.sort(key=len, reverse=True)
    majority = groups[0]
    n_off = len(images) - len(majority)
    if n_off and (n_off / len(images) > MAX_LOCALIZER_FRACTION or len(groups[1]) == len(majority)):
        found = "; ".join(
            f"{_format_orientation(iops[g[0]])} ({len(g)} files, e.g. {images[g[0]].name})" for g in groups
        )
        raise VolumeReadError(f"{folder}: mixed slice orientations (ImageOrientationPatient): {found}")
    majority_set = set(majority)
    for index, image in enumerate(images):
        if index not in majority_set:
            skipped.append({
                "file": image.name,
                "reason": (
                    f"orientation {_format_orientation(iops[index])} differs from the series majority "
                    f"{_format_orientation(iops[majority[0]])} (treated as a localizer / scout)"
                ),
            })
    row_dir, col_dir = iops[majority[0], :3], iops[majority[0], 3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 0.01
        or abs(np.linalg.norm(col_dir) - 1) > 0.01
        or abs(float(row_dir @ col_dir)) > 0.01
    ):
        raise VolumeReadError(
            f"{folder}: invalid ImageOrientationPatient {iops[majority[0]].tolist()} in {images[majority[0]].name} "
            "(two orthogonal unit vectors expected)"
        )
    orientation = np.concatenate([row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)])
    return [images[i] for i in majority], orientation


def _check_same(folder: Path, images: list[_ImageFile], what: str, values: list[tuple]) -> None:
    """Fail when the images do not all share one value of an attribute, listing the values and files."""
    counts = Counter(values)
    if len(counts) > 1:
        found = "; ".join(
            f"{'x'.join(f'{v:g}' for v in value)} ({count} files, e.g. "
            f"{next(image.name for image, v in zip(images, values, strict=True) if v == value)})"
            for value, count in counts.most_common()
        )
        raise VolumeReadError(f"{folder}: mixed {what} in one series: {found}")


def _format_positions(positions: np.ndarray) -> str:
    shown = [f"{p:.3f}" for p in positions]
    if len(shown) > _MAX_POSITIONS_SHOWN:
        half = _MAX_POSITIONS_SHOWN // 2
        shown = shown[:half] + [f"... ({len(shown) - 2 * half} more)"] + shown[-half:]
    return "[" + ", ".join(shown) + "]"


def _slice_spacing(
    folder: Path, names: list[str], positions: np.ndarray, allow_uneven_spacing: bool
) -> tuple[float, bool]:
    """Check the sorted slice positions along the normal; return (spacing in mm, whether to resample).

    Raises:
        VolumeReadError: two slices share a position; or the spacing is uneven (a gap from missing slices
            or irregular steps) and `allow_uneven_spacing` is False.
    """
    steps = np.diff(positions)
    median = float(np.median(steps))
    tolerance = max(SPACING_TOLERANCE * median, MIN_POSITION_TOLERANCE_MM)
    duplicates = np.flatnonzero(steps < tolerance)
    if duplicates.size:
        pairs = ", ".join(f"{names[d]} and {names[d + 1]} at {positions[d]:.3f}" for d in duplicates[:5])
        raise VolumeReadError(
            f"{folder}: {duplicates.size} pair(s) of slices at the same position ({pairs}): the series may hold "
            "several acquisitions, echoes or time points; positions along the slice normal (mm): "
            f"{_format_positions(positions)}"
        )
    irregular = np.flatnonzero(np.abs(steps - median) > tolerance)
    if not irregular.size:
        return float((positions[-1] - positions[0]) / (len(positions) - 1)), False
    multiples = np.round(steps / median)
    where = ", ".join(f"{steps[d]:.3f} mm between {positions[d]:.3f} and {positions[d + 1]:.3f}" for d in irregular[:5])
    if np.all(np.abs(steps - multiples * median) <= tolerance):
        n_missing = int((multiples - 1).sum())
        problem = f"missing slice(s): about {n_missing} slice(s) missing, gaps of {where} (expected {median:.3f} mm)"
    else:
        problem = f"uneven slice spacing: steps of {where} (median {median:.3f} mm)"
    if not allow_uneven_spacing:
        raise VolumeReadError(
            f"{folder}: {problem}; positions along the slice normal (mm): {_format_positions(positions)}; "
            f"pass allow_uneven_spacing=True (--allow-uneven-spacing) to resample to {median:.3f} mm "
            "by linear interpolation"
        )
    return median, True


def _check_collinear(folder: Path, ipp: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Direction u of the slice stack, per mm along the normal (u . n = 1), once the slices are checked to
    lie on one line. With gantry tilt u is not parallel to the normal n; the affine's slice column follows u.

    Shapes:
        ipp: (Z, 3) sorted slice positions (LPS); positions: (Z,) their projections on n, Z >= 2.
    """
    direction = (ipp[-1] - ipp[0]) / (positions[-1] - positions[0])
    predicted = ipp[0] + (positions - positions[0])[:, None] * direction[None, :]
    off_line = np.linalg.norm(ipp - predicted, axis=1).max()
    step = float(np.median(np.diff(positions)))
    if off_line > max(SPACING_TOLERANCE * step, MIN_POSITION_TOLERANCE_MM):
        raise VolumeReadError(
            f"{folder}: the slice positions (ImagePositionPatient) do not lie on one line (up to {off_line:.3f} mm "
            "off): the files may belong to different stacks"
        )
    return direction


def is_ct(ds: Dataset) -> bool:
    """True when the file is a CT image: Modality "CT", or (no Modality) a CT SOP class."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return modality == "CT" if modality else str(_sop_class(ds)) in _CT_SOP_CLASSES


def check_rescale(ds: Dataset, where: str, *, stored_values_are_hu: bool = False) -> None:
    """Refuse a rescale that would silently give wrong HU, before the pixels are decoded.

    Args:
        ds: one slice's dataset.
        where: the folder and file, for the message.
        stored_values_are_hu: a CT file without RescaleSlope / RescaleIntercept is accepted, its stored
            values taken as HU (slope 1, intercept 0).

    Raises:
        VolumeReadError: RescaleSlope or RescaleIntercept is not one finite number (text, several values,
            NaN / inf), RescaleSlope is 0 (a constant volume), or a CT file has neither a rescale nor a
            Modality LUT and `stored_values_are_hu` is False. The message names the file and the tag.
    """
    values: dict[str, float] = {}
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds or ds[keyword].is_empty:
            continue
        raw = ds[keyword].value
        try:
            if isinstance(raw, (list, tuple, MultiValue)):
                raise ValueError("several values")
            value = float(raw)
        except (TypeError, ValueError):
            raise VolumeReadError(
                f"{where}: {keyword} (0028,{ds[keyword].tag.element:04X}) is {str(raw)[:40]!r}, not a number: "
                "cannot convert stored values to HU"
            ) from None
        if not np.isfinite(value):
            raise VolumeReadError(f"{where}: {keyword} is {value}, not a finite number: cannot convert to HU")
        values[keyword] = value
    if values.get("RescaleSlope") == 0.0:
        raise VolumeReadError(
            f"{where}: RescaleSlope (0028,1053) is 0: every voxel would have the intercept's value (a constant "
            "volume); the file's rescale is broken"
        )
    missing = [k for k in ("RescaleSlope", "RescaleIntercept") if k not in values]
    if missing and is_ct(ds) and "ModalityLUTSequence" not in ds and not stored_values_are_hu:
        raise VolumeReadError(
            f"{where}: CT file without {' and '.join(missing)}: its stored values are not known to be HU "
            "(read raw, air would be near 0 instead of -1000 HU); if this series' stored values already are "
            "HU, pass stored_values_are_hu=True (--stored-values-are-hu; in training "
            "data.preprocess.stored_values_are_hu=true)"
        )


def _hu_slice(
    folder: Path, image: _ImageFile, rows: int, columns: int, stored_values_are_hu: bool = False
) -> np.ndarray:
    """Decode one slice and convert stored values to HU (modality LUT applied once). Shape (rows, columns)."""
    ds = image.ds
    check_rescale(ds, f"{folder}: {image.name}", stored_values_are_hu=stored_values_are_hu)
    if "TransferSyntaxUID" not in ds.file_meta:
        # Files without the preamble have no file meta: decode with the encoding pydicom detected.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    try:
        stored = pixel_array(ds)  # raw stored values: pydicom applies no rescale here
        # Without RescaleSlope / RescaleIntercept (allowed by `check_rescale`) pydicom returns them unchanged.
        hu = apply_modality_lut(stored, ds)
    except Exception as exc:  # decoders raise many types: report them all with the file and the syntax
        raise VolumeReadError(
            f"{folder}: cannot decode the pixel data of {image.name} (transfer syntax {syntax.name}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        if "PixelData" in ds:
            del ds.PixelData  # the slice is decoded: free its bytes
    if hu.shape != (rows, columns):
        raise VolumeReadError(
            f"{folder}: the pixel data of {image.name} decodes to shape {hu.shape}, expected ({rows}, {columns})"
        )
    return np.asarray(hu, dtype=np.float32)


def _resample_slices(array: np.ndarray, positions: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along the last axis from sorted `positions` onto a regular grid of `spacing`.

    Written out (3 lines) rather than scipy.interpolate.interp1d, which is legacy API and copies the volume.

    Shapes:
        array: (X, Y, Z) -> (X, Y, Z'); positions: (Z,) -> target positions (Z',).
    """
    extent = positions[-1] - positions[0]
    n_target = int(np.floor(extent / spacing + SPACING_TOLERANCE)) + 1
    targets = positions[0] + spacing * np.arange(n_target)
    lower = np.clip(np.searchsorted(positions, targets, side="right") - 1, 0, len(positions) - 2)
    weight = ((targets - positions[lower]) / (positions[lower + 1] - positions[lower])).astype(np.float32)
    resampled = array[..., lower] * (1 - weight) + array[..., lower + 1] * weight
    return resampled.astype(np.float32), targets


def read_dicom_series(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    allow_uneven_spacing: bool = False,
    stored_values_are_hu: bool = False,
) -> Volume:
    """Read one CT series from a folder of single-slice DICOM files.

    Files are examined by content, not by name: files without the DICM preamble are read; non-DICOM
    files, DICOMDIRs, files without pixel data, localizers (ImageType LOCALIZER, or an orientation that
    differs from the series majority) are skipped and listed in meta["slices_skipped"]. Compressed
    transfer syntaxes are decoded by pydicom's plugins (pylibjpeg: JPEG lossless / baseline, JPEG 2000,
    RLE).

    Args:
        folder: the folder holding the slice files (subfolders are not read).
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        allow_uneven_spacing: resample unevenly spaced slices (including gaps left by missing slices) onto
            the median spacing by linear interpolation along the slice axis, with an
            `UnevenSpacingWarning`, instead of failing.
        stored_values_are_hu: accept CT files without RescaleSlope / RescaleIntercept, taking their stored
            values as HU (otherwise such a CT file is an error; see `check_rescale`).

    Returns:
        Volume: array (X=columns, Y=rows, Z=slices) float32 HU; affine float64 voxel -> RAS mm; meta with
        format, source, shape, spacing, orientation, series_uid, series_description, modality,
        transfer_syntaxes, n_slices (slice files used), slices_skipped, other_series and resampled_from
        (None, or the original slice positions along the normal when resampled). No patient identifiers.

    Shapes:
        array: (X, Y, Z).

    Raises:
        VolumeReadError: naming the folder (and file) and the problem: no such folder, empty folder, no
            image, several series and no `series_uid` (the message lists uid, description and number of
            slices of each), a DICOM file that cannot be parsed or decoded, missing geometry attributes,
            mixed image sizes / pixel spacings / orientations, two slices at one position, missing slices
            or uneven spacing (with the positions found), slices that do not lie on one line, a text / zero /
            non-finite RescaleSlope or RescaleIntercept, a CT file without rescale (unless
            `stored_values_are_hu`).
    """
    folder = _check_folder(Path(folder))
    return _scrubbed(
        lambda identifiers: _read_series(folder, identifiers, series_uid, allow_uneven_spacing, stored_values_are_hu)
    )


def _scrubbed(action: Callable[[set[str]], _T]) -> _T:
    """Run `action(identifiers)`, then blank the identifier values it collected out of its error and warnings.

    pydicom's own warnings (e.g. about an invalid value) may quote header values, patient names included,
    so every warning raised while reading is caught and re-issued scrubbed.
    """
    identifiers: set[str] = set()
    error: VolumeReadError | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action(identifiers)
        except VolumeReadError as exc:
            error = exc
    for warning in caught:
        warnings.warn(scrub_text(str(warning.message), identifiers), warning.category, stacklevel=3)
    if error is not None:
        raise VolumeReadError(scrub_text(str(error), identifiers)) from None
    return result


def _read_series(
    folder: Path, identifiers: set[str], series_uid: str | None, allow_uneven_spacing: bool,
    stored_values_are_hu: bool = False,
) -> Volume:
    scan = _scan_folder(folder, identifiers)
    skipped = list(scan.skipped)
    images = _select_series(folder, scan, series_uid)
    chosen_uid = _series_uid(images[0])
    images, orientation = _drop_off_orientation(folder, images, skipped)
    sizes = [(int(image.ds.get("Rows") or 0), int(image.ds.get("Columns") or 0)) for image in images]
    _check_same(folder, images, "image sizes (rows x columns)", sizes)
    rows, columns = sizes[0]
    if rows == 0 or columns == 0:
        raise VolumeReadError(f"{folder}: {images[0].name} has no Rows / Columns")
    pixel_spacings = [tuple(_required_floats(folder, image, "PixelSpacing", 2).round(4)) for image in images]
    _check_same(folder, images, "pixel spacings (row x column mm)", pixel_spacings)
    row_spacing, column_spacing = _required_floats(folder, images[0], "PixelSpacing", 2)
    if row_spacing <= 0 or column_spacing <= 0:
        raise VolumeReadError(
            f"{folder}: {images[0].name} has a non-positive PixelSpacing {[row_spacing, column_spacing]}"
        )

    # Order slices by position along the normal n = r x c (LPS).
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    ipp = np.stack([_required_floats(folder, image, "ImagePositionPatient", 3) for image in images])
    order = np.argsort(ipp @ normal, kind="stable")
    images = [images[i] for i in order]
    ipp = ipp[order]
    positions = ipp @ normal
    names = [image.name for image in images]

    if len(images) > 1:
        spacing, resample = _slice_spacing(folder, names, positions, allow_uneven_spacing)
        direction = _check_collinear(folder, ipp, positions)
    else:  # one slice: its thickness is the only spacing there is
        spacing = float(images[0].ds.get("SpacingBetweenSlices") or images[0].ds.get("SliceThickness") or 1.0)
        resample, direction = False, normal

    # Z slices of (rows, columns) -> (columns, rows, Z) = (X, Y, Z): i = column index, j = row index.
    # Filled slice by slice into one buffer: the volume is never held twice.
    array = np.empty((columns, rows, len(images)), dtype=np.float32)
    for k, image in enumerate(images):
        array[:, :, k] = _hu_slice(folder, image, rows, columns, stored_values_are_hu).T
    resampled_from = None
    if resample:
        n_before = array.shape[2]
        array, _ = _resample_slices(array, positions, spacing)
        resampled_from = [round(float(p), 4) for p in positions]
        warnings.warn(
            f"{folder}: uneven slice spacing, resampled {n_before} slices to {array.shape[2]} slices at "
            f"{spacing:.3f} mm by linear interpolation along the slice axis",
            UnevenSpacingWarning,
            stacklevel=2,
        )
        slice_step = direction * spacing
    elif len(images) > 1:
        slice_step = (ipp[-1] - ipp[0]) / (len(images) - 1)
    else:
        slice_step = direction * spacing

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * column_spacing  # i (column index) moves along r by the column spacing
    affine_lps[:3, 1] = col_dir * row_spacing  # j (row index) moves along c by the row spacing
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = ipp[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS -> RAS: negate the x and y rows

    first = images[0].ds
    syntaxes = sorted({UID(image.ds.file_meta.TransferSyntaxUID).name for image in images})
    meta: dict[str, Any] = {
        "format": "dicom",
        "source": str(folder),
        **geometry_meta(array.shape, affine),
        "series_uid": chosen_uid or None,
        "series_description": str(first.get("SeriesDescription", "") or ""),
        "modality": str(first.get("Modality", "") or ""),
        "transfer_syntaxes": syntaxes,
        "n_slices": len(images),
        "slices_skipped": skipped,
        "other_series": [s for s in _summarise_series(scan.images) if s["series_uid"] != chosen_uid],
        "resampled_from": resampled_from,
    }
    return Volume(array=array, affine=affine, meta=scrub(meta, identifiers))
