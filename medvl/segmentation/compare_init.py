"""Measured claim: does the pre-trained encoder help segmentation with few labels? Pre-trained vs random init.

    python -m medvl.segmentation.compare_init export_dir=export/ [n_train=8] [steps=300] [eval_every=30]
        [n_eval=8] [seed=0] [out=outputs/compare_init] [any medvl_segment override, e.g. trainer=gpu]

Fine-tunes the segmentation network of ``configs/medvl_segment.yaml`` twice with everything equal (data, seed,
crops, decoder initialisation, optimiser, number of steps) except the encoder's initialisation: the export's
pre-trained weights, then random init of the same architecture. Training uses the first ``n_train`` labelled
volumes of the train split (demo organ masks by default); every ``eval_every`` steps the mean Dice over the
classes is measured on held-out validation volumes (sliding windows, whole volumes); at the end both models are
tested on the first ``n_eval`` test volumes. Writes into ``out``:

    compare_init.png    mean validation Dice vs. step, one curve per initialisation
    compare_init.json   the curves, final test Dice per class, and the settings
    compare_init.md     the table of final test Dice
"""
from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from common.io import atomic_write_json, atomic_write_text

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["DiceCurve", "compare_initialisations", "main", "parse_args"]

log = logging.getLogger(__name__)

INITIALISATIONS = ("pretrained", "random")
# Own arguments with their defaults (None = required); every other key=value goes to the segmentation config.
ARGUMENTS: dict[str, str | None] = {
    "export_dir": None,
    "n_train": "8",
    "steps": "300",
    "eval_every": "30",
    "n_eval": "8",
    "seed": "0",
    "out": "outputs/compare_init",
}


class DiceCurve(L.Callback):
    """Records (global step, validation mean Dice) after every validation run (sanity checks excluded)."""

    def __init__(self, metric: str = "val/dice_mean") -> None:
        self.metric = metric
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.points.append((int(trainer.global_step), float(trainer.callback_metrics[self.metric])))


def _compose(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="medvl_segment", overrides=list(overrides))


def _run_one(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """Fine-tune with ``cfg`` for its max_steps; returns the validation curve and the final test metrics."""
    L.seed_everything(seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if not len(datamodule.datasets["val"]) or not len(datamodule.datasets["test"]):
        raise ValueError("compare_init needs held-out volumes in both the val and the test split")
    model = instantiate(cfg.model, **datamodule.model_kwargs())
    curve = DiceCurve()
    trainer = instantiate(cfg.trainer, callbacks=[curve], logger=False, enable_checkpointing=False,
                          default_root_dir=str(cfg.paths.output_dir))
    trainer.fit(model, datamodule=datamodule)
    test = {}
    for result in trainer.test(model, datamodule=datamodule):
        test.update({k: float(v) for k, v in result.items()})
    return {
        "curve": [{"step": step, "val_dice_mean": dice} for step, dice in curve.points],
        "test": {k: v for k, v in test.items() if "dice" in k},
        "train_volumes": [s.study_id for s in datamodule.studies["train"]],
        "test_volumes": [s.study_id for s in datamodule.studies["test"]],
        "class_names": datamodule.class_names,
    }


def _plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        steps = [p["step"] for p in result["curve"]]
        dice = [p["val_dice_mean"] for p in result["curve"]]
        axis.plot(steps, dice, marker="o", label=f"{name} init")
    axis.set_xlabel("fine-tuning step")
    axis.set_ylabel("validation mean Dice")
    axis.set_ylim(0.0, 1.0)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _markdown(results: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    classes = results[INITIALISATIONS[0]]["class_names"][1:]
    header = "| init | " + " | ".join(f"Dice {c}" for c in classes) + " | mean Dice | best val mean Dice |"
    lines = [
        f"# Pre-trained vs random init: {settings['n_train']} training volumes, {settings['steps']} steps",
        "",
        f"Export: `{settings['export_dir']}`; test volumes: {settings['n_test']}; seed {settings['seed']}.",
        "",
        header,
        "|" + "---|" * (len(classes) + 3),
    ]
    for name, result in results.items():
        test = result["test"]
        cells = [f"{test.get(f'test/dice/{c}', math.nan):.3f}" for c in classes]
        best = max((p["val_dice_mean"] for p in result["curve"]), default=math.nan)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {test.get('test/dice_mean', math.nan):.3f} | {best:.3f} |")
    return "\n".join(lines) + "\n"


def compare_initialisations(
    export_dir: str | Path,
    *,
    n_train: int = 8,
    steps: int = 300,
    eval_every: int = 30,
    n_eval: int = 8,
    seed: int = 0,
    out: str | Path = "outputs/compare_init",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Fine-tune from the export and from random init at equal steps; write the PNG, JSON and markdown table.

    Args:
        export_dir: a ``python -m medvl.export`` folder.
        n_train: labelled training volumes.
        steps: optimiser steps of each run.
        eval_every: steps between validation Dice measurements.
        n_eval: held-out validation and test volumes.
        seed: seed of both runs (same crops, same decoder initialisation).
        out: output folder.
        overrides: more ``medvl_segment`` config overrides (``key=value``), e.g. ``trainer=gpu``.

    Returns:
        The content of ``compare_init.json``.

    Raises:
        ValueError: non-positive counts, or no held-out volumes.
    """
    for name, value in (("n_train", n_train), ("steps", steps), ("eval_every", eval_every), ("n_eval", n_eval)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    for name in INITIALISATIONS:
        cfg = _compose([
            f"export_dir={export_dir}", f"model.pretrained={name == 'pretrained'}", f"seed={seed}",
            f"data.max_train_volumes={n_train}", f"data.max_eval_volumes={n_eval}", f"data.seed={seed}",
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", f"+trainer.val_check_interval={eval_every}",
            "trainer.check_val_every_n_epoch=null", "trainer.num_sanity_val_steps=0", *overrides,
        ])
        with open_dict(cfg):
            cfg.paths.output_dir = str(out / name)
        log.info("fine-tuning with %s initialisation", name)
        results[name] = _run_one(cfg, seed)
    settings = {"export_dir": str(export_dir), "n_train": n_train, "steps": steps, "eval_every": eval_every,
                "n_eval": n_eval, "n_test": len(results[INITIALISATIONS[0]]["test_volumes"]), "seed": seed,
                "overrides": list(overrides)}
    report = {"settings": settings, "results": results}
    atomic_write_json(out / "compare_init.json", report)
    atomic_write_text(out / "compare_init.md", _markdown(results, settings))
    _plot(results, out / "compare_init.png", f"{n_train} labelled volumes, {steps} steps")
    return report


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Split ``key=value`` arguments into this script's (typed) and the segmentation config's overrides.

    Raises:
        ValueError: an argument without '=', a missing export_dir, or a non-integer count (lists the arguments).
    """
    own: dict[str, str] = {}
    overrides: list[str] = []
    usage = "arguments: " + ", ".join(f"{k}=<required>" if v is None else f"{k}={v}" for k, v in ARGUMENTS.items()) \
        + ", plus any medvl_segment override (e.g. trainer=gpu data.demo.num_cases=40)"
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {argument!r} is not key=value; {usage}")
        if key in ARGUMENTS:
            own[key] = value
        else:
            overrides.append(argument)
    if not own.get("export_dir"):
        raise ValueError(f"export_dir is required; {usage}")
    parsed: dict[str, Any] = {"export_dir": own["export_dir"], "out": own.get("out", ARGUMENTS["out"])}
    for key in ("n_train", "steps", "eval_every", "n_eval", "seed"):
        text = own.get(key, ARGUMENTS[key])
        try:
            parsed[key] = int(text)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {text!r}; {usage}") from None
    return parsed, overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m medvl.segmentation.compare_init``; returns the exit status."""
    try:
        arguments, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    except ValueError as error:
        print(f"compare_init: error: {error}", file=sys.stderr)
        return 2
    report = compare_initialisations(**arguments, overrides=overrides)
    out = Path(arguments["out"]).resolve()
    print((out / "compare_init.md").read_text())
    print(f"Figure: {out / 'compare_init.png'}\nResults: {out / 'compare_init.json'}")
    return 0 if report["results"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
