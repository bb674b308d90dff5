"""Pre-norm transformer blocks in which text tokens attend to visual tokens (cross-attention fusion)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CrossAttentionBlock", "CrossAttentionFusion"]


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_mask(name: str, mask: Tensor, batch: int, length: int, tokens_name: str) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a bool tensor (True = valid token), got dtype {mask.dtype}; "
            f"convert it with `{name}.bool()` (or `~padding_mask` if it marks padding)"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} must have shape (B, {tokens_name}) = ({batch}, {length}), got {tuple(mask.shape)}")


def _check_inputs(
    x: Tensor,
    x_mask: Tensor | None,
    context: Tensor,
    context_mask: Tensor | None,
    dim: int,
    kv_dim: int,
) -> None:
    """Validate shapes, dtypes and that every sample has at least one valid query and context token."""
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape (B, L, {dim}), got {tuple(x.shape)}")
    if context.dim() != 3 or context.shape[-1] != kv_dim:
        raise ValueError(f"context must have shape (B, M, {kv_dim}), got {tuple(context.shape)}")
    batch, num_queries, _ = x.shape
    if context.shape[0] != batch:
        raise ValueError(f"x has batch size {batch} but context has batch size {context.shape[0]}")
    if num_queries == 0 or context.shape[1] == 0:
        raise ValueError(
            f"x and context need at least one token each, got L={num_queries}, M={context.shape[1]}"
        )
    if x_mask is not None:
        _check_mask("x_mask", x_mask, batch, num_queries, "L")
        # Syncs with the device once per call; the price of never returning NaN.
        empty = (~x_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"samples {empty} have no valid query token in x_mask; drop them from the batch")
    if context_mask is not None:
        _check_mask("context_mask", context_mask, batch, context.shape[1], "M")
        empty = (~context_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"samples {empty} have no valid context token in context_mask (softmax over nothing); "
                "drop them from the batch or give them at least one visual token"
            )


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: [self-attention over text] -> cross-attention to visual tokens -> MLP, each residual.

        x = x + SelfAttn(LN(x))                       (only if self_attention=True; padded keys masked)
        x = x + CrossAttn(q=LN(x), k=v=LN_kv(context)) (padded context tokens masked)
        x = x + MLP(LN(x))                            (Linear -> GELU -> Linear, hidden = mlp_ratio * dim)

    Masks are True for VALID tokens. Padded query positions are computed like the others (their values
    are meaningless) but never influence valid positions: they are masked out as self-attention keys and
    every other step is position-wise. Returned cross-attention weights come from
    `nn.MultiheadAttention` and are therefore taken after attention dropout in training mode.

    Args:
        dim: channels of the text tokens C.
        num_heads: attention heads; must divide `dim`.
        kv_dim: channels of the visual tokens C_kv (default: `dim`).
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        dropout: dropout on attention probabilities, after each sub-layer and inside the MLP.
        self_attention: include the text self-attention sub-layer.

    Shapes:
        x: (B, L, C); x_mask: (B, L) bool or None (all valid);
        context: (B, M, C_kv); context_mask: (B, M) bool or None (all valid);
        output: (B, L, C); cross-attention weights: (B, L, M), averaged over heads.

    Raises:
        ValueError: bad constructor arguments; inputs of the wrong shape or mask dtype; a sample with no
            valid context token or no valid query token (its softmax would be NaN).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        self_attention: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(
                f"dim ({dim}) must be divisible by num_heads ({num_heads}); pick e.g. num_heads=8 for dim=512"
            )
        kv_dim = dim if kv_dim is None else kv_dim
        _check_positive_int("kv_dim", kv_dim)
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim = dim
        self.kv_dim = kv_dim
        self.num_heads = num_heads

        if self_attention:
            self.norm_self = nn.LayerNorm(dim)
            self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        else:
            self.norm_self = None
            self.self_attn = None
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(kv_dim)
        self.cross_attn = nn.MultiheadAttention(
            dim, num_heads, dropout=dropout, kdim=kv_dim, vdim=kv_dim, batch_first=True
        )
        hidden = max(1, round(dim * mlp_ratio))
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        x_mask: Tensor | None,
        context: Tensor,
        context_mask: Tensor | None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Fuse `context` into `x`; returns x, or (x, cross-attention weights) if `return_attention`."""
        _check_inputs(x, x_mask, context, context_mask, self.dim, self.kv_dim)
        return self._forward_checked(x, x_mask, context, context_mask, return_attention)

    def _forward_checked(
        self,
        x: Tensor,
        x_mask: Tensor | None,
        context: Tensor,
        context_mask: Tensor | None,
        return_attention: bool,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """`forward` without input validation (the fusion stack validates once for all its blocks)."""
        # nn.MultiheadAttention's key_padding_mask is True = IGNORE; the project's masks are True = valid.
        x_padding = None if x_mask is None else ~x_mask
        context_padding = None if context_mask is None else ~context_mask

        if self.self_attn is not None:
            h = self.norm_self(x)
            h, _ = self.self_attn(h, h, h, key_padding_mask=x_padding, need_weights=False)
            x = x + self.dropout(h)

        kv = self.norm_context(context)
        h, weights = self.cross_attn(
            self.norm_query(x),
            kv,
            kv,
            key_padding_mask=context_padding,
            need_weights=return_attention,
            average_attn_weights=True,
        )
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.norm_mlp(x)))
        if return_attention:
            return x, weights  # weights: (B, L, M), mean over heads
        return x


class CrossAttentionFusion(nn.Module):
    """A stack of `depth` CrossAttentionBlocks followed by an optional final LayerNorm.

    Args:
        dim, num_heads, kv_dim, mlp_ratio, dropout, self_attention: as in `CrossAttentionBlock`.
        depth: number of blocks.
        final_norm: apply LayerNorm(dim) to the output (usual for pre-norm stacks).

    Shapes:
        x: (B, L, C); x_mask: (B, L) bool or None; context: (B, M, C_kv); context_mask: (B, M) bool or None;
        output: (B, L, C); with return_attention also a list of `depth` tensors (B, L, M), one per block.

    Raises:
        ValueError: as `CrossAttentionBlock`, plus depth < 1.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        self_attention: bool = True,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("depth", depth)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(
                dim,
                num_heads,
                kv_dim=kv_dim,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                self_attention=self_attention,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.dim = dim
        self.kv_dim = self.blocks[0].kv_dim

    def forward(
        self,
        x: Tensor,
        x_mask: Tensor | None,
        context: Tensor,
        context_mask: Tensor | None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Run every block; returns x, or (x, per-block cross-attention weights) if `return_attention`."""
        _check_inputs(x, x_mask, context, context_mask, self.dim, self.kv_dim)
        attentions: list[Tensor] = []
        for block in self.blocks:
            if return_attention:
                x, weights = block._forward_checked(x, x_mask, context, context_mask, True)
                attentions.append(weights)
            else:
                x = block._forward_checked(x, x_mask, context, context_mask, False)
        x = self.norm(x)
        if return_attention:
            return x, attentions
        return x
