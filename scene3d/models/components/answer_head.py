"""`AnswerClassifierHead`: answer logits over a fixed vocabulary from a question fused with its scene.

    s = mean of the fused question tokens                      (Q, H)
    a_k = softmax_k((W_o o_k) . s / sqrt(H)),  o = sum_k a_k o_k  attention-pooled object tokens (Q, C)
    logits = MLP([s ; W_p o])                                  (Q, A)

As in ScanQA / 3D-VisTA, QA is classification over the training split's answers.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AnswerClassifierHead"]


class AnswerClassifierHead(nn.Module):
    """Answer classification (module docstring).

    Args:
        object_dim: C. text_dim: H. num_answers: A (>= 1). hidden_dim: MLP width (default 2 H). dropout.

    Shapes:
        text (Q, L, H), text_mask (Q, L) bool, objects (Q, K, C), object_mask (Q, K) bool -> (Q, A)
    """

    def __init__(self, object_dim: int, text_dim: int, num_answers: int, hidden_dim: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_answers < 1:
            raise ValueError(f"num_answers must be >= 1, got {num_answers}")
        hidden = hidden_dim or 2 * text_dim
        self.key = nn.Linear(object_dim, text_dim)
        self.value = nn.Linear(object_dim, text_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(2 * text_dim), nn.Linear(2 * text_dim, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, num_answers))

    def forward(self, text: Tensor, text_mask: Tensor, objects: Tensor, object_mask: Tensor) -> Tensor:
        weights = text_mask.unsqueeze(-1).to(text.dtype)
        sentence = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (Q, H)
        scores = torch.einsum("qkh,qh->qk", self.key(objects), sentence) / math.sqrt(sentence.shape[-1])
        attention = scores.masked_fill(~object_mask, float("-inf")).softmax(dim=-1)  # (Q, K)
        pooled = torch.einsum("qk,qkh->qh", attention, self.value(objects))
        return self.mlp(torch.cat([sentence, pooled], dim=-1))
