"""Every entry point refuses bad checkpoints through the one loader, before building data or models.

Each case builds its bad file itself (a pickle carrying code, a truncated file, a safetensors file, another model's
checkpoint, a missing file) and checks the message names the file and the problem, never torch's advice.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from common.checkpoint_loading import MODULE_CLASS_KEY, CheckpointFileError, UnsafeCheckpointError

MEDVL = "medvl.models.medvl_module.MedVLPretrainModule"
SCENE3D = "scene3d.models.scene3d_module.Scene3DPretrainModule"


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, type[BaseException], str]]:
    """kind -> (file, error type, text the message must hold)."""
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": os.system}, evil)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}, "hyper_parameters": {}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:300])
    weights = tmp_path / "volume_encoder.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, str(weights))
    return {
        "code": (evil, UnsafeCheckpointError, "system"),
        "truncated": (cut, CheckpointFileError, "truncated or corrupt"),
        "safetensors": (weights, CheckpointFileError, "not a Lightning checkpoint"),
        "missing": (tmp_path / "nope.ckpt", (FileNotFoundError, ValueError), "nope.ckpt"),
    }


def _other_model(tmp_path: Path, module_class: str) -> Path:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"tokenizer_json": "{}"},
                MODULE_CLASS_KEY: module_class}, path)
    return path


def _compose(name: str, tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name=name, overrides=[f"paths.root_dir={tmp_path}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def _entry_points():
    from medvl.evaluate import evaluate
    from medvl.export import load_pretrained_module
    from medvl.segment import segment
    from medvl.train import train
    from scene3d.train import train as scene3d_train

    return {
        "medvl.train": lambda tmp, ckpt: train(_compose("medvl_train", tmp, f"ckpt_path={ckpt}")),
        "medvl.evaluate": lambda tmp, ckpt: evaluate(_compose("medvl_evaluate", tmp, f"ckpt_path={ckpt}")),
        "medvl.export": lambda tmp, ckpt: load_pretrained_module(ckpt),
        "medvl.segment": lambda tmp, ckpt: segment(_compose("medvl_segment", tmp, "mode=evaluate", f"ckpt_path={ckpt}")),
        "scene3d.train": lambda tmp, ckpt: scene3d_train(_compose("scene3d_train", tmp, f"ckpt_path={ckpt}")),
    }


ENTRY_POINTS = ["medvl.train", "medvl.evaluate", "medvl.export", "medvl.segment", "scene3d.train"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", ["code", "truncated", "safetensors", "missing"])
def test_each_entry_point_refuses_each_bad_file(tmp_path, entry, kind):
    path, error, text = _bad_files(tmp_path)[kind]
    with pytest.raises(error) as info:
        _entry_points()[entry](tmp_path, path)
    message = str(info.value)
    assert path.name in message and text in message, message
    assert "weights_only=False" not in message
    assert not (tmp_path / "medvl_demo").exists() and not (tmp_path / "data").exists()  # failed before building data


@pytest.mark.parametrize(("entry", "other"), [("medvl.train", SCENE3D), ("medvl.evaluate", SCENE3D),
                                              ("medvl.export", SCENE3D), ("medvl.segment", MEDVL),
                                              ("scene3d.train", MEDVL)])
def test_each_entry_point_refuses_another_models_checkpoint(tmp_path, entry, other):
    path = _other_model(tmp_path, other)
    with pytest.raises(CheckpointFileError) as info:
        _entry_points()[entry](tmp_path, path)
    message = str(info.value)
    assert str(path) in message and f"checkpoint of {other}, not of" in message, message
