from __future__ import annotations

import json

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
    cb.on_validation_end(_FakeTrainer(2, {"val/a_loss": torch.tensor(1.5), "val/R@1": torch.tensor(0.25)}), None)
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


def test_plotted_validation_curves_match_the_csv_log(tmp_path):
    """Every point the plots draw is the value csv/metrics.csv logged for that step, none missing or shifted:
    metrics logged in the module's on_validation_epoch_end (retrieval, AUROC, Dice) included. The CSV's `step`
    is Lightning's 0-based index of the last optimiser step; the plots' x is the number of steps done (+1)."""
    import csv
    import math

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from tests.common.lightning.toy import ToyEpochMetricModule, ToyPairsDataModule

    plots = PlotCurves(tmp_path / "figures")
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="csv", version=""),
                        callbacks=[plots], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=1)
    trainer.fit(ToyEpochMetricModule(dim=8), datamodule=ToyPairsDataModule())
    logged: dict[str, list[tuple[int, float]]] = {}
    with open(tmp_path / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if value != "" and (name.startswith("val/") or name.endswith("_step")):
                    logged.setdefault(name.removesuffix("_step"), []).append((int(row["step"]) + 1, float(value)))
    assert {k for k in logged if k.startswith("val/")} == {
        "val/epoch_score", "val/loss", "val/align_loss", "val/l2_loss", "val/cos_sim"}
    assert len(logged["train/loss"]) == 12  # 64 pairs / 16 per batch x 3 epochs
    for name, points in logged.items():
        drawn = plots.history[name]
        assert [s for s, _ in drawn] == [s for s, _ in points], name
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(drawn, points)), name
    assert [v for _, v in plots.history["val/epoch_score"]] == [0.5, 1.5, 2.5]
    assert (tmp_path / "figures" / "metric_curves.png").is_file()
    saved = json.loads((tmp_path / "figures" / "curves.json").read_text())
    assert saved["val/epoch_score"] == [[4, 0.5], [8, 1.5], [12, 2.5]]
