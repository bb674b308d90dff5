"""compare_init: argument parsing, the report (table, JSON, figure), and a tiny end-to-end run (slow)."""
from __future__ import annotations

import json

import pytest

from medvl.segmentation import compare_init
from medvl.segmentation.compare_init import compare_initialisations, parse_args


def test_own_arguments_are_typed_and_the_rest_goes_to_the_config():
    parsed, overrides = parse_args(["export_dir=exp", "n_train=4", "steps=50", "trainer=gpu", "data.demo.size=32"])
    assert parsed == {"export_dir": "exp", "out": "outputs/compare_init", "n_train": 4, "steps": 50,
                      "eval_every": 30, "n_eval": 8, "seed": 0}
    assert overrides == ["trainer=gpu", "data.demo.size=32"]


@pytest.mark.parametrize("argv, message", [
    (["n_train=4"], "export_dir is required"),
    (["export_dir=e", "steps=many"], "steps must be an integer"),
    (["export_dir=e", "steps"], "is not key=value"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)
    assert compare_init.main(argv) == 2
    assert "n_train=8" in capsys.readouterr().err  # the usage lists every argument with its default


def test_report_table_json_and_figure(tmp_path, monkeypatch):
    seen = []

    def fake_run(cfg, seed):
        pretrained = cfg.model.pretrained
        seen.append((pretrained, cfg.data.max_train_volumes, cfg.trainer.max_steps, cfg.paths.output_dir))
        dice = 0.8 if pretrained else 0.5
        return {"curve": [{"step": 5, "val_dice_mean": dice - 0.2}, {"step": 10, "val_dice_mean": dice}],
                "test": {"test/dice/liver": dice, "test/dice/spleen": dice - 0.1, "test/dice_mean": dice - 0.05},
                "train_volumes": ["a", "b"], "test_volumes": ["c"], "class_names": ["background", "liver", "spleen"]}

    monkeypatch.setattr(compare_init, "_run_one", fake_run)
    report = compare_initialisations("exp", n_train=2, steps=10, eval_every=5, n_eval=1, out=tmp_path)
    assert [s[:3] for s in seen] == [(True, 2, 10), (False, 2, 10)]  # equal steps and data, only the init differs
    assert seen[0][3] != seen[1][3]
    table = (tmp_path / "compare_init.md").read_text()
    assert "| pretrained | 0.800 | 0.700 | 0.750 | 0.800 |" in table
    assert "| random | 0.500 | 0.400 | 0.450 | 0.500 |" in table
    assert json.loads((tmp_path / "compare_init.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "compare_init.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_end_to_end(tmp_path, tiny_export):
    report = compare_initialisations(
        tiny_export, n_train=2, steps=2, eval_every=1, n_eval=1, out=tmp_path / "out",
        overrides=[f"paths.root_dir={tmp_path}", "data.demo.num_cases=6", "data.demo.size=32", "data.cache_dir=null",
                   "data.batch_size=1", "data.samples_per_volume=1", "model.scheduler=null"],
    )
    for name in ("pretrained", "random"):
        result = report["results"][name]
        assert [p["step"] for p in result["curve"]] == [1, 2]
        assert 0.0 <= result["test"]["test/dice_mean"] <= 1.0 and len(result["train_volumes"]) == 2
    assert report["results"]["pretrained"]["train_volumes"] == report["results"]["random"]["train_volumes"]
    assert (tmp_path / "out" / "compare_init.png").is_file() and (tmp_path / "out" / "compare_init.md").is_file()
