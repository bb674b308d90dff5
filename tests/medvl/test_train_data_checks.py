"""`medvl.train` refuses data it cannot use before fitting: a missing manifest (one line, exit 2, no run folder
left), a manifest without val / test rows (the test can be dropped on purpose with test=false)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from common.lightning.run_folder import remove_unused_run_folder
from medvl import train as train_module
from medvl.data.datamodule import CTReportDataModule, DataSetupError
from tests.medvl.data.nifti_helpers import diag_affine, save_nifti
from tests.medvl.test_train import TINY


def _manifest(folder: Path, splits: list[str]) -> Path:
    """JSONL manifest of tiny NIfTI studies, one patient per row, row i in split `splits[i]`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(splits):
        save_nifti(folder / f"s{i}.nii.gz", rng.integers(-1000, 1000, (8, 8, 8)).astype(np.int16),
                   diag_affine(4.0, 4.0, 4.0))
        rows.append({"volume": f"s{i}.nii.gz", "report": f"Findings: Study {i}. Lungs clear. Impression: Normal.",
                     "patient_id": f"p{i}", "study_id": f"s{i}", "split": split})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _cfg(tmp: Path, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_train", overrides=[f"paths.root_dir={tmp}", *TINY, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


def test_all_train_manifest_is_refused_before_fitting_naming_the_manifest(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data", ["train"] * 4)
    with pytest.raises(DataSetupError) as error:
        train_module.train(_cfg(tmp_path, f"data.manifest={manifest}"))
    message = str(error.value)
    assert message.startswith(f"{manifest}: the val and test splits are empty")
    assert "'train': 4, 'val': 0, 'test': 0" in message and "test=false" in message
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was fitted
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_test_split_only_names_test_and_test_false_accepts_it(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, ["train", "train", "val"])
    module = CTReportDataModule(manifest=str(manifest), preprocess={"spacing": None, "spatial_size": (8, 8, 8)})
    module.setup("fit")
    with pytest.raises(DataSetupError, match=r"the test split is empty .*pass test=false"):
        module.check_splits(test=True)
    module.check_splits(test=False)  # the documented way to train without a test split


def test_missing_manifest_is_refused_before_the_run_folder_is_written(tmp_path: Path) -> None:
    absent = tmp_path / "absent.jsonl"
    with pytest.raises(DataSetupError, match=rf"data.manifest={absent}: the manifest does not exist"):
        train_module.train(_cfg(tmp_path, f"data.manifest={absent}"))
    assert not (tmp_path / "run").exists()


def test_cli_missing_manifest_is_one_line_exit_2_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "outputs" / "run"
    monkeypatch.setattr(sys, "argv", ["medvl.train", f"data.manifest={tmp_path / 'nope.jsonl'}",
                                      f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        train_module.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"medvl.train: error: data.manifest={tmp_path / 'nope.jsonl'}: the manifest does")
    assert "Traceback" not in "\n".join(err)
    assert not run_dir.exists()


def test_remove_unused_run_folder_keeps_folders_with_results(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "config.yaml").write_text("a: 1")
    (fresh / "train.log").write_text("")
    (fresh / "config.yaml").write_text("a: 1")
    assert remove_unused_run_folder(fresh) and not fresh.exists()
    used = tmp_path / "used"
    (used / "checkpoints").mkdir(parents=True)
    (used / "train.log").write_text("")
    assert not remove_unused_run_folder(used) and (used / "checkpoints").is_dir()
