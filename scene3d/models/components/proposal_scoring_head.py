"""`ProposalScoringHead`: one score per proposal for a text, the proposals attending to the text.

    o' = CrossAttentionFusion(o, text)        proposal tokens (T, K, C) attend to the fused text tokens (T, L, H)
    s  = MLP([o' ; o' * W t])                 t = mean of the valid text tokens (T, H), W: H -> C

The grounding head (which proposal a description names) and QA's related-object head (which proposals a question
is about) are both this.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.layers.cross_attention import CrossAttentionFusion

__all__ = ["ProposalScoringHead"]


class ProposalScoringHead(nn.Module):
    """Score K proposals per text (module docstring).

    Args:
        object_dim: C. text_dim: H. num_layers, num_heads: the proposals -> text cross-attention (num_heads
            divides C). hidden_dim: MLP width (default C).

    Shapes:
        objects (T, K, C), object_mask (T, K) bool, text (T, L, H), text_mask (T, L) bool -> (T, K) logits,
        -inf at padded proposals.
    """

    def __init__(self, object_dim: int, text_dim: int, num_layers: int = 1, num_heads: int = 2,
                 hidden_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden_dim or object_dim
        self.attend = CrossAttentionFusion(object_dim, num_layers, num_heads, kv_dim=text_dim, dropout=dropout)
        self.text_proj = nn.Linear(text_dim, object_dim)
        self.mlp = nn.Sequential(nn.Linear(2 * object_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, objects: Tensor, object_mask: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        attended = self.attend(objects, object_mask, text, text_mask)  # (T, K, C)
        weights = text_mask.unsqueeze(-1).to(text.dtype)
        sentence = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (T, H)
        gate = self.text_proj(sentence).unsqueeze(1)  # (T, 1, C)
        logits = self.mlp(torch.cat([attended, attended * gate], dim=-1)).squeeze(-1)  # (T, K)
        return logits.masked_fill(~object_mask, float("-inf"))

