"""Answer-classification losses for QA (config ``model.answer_loss._target_``).

- `SoftScoreBCE` (ScanQA's answer loss, VQA-style): binary cross-entropy of every answer's logit against its soft
  score s_a = (references equal to a) / (number of references), mean over questions and answers x A (i.e. summed
  over answers, as VQA implementations do).
- `AnswerCrossEntropy`: cross-entropy against the soft scores renormalised to a distribution; questions none of
  whose references is in the vocabulary are left out (they have no target distribution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AnswerCrossEntropy", "SoftScoreBCE"]


class SoftScoreBCE:
    """sum_a BCE(logit_a, s_a), averaged over questions. Shapes: logits, scores (Q, A) -> scalar."""

    def __call__(self, logits: Tensor, scores: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, scores, reduction="sum") / max(1, logits.shape[0])


class AnswerCrossEntropy:
    """-sum_a p_a log softmax(logits)_a with p = s / sum(s), over questions with an in-vocabulary answer."""

    def __call__(self, logits: Tensor, scores: Tensor) -> Tensor:
        total = scores.sum(dim=1)
        keep = total > 0
        if not keep.any():
            return logits.sum() * 0.0
        target = scores[keep] / total[keep, None]
        return -(target * torch.log_softmax(logits[keep], dim=1)).sum(dim=1).mean()
