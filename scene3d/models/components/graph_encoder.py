"""Scene-graph encoder: message passing over typed, geometric edges (torch-geometric `TransformerConv`).

Edges come from `scene3d.data.scene_graph.build_scene_graph`: `edge_attr` holds the multi-hot relation flags
(above, on, next_to, left_of, ...: the edge types), `edge_geom` continuous pair geometry (offsets, distances,
overlaps, log volume ratio). Both enter every attention weight and message:

    e_ij   = MLP_e([r_ij ; symlog(g_ij)])                          symlog(x) = sign(x) log(1 + |x|)
    h'_i   = h_i + TransformerConv(LN(h), e)_i      multi-head attention over incoming edges, keys and values
                                                    + W_e e_ji, plus W_s LN(h)_i (its root weight)
    h''_i  = h'_i + FFN(LN(h'_i))
    out    = LN(h after num_layers such blocks)

An edge (j, i) of `edge_index` sends a message from node j (the relation's subject) to node i. symlog keeps
large geometric values (log volume ratios of point-sized boxes reach -14) in a range a Linear layer handles.
Graphs are batched with torch_geometric's `Batch` (disjoint union), never padded.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv

__all__ = ["SceneGraphEncoder", "check_graph_inputs", "symlog"]


def symlog(x: Tensor) -> Tensor:
    """sign(x) * log(1 + |x|): identity-like near 0, logarithmic for large |x|."""
    return torch.sign(x) * torch.log1p(x.abs())


def check_graph_inputs(
    x: Tensor, edge_index: Tensor, relation_flags: Tensor, edge_geometry: Tensor, dim: int, num_relations: int,
    geometry_dim: int,
) -> None:
    """Validate node features and edges of a (batched) scene graph.

    Raises:
        ValueError: x not (N, dim); edge_index not a (2, E) integer tensor of indices in [0, N); relation_flags
            not (E, num_relations); edge_geometry not (E, geometry_dim); non-finite edge values.
    """
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape (N, {dim}), got {tuple(x.shape)}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.is_floating_point():
        raise ValueError(
            f"edge_index must be a (2, E) integer tensor, got {edge_index.dtype} {tuple(edge_index.shape)}")
    num_edges = edge_index.shape[1]
    if num_edges and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.shape[0]):
        raise ValueError(f"edge_index refers to nodes outside [0, {x.shape[0]})")
    if tuple(relation_flags.shape) != (num_edges, num_relations):
        raise ValueError(f"relation_flags must have shape (E, R) = ({num_edges}, {num_relations}), "
                         f"got {tuple(relation_flags.shape)}")
    if tuple(edge_geometry.shape) != (num_edges, geometry_dim):
        raise ValueError(f"edge_geometry must have shape (E, G) = ({num_edges}, {geometry_dim}), "
                         f"got {tuple(edge_geometry.shape)}")
    for name, tensor in (("relation_flags", relation_flags), ("edge_geometry", edge_geometry)):
        if num_edges and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} holds NaN or inf values")


class SceneGraphEncoder(nn.Module):
    """Contextualise object tokens over the scene graph (see the module docstring for the formula).

    Args:
        dim: node channels C.
        num_layers: message-passing blocks (>= 1).
        num_heads: attention heads of each `TransformerConv`; must divide dim.
        num_relations: R, width of the relation flags (len(scene_graph.RELATIONS)).
        geometry_dim: G, width of the edge geometry (len(scene_graph.EDGE_GEOMETRY_FEATURES)).
        ffn_ratio: feed-forward width as a multiple of dim.
        dropout: dropout on attention weights and block outputs.

    Shapes:
        x: (N, C); edge_index: (2, E); relation_flags: (E, R); edge_geometry: (E, G) -> (N, C)

    Raises:
        ValueError: bad constructor arguments or inputs (see `check_graph_inputs`).
    """

    def __init__(self, dim: int = 64, num_layers: int = 3, num_heads: int = 4, num_relations: int = 17,
                 geometry_dim: int = 9, ffn_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_layers", num_layers), ("num_heads", num_heads),
                            ("num_relations", num_relations), ("geometry_dim", geometry_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not ffn_ratio > 0:
            raise ValueError(f"ffn_ratio must be > 0, got {ffn_ratio!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.num_relations, self.geometry_dim = dim, num_relations, geometry_dim
        self.edge_mlp = nn.Sequential(nn.Linear(num_relations + geometry_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        hidden = max(1, round(dim * ffn_ratio))
        self.attention_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        # root_weight=True: TransformerConv builds its skip Linear either way (it would otherwise be a parameter
        # without gradient), so it is used: h_i's own transformed state joins the aggregated messages.
        self.convs = nn.ModuleList(
            TransformerConv(dim, dim // num_heads, heads=num_heads, concat=True, dropout=dropout, edge_dim=dim,
                            root_weight=True)
            for _ in range(num_layers)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
            for _ in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def edge_features(self, relation_flags: Tensor, edge_geometry: Tensor) -> Tensor:
        """Embedded edges e_ij, (E, R), (E, G) -> (E, C)."""
        return self.edge_mlp(torch.cat([relation_flags.to(edge_geometry.dtype), symlog(edge_geometry)], dim=-1))

    def forward(self, x: Tensor, edge_index: Tensor, relation_flags: Tensor, edge_geometry: Tensor) -> Tensor:
        """Node states after message passing, (N, C)."""
        check_graph_inputs(x, edge_index, relation_flags, edge_geometry, self.dim, self.num_relations,
                           self.geometry_dim)
        edges = self.edge_features(relation_flags.to(x.dtype), edge_geometry.to(x.dtype))
        for attention_norm, conv, ffn_norm, ffn in zip(self.attention_norms, self.convs, self.ffn_norms, self.ffns):
            x = x + self.dropout(conv(attention_norm(x), edge_index, edges))
            x = x + self.dropout(ffn(ffn_norm(x)))
        return self.norm(x)
