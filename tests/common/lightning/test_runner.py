"""End-to-end tests of the shared runner on the toy task, with the real config groups."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.lightning.runner import run
import torch

from common.export import load_checkpoint


def test_run_writes_every_artefact(toy_cfg, capsys):
    cfg = toy_cfg()
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    # metrics.json is a flat dict of floats with train, val and test terms
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    for key in ("val/loss", "val/align_loss", "val/l2_loss", "test/loss", "test/cos_sim", "trainer/global_step"):
        assert key in saved, key
    assert saved["trainer/global_step"] == 8  # 64 samples / 16 per batch * 2 epochs
    # resolved config, checkpoints (last + best), figures, csv log
    assert "ToyAlignModule" in (out / "config.yaml").read_text()
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert not [n for n in ckpts if n.endswith(".tmp")]
    assert (out / "figures" / "loss_curves.png").stat().st_size > 5000
    assert (out / "figures" / "metric_curves.png").stat().st_size > 5000
    assert (out / "csv" / "metrics.csv").is_file()
    # the run folder is the last thing printed
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-1] == f"Run directory: {out.resolve()}"
    # checkpoints load without unpickling arbitrary objects
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8


def test_training_reduces_the_loss(toy_cfg):
    metrics = run(toy_cfg("trainer.max_epochs=6", "test=false"))
    # the toy map is learnable: alignment loss after 6 epochs is far below its value at init (~1.0)
    assert metrics["val/align_loss"] < 0.3


def test_resume_continues_from_saved_step(toy_cfg):
    first = run(toy_cfg("trainer.max_epochs=1", "test=false"))
    assert first["trainer/global_step"] == 4
    second = run(toy_cfg("trainer.max_epochs=3", "resume=true", "test=false"))
    assert second["trainer/global_step"] == 12  # 4 restored + 8 new, not 12 new from scratch


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(toy_cfg):
    first = run(toy_cfg("trainer.max_epochs=1", "test=false"))
    assert first["trainer/global_step"] == 4
    cfg = toy_cfg("trainer.max_epochs=1", "test=false")  # same run folder, no resume=true
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    with pytest.raises(ValueError, match="resume=true"):
        run(cfg)
    assert last.stat().st_mtime_ns == before and (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()


def test_interrupt_saves_last_checkpoint_and_resume_finishes(toy_cfg, tmp_path):
    cfg = toy_cfg("trainer.max_epochs=2", "test=false",
                  "+callbacks.stopper._target_=tests.common.lightning.toy.InterruptAtStep",
                  "+callbacks.stopper.step=3")
    with pytest.raises(SystemExit):  # Lightning turns Ctrl+C into a graceful exit(1)
        run(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 3
    cfg.callbacks.stopper = None  # the runner skips empty entries
    cfg.resume = True
    metrics = run(cfg)
    assert metrics["trainer/global_step"] == 8  # finished the 2 epochs, continuing mid-epoch from step 3


def test_missing_ckpt_path_is_a_clear_error(toy_cfg, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run(toy_cfg(f"ckpt_path={tmp_path}/nope.ckpt"))


def test_seeded_runs_are_deterministic(toy_cfg, tmp_path):
    a = run(toy_cfg("trainer.max_epochs=1", "test=false"))
    shutil.rmtree(tmp_path / "run")
    b = run(toy_cfg("trainer.max_epochs=1", "test=false"))
    assert a["val/loss"] == pytest.approx(b["val/loss"], rel=1e-6)


def test_a_failed_launched_rank_fails_the_run():
    """Rank 0 must not report success while a rank it launched died (Lightning polls only every 5 s)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    import pytest

    from common.lightning.runner import wait_for_launched_ranks

    def trainer_with_children(*codes):
        procs = [subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({code})"]) for code in codes]
        return SimpleNamespace(strategy=SimpleNamespace(launcher=SimpleNamespace(procs=procs)))

    wait_for_launched_ranks(trainer_with_children(0, 0))
    wait_for_launched_ranks(SimpleNamespace(strategy=SimpleNamespace()))  # single process: no launcher
    with pytest.raises(RuntimeError, match="rank 2 .* exited with code 3"):
        wait_for_launched_ranks(trainer_with_children(0, 3))
