"""DICOM rescale checks: a CT file without RescaleSlope / RescaleIntercept, or with a text, zero or non-finite
slope, is refused with the file and the tag named (reader, inspect, convert and the training pipeline); the
documented `stored_values_are_hu` flag accepts a CT series without rescale; other modalities keep raw values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from medvl.data import convert, inspect
from medvl.data.dicom import read_dicom_series
from medvl.data.transforms import PreprocessConfig, build_preprocessing
from medvl.data.volume import VolumeReadError, load_volume
from tests.medvl.data.dicom_factory import make_slice, stack_positions

AIR_STORED = -1000  # stored values that only are HU when the series says so


def _write(folder: Path, *, n: int = 3, modality: str = "CT", edit=None, bad_index: int | None = None) -> list[Path]:
    """A tiny series (n slices of 4x4, stored value -1000 + slice index); `edit(ds)` changes slice `bad_index`
    (every slice when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for z, position in enumerate(stack_positions(n, 1.0)):
        ds = make_slice(np.full((4, 4), AIR_STORED + z, np.int16), position=position, series_uid="1.2.3.44",
                        instance_number=z + 1, sop_instance_uid=f"1.2.3.44.{z + 1}")
        ds.Modality = modality
        if edit is not None and bad_index in (None, z):
            edit(ds)
        path = folder / f"s{z}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _drop_rescale(ds) -> None:
    del ds.RescaleSlope
    del ds.RescaleIntercept


def _raw_slope(text: bytes):
    def edit(ds) -> None:
        tag = Tag("RescaleSlope")
        ds[tag] = RawDataElement(tag, "DS", len(text), text, 0, False, True)
    return edit


def test_ct_without_rescale_is_an_error_naming_file_and_tags(tmp_path: Path) -> None:
    _write(tmp_path, edit=_drop_rescale, bad_index=1)
    with pytest.raises(VolumeReadError) as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert "s1.dcm" in message and "RescaleSlope and RescaleIntercept" in message
    assert "stored_values_are_hu" in message and str(tmp_path) in message


def test_ct_with_only_the_intercept_missing_names_it(tmp_path: Path) -> None:
    _write(tmp_path, edit=lambda ds: ds.__delattr__("RescaleIntercept"), bad_index=0)
    with pytest.raises(VolumeReadError, match=r"s0\.dcm: CT file without RescaleIntercept"):
        read_dicom_series(tmp_path)


def test_stored_values_are_hu_flag_reads_raw_values_as_hu(tmp_path: Path) -> None:
    _write(tmp_path, edit=_drop_rescale)
    volume = read_dicom_series(tmp_path, stored_values_are_hu=True)
    assert volume.array.shape == (4, 4, 3)
    np.testing.assert_array_equal(volume.array[0, 0], [-1000.0, -999.0, -998.0])
    # load_volume forwards it too
    np.testing.assert_array_equal(load_volume(tmp_path, stored_values_are_hu=True).array, volume.array)


def test_flag_does_not_override_a_present_rescale(tmp_path: Path) -> None:
    _write(tmp_path, edit=lambda ds: setattr(ds, "RescaleIntercept", -24.0))
    volume = read_dicom_series(tmp_path, stored_values_are_hu=True)
    np.testing.assert_array_equal(volume.array[0, 0], [-1024.0, -1023.0, -1022.0])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda ds: setattr(ds, "RescaleSlope", 0.0), r"s2\.dcm: RescaleSlope \(0028,1053\) is 0"),
        (_raw_slope(b"abc "), r"s2\.dcm: RescaleSlope \(0028,1053\) is 'abc', not a number"),
        (_raw_slope(b"NaN "), r"s2\.dcm: RescaleSlope is nan, not a finite number"),
        (_raw_slope(b"1\\2 "), r"s2\.dcm: RescaleSlope \(0028,1053\) is .*not a number"),
    ],
    ids=["zero", "text", "nan", "two-values"],
)
def test_bad_slope_is_an_error_naming_file_and_tag(tmp_path: Path, edit, expected: str) -> None:
    _write(tmp_path, edit=edit, bad_index=2)
    with pytest.raises(VolumeReadError, match=expected):
        read_dicom_series(tmp_path)
    # the flag never excuses a broken rescale
    with pytest.raises(VolumeReadError, match=expected):
        read_dicom_series(tmp_path, stored_values_are_hu=True)


def test_text_intercept_is_an_error(tmp_path: Path) -> None:
    def edit(ds) -> None:
        tag = Tag("RescaleIntercept")
        ds[tag] = RawDataElement(tag, "DS", 6, b"-1024a", 0, False, True)
    _write(tmp_path, edit=edit, bad_index=0)
    with pytest.raises(VolumeReadError, match=r"s0\.dcm: RescaleIntercept \(0028,1052\) is '-1024a', not a number"):
        read_dicom_series(tmp_path)


def test_non_ct_modality_without_rescale_keeps_stored_values(tmp_path: Path) -> None:
    _write(tmp_path, modality="MR", edit=_drop_rescale)
    volume = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(volume.array[0, 0], [-1000.0, -999.0, -998.0])
    assert volume.meta["modality"] == "MR"


def test_inspect_and_convert_refuse_and_accept_with_the_flag(tmp_path: Path, capsys) -> None:
    series = tmp_path / "series"
    _write(series, edit=_drop_rescale)
    assert inspect.main([str(series)]) == 2
    assert "s0.dcm: CT file without RescaleSlope" in capsys.readouterr().err
    assert inspect.main([str(series), "--stored-values-are-hu"]) == 0
    assert '"hu_min": -1000.0' in capsys.readouterr().out

    out = tmp_path / "out.nii.gz"
    assert convert.main([str(series), str(out)]) == 2
    assert "CT file without RescaleSlope" in capsys.readouterr().err and not out.exists()
    assert convert.main([str(series), str(out), "--stored-values-are-hu"]) == 0 and out.exists()


def test_training_preprocessing_refuses_and_accepts_with_the_config_flag(tmp_path: Path) -> None:
    series = tmp_path / "series"
    _write(series, edit=_drop_rescale)
    small = dict(spacing=None, spatial_size=None)
    with pytest.raises(RuntimeError) as error:  # MONAI wraps it; CTReportDataset reports the root cause
        build_preprocessing(PreprocessConfig(**small))({"image": str(series)})
    cause = error.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, VolumeReadError) and "s0.dcm: CT file without RescaleSlope" in str(cause)
    out = build_preprocessing(PreprocessConfig(**small, stored_values_are_hu=True))({"image": str(series)})
    assert tuple(out["image"].shape) == (1, 4, 4, 3)
    assert PreprocessConfig(stored_values_are_hu=True).to_dict()["stored_values_are_hu"] is True
    with pytest.raises(ValueError, match="stored_values_are_hu must be true or false"):
        PreprocessConfig(stored_values_are_hu="yes")
