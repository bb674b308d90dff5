"""The report labeler: TriBERT (text only) + a finding head, fine-tuned on labelled reports (no images).

    loss = mean over known (report, finding) pairs of BCE(logit, label)        (NaN labels are skipped)

Validation computes per-finding AUROC and, per finding, the decision threshold that maximises F1 on the
validation reports; the thresholds are stored with the weights (a buffer), so the best checkpoint carries the
thresholds chosen for its own weights and ``stage=predict`` needs nothing else. Everything needed to rebuild the
model (tokenizer, label names, sizes, the head's and fine-tuning strategy's configs) is in its hyper-parameters.

Metrics: ``{split}/auroc/<finding>``, ``{split}/auroc_mean`` (over findings with both classes; AUROC by
torchmetrics' ``binary_auroc``), ``{split}/f1/<finding>`` and ``{split}/f1_mean`` at the stored thresholds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor

from common.lightning.hparams import plain_container
from common.text.tokenizer import tokenizer_from_json
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.components.tribert import TriBERT

__all__ = ["ReportLabelerModule", "best_f1_threshold"]

_DEFAULT_HEAD = {"_target_": "medvl.models.components.finding_heads.SentenceEvidenceHead"}
_DEFAULT_FINETUNING = {"_target_": "common.finetuning.FullFinetuning"}
_ALLOWED_TARGET_PREFIXES = ("common.", "medvl.")


def _checked_component(config: Mapping[str, Any] | None, default: dict[str, Any], key: str) -> dict[str, Any]:
    """A component config as a plain dict; its `_target_` must be the project's own (checkpoints are data:
    rebuilding a model from one must never import arbitrary code)."""
    config = plain_container(dict(config)) if config else dict(default)
    target = str(config.get("_target_", ""))
    if not target.startswith(_ALLOWED_TARGET_PREFIXES):
        raise ValueError(f"model.{key}._target_={target!r}: the labeler builds only the project's own components "
                         f"(a _target_ starting with {' or '.join(_ALLOWED_TARGET_PREFIXES)})")
    return config


def best_f1_threshold(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The probability threshold t maximising F1 of (p >= t) on these reports, and that F1.

    Every distinct cut of the sorted probabilities is tried; the threshold is placed halfway between the lowest
    accepted and the highest rejected probability (the widest margin for reports not seen here; ties keep the
    strictest cut). With no positive the threshold is 0.5 and F1 is NaN (undefined).

    Shapes: probabilities, labels: (N,) -> (threshold, f1)
    """
    positives = int(labels.sum())
    if positives == 0:
        return 0.5, math.nan
    order = np.argsort(-probabilities, kind="stable")
    sorted_p, sorted_y = probabilities[order], labels[order]
    true_pos = np.cumsum(sorted_y)
    predicted = np.arange(1, len(sorted_y) + 1)
    f1 = 2 * true_pos / (predicted + positives)
    # only cut where the next probability differs (equal probabilities get the same decision)
    distinct = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    f1 = np.where(distinct, f1, -1.0)
    best = int(np.argmax(f1))
    threshold = (sorted_p[best] + sorted_p[best + 1]) / 2 if best + 1 < len(sorted_p) else sorted_p[best]
    return float(threshold), float(f1[best])


def _f1_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    predicted = probabilities >= threshold
    true_pos = float((predicted & (labels == 1)).sum())
    denominator = float(predicted.sum() + labels.sum())
    return 2 * true_pos / denominator if denominator else math.nan


class ReportLabelerModule(L.LightningModule):
    """Fine-tune a report encoder into a multi-finding classifier.

    Args:
        tokenizer_json: the tokenizer as JSON (from the datamodule's `model_kwargs`); saved in the checkpoint.
        label_names: K finding names.
        text_encoder: TriBERT keyword arguments (hidden_size, num_layers, num_heads, intermediate_size,
            pretrained_dir, ...); the labeler uses no cross-attention layer.
        head: config of a head from `medvl.models.components.finding_heads` (``_target_``), built with
            hidden_size and num_findings.
        finetuning: config of a strategy from `common.finetuning` (full, frozen encoder, LoRA).
        lr: learning rate of the head (and of new weights); encoder_lr: of the encoder's weights (None = lr).
        weight_decay: AdamW weight decay.
        max_length, max_sentences: tokenisation limits (tokens per report, sentences per report).

    Shapes:
        forward(sentences: B lists of str) -> {"logits": (B, K), ...head extras}
    """

    def __init__(self, tokenizer_json: str, label_names: Sequence[str], text_encoder: Mapping[str, Any] | None = None,
                 head: Mapping[str, Any] | None = None, finetuning: Mapping[str, Any] | None = None,
                 lr: float = 1e-3, encoder_lr: float | None = None, weight_decay: float = 0.01,
                 max_length: int = 512, max_sentences: int = 50) -> None:
        super().__init__()
        if not label_names:
            raise ValueError("label_names is empty: the labeler needs at least one finding column")
        head_config = _checked_component(head, _DEFAULT_HEAD, "head")
        finetuning_config = _checked_component(finetuning, _DEFAULT_FINETUNING, "finetuning")
        text_kwargs = plain_container(dict(text_encoder or {}))
        self.save_hyperparameters({
            "tokenizer_json": tokenizer_json, "label_names": list(label_names),
            # the weights live in the checkpoint: rebuilding it must not need the pre-trained folder
            "text_encoder": {**text_kwargs, "pretrained_dir": None},
            "head": head_config, "finetuning": finetuning_config, "lr": float(lr),
            "encoder_lr": None if encoder_lr is None else float(encoder_lr), "weight_decay": float(weight_decay),
            "max_length": int(max_length), "max_sentences": int(max_sentences),
        })
        self.label_names = list(label_names)
        self.tokenizer = tokenizer_from_json(tokenizer_json)
        self.report_batcher = ReportBatchEncoder(self.tokenizer, max_length=max_length, max_sentences=max_sentences)
        encoder = TriBERT(vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
                          max_sentences=max_sentences, num_cross_attention_layers=0,
                          **{k: v for k, v in text_kwargs.items() if k != "num_cross_attention_layers"})
        self.text_encoder = instantiate(finetuning_config).apply(encoder)
        self.head = instantiate(head_config, hidden_size=encoder.hidden_size, num_findings=len(self.label_names))
        self.register_buffer("thresholds", torch.full((len(self.label_names),), 0.5))
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {}

    # ------------------------------------------------------------------------------------------ model
    def forward(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        encoded = self.text_encoder.encode_text(self.report_batcher(sentences))
        return self.head(encoded)

    @torch.no_grad()
    def predict_probabilities(self, sentences: Sequence[Sequence[str]]) -> Tensor:
        """(B, K) sigmoid probabilities (eval mode is the caller's: `model.eval()`)."""
        return torch.sigmoid(self(sentences)["logits"])

    @staticmethod
    def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
        """Mean BCE over the known labels; (B, K) each. 0 (with a gradient path) when none is known."""
        known = ~torch.isnan(labels)
        if not known.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[known], labels[known])

    # ------------------------------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.masked_bce(self(batch["sentences"])["logits"], batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["sentences"]))
        return loss

    def _eval_step(self, split: str, batch: dict[str, Any]) -> None:
        logits = self(batch["sentences"])["logits"]
        self.log(f"{split}/loss", self.masked_bce(logits, batch["labels"]), batch_size=len(batch["sentences"]))
        self._outputs.setdefault(split, []).append((torch.sigmoid(logits).detach().cpu(), batch["labels"].cpu()))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish("val", choose_thresholds=not self.trainer.sanity_checking)

    def on_test_epoch_end(self) -> None:
        self._finish("test", choose_thresholds=False)

    def _finish(self, split: str, choose_thresholds: bool) -> None:
        outputs = self._outputs.pop(split, [])
        if not outputs:
            return
        probabilities = torch.cat([p for p, _ in outputs]).numpy()
        labels = torch.cat([y for _, y in outputs]).numpy()
        metrics = finding_metrics(probabilities, labels, self.label_names,
                                  thresholds=None if choose_thresholds else self.thresholds.cpu().numpy())
        if choose_thresholds:
            self.thresholds.copy_(torch.tensor(metrics.pop("thresholds"), dtype=self.thresholds.dtype))
        else:
            metrics.pop("thresholds")
        for name, value in metrics.items():
            if not math.isnan(value):
                self.log(f"{split}/{name}", value, prog_bar=name == "auroc_mean")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr = self.hparams["lr"]
        encoder_lr = self.hparams["encoder_lr"] if self.hparams["encoder_lr"] is not None else lr
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": lr},
                  {"params": [p for p in self.text_encoder.parameters() if p.requires_grad], "lr": encoder_lr}]
        return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.hparams["weight_decay"])


def finding_metrics(probabilities: np.ndarray, labels: np.ndarray, names: Sequence[str],
                    thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """Per-finding AUROC and F1, over each finding's known labels (NaN skipped).

    With `thresholds` None, each finding's F1-optimal threshold on these reports is chosen (and returned); else F1
    is taken at the given thresholds.

    Shapes: probabilities, labels: (N, K); names: K -> {"auroc/<name>", "auroc_mean", "f1/<name>", "f1_mean": float,
        "thresholds": list of K floats}
    """
    from torchmetrics.functional.classification import binary_auroc

    out: dict[str, Any] = {}
    aurocs, f1s, chosen = [], [], []
    for k, name in enumerate(names):
        known = ~np.isnan(labels[:, k])
        p, y = probabilities[known, k], labels[known, k].astype(np.int64)
        if thresholds is None:
            threshold, f1 = best_f1_threshold(p, y)
        else:
            threshold = float(thresholds[k])
            f1 = _f1_at(p, y, threshold)
        chosen.append(threshold)
        both = 0 < y.sum() < len(y)
        auroc = float(binary_auroc(torch.from_numpy(p).double(), torch.from_numpy(y))) if both else math.nan
        out[f"auroc/{name}"], out[f"f1/{name}"] = auroc, f1
        if both:
            aurocs.append(auroc)
        if not math.isnan(f1):
            f1s.append(f1)
    out["auroc_mean"] = float(np.mean(aurocs)) if aurocs else math.nan
    out["f1_mean"] = float(np.mean(f1s)) if f1s else math.nan
    out["thresholds"] = chosen
    return out
