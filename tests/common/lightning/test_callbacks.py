from __future__ import annotations

import torch

from common.lightning.plotting_callback import PlotCurves, plot_series
from common.lightning.checkpoint_io import AtomicCheckpointIO, atomic_torch_save


class _FakeTrainer:
    def __init__(self, step, metrics):
        self.global_step = step
        self.callback_metrics = metrics
        self.sanity_checking = False


def test_plot_curves_records_and_restores_history(tmp_path):
    cb = PlotCurves(tmp_path)
    cb.on_train_batch_end(_FakeTrainer(1, {"train/a_loss_step": torch.tensor(2.0), "train/a_loss_epoch": torch.tensor(9.0)}))
    cb.on_train_batch_end(_FakeTrainer(2, {"train/a_loss_step": torch.tensor(1.0)}))
    cb.on_validation_epoch_end(_FakeTrainer(2, {"val/a_loss": torch.tensor(1.5), "val/R@1": torch.tensor(0.25)}), None)
    assert cb.history["train/a_loss"] == [(1, 2.0), (2, 1.0)]  # *_epoch aggregates are not per-step points
    assert cb.history["val/R@1"] == [(2, 0.25)]
    restored = PlotCurves(tmp_path)
    restored.load_state_dict(cb.state_dict())
    assert restored.history == cb.history
    written = restored.save_figures()
    assert sorted(p.name for p in written) == ["loss_curves.png", "metric_curves.png"]


def test_plot_series_writes_png(tmp_path):
    path = plot_series({"train/loss": [(0, 1.0), (1, 0.5)], "val/loss": [(1, 0.7)]}, tmp_path / "x.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_checkpoint_io_round_trip_and_no_temp_files(tmp_path):
    io = AtomicCheckpointIO()
    ckpt = {"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}
    io.save_checkpoint(ckpt, tmp_path / "c" / "last.ckpt")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["last.ckpt"]
    loaded = io.load_checkpoint(tmp_path / "c" / "last.ckpt")
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))


def test_atomic_save_keeps_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"v": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    try:
        atomic_torch_save({"v": Unpicklable()}, target)
    except RuntimeError:
        pass
    assert torch.load(target, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
