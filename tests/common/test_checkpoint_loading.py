"""The one checkpoint loader: each kind of bad file is refused with a message naming the file and the problem."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

from common.checkpoint_loading import (
    MODULE_CLASS_KEY,
    CheckpointFileError,
    UnsafeCheckpointError,
    WeightsFileError,
    check_checkpoint_module,
    load_checkpoint,
    qualified_name,
    validate_checkpoint,
)
from common.lightning.checkpoint_io import AtomicCheckpointIO
from tests.common.lightning.toy import ToyAlignModule


def _good(tmp_path: Path, name: str = "good.ckpt", **extra) -> Path:
    path = tmp_path / name
    torch.save({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": {"dim": 4}, "global_step": 2, **extra}, path)
    return path


def _code_carrying(tmp_path: Path) -> Path:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": os.system}, path)  # pickles a reference to os.system (a GLOBAL)
    return path


def test_a_good_checkpoint_loads(tmp_path):
    ckpt = load_checkpoint(_good(tmp_path))
    assert ckpt["global_step"] == 2 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    assert validate_checkpoint(_good(tmp_path)).name == "good.ckpt"


def test_a_pickle_carrying_code_is_refused_without_suggesting_weights_only_false(tmp_path):
    path = _code_carrying(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "system" in message and "execute" in message
    assert "weights_only" not in message  # never advise the one unsafe option
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice is not chained either


def test_a_truncated_checkpoint_is_refused_as_truncated(tmp_path):
    good = _good(tmp_path)
    data = good.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFileError, match=r"cut\.ckpt is truncated or corrupt"):
        load_checkpoint(cut)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFileError, match=r"empty\.ckpt is empty"):
        load_checkpoint(empty)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointFileError, match=r"notes\.ckpt is not a PyTorch checkpoint"):
        load_checkpoint(text)


@pytest.mark.parametrize("name", ["model.safetensors", "renamed.ckpt"])
def test_a_safetensors_file_is_refused_with_what_to_give_instead(tmp_path, name):
    path = tmp_path / name
    safetensors.torch.save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointFileError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "safetensors weights file, not a Lightning checkpoint" in message
    assert "checkpoints/last.ckpt" in message and "export_dir" in message


def test_a_missing_file_and_a_folder_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointFileError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_another_models_checkpoint_is_refused_by_its_stored_class(tmp_path):
    path = _good(tmp_path, **{MODULE_CLASS_KEY: "scene3d.models.scene3d_module.Scene3DPretrainModule"})
    with pytest.raises(CheckpointFileError) as info:
        load_checkpoint(path, expected_module=ToyAlignModule)
    message = str(info.value)
    assert str(path) in message and "Scene3DPretrainModule" in message and "ToyAlignModule" in message
    own = _good(tmp_path, "own.ckpt", **{MODULE_CLASS_KEY: qualified_name(ToyAlignModule)})
    assert load_checkpoint(own, expected_module=ToyAlignModule)["global_step"] == 2


def test_a_checkpoint_without_stored_class_is_checked_by_its_hyper_parameters():
    from medvl.models.medvl_module import MedVLPretrainModule

    scene3d_like = {"state_dict": {}, "hyper_parameters": {"tokenizer_json": "{}", "class_names": ["chair"],
                                                           "class_counts": [1]}}
    with pytest.raises(CheckpointFileError, match=r"lack \['label_names', 'preprocess'\]"):
        check_checkpoint_module(scene3d_like, MedVLPretrainModule, source="x.ckpt")
    with pytest.raises(CheckpointFileError, match="no 'state_dict'"):
        check_checkpoint_module({"weights": {}}, MedVLPretrainModule, source="x.ckpt")


def test_modules_record_their_class_and_refuse_another_on_load(tmp_path):
    module = ToyAlignModule(dim=4)
    checkpoint: dict = {"state_dict": module.state_dict(), "hyper_parameters": {"dim": 4}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[MODULE_CLASS_KEY] == qualified_name(ToyAlignModule)
    checkpoint[MODULE_CLASS_KEY] = "medvl.models.medvl_module.MedVLPretrainModule"
    with pytest.raises(CheckpointFileError, match="MedVLPretrainModule, not of"):
        module.on_load_checkpoint(checkpoint)


def test_the_checkpoint_io_plugin_uses_the_same_refusals(tmp_path):
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt"):
        AtomicCheckpointIO().load_checkpoint(_code_carrying(tmp_path), weights_only=False)  # asking does not help


def test_weights_file_error_is_the_common_base():
    assert issubclass(UnsafeCheckpointError, CheckpointFileError) and issubclass(CheckpointFileError, WeightsFileError)
    from common import export

    assert export.WeightsFileError is WeightsFileError and export.UnsafeCheckpointError is UnsafeCheckpointError
