"""Projection head mapping encoder features into the shared embedding space."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """Linear (num_layers=1) or Linear -> GELU -> Dropout -> Linear (num_layers=2) projection.

        num_layers=1: y = W · dropout(x) + b
        num_layers=2: y = W2 · dropout(GELU(W1 · x + b1)) + b2
        normalize:    y = y / max(||y||_2, 1e-12)

    Args:
        in_dim: input channels.
        out_dim: output channels.
        hidden_dim: hidden width for num_layers=2 (default: in_dim); must be None for num_layers=1.
        num_layers: 1 or 2.
        dropout: dropout probability (on the input for 1 layer, on the hidden activation for 2).
        normalize: L2-normalise the output along the last axis (for cosine-similarity losses).

    Shapes:
        x: (..., in_dim) -> (..., out_dim)

    Raises:
        ValueError: bad constructor arguments, or an input whose last axis is not `in_dim`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if num_layers not in (1, 2):
            raise ValueError(f"num_layers must be 1 (Linear) or 2 (Linear-GELU-Linear), got {num_layers!r}")
        if num_layers == 1 and hidden_dim is not None:
            raise ValueError("hidden_dim is only used with num_layers=2; leave it None or set num_layers=2")
        bad_hidden = isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1
        if hidden_dim is not None and bad_hidden:
            raise ValueError(f"hidden_dim must be a positive int or None, got {hidden_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.normalize = normalize
        if num_layers == 1:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        else:
            hidden = in_dim if hidden_dim is None else hidden_dim
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Project the last axis of `x` from in_dim to out_dim (and L2-normalise if configured)."""
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"expected input of shape (..., {self.in_dim}), got {tuple(x.shape)}")
        y = self.net(x)
        return F.normalize(y, dim=-1) if self.normalize else y
