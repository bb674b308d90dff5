"""Heads that turn TriBERT's report encoding into one logit per finding (the report labeler's classifiers).

Chosen in the labeler's model config by ``_target_`` (``model.head``); each takes TriBERT's ``encode_text`` output
dict and returns ``{"logits": (B, K)}`` (plus what it can show about its decision).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ReportVectorHead", "SentenceEvidenceHead"]


class ReportVectorHead(nn.Module):
    """A linear classifier on the report-level vector (the global [CLS] state).

    Args:
        hidden_size: channels C of the text encoder.
        num_findings: K.
        dropout: dropout on the report vector before the linear layer.

    Shapes:
        encoded["report"] (B, C) -> {"logits": (B, K)}
    """

    def __init__(self, hidden_size: int, num_findings: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_findings)

    def forward(self, encoded: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"logits": self.linear(self.dropout(encoded["report"]))}


class SentenceEvidenceHead(nn.Module):
    """Per-sentence finding scores, pooled over the report with a smooth maximum (log-sum-exp).

        s[b, j, k] = w_k . sentence[b, j] + c_k                  (evidence of finding k in sentence j)
        logit[b, k] = log sum_j exp(s[b, j, k]) + bias_k          (over the report's real sentences)

    A finding is present when some sentence says so; "no pleural effusion" can only move its own sentence's score,
    so a report of 20 normal sentences and one positive one is not averaged away. `sentence_logits` shows which
    sentence decided a label (the docs' per-finding error examples use it).

    Args:
        hidden_size: channels C of the text encoder.
        num_findings: K.
        dropout: dropout on the sentence vectors before the linear layer.

    Shapes:
        encoded["sentences"] (B, S, C), encoded["sentence_mask"] (B, S) bool ->
        {"logits": (B, K), "sentence_logits": (B, S, K) (-inf at padded sentences)}
    """

    def __init__(self, hidden_size: int, num_findings: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_findings)
        self.bias = nn.Parameter(torch.zeros(num_findings))

    def forward(self, encoded: dict[str, Tensor]) -> dict[str, Tensor]:
        mask = encoded["sentence_mask"].bool()  # (B, S)
        scores = self.linear(self.dropout(encoded["sentences"]))  # (B, S, K)
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        return {"logits": torch.logsumexp(scores, dim=1) + self.bias, "sentence_logits": scores}
