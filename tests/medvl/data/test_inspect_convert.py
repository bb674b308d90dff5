"""`python -m medvl.data.inspect` and `python -m medvl.data.convert`: output, errors, no patient data."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvl.data import convert, inspect
from medvl.data.dicom import read_dicom_series
from tests.medvl.data.dicom_factory import IDENTIFYING_STRINGS, stack_positions, write_series

REPO_ROOT = Path(__file__).resolve().parents[3]


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)


def _assert_no_identifiers(text: str) -> None:
    for value in IDENTIFYING_STRINGS:
        assert value.lower() not in text.lower(), f"patient identifier {value!r} leaked"


@pytest.fixture()
def series_folder(tmp_path: Path) -> Path:
    """A 4-slice series (3 x 5 pixels, 2 mm slices) with HU -1000 .. 1000 and a README to skip."""
    folder = tmp_path / "series"
    stored = np.linspace(0, 2000, 4 * 3 * 5).round().astype(np.int16).reshape(4, 3, 5)
    write_series(folder, stored, stack_positions(4, 2.0), pixel_spacing=(0.8, 0.6), intercept=-1000.0)
    (folder / "README.txt").write_text("export notes")
    return folder


def test_inspect_prints_a_json_summary(series_folder: Path) -> None:
    result = _run_module("medvl.data.inspect", str(series_folder))

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["shape"] == [5, 3, 4]
    assert summary["spacing"] == [0.6, 0.8, 2.0]
    assert summary["orientation"] == "LPS"
    assert (summary["hu_min"], summary["hu_max"]) == (-1000.0, 1000.0)
    assert summary["series_uid"] == read_dicom_series(series_folder).meta["series_uid"]
    assert summary["n_slices"] == 4 and summary["n_slices_skipped"] == 1
    assert summary["slices_skipped"][0]["file"] == "README.txt" and summary["slices_skipped"][0]["reason"]
    _assert_no_identifiers(result.stdout + result.stderr)


def test_convert_writes_nifti_with_the_volume_affine_and_no_identifiers(series_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.nii.gz"
    result = _run_module("medvl.data.convert", str(series_folder), str(out))

    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    volume = read_dicom_series(series_folder)
    image = nib.load(out)
    np.testing.assert_allclose(image.affine, volume.affine, atol=1e-5)
    np.testing.assert_allclose(image.affine[:3, 3], [20.0, 30.0, 40.0], atol=1e-5)  # LPS (-20, -30, 40) in RAS
    np.testing.assert_array_equal(image.get_fdata(), volume.array)
    assert image.header["descrip"].item() == b""
    _assert_no_identifiers(gzip.decompress(out.read_bytes()).decode("latin-1") + result.stdout + result.stderr)


def test_cli_error_is_one_line_naming_the_path_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_series"
    result = _run_module("medvl.data.inspect", str(missing))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv_tail, expected",
    [
        (["{empty}"], "folder is empty"),
        (["{series}", "--series-uid", "9.9.9"], "no series with SeriesInstanceUID 9.9.9"),
    ],
)
def test_cli_errors_in_process(series_folder: Path, tmp_path: Path, capsys, argv_tail, expected) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [arg.format(empty=empty, series=series_folder) for arg in argv_tail]
    for module, extra in ((inspect, []), (convert, [str(tmp_path / "x.nii.gz")])):
        assert module.main(argv[:1] + extra + argv[1:]) == 2
        captured = capsys.readouterr()
        assert expected in captured.err and captured.err.count("\n") == 1 and captured.out == ""


def test_convert_rejects_bad_output_paths(series_folder: Path, tmp_path: Path, capsys) -> None:
    assert convert.main([str(series_folder), str(tmp_path / "out.img")]) == 2
    assert "must end in .nii or .nii.gz" in capsys.readouterr().err
    assert convert.main([str(series_folder), str(tmp_path / "absent" / "out.nii")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.nii*"))


def test_inspect_reads_nifti_and_reports_resampling(series_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.nii"
    assert convert.main([str(series_folder), str(out)]) == 0
    capsys.readouterr()
    assert inspect.main([str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "nifti" and summary["shape"] == [5, 3, 4] and summary["series_uid"] is None

    uneven = tmp_path / "uneven"
    positions = stack_positions(4, 2.0)
    positions[3, 2] += 1.0  # last step 3 mm
    write_series(uneven, np.zeros((4, 2, 2), np.int16), positions)
    assert inspect.main([str(uneven)]) == 2
    assert inspect.main([str(uneven), "--allow-uneven-spacing"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["resampled"] is True
    assert "medvl.data.inspect: warning: " in captured.err
    assert "resampled 4 slices to 4 slices at 2.000 mm" in captured.err


def test_inspect_counts_nan_and_inf_voxels_and_says_so(tmp_path: Path, capsys) -> None:
    array = np.full((3, 4, 5), -500.0, dtype=np.float32)
    array[0, 0, 0] = 700.0
    array[1, 0, :3] = np.nan  # 3 NaN
    array[2, 1, 0] = np.inf
    array[2, 2, :2] = -np.inf  # 2 -inf
    path = tmp_path / "holes.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)

    assert inspect.main([str(path)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["n_nan"], summary["n_posinf"], summary["n_neginf"]) == (3, 1, 2)
    assert (summary["hu_min"], summary["hu_max"]) == (-500.0, 700.0)
    assert f"{path}: 6 of 60 voxels are not finite (3 NaN, 1 +inf, 2 -inf)" in captured.err
    assert "finite voxels only" in captured.err and "training refuses" in captured.err

    clean = tmp_path / "clean.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), clean)
    assert inspect.main([str(clean)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_nan"] == 0 and "not finite" not in captured.err
