"""Prediction heads on contextual object tokens: object class (masked object modelling), relation pair embedding.

    ObjectClassHead:   logits_n = W2 GELU(W1 LN(h_n) + b1) + b2                     (N, C) -> (N, K)
    RelationPairHead:  z_t = ProjectionHead([h_s(t) ; h_o(t) ; h_s(t) * h_o(t)])    subject, object -> (T, E)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.layers.projection import ProjectionHead

__all__ = ["ObjectClassHead", "RelationPairHead"]


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class ObjectClassHead(nn.Module):
    """Classify object tokens into K classes with a one-hidden-layer MLP.

    Args:
        dim: token channels C.
        num_classes: K (>= 2).
        hidden_dim: MLP width (default dim).

    Shapes:
        h: (N, C) -> (N, K)

    Raises:
        ValueError: bad arguments, or h not (N, C).
    """

    def __init__(self, dim: int, num_classes: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        _positive("dim", dim)
        _positive("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a classifier, got {num_classes}")
        hidden = dim if hidden_dim is None else hidden_dim
        _positive("hidden_dim", hidden)
        self.dim = dim
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, h: Tensor) -> Tensor:
        if h.dim() != 2 or h.shape[1] != self.dim:
            raise ValueError(f"h must have shape (N, {self.dim}), got {tuple(h.shape)}")
        return self.net(h)


class RelationPairHead(nn.Module):
    """Embed (subject, object) pairs of object tokens, e.g. for relation triplet <-> phrase contrast.

    Args:
        dim: token channels C.
        out_dim: embedding width E.

    Shapes:
        h: (N, C); subjects, objects: (T,) long node indices -> (T, E)

    Raises:
        ValueError: bad arguments, or indices that are not (T,) integers in [0, N).
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        _positive("dim", dim)
        _positive("out_dim", out_dim)
        self.dim = dim
        self.proj = ProjectionHead(3 * dim, out_dim, hidden_dim=dim, num_layers=2)

    def forward(self, h: Tensor, subjects: Tensor, objects: Tensor) -> Tensor:
        if h.dim() != 2 or h.shape[1] != self.dim:
            raise ValueError(f"h must have shape (N, {self.dim}), got {tuple(h.shape)}")
        for name, index in (("subjects", subjects), ("objects", objects)):
            if index.dim() != 1 or index.is_floating_point() or index.shape != subjects.shape:
                raise ValueError(f"{name} must be a (T,) integer tensor like subjects, got {tuple(index.shape)}")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= h.shape[0]):
                raise ValueError(f"{name} holds node indices outside [0, {h.shape[0]})")
        subject, obj = h[subjects], h[objects]  # (T, C) each
        return self.proj(torch.cat([subject, obj, subject * obj], dim=-1))
