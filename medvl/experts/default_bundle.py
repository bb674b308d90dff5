"""The segmentation expert's default MONAI bundle: ``python -m medvl.segment`` on the demo set's organ masks, built
once on first use (like the demo data) and reused.

    <root>/bundle/          the MONAI bundle (configs/inference.json, configs/metadata.json with the test Dice)
    <root>/build_info.json  the overrides it was trained with (a build with other overrides is rebuilt)

It is the ``medvl_segment`` config with ``model=medvl_seg_random`` (no pre-trained export needed: a fresh install
has none) plus ``overrides``; a user with an export gives ``export_dir=...`` and ``model=medvl_seg_finetune`` in
``overrides``, or trains with ``python -m medvl.segment`` and points the expert's ``bundle_dir`` at its bundle.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from common.build_once import build_folder_once, read_json_file

__all__ = ["DEFAULT_BUNDLE_OVERRIDES", "ensure_default_bundle"]

BUILD_INFO = "build_info.json"
BUILD_VERSION = 1

#: The default training: a tiny SwinUNETR from random init on 64^3 crops of the demo set (~1 min / epoch on CPU).
DEFAULT_BUNDLE_OVERRIDES: tuple[str, ...] = (
    "model=medvl_seg_random",
    "model.architecture={preset: tiny}",
    "data.roi_size=[64,64,64]",
    "data.preprocess={spacing: [5.0, 5.0, 5.0], spatial_size: [64, 64, 64]}",
    "logger=none",
    "callbacks.progress_bar=null",
    "callbacks.plots=null",
    "callbacks.lr_monitor=null",
    "trainer.enable_model_summary=false",
)


def _is_current(folder: Path, overrides: list[str]) -> bool:
    info = read_json_file(folder / BUILD_INFO)
    return (info is not None and info.get("version") == BUILD_VERSION and info.get("overrides") == overrides
            and (folder / "bundle" / "configs" / "inference.json").is_file())


def ensure_default_bundle(root: str | Path, data_dir: str | Path, overrides: Sequence[str] = DEFAULT_BUNDLE_OVERRIDES,
                          extra_overrides: Sequence[str] = ()) -> Path:
    """``<root>/bundle``, training it first when it is absent or was trained with other overrides.

    Args:
        root: folder of the build.
        data_dir: ``paths.data_dir`` of the training (the demo set is built under it on first use).
        overrides, extra_overrides: Hydra overrides of ``medvl_segment`` (e.g. ``trainer.max_epochs=1``).

    Raises:
        ValueError: ``root`` exists and is not a default-bundle build.
    """
    overrides = [*overrides, *extra_overrides]

    def build(staging: Path) -> None:
        from hydra import compose, initialize_config_module
        from omegaconf import open_dict

        from medvl.segment import segment

        with initialize_config_module(config_module="configs", version_base="1.3"):
            cfg = compose(config_name="medvl_segment", overrides=[f"paths.data_dir={data_dir}", *overrides])
        run_dir = staging / "run"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            cfg.paths.root_dir = str(staging)
        segment(cfg)
        shutil.copytree(run_dir / "bundle", staging / "bundle")
        shutil.copy(run_dir / "metrics.json", staging / "metrics.json")
        shutil.rmtree(run_dir)  # checkpoints are not needed: the bundle holds the weights
        (staging / BUILD_INFO).write_text(json.dumps({"version": BUILD_VERSION, "overrides": overrides}, indent=2))

    folder = build_folder_once(root, build=build, is_current=lambda f: _is_current(f, overrides),
                               is_ours=lambda f: (f / BUILD_INFO).is_file(), what="default segmentation bundle")
    return folder / "bundle"
