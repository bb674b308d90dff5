"""The report labeler: learns a one-word rule, labels a file keeping its columns, refuses bad inputs clearly."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from medvl.data.report_table import ReportTableError
from medvl.label_reports import label_file, label_reports, load_labeler
from medvl.models.report_labeler import ReportLabelerModule, best_f1_threshold, finding_metrics

NORMAL = ["The heart size is normal.", "Trachea and both main bronchi are open.", "No lymph node is enlarged.",
          "The thoracic aorta has a normal diameter.", "Both lungs are aerated normally.", "Bones are intact."]


def _corpus(n: int, seed: int) -> list[dict[str, str]]:
    """Reports whose 'effusion' label is 1 exactly when the word 'effusion' appears unnegated, 'nodule' likewise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        effusion, nodule = rng.random() < 0.5, rng.random() < 0.5
        sentences = rng.sample(NORMAL, 3)
        sentences.append("There is a right pleural effusion." if effusion else "Pleural spaces are clear.")
        if nodule:
            sentences.append("A 6 mm nodule is seen in the left upper lobe.")
        rng.shuffle(sentences)
        rows.append({"AccessionNo": f"acc_{seed}_{i}", "site": "A", "report_text": " ".join(sentences),
                     "effusion": str(int(effusion)), "nodule": str(int(nodule))})
    return rows


def _write(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: r.get(c, "") for c in columns} for r in rows])
    return path


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="medvl_label_reports", overrides=[
            "model=report_labeler_tiny", "data.tokenizer.pretrained_dir=null", "data.tokenizer.min_frequency=1",
            "model.text_encoder.hidden_size=32", "model.text_encoder.num_heads=2",
            "model.text_encoder.intermediate_size=64", "model.text_encoder.num_layers=1", "model.lr=1e-2",
            "model.encoder_lr=1e-2", "model.head.dropout=0.0", "model.text_encoder.dropout=0.0",
            "trainer.max_epochs=6", "data.batch_size=16", "~callbacks.progress_bar", "~callbacks.plots", "logger=csv",
            "~trainer.plugins", "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            f"paths.output_dir={tmp_path / 'run'}", f"paths.root_dir={tmp_path}", *overrides])


def test_best_f1_threshold_is_the_f1_optimal_cut():
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    y = np.array([1, 0, 1, 0, 0])
    # cuts: >=0.9 -> F1 2/3; >=0.8 -> 0.5; >=0.7 -> 0.8 (tp 2, predicted 3, positives 2); lower cuts are worse;
    # the threshold sits halfway between 0.7 (accepted) and 0.3 (rejected)
    threshold, f1 = best_f1_threshold(p, y)
    assert threshold == pytest.approx(0.5) and f1 == pytest.approx(0.8)
    metrics = finding_metrics(p[:, None], y[:, None].astype(float), ["x"], thresholds=np.array([0.85]))
    assert metrics["f1/x"] == pytest.approx(2 / 3) and metrics["auroc/x"] == pytest.approx(5 / 6)


def test_unknown_labels_are_left_out_of_loss_and_metrics():
    logits = torch.tensor([[5.0, 0.0], [-5.0, 0.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    assert ReportLabelerModule.masked_bce(logits, labels) < 0.01
    metrics = finding_metrics(torch.sigmoid(logits).numpy(), labels.numpy(), ["a", "b"])
    assert metrics["auroc/a"] == 1.0 and np.isnan(metrics["auroc/b"]) and metrics["auroc_mean"] == 1.0


def test_labeler_learns_a_one_word_rule_and_labels_a_file_keeping_its_columns(tmp_path):
    train = _write(tmp_path / "train.csv", _corpus(96, seed=0))
    test = _write(tmp_path / "test.csv", _corpus(32, seed=1))
    overrides = [f"data.train={train}", f"data.test={test}", "test=true", "data.label_names=[effusion,nodule]",
                 "monitor.metric=val/loss", "monitor.mode=min"]  # val AUROC ties at 1.0 early on this easy corpus
    metrics = label_reports(_cfg(tmp_path, *overrides))
    assert metrics["test/auroc/effusion"] == 1.0 and metrics["test/auroc/nodule"] == 1.0

    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    model = load_labeler(checkpoints[0])
    unlabelled = _corpus(16, seed=2)
    source = _write(tmp_path / "archive.csv", unlabelled, columns=["AccessionNo", "site", "report_text"])
    out = tmp_path / "labelled.csv"
    assert label_file(model, source, out) == 16
    with out.open() as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["AccessionNo", "site", "report_text", "effusion_prob", "effusion_pred",
                                "nodule_prob", "nodule_pred"]
    for given, row in zip(unlabelled, written):
        assert (row["AccessionNo"], row["site"], row["report_text"]) == (given["AccessionNo"], "A", given["report_text"])
        assert row["effusion_pred"] == given["effusion"] and row["nodule_pred"] == given["nodule"]
        assert 0.0 <= float(row["effusion_prob"]) <= 1.0


@pytest.mark.parametrize("strategy", [{"_target_": "common.finetuning.LoraAdapters", "r": 2},
                                      {"_target_": "common.finetuning.FrozenEncoder"}])
def test_lora_and_frozen_strategies_train_only_what_they_say(strategy):
    model = ReportLabelerModule(tokenizer_json=_tiny_tokenizer_json(), label_names=["effusion"], finetuning=strategy,
                                text_encoder={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = model.configure_optimizers()
    model.train()
    assert model.text_encoder.training == (strategy["_target_"].endswith("LoraAdapters"))
    for _ in range(3):
        loss = model.masked_bce(model([["There is a right pleural effusion."], ["Heart normal."]])["logits"],
                                torch.tensor([[1.0], [0.0]]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("head.") for n in changed)
    encoder_changed = {n for n in changed if n.startswith("text_encoder.")}
    if strategy["_target_"].endswith("LoraAdapters"):
        assert encoder_changed and all("lora_" in n for n in encoder_changed)
    else:
        assert not encoder_changed


def test_predict_refuses_bad_inputs_naming_the_row_or_file(tmp_path):
    model = ReportLabelerModule(tokenizer_json=_tiny_tokenizer_json(), label_names=["effusion"],
                                text_encoder={"hidden_size": 16, "num_layers": 1, "num_heads": 2})
    empty = _write(tmp_path / "empty.csv", [{"id": "a", "report_text": "Heart normal."},
                                                 {"id": "b", "report_text": "  "}])
    with pytest.raises(ReportTableError, match=r"line 3: the report is empty"):
        label_file(model, empty, tmp_path / "o.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("report_text\nEfus\xf3n pleural.\n".encode("latin-1"))
    with pytest.raises(ReportTableError, match=r"(?s)latin.csv.*line 2: is not UTF-8"):
        label_file(model, latin, tmp_path / "o.csv")
    clash = _write(tmp_path / "clash.csv", [{"report_text": "Heart normal.", "effusion_prob": "x"}])
    with pytest.raises(ValueError, match="already has the output column"):
        label_file(model, clash, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_fit_refuses_a_label_other_than_0_1_or_empty_naming_the_line(tmp_path):
    rows = _corpus(10, seed=0)
    rows[4]["effusion"] = "yes"
    train = _write(tmp_path / "train.csv", rows)
    with pytest.raises(ReportTableError, match=r"line 6: label column 'effusion' holds 'yes'"):
        label_reports(_cfg(tmp_path, f"data.train={train}"))


def test_a_checkpoint_that_is_not_a_labeler_or_holds_code_is_refused(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, other)
    with pytest.raises(ValueError, match=r"other.ckpt is not a checkpoint of .*ReportLabelerModule"):
        load_labeler(other)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe.ckpt"):
        load_labeler(unsafe)
    with pytest.raises(ValueError, match="_target_"):
        ReportLabelerModule(tokenizer_json=_tiny_tokenizer_json(), label_names=["a"],
                            head={"_target_": "os.system", "command": "true"})


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _tiny_tokenizer_json() -> str:
    from common.text.tokenizer import tokenizer_to_json, train_wordpiece_tokenizer

    return tokenizer_to_json(train_wordpiece_tokenizer(NORMAL * 3 + ["pleural effusion nodule"], vocab_size=200,
                                                       min_frequency=1))
