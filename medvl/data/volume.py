"""The CT volume every medvl reader returns, and `load_volume`, which reads a DICOM folder or a NIfTI file.

Conventions (the whole project codes against them):
- `Volume.array[i, j, k]` is the value in HU (float32) of voxel (i, j, k), in the voxel order of `affine`.
- `Volume.affine` (float64, 4x4) maps (i, j, k, 1) to RAS+ world millimetres (+x toward the patient's
  Right, +y Anterior, +z Superior), the nibabel convention. DICOM's LPS+ world (+x Left, +y Posterior)
  is converted by negating x and y.
- `Volume.meta` is JSON-serialisable and never holds patient identifiers.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeReadError(ValueError):
    """A volume could not be read; the message names the path and the problem (never patient data)."""


@dataclass
class Volume:
    """A 3D CT volume in HU with its voxel-to-world transform.

    Args:
        array: HU values, converted to float32. Shape (X, Y, Z): the voxel axes (i, j, k) of `affine`.
        affine: (4, 4) matrix, converted to float64: voxel index (i, j, k, 1) -> RAS world mm.
        meta: JSON-serialisable facts about the source, without patient identifiers. The readers fill
            `format`, `source`, `shape`, `spacing` (mm along i, j, k), `orientation` (nibabel axis codes,
            e.g. "RAS" or "LPS"), `series_uid` (None for NIfTI), `n_slices` and `slices_skipped`
            (a list of {"file", "reason"}).

    Shapes:
        array: (X, Y, Z); affine: (4, 4).

    Raises:
        ValueError: `array` is not 3D, `affine` is not a finite 4x4 matrix with last row (0, 0, 0, 1), or
            the affine is singular.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (X, Y, Z), got shape {self.array.shape}")
        problem = affine_problem(self.affine)
        if problem is not None:
            raise ValueError(f"Volume.affine {problem}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (the norms of the affine's first three columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """nibabel axis codes of the voxel axes, e.g. "RAS" (i grows toward Right, j Anterior, k Superior)."""
        return "".join(nib.aff2axcodes(self.affine))


def affine_problem(affine: np.ndarray) -> str | None:
    """Why `affine` is not a usable voxel -> world transform, or None when it is one.

    Checked before anything derives an orientation or spacing from it (nibabel's `aff2axcodes` fails with a
    TypeError on a zero column).

    Shapes:
        affine: (4, 4).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        return f"must be 4x4, got shape {affine.shape}"
    if not np.isfinite(affine).all():
        return "holds NaN or infinite values"
    if not np.allclose(affine[3], (0.0, 0.0, 0.0, 1.0)):
        return f"has last row {affine[3].tolist()}, expected (0, 0, 0, 1)"
    if not np.any(affine[:3, :3]):
        return "is zero (its 3x3 part is all zeros): the file gives no voxel size or orientation"
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        return (
            f"is singular (voxel axis lengths {[round(float(n), 6) for n in norms]} mm, determinant 0): its 3x3 "
            "part must map the voxel axes to independent directions"
        )
    return None


def geometry_meta(array_shape: tuple[int, ...], affine: np.ndarray) -> dict[str, Any]:
    """The `shape`, `spacing` and `orientation` entries of `Volume.meta`, derived from the array and affine."""
    return {
        "shape": [int(n) for n in array_shape],
        "spacing": [round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)],
        "orientation": "".join(nib.aff2axcodes(affine)),
    }


def is_nifti_path(path: str | Path) -> bool:
    """True when the file name ends in .nii or .nii.gz (any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path) -> Volume:
    """Read a 3D NIfTI file, keeping the file's voxel order and its affine (sform, else qform).

    The NIfTI scale factors (scl_slope / scl_inter) are applied by nibabel; header text fields (descrip,
    aux_file, ...) are not copied anywhere.

    Args:
        path: a .nii or .nii.gz file.

    Returns:
        Volume with array (X, Y, Z) float32 and affine float64 as stored; meta["format"] = "nifti".

    Raises:
        VolumeReadError: the file is missing, not a NIfTI file, truncated, or not a single 3D volume
            (trailing dimensions of size 1 are dropped; a 4D series is refused), or its affine is zero,
            singular or not finite (checked before the orientation is computed).
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(f"{path}: no such file")
    try:
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeReadError(f"{path}: not a NIfTI image (nibabel read it as {type(image).__name__})")
        shape = tuple(image.shape)
        while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1, ...) -> (X, Y, Z)
            shape = shape[:-1]
        if len(shape) != 3:
            raise VolumeReadError(f"{path}: expected a single 3D volume, found shape {tuple(image.shape)}")
        array = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
        affine = np.asarray(image.affine, dtype=np.float64)
        problem = affine_problem(affine)
        if problem is not None:  # before geometry_meta derives the orientation from it
            raise VolumeReadError(
                f"{path}: the NIfTI affine (sform / qform) {problem}; fix the header (sform_code / qform_code, "
                "srow_x/y/z, pixdim) before using this file"
            )
    except VolumeReadError:
        raise
    except Exception as exc:  # nibabel / gzip / numpy raise many types for bad files: report them all alike
        raise VolumeReadError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {exc})") from exc
    meta: dict[str, Any] = {
        "format": "nifti",
        "source": str(path),
        **geometry_meta(array.shape, affine),
        "series_uid": None,
        "n_slices": int(array.shape[2]),
        "slices_skipped": [],
    }
    try:
        return Volume(array=array, affine=affine, meta=meta)
    except ValueError as exc:
        raise VolumeReadError(f"{path}: {exc}") from exc


def load_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    allow_uneven_spacing: bool = False,
    stored_values_are_hu: bool = False,
) -> Volume:
    """Read a CT volume from a DICOM series folder or a NIfTI file.

    Args:
        path: a folder of DICOM slice files, or a .nii / .nii.gz file.
        series_uid: DICOM only: the SeriesInstanceUID to read when the folder holds several series.
        allow_uneven_spacing: DICOM only: resample unevenly spaced slices to the median spacing (linear
            interpolation along the slice axis, with a warning) instead of failing.
        stored_values_are_hu: DICOM only: accept CT files without RescaleSlope / RescaleIntercept, taking the
            stored values as HU (otherwise an error). NIfTI files have no such tags and ignore it.

    Returns:
        Volume in HU with its RAS affine (see `medvl.data.dicom.read_dicom_series` and `read_nifti`).

    Raises:
        VolumeReadError: the path does not exist, is neither a folder nor a .nii / .nii.gz file, or its
            content cannot be read as one volume. The message names the path and the problem.
    """
    path = Path(path)
    if path.is_dir():
        # Imported here: medvl.data.dicom imports Volume from this module.
        from medvl.data.dicom import read_dicom_series

        return read_dicom_series(
            path, series_uid=series_uid, allow_uneven_spacing=allow_uneven_spacing,
            stored_values_are_hu=stored_values_are_hu,
        )
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder")
    if not is_nifti_path(path):
        raise VolumeReadError(
            f"{path}: not a DICOM folder or a .nii / .nii.gz file "
            "(pass the folder that holds the DICOM slices, not one slice)"
        )
    if series_uid is not None:
        raise VolumeReadError(f"{path}: series_uid applies to DICOM folders only, not to a NIfTI file")
    return read_nifti(path)


def to_nifti_image(volume: Volume) -> nib.Nifti1Image:
    """A NIfTI-1 image of the volume: its affine as sform (and qform when it has no shear), units mm.

    The data are stored as int16 when every HU value is an integer in int16 range (exact, half the size),
    else as float32. Header text fields (descrip, aux_file, db_name, intent_name) are left empty and no
    header extension is added, so nothing from the source files (patient data included) is carried over.

    Args:
        volume: the volume to convert.
    """
    array = volume.array
    finite = np.isfinite(array).all()
    is_integral = finite and np.array_equal(array, np.round(array))
    in_int16 = finite and array.size > 0 and array.min() >= -32768 and array.max() <= 32767
    data = array.astype(np.int16) if is_integral and in_int16 else array.astype(np.float32)
    image = nib.Nifti1Image(data, volume.affine)
    header = image.header
    header.set_xyzt_units("mm")
    image.set_sform(volume.affine, code="scanner")
    columns = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    if np.allclose(columns.T @ columns, np.eye(3), atol=1e-6):
        image.set_qform(volume.affine, code="scanner")
    else:  # a sheared affine (gantry tilt) has no exact quaternion form: keep it in the sform only
        image.set_qform(None, code="unknown")
    for text_field in ("descrip", "aux_file", "db_name", "intent_name"):
        header[text_field] = b""
    return image


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write the volume as NIfTI (`to_nifti_image`), atomically: a partial file never appears at `path`.

    Args:
        volume: the volume to write.
        path: destination ending in .nii or .nii.gz; its folder must exist.

    Returns:
        The written path.

    Raises:
        ValueError: `path` does not end in .nii or .nii.gz.
        OSError: the folder does not exist or is not writable.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: the output file name must end in .nii or .nii.gz")
    image = to_nifti_image(volume)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    handle, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        nib.save(image, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
