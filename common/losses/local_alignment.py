"""GLoRIA-style local alignment loss between text units (words or sentences) and visual regions."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class LocalAlignmentLoss(nn.Module):
    """Token <-> region alignment (GLoRIA local loss) with symmetric cross-entropy over the batch.

    For the valid text units q_k of sample i and the valid regions c_m of sample j (cos = cosine similarity):

        a_km   = softmax_m(g1 * cos(q_k, c_m))          (over the valid regions of sample j)
        v_k    = sum_m a_km * c_m                       (region context of unit k, from the raw features)
        R(i,j) = log sum_k exp(g2 * cos(q_k, v_k))      (over the valid units of sample i)
        loss   = 1/2 * [ mean_i CE(g3 * R(i, :), i) + mean_j CE(g3 * R(:, j), j) ]
                          (rows: text -> image)          (columns: image -> text)

    Form used: R is the plain log-sum-exp above, as in DESIGN.md and GLoRIA's released code. The GLoRIA
    paper writes R = (1/g2) * log sum_k exp(g2 * cos); that only divides the logits g3 * R by g2 (a g2-times
    higher temperature), so we keep the form that GLoRIA's published numbers were trained with.
    Differences from GLoRIA's code, kept on purpose: the attention logits are cosine similarities (the
    spec, DESIGN.md "g1 * similarity"), not raw dot products followed by an extra softmax over words;
    and padded units / regions are masked instead of being cut by caption length.
    As in GLoRIA, R(i, j) grows with the number of valid units of sample i (up to log L), which shifts the
    image -> text logits towards texts with more units; rows (text -> image) are unaffected.

    A sample takes part only if it has at least one valid text unit and at least one valid region; other
    samples are dropped from the loss together (their row and their column), so their features get zero
    gradient and serve as no negative. All scores are computed in float32 (or float64 for float64 inputs)
    with autocast disabled: g3 * R spans about g3 * (g2 + log L), too wide for bf16 / fp16.

    Memory: the (text sample, region sample) pairs are scored in tiles of at most P = pair_chunk_size pairs.
    One tile holds about 3 * P * L * N elements (similarities, attention logits, attention weights) plus
    2 * P * L * C (contexts and their normalised copy), in float32, on top of the inputs and the (B, B)
    scores. With `recompute_in_backward` (default) each tile is recomputed during backward
    (activation checkpointing), so that is also the peak during backward instead of the full
    B * B * L * N of the unchunked computation; the price is one extra forward of the scores.

    Args:
        gamma1: g1, sharpness of the attention over regions (GLoRIA: 4); > 0.
        gamma2: g2, sharpness of the aggregation over text units (GLoRIA: 5); > 0.
        gamma3: g3, scale of the pair scores in the cross-entropy (GLoRIA: 10); > 0.
        loss_name: key of the returned loss; must end in "_loss".
        pair_chunk_size: largest number of pairs scored at once (see Memory); >= 1.
        recompute_in_backward: checkpoint the tiles when a gradient is needed and there is more than one tile.

    Shapes:
        q: (B, L, C) text units (L: units per sample: words or sentences), q_mask: (B, L) bool, True = valid
        c: (B, N, C) visual regions (N: regions per sample, e.g. flattened D*H*W patches or objects),
        c_mask: (B, N) bool, True = valid, or None (all valid)
        -> forward: {loss_name: ()}; pair_scores: (B, B); attention: (B, L, N)

    Raises:
        ValueError: bad arguments at construction; inputs with wrong ranks, mismatched B / C / L / N, non-bool
            masks, or no sample with both a valid unit and a valid region (forward).
    """

    def __init__(
        self,
        gamma1: float = 4.0,
        gamma2: float = 5.0,
        gamma3: float = 10.0,
        loss_name: str = "local_alignment_loss",
        pair_chunk_size: int = 64,
        recompute_in_backward: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("gamma1", gamma1), ("gamma2", gamma2), ("gamma3", gamma3)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 (GLoRIA uses 4, 5, 10); got {value!r}")
        if isinstance(pair_chunk_size, bool) or not isinstance(pair_chunk_size, int) or pair_chunk_size < 1:
            raise ValueError(f"pair_chunk_size must be an integer >= 1 (pairs scored at once); got {pair_chunk_size!r}")
        if not isinstance(loss_name, str) or not loss_name.endswith("_loss"):
            raise ValueError(f"loss_name must end in '_loss' so that the trainer sums it; got {loss_name!r}")
        self.gamma1 = float(gamma1)
        self.gamma2 = float(gamma2)
        self.gamma3 = float(gamma3)
        self.loss_name = loss_name
        self.pair_chunk_size = pair_chunk_size
        self.recompute_in_backward = recompute_in_backward

    def forward(self, q: Tensor, q_mask: Tensor, c: Tensor, c_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Return {loss_name: symmetric cross-entropy over g3 * R} for the samples that take part."""
        q_mask, c_mask = self._check_inputs(q, q_mask, c, c_mask)
        taking_part = q_mask.any(dim=1) & c_mask.any(dim=1)  # (B,)
        if not bool(taking_part.any()):
            raise ValueError(
                f"{type(self).__name__}: no sample has both a valid text unit and a valid region "
                f"(q_mask and c_mask: True = valid); check the masks or skip this loss for the batch"
            )
        kept = taking_part.nonzero(as_tuple=True)[0]  # (B',)
        scores = self.gamma3 * self.pair_scores(q[kept], q_mask[kept], c[kept], c_mask[kept])  # (B', B')
        labels = torch.arange(kept.numel(), device=scores.device)
        text_to_image = F.cross_entropy(scores, labels)
        image_to_text = F.cross_entropy(scores.T, labels)
        return {self.loss_name: 0.5 * (text_to_image + image_to_text)}

    def pair_scores(self, q: Tensor, q_mask: Tensor, c: Tensor, c_mask: Tensor | None = None) -> Tensor:
        """R(i, j) for every text sample i and region sample j (without g3), computed in tiles of pairs.

        Entries whose text sample has no valid unit or whose region sample has no valid region are -inf
        (the log of an empty sum); they carry no gradient, so selecting the finite entries is NaN-free.

        Shapes:
            q: (B, L, C), q_mask: (B, L), c: (B, N, C), c_mask: (B, N) or None -> (B, B), float32 or float64
        """
        q_mask, c_mask = self._check_inputs(q, q_mask, c, c_mask)
        batch = q.shape[0]
        # Samples without any valid unit / region are scored as if every (zeroed) entry were valid, so all
        # tiles stay finite; their entries are replaced with -inf at the end.
        q_has_unit = q_mask.any(dim=1)  # (B,)
        c_has_region = c_mask.any(dim=1)  # (B,)
        q_mask_safe = q_mask | ~q_has_unit[:, None]  # (B, L)
        c_mask_safe = c_mask | ~c_has_region[:, None]  # (B, N)
        regions_per_tile = min(batch, self.pair_chunk_size)
        texts_per_tile = max(1, self.pair_chunk_size // regions_per_tile)
        use_checkpoint = (
            self.recompute_in_backward
            and torch.is_grad_enabled()
            and (q.requires_grad or c.requires_grad)
            and (texts_per_tile < batch or regions_per_tile < batch)
        )
        with torch.autocast(device_type=q.device.type, enabled=False):
            q_units, c_raw = self._zero_padding(q, q_mask, c, c_mask)
            rows = []
            for text_start in range(0, batch, texts_per_tile):
                text_slice = slice(text_start, text_start + texts_per_tile)
                row_tiles = []
                for region_start in range(0, batch, regions_per_tile):
                    region_slice = slice(region_start, region_start + regions_per_tile)
                    tile_inputs = (
                        q_units[text_slice], q_mask_safe[text_slice], c_raw[region_slice], c_mask_safe[region_slice]
                    )
                    if use_checkpoint:
                        tile = checkpoint(self._tile_scores, *tile_inputs, use_reentrant=False, preserve_rng_state=False)
                    else:
                        tile = self._tile_scores(*tile_inputs)
                    row_tiles.append(tile)  # (b_text, b_region)
                rows.append(torch.cat(row_tiles, dim=1))  # (b_text, B)
            scores = torch.cat(rows, dim=0)  # (B, B)
        defined = q_has_unit[:, None] & c_has_region[None, :]  # (B, B)
        return torch.where(defined, scores, torch.full_like(scores, float("-inf")))

    def attention(self, q: Tensor, q_mask: Tensor, c: Tensor, c_mask: Tensor | None = None) -> Tensor:
        """Attention a_km of each sample's text units over its OWN regions (for grounding / pointing).

        Each row sums to 1 over the valid regions and is 0 on masked regions; rows of padded units, and all
        rows of a sample without any valid region, are 0.

        Shapes:
            q: (B, L, C), q_mask: (B, L), c: (B, N, C), c_mask: (B, N) or None -> (B, L, N), float32 or float64
        """
        q_mask, c_mask = self._check_inputs(q, q_mask, c, c_mask)
        c_mask_safe = c_mask | ~c_mask.any(dim=1, keepdim=True)  # (B, N): no all-masked softmax row
        with torch.autocast(device_type=q.device.type, enabled=False):
            q_units, c_raw = self._zero_padding(q, q_mask, c, c_mask)
            q_unit_vectors = F.normalize(q_units, dim=-1)  # (B, L, C)
            c_unit_vectors = F.normalize(c_raw, dim=-1)  # (B, N, C)
            similarity = torch.bmm(q_unit_vectors, c_unit_vectors.transpose(1, 2))  # (B, L, N)
            weights = self._region_softmax(similarity, c_mask_safe[:, None, :])  # (B, L, N)
        return weights * (q_mask[:, :, None] & c_mask[:, None, :])  # zero padded units and masked regions

    def _tile_scores(self, q_units: Tensor, q_mask: Tensor, c_raw: Tensor, c_mask: Tensor) -> Tensor:
        """R for a tile of text samples x region samples; masks must have a valid entry in every row.

        Shapes:
            q_units: (b_t, L, C), q_mask: (b_t, L), c_raw: (b_r, N, C), c_mask: (b_r, N) -> (b_t, b_r)
        """
        q_unit_vectors = F.normalize(q_units, dim=-1)  # (b_t, L, C)
        c_unit_vectors = F.normalize(c_raw, dim=-1)  # (b_r, N, C)
        similarity = torch.einsum("ilc,jmc->ijlm", q_unit_vectors, c_unit_vectors)  # (b_t, b_r, L, N)
        weights = self._region_softmax(similarity, c_mask[None, :, None, :])  # (b_t, b_r, L, N)
        context = torch.einsum("ijlm,jmc->ijlc", weights, c_raw)  # (b_t, b_r, L, C)
        cosine = torch.einsum("ilc,ijlc->ijl", q_unit_vectors, F.normalize(context, dim=-1))  # (b_t, b_r, L)
        logits = (self.gamma2 * cosine).masked_fill(~q_mask[:, None, :], float("-inf"))  # (b_t, b_r, L)
        return torch.logsumexp(logits, dim=-1)  # (b_t, b_r)

    def _region_softmax(self, similarity: Tensor, region_mask: Tensor) -> Tensor:
        """softmax over the last axis (regions) of g1 * similarity, restricted to `region_mask` (broadcast)."""
        logits = (self.gamma1 * similarity).masked_fill(~region_mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    @staticmethod
    def _zero_padding(q: Tensor, q_mask: Tensor, c: Tensor, c_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Upcast to >= float32 and zero padded units / regions, so garbage (even NaN) there cannot leak."""
        dtype = torch.promote_types(torch.promote_types(q.dtype, c.dtype), torch.float32)
        q_units = q.to(dtype).masked_fill(~q_mask[:, :, None], 0.0)  # (B, L, C)
        c_raw = c.to(dtype).masked_fill(~c_mask[:, :, None], 0.0)  # (B, N, C)
        return q_units, c_raw

    def _check_inputs(self, q: Tensor, q_mask: Tensor, c: Tensor, c_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validate shapes / dtypes; return (q_mask, c_mask) with c_mask filled with True when None."""
        name = type(self).__name__
        if q.dim() != 3 or c.dim() != 3:
            raise ValueError(
                f"{name} expects q: (B, L, C) text units and c: (B, N, C) regions; got q {tuple(q.shape)}, "
                f"c {tuple(c.shape)} (flatten feature maps first: (B, C, D, H, W) -> (B, D*H*W, C))"
            )
        if not (q.is_floating_point() and c.is_floating_point()):
            raise ValueError(f"{name} expects floating-point q and c; got {q.dtype} and {c.dtype}")
        (batch, units, channels), (c_batch, regions, c_channels) = q.shape, c.shape
        if batch < 1 or batch != c_batch:
            raise ValueError(f"{name}: q and c must share a batch size >= 1; got {batch} and {c_batch}")
        if channels < 1 or channels != c_channels:
            raise ValueError(
                f"{name}: q and c must share the channel size C >= 1 (project them first); got {channels} and {c_channels}"
            )
        if units < 1 or regions < 1:
            raise ValueError(f"{name}: need L >= 1 text units and N >= 1 regions per sample; got L={units}, N={regions}")
        if c_mask is None:
            c_mask = torch.ones(batch, regions, dtype=torch.bool, device=c.device)
        for mask_name, mask, expected in (("q_mask", q_mask, (batch, units)), ("c_mask", c_mask, (batch, regions))):
            if mask.dtype != torch.bool:
                raise ValueError(f"{name}: {mask_name} must be a bool tensor (True = valid); got {mask.dtype}, pass mask.bool()")
            if tuple(mask.shape) != expected:
                raise ValueError(f"{name}: {mask_name} must have shape {expected}; got {tuple(mask.shape)}")
        return q_mask, c_mask


__all__ = ["LocalAlignmentLoss"]
