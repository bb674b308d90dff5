"""Volume dataclass, NIfTI reading / writing and the `load_volume` dispatch."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvl.data.volume import Volume, VolumeReadError, load_volume, read_nifti, to_nifti_image, write_nifti
from tests.medvl.data.dicom_factory import stack_positions, write_series

# A non-diagonal affine (rotation about z, anisotropic voxels, offset): catches any reordering or rescaling.
ROTATED_AFFINE = np.array([
    [0.0, -2.0, 0.0, 10.0],
    [1.5, 0.0, 0.0, -20.0],
    [0.0, 0.0, 3.0, 5.0],
    [0.0, 0.0, 0.0, 1.0],
])


def test_volume_converts_dtypes_and_derives_spacing_and_orientation() -> None:
    volume = Volume(np.zeros((2, 3, 4), dtype=np.int16), np.diag([-2.0, 3.0, 4.0, 1.0]).astype(np.float32))
    assert volume.array.dtype == np.float32 and volume.affine.dtype == np.float64
    assert volume.spacing == (2.0, 3.0, 4.0)
    assert volume.orientation == "LAS"
    assert Volume(np.zeros((2, 3, 4)), ROTATED_AFFINE).orientation == "ALS"


@pytest.mark.parametrize(
    "array, affine, message",
    [
        (np.zeros((2, 3)), np.eye(4), "must be 3D"),
        (np.zeros((2, 3, 4)), np.eye(3), "must be 4x4"),
        (np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 1.0, 2.0]), "last row"),
        (np.zeros((2, 3, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.zeros((2, 3, 4)), np.diag([1.0, np.nan, 1.0, 1.0]), "NaN"),
    ],
)
def test_volume_rejects_bad_arguments(array: np.ndarray, affine: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Volume(array, affine)


def _save(image: nib.Nifti1Image, path: Path) -> Path:
    nib.save(image, path)
    return path


def test_read_nifti_keeps_voxel_order_affine_and_applies_scale_factors(tmp_path: Path) -> None:
    raw = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(raw, ROTATED_AFFINE)
    image.header.set_slope_inter(2.0, -10.0)
    image.header["descrip"] = b"Zanzibar^Quentilla"  # header text is never copied into meta
    volume = read_nifti(_save(image, tmp_path / "scan.nii.gz"))

    np.testing.assert_array_equal(volume.array, raw.astype(np.float32) * 2 - 10)  # not reoriented
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.affine, ROTATED_AFFINE)
    assert volume.meta == {
        "format": "nifti",
        "source": str(tmp_path / "scan.nii.gz"),
        "shape": [2, 3, 4],
        "spacing": [1.5, 2.0, 3.0],
        "orientation": "ALS",
        "series_uid": None,
        "n_slices": 4,
        "slices_skipped": [],
    }


def test_read_nifti_squeezes_trailing_singleton_dims_and_refuses_4d(tmp_path: Path) -> None:
    data = np.ones((2, 3, 4, 1), dtype=np.float32)
    assert read_nifti(_save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")).array.shape == (2, 3, 4)
    with pytest.raises(VolumeReadError, match=r"b\.nii: expected a single 3D volume, found shape \(2, 3, 4, 2\)"):
        read_nifti(_save(nib.Nifti1Image(np.ones((2, 3, 4, 2), np.float32), np.eye(4)), tmp_path / "b.nii"))


@pytest.mark.parametrize("content", [b"", b"not a nifti file at all" * 20, "gzip-garbage", "truncated"])
def test_read_nifti_reports_bad_files_with_their_path(tmp_path: Path, content) -> None:
    path = tmp_path / "bad.nii.gz"
    if content == "gzip-garbage":
        content = gzip.compress(b"\x00" * 100)
    elif content == "truncated":
        noise = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)  # incompressible
        content = _save(nib.Nifti1Image(noise, np.eye(4)), path).read_bytes()
        content = content[: len(content) // 2]
    path.write_bytes(content)
    with pytest.raises(VolumeReadError, match=str(path)):
        read_nifti(path)


def test_load_volume_dispatches_on_folder_or_nifti_and_reports_bad_paths(tmp_path: Path) -> None:
    nifti_path = _save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), ROTATED_AFFINE), tmp_path / "v.nii.gz")
    assert load_volume(nifti_path).meta["format"] == "nifti"

    folder = tmp_path / "dicom"
    write_series(folder, np.zeros((3, 2, 2), np.int16), stack_positions(3, 1.0))
    assert load_volume(folder).meta["format"] == "dicom"

    with pytest.raises(VolumeReadError, match=f"{tmp_path / 'absent'}: no such file or folder"):
        load_volume(tmp_path / "absent")
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(VolumeReadError, match=r"scan\.mha: not a DICOM folder or a \.nii"):
        load_volume(tmp_path / "scan.mha")
    with pytest.raises(VolumeReadError, match="series_uid applies to DICOM folders only"):
        load_volume(nifti_path, series_uid="1.2.3")


def test_write_nifti_round_trips_exactly_with_empty_text_fields(tmp_path: Path) -> None:
    integral = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 1000, ROTATED_AFFINE)
    path = write_nifti(integral, tmp_path / "int.nii.gz")
    image = nib.load(path)
    assert image.get_data_dtype() == np.int16  # integral HU stored compactly, exactly
    np.testing.assert_array_equal(image.get_fdata(), integral.array)
    np.testing.assert_allclose(image.affine, ROTATED_AFFINE, atol=1e-6)
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    for text_field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert image.header[text_field].item() == b""
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed into place

    fractional = Volume(np.full((2, 2, 2), 0.25, np.float32), np.eye(4))
    assert to_nifti_image(fractional).get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_nifti(write_nifti(fractional, tmp_path / "f.nii")).array, fractional.array)

    with pytest.raises(ValueError, match=r"must end in \.nii or \.nii\.gz"):
        write_nifti(fractional, tmp_path / "f.img")


def test_sheared_affine_is_kept_in_the_sform_only(tmp_path: Path) -> None:
    sheared = np.array([[1.0, 0, 0, 0], [0, 1.0, 0.3, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # gantry tilt
    image = nib.load(write_nifti(Volume(np.zeros((2, 2, 2)), sheared), tmp_path / "tilt.nii.gz"))
    assert int(image.header["qform_code"]) == 0 and int(image.header["sform_code"]) == 1
    np.testing.assert_allclose(image.affine, sheared, atol=1e-6)


def _nifti_with_sform(path: Path, sform: np.ndarray) -> Path:
    """A NIfTI file whose only affine is `sform` (qform unset), written as a scanner would leave it."""
    image = nib.Nifti1Image(np.zeros((3, 4, 5), dtype=np.int16), np.eye(4))
    image.set_sform(sform, code="scanner")
    image.set_qform(None, code="unknown")
    nib.save(image, path)
    return path


@pytest.mark.parametrize(
    ("sform", "message"),
    [
        (np.zeros((4, 4)), "is zero"),
        (np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]]), "is singular"),
    ],
    ids=["zero", "singular"],
)
def test_read_nifti_refuses_zero_or_singular_affine_naming_the_file(
    tmp_path: Path, sform: np.ndarray, message: str
) -> None:
    path = _nifti_with_sform(tmp_path / "bad_affine.nii.gz", sform)
    with pytest.raises(VolumeReadError) as error:
        read_nifti(path)
    text = str(error.value)
    assert text.startswith(f"{path}: the NIfTI affine") and message in text
    with pytest.raises(VolumeReadError, match=message):  # load_volume (inspect, training) says the same
        load_volume(path)
