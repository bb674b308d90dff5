"""The no-graph ablation of `SceneGraphEncoder`: the same number of residual blocks, applied to each object alone.

    h'_n  = h_n + MLP(LN(h_n))          (num_layers times; Linear -> GELU -> Linear, width hidden_dim)
    out   = LN(h)

Same call signature as `SceneGraphEncoder` (edges are accepted and ignored), so a model swaps one for the other.
`matched_hidden_dim` picks the MLP width that gives the same parameter count as a given module (the graph
encoder it replaces), so an ablation compares context against no context, not a bigger model against a smaller.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ObjectwiseEncoder", "matched_hidden_dim"]


def _block_parameters(dim: int, hidden: int) -> int:
    """LayerNorm(dim) + Linear(dim, hidden) + Linear(hidden, dim)."""
    return 2 * dim + (dim * hidden + hidden) + (hidden * dim + dim)


def matched_hidden_dim(target_parameters: int, dim: int, num_layers: int) -> int:
    """The MLP width h for which `ObjectwiseEncoder(dim, num_layers, h)` has about `target_parameters` parameters.

        params(h) = num_layers * (3 dim + h (2 dim + 1)) + 2 dim
        h = max(1, round(((target - 2 dim) / num_layers - 3 dim) / (2 dim + 1)))

    Raises:
        ValueError: non-positive arguments.
    """
    for name, value in (("target_parameters", target_parameters), ("dim", dim), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    per_layer = (target_parameters - 2 * dim) / num_layers - 3 * dim
    return max(1, round(per_layer / (2 * dim + 1)))


class ObjectwiseEncoder(nn.Module):
    """Per-object residual MLP blocks: no information moves between objects.

    Args:
        dim: node channels C.
        num_layers: residual blocks (>= 1).
        hidden_dim: MLP width (see `matched_hidden_dim`).
        dropout: dropout inside and after each MLP.

    Shapes:
        x: (N, C) [edge_index, relation_flags, edge_geometry: ignored] -> (N, C)

    Raises:
        ValueError: bad constructor arguments, or x not (N, C).
    """

    def __init__(self, dim: int = 64, num_layers: int = 3, hidden_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_layers", num_layers), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dim = dim
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim))
            for _ in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, edge_index: Tensor | None = None, relation_flags: Tensor | None = None,
                edge_geometry: Tensor | None = None) -> Tensor:
        """Per-object states (edges are ignored), (N, C)."""
        del edge_index, relation_flags, edge_geometry  # no context by design
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + self.dropout(mlp(norm(x)))
        return self.norm(x)
