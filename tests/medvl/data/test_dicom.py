"""DICOM series reader: slice order, HU, affine (checked against the DICOM standard's formula), compressed
syntaxes, skipped files, clear errors, and no patient identifiers anywhere."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_encoder
from pydicom.uid import BasicTextSRStorage, JPEG2000Lossless, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from medvl.data.dicom import UnevenSpacingWarning, list_series, read_dicom_series
from medvl.data.volume import VolumeReadError
from tests.medvl.data.dicom_factory import (
    AXIAL,
    IDENTIFYING_STRINGS,
    PATIENT,
    encode_jpeg_lossless,
    make_slice,
    stack_positions,
    write_dicomdir_like,
    write_series,
)

SLOPE, INTERCEPT = 2.5, -1024.5


def _stored(n_slices: int, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """Random stored values, shape (Z, rows, columns) int16."""
    return np.random.default_rng(seed).integers(-400, 1600, size=(n_slices, rows, columns)).astype(np.int16)


def _hu(stored: np.ndarray) -> np.ndarray:
    """HU = stored * slope + intercept, computed once in float64 then stored as float32."""
    return (stored.astype(np.float64) * SLOPE + INTERCEPT).astype(np.float32)


def _dicom_world_ras(ipp: np.ndarray, orientation, pixel_spacing, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """World position (RAS) of pixel (row j, column i) of a slice, by the DICOM standard's formula
    P = IPP + i * column_spacing * r + j * row_spacing * c (LPS), then x and y negated.

    Shapes: i, j: (P,) -> (P, 3).
    """
    r, c = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    row_spacing, column_spacing = pixel_spacing
    lps = ipp[None, :] + (i * column_spacing)[:, None] * r[None, :] + (j * row_spacing)[:, None] * c[None, :]
    return lps * np.array([-1.0, -1.0, 1.0])


def _assert_geometry(volume, positions_sorted: np.ndarray, orientation, pixel_spacing) -> None:
    """Every voxel centre maps (through the affine) to the DICOM position of its pixel."""
    n_x, n_y, n_z = volume.array.shape
    i, j = np.meshgrid(np.arange(n_x), np.arange(n_y), indexing="ij")
    i, j = i.ravel().astype(float), j.ravel().astype(float)
    for k in range(n_z):
        voxels = np.stack([i, j, np.full_like(i, k), np.ones_like(i)])  # (4, P)
        from_affine = (volume.affine @ voxels)[:3].T  # (4, P) -> (P, 3)
        expected = _dicom_world_ras(positions_sorted[k], orientation, pixel_spacing, i, j)
        np.testing.assert_allclose(from_affine, expected, atol=1e-6)


def _assert_no_identifiers(text: str) -> None:
    for value in IDENTIFYING_STRINGS:
        assert value.lower() not in text.lower(), f"patient identifier {value!r} leaked into: {text[:300]}"


def test_known_array_read_exactly_in_hu_ignoring_file_names_and_instance_numbers(tmp_path: Path) -> None:
    stored = _stored(7, 5, 6)
    stored[0, 0, 0] = 100  # slice 0 is the lowest: voxel (0, 0, 0) must be 100 * 2.5 - 1024.5 = -774.5
    positions = stack_positions(7, 2.5)
    # File names sort in a scrambled slice order, InstanceNumbers are reversed: neither may be trusted.
    names = [f"{name}.dcm" for name in ("e", "a", "g", "c", "f", "b", "d")]
    write_series(tmp_path, stored, positions, pixel_spacing=(0.7, 1.3), slope=SLOPE, intercept=INTERCEPT,
                 names=names, instance_numbers=[7, 6, 5, 4, 3, 2, 1])

    volume = read_dicom_series(tmp_path)

    assert volume.array.dtype == np.float32 and volume.affine.dtype == np.float64
    assert volume.array.shape == (6, 5, 7)  # (columns, rows, slices)
    assert volume.array[0, 0, 0] == -774.5
    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))  # [k, j, i] -> [i, j, k]
    _assert_geometry(volume, positions, AXIAL, (0.7, 1.3))
    assert volume.meta["spacing"] == [1.3, 0.7, 2.5]
    assert volume.meta["orientation"] == "LPS"
    assert volume.meta["n_slices"] == 7 and volume.meta["slices_skipped"] == []
    assert volume.meta["series_uid"] and volume.meta["resampled_from"] is None
    json.dumps(volume.meta)  # JSON-serialisable


def _rotated_orientation(a: float, b: float) -> tuple[float, ...]:
    """Axial orientation rotated by `a` about z, then by `b` about x: a tilted, non-axis-aligned slice plane."""
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rotation = rx @ rz
    return tuple(np.concatenate([rotation[:, 0], rotation[:, 1]]).tolist())


@pytest.mark.parametrize(
    "orientation, axcodes",
    [
        (_rotated_orientation(0.35, -0.5), None),
        ((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), "LIP"),  # coronal: slices stacked along y, z is constant per slice
        ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "PIR"),  # sagittal: slices stacked along x
    ],
    ids=["oblique", "coronal", "sagittal"],
)
def test_non_axial_orientations(tmp_path: Path, orientation: tuple[float, ...], axcodes: str | None) -> None:
    stored = _stored(5, 4, 6, seed=1)
    positions = stack_positions(5, 3.0, origin=(12.0, -7.0, 30.0), orientation=orientation)
    write_series(tmp_path, stored, positions, orientation=orientation, pixel_spacing=(0.9, 1.1),
                 slope=SLOPE, intercept=INTERCEPT)

    volume = read_dicom_series(tmp_path)

    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))
    _assert_geometry(volume, positions, orientation, (0.9, 1.1))
    np.testing.assert_allclose(volume.meta["spacing"], [1.1, 0.9, 3.0], atol=1e-5)
    assert volume.meta["orientation"] == (axcodes or "".join(nib.aff2axcodes(volume.affine)))


def test_gantry_tilt_gives_a_sheared_affine(tmp_path: Path) -> None:
    stored = _stored(5, 4, 4, seed=11)
    positions = stack_positions(5, 2.0)
    positions[:, 1] += 0.5 * np.arange(5)  # each slice shifted 0.5 mm in y: slices not stacked along the normal
    write_series(tmp_path, stored, positions, slope=SLOPE, intercept=INTERCEPT)

    volume = read_dicom_series(tmp_path)

    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))
    _assert_geometry(volume, positions, AXIAL, (1.0, 1.0))
    np.testing.assert_allclose(volume.affine[:3, 2], [0.0, -0.5, 2.0])  # RAS: y negated


def test_descending_series_is_ordered_by_position_along_the_normal(tmp_path: Path) -> None:
    stored = _stored(6, 4, 5, seed=2)
    positions = stack_positions(6, -2.0)  # slice 0 is the highest (head first)
    write_series(tmp_path, stored, positions, slope=SLOPE, intercept=INTERCEPT,
                 names=[f"{z:02d}.dcm" for z in range(6)], instance_numbers=list(range(1, 7)))

    volume = read_dicom_series(tmp_path)

    np.testing.assert_array_equal(volume.array, _hu(stored[::-1]).transpose(2, 1, 0))
    _assert_geometry(volume, positions[::-1], AXIAL, (1.0, 1.0))
    assert volume.affine[2, 2] == pytest.approx(2.0)  # k grows toward Superior
    assert volume.meta["orientation"] == "LPS"


def test_real_ct_written_as_dicom_reads_back_like_the_nifti(shared_data: Path, tmp_path: Path) -> None:
    nifti = nib.load(shared_data / "ct" / "example_ct_sm.nii.gz")
    # Write the scan in a different voxel order (L, P, I: descending slices) to make the reader reorder it.
    to_lpi = nib.orientations.ornt_transform(nib.io_orientation(nifti.affine), nib.orientations.axcodes2ornt("LPI"))
    lpi = nifti.as_reoriented(to_lpi)
    hu = np.asarray(lpi.dataobj).astype(np.int32)  # (X, Y, Z) integer HU
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lpi.affine
    column_spacing, row_spacing = np.linalg.norm(affine_lps[:3, :2], axis=0)
    orientation = tuple(np.concatenate([affine_lps[:3, 0] / column_spacing, affine_lps[:3, 1] / row_spacing]))
    n_z = hu.shape[2]
    positions = (affine_lps @ np.stack([np.zeros(n_z), np.zeros(n_z), np.arange(n_z), np.ones(n_z)]))[:3].T
    stored = ((hu + 1024) * 2).astype(np.int16).transpose(2, 1, 0)  # slice k, pixel (row j, col i) = hu[i, j, k]
    write_series(tmp_path, stored, positions, orientation=orientation, pixel_spacing=(row_spacing, column_spacing),
                 slope=0.5, intercept=-1024.0)

    volume = read_dicom_series(tmp_path)

    from_dicom = nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
    reference = nib.as_closest_canonical(nifti)
    assert from_dicom.shape == reference.shape == (122, 101, 30)
    np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), np.asarray(reference.dataobj).astype(np.float32))
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, 121.5) for j in (-0.5, 100.5) for k in (-0.5, 29.5)]).T
    np.testing.assert_allclose(from_dicom.affine @ corners, reference.affine @ corners, atol=1e-4)
    assert volume.meta["orientation"] == "LPS" and volume.meta["spacing"] == [3.0, 3.0, 3.0]


def _encoder_available(syntax: str) -> bool:
    try:
        return get_encoder(syntax).is_available
    except NotImplementedError:  # pydicom has no encoder for this syntax at all
        return False


@pytest.mark.parametrize(
    "syntax",
    [
        RLELossless,
        JPEG2000Lossless,
        pytest.param(JPEGLSLossless, marks=pytest.mark.skipif(
            not _encoder_available(JPEGLSLossless), reason="no JPEG-LS encoder installed (pyjpegls)")),
        JPEGLosslessSV1,  # encoded by the test helper's own minimal encoder (no library encoder exists)
        JPEGLossless,  # the same, with predictor 6
    ],
    ids=["rle", "jpeg2000-lossless", "jpeg-ls-lossless", "jpeg-lossless-sv1", "jpeg-lossless-p14"],
)
def test_compressed_transfer_syntaxes_decode_to_exact_hu(tmp_path: Path, syntax: str) -> None:
    stored = _stored(4, 32, 32, seed=3)  # OpenJPEG needs at least 32 x 32 for its default resolution levels
    write_series(tmp_path, stored, stack_positions(4, 1.5), slope=SLOPE, intercept=INTERCEPT, transfer_syntax=syntax)

    volume = read_dicom_series(tmp_path)

    from pydicom.uid import UID

    assert volume.meta["transfer_syntaxes"] == [UID(syntax).name]
    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))


@pytest.mark.parametrize("predictor", range(1, 8))
def test_jpeg_lossless_test_encoder_round_trips_through_libjpeg(predictor: int) -> None:
    from libjpeg import decode

    samples = np.random.default_rng(4).integers(0, 65536, size=(9, 13)).astype(np.uint16)
    samples[0, :3] = [0, 65535, 0]  # differences of +-32768 / 65535 exercise the modulo-2**16 categories
    samples[1:3, 1:3] = 32768  # a difference of exactly 32768 (category 16, no extra bits) follows below
    samples[3, 1] = 0
    np.testing.assert_array_equal(decode(encode_jpeg_lossless(samples, precision=16, predictor=predictor)), samples)


def test_files_without_preamble_are_read(tmp_path: Path) -> None:
    stored = _stored(4, 3, 5, seed=5)
    paths = write_series(tmp_path, stored, stack_positions(4, 1.0), slope=SLOPE, intercept=INTERCEPT, preamble=False)
    assert paths[0].read_bytes()[128:132] != b"DICM"

    volume = read_dicom_series(tmp_path)

    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))
    assert volume.meta["transfer_syntaxes"] == ["Implicit VR Little Endian"]


def test_two_series_error_lists_both_and_series_uid_selects(tmp_path: Path) -> None:
    write_series(tmp_path, _stored(6, 3, 4), stack_positions(6, 1.0), series_uid="1.2.3.4.100",
                 series_description="ABDOMEN 1MM", seed=1)
    stored_b = _stored(4, 3, 4, seed=9)
    write_series(tmp_path, stored_b, stack_positions(4, 2.0), series_uid="1.2.3.4.200",
                 series_description="CHEST LUNG", slope=SLOPE, intercept=INTERCEPT, seed=2)

    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    for expected in ("1.2.3.4.100", "ABDOMEN 1MM", "6 slices", "1.2.3.4.200", "CHEST LUNG", "4 slices"):
        assert expected in message
    _assert_no_identifiers(message)

    volume = read_dicom_series(tmp_path, series_uid="1.2.3.4.200")
    np.testing.assert_array_equal(volume.array, _hu(stored_b).transpose(2, 1, 0))
    assert volume.meta["series_uid"] == "1.2.3.4.200"
    assert volume.meta["other_series"] == [
        {"series_uid": "1.2.3.4.100", "description": "ABDOMEN 1MM", "modality": "CT", "n_images": 6}
    ]
    assert {s["series_uid"] for s in list_series(tmp_path)} == {"1.2.3.4.100", "1.2.3.4.200"}

    with pytest.raises(VolumeReadError, match=r"no series with SeriesInstanceUID 9\.9\.9.*1\.2\.3\.4\.100"):
        read_dicom_series(tmp_path, series_uid="9.9.9")


def test_localizers_and_non_image_files_are_skipped_and_recorded(tmp_path: Path) -> None:
    stored = _stored(8, 4, 4, seed=6)
    paths = write_series(tmp_path, stored, stack_positions(8, 1.0), slope=SLOPE, intercept=INTERCEPT)
    series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    # A scout flagged in ImageType, and one only recognisable by its orientation, both in the series.
    make_slice(np.zeros((6, 7), np.int16), position=(0, 0, 0), orientation=sagittal, series_uid=series_uid,
               image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")).save_as(tmp_path / "scout1.dcm",
                                                                        enforce_file_format=True)
    make_slice(np.zeros((4, 4), np.int16), position=(0, 0, 3.5), orientation=sagittal,
               series_uid=series_uid).save_as(tmp_path / "scout2.dcm", enforce_file_format=True)
    (tmp_path / "README.txt").write_text("Exported by the PACS.\n")
    write_dicomdir_like(tmp_path / "DICOMDIR")
    report = make_slice(np.zeros((2, 2), np.int16), position=(0, 0, 0), series_uid=series_uid)
    del report.PixelData  # e.g. a structured report or dose report filed in the same series
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)

    volume = read_dicom_series(tmp_path)

    np.testing.assert_array_equal(volume.array, _hu(stored).transpose(2, 1, 0))
    reasons = {entry["file"]: entry["reason"] for entry in volume.meta["slices_skipped"]}
    assert set(reasons) == {"scout1.dcm", "scout2.dcm", "README.txt", "DICOMDIR", "report.dcm"}
    assert "LOCALIZER" in reasons["scout1.dcm"]
    assert "orientation" in reasons["scout2.dcm"]
    assert "not a DICOM file" in reasons["README.txt"]
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert reasons["report.dcm"] == "no pixel data (Basic Text SR Storage)"
    assert volume.meta["n_slices"] == 8


def _write_regular(tmp_path: Path, positions: np.ndarray, seed: int = 7) -> np.ndarray:
    stored = _stored(len(positions), 3, 4, seed=seed)
    write_series(tmp_path, stored, positions, slope=SLOPE, intercept=INTERCEPT)
    return stored


def test_missing_slice_is_an_error_naming_the_gap_and_can_be_interpolated(tmp_path: Path) -> None:
    positions = np.delete(stack_positions(8, 2.0), 3, axis=0)  # z = 40, 42, 44, (46 missing), 48, ...
    stored = _write_regular(tmp_path, positions)

    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "missing slice" in message
    assert "44.000 and 48.000" in message and "allow_uneven_spacing" in message

    with pytest.warns(UnevenSpacingWarning, match="resampled 7 slices to 8 slices"):
        volume = read_dicom_series(tmp_path, allow_uneven_spacing=True)
    hu = _hu(stored).transpose(2, 1, 0)
    assert volume.array.shape == (4, 3, 8)
    np.testing.assert_array_equal(volume.array[..., :3], hu[..., :3])
    np.testing.assert_allclose(volume.array[..., 3], (hu[..., 2] + hu[..., 3]) / 2, rtol=1e-6)  # midway
    np.testing.assert_array_equal(volume.array[..., 4:], hu[..., 3:])
    assert volume.meta["resampled_from"] == [40.0, 42.0, 44.0, 48.0, 50.0, 52.0, 54.0]


def test_uneven_spacing_is_an_error_and_resamples_linearly_on_request(tmp_path: Path) -> None:
    z = np.array([0.0, 2.0, 4.0, 7.0, 9.0, 11.0])  # one step of 3 mm among 2 mm steps
    positions = np.stack([np.full(6, -20.0), np.full(6, -30.0), z], axis=1)
    stored = _write_regular(tmp_path, positions, seed=8)

    with pytest.raises(VolumeReadError, match=r"uneven slice spacing.*3\.000 mm between 4\.000 and 7\.000.*"
                                              r"\[0\.000, 2\.000, 4\.000, 7\.000, 9\.000, 11\.000\]"):
        read_dicom_series(tmp_path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_dicom_series(tmp_path, allow_uneven_spacing=True)
    assert any(issubclass(w.category, UnevenSpacingWarning) for w in caught)
    hu = _hu(stored).transpose(2, 1, 0).astype(np.float64)
    targets = np.arange(6) * 2.0  # 0, 2, ..., 10 mm
    reference = np.empty(hu.shape[:2] + (6,))
    for i in range(hu.shape[0]):  # naive per-voxel reference: numpy's 1D linear interpolation
        for j in range(hu.shape[1]):
            reference[i, j] = np.interp(targets, z, hu[i, j])
    np.testing.assert_allclose(volume.array, reference, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(volume.affine[:3, 2:], [[0, 20], [0, 30], [2, 0]])


def test_mixed_image_sizes_are_an_error(tmp_path: Path) -> None:
    paths = write_series(tmp_path, _stored(5, 4, 4), stack_positions(5, 1.0), series_uid="1.2.3.7")
    make_slice(np.zeros((8, 8), np.int16), position=(-20, -30, 45), series_uid="1.2.3.7").save_as(
        tmp_path / "odd.dcm", enforce_file_format=True)
    assert len(paths) == 5

    with pytest.raises(VolumeReadError, match=r"mixed image sizes .*4x4 \(5 files.*8x8 \(1 files, e.g. odd\.dcm\)"):
        read_dicom_series(tmp_path)


def test_mixed_orientations_are_an_error(tmp_path: Path) -> None:
    write_series(tmp_path / "s", _stored(3, 4, 4), stack_positions(3, 1.0), series_uid="1.2.3.8")
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    write_series(tmp_path / "s", _stored(3, 4, 4), stack_positions(3, 1.0, orientation=coronal),
                 orientation=coronal, series_uid="1.2.3.8", seed=3)

    with pytest.raises(VolumeReadError, match=r"mixed slice orientations"):
        read_dicom_series(tmp_path / "s")


def test_two_slices_at_one_position_are_an_error(tmp_path: Path) -> None:
    positions = stack_positions(4, 1.0)
    positions[2] = positions[1]
    _write_regular(tmp_path, positions)

    with pytest.raises(VolumeReadError, match="at the same position"):
        read_dicom_series(tmp_path)


def test_empty_missing_and_image_less_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeReadError, match=f"{tmp_path}: folder is empty"):
        read_dicom_series(tmp_path)
    with pytest.raises(VolumeReadError, match="no such folder"):
        read_dicom_series(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(VolumeReadError, match=r"no DICOM image slices found \(1 file\(s\) skipped"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("damage", ["truncated pixel data", "truncated header", "garbage after DICM"])
def test_corrupt_file_is_an_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    paths = write_series(tmp_path, _stored(4, 8, 8), stack_positions(4, 1.0))
    data = paths[1].read_bytes()
    damaged = {
        "truncated pixel data": data[:-40],
        "truncated header": data[:300],
        "garbage after DICM": data[:132] + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
    }[damage]
    paths[1].write_bytes(damaged)

    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path)
    assert paths[1].name in str(error.value) and str(tmp_path) in str(error.value)


def test_patient_identifiers_reach_no_meta_error_or_warning(tmp_path: Path) -> None:
    # The description carries the patient ID too: free text must be scrubbed, not only the PHI attributes.
    leaky = f"CT {PATIENT['PatientID']} CHEST"
    positions = np.delete(stack_positions(6, 1.0), 2, axis=0)
    write_series(tmp_path, _stored(5, 3, 3), positions, series_uid="1.2.3.9", series_description=leaky)
    write_series(tmp_path, _stored(2, 3, 3), stack_positions(2, 1.0), series_uid="1.2.3.10", seed=4)

    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path)
    _assert_no_identifiers(str(error.value))
    assert "CT [redacted] CHEST" in str(error.value)

    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path, series_uid="1.2.3.9")  # missing slice
    _assert_no_identifiers(str(error.value))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_dicom_series(tmp_path, series_uid="1.2.3.9", allow_uneven_spacing=True)
    _assert_no_identifiers(json.dumps(volume.meta))
    _assert_no_identifiers(" ".join(str(w.message) for w in caught))
    _assert_no_identifiers(json.dumps(list_series(tmp_path)))
