"""Triplet alignment: CLIP InfoNCE between every pair of three modalities describing the same items.

Used by scene3d's multi-view pre-training for (2D view, 3D object, text phrase) of the same object, as in
LEGO / TripAlign / MV-ScanQA. Nothing here knows about scenes: the modalities are a, b and c with names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from common.losses.contrastive import ClipInfoNCELoss

__all__ = ["TripletAlignmentLoss"]


class TripletAlignmentLoss(nn.Module):
    """Weighted sum of three symmetric InfoNCE losses (`ClipInfoNCELoss`, each with its own learnable temperature):

        L_ab = InfoNCE(a, b) over all B rows;  L_ac = InfoNCE(a[r], c);  L_bc = InfoNCE(b[r], c)

    where r (`c_rows`) are the rows that have a c (texts are often missing for some items). Each term is returned
    multiplied by its weight, under the key "<name_x>_<name_y>_loss"; a term with weight 0 is not built; a c
    term is left out when no row has a c.

    Args:
        weights: {"ab", "ac", "bc"} -> weight >= 0 (missing keys: 1).
        names: the three modality names used in the keys, e.g. ("view", "object", "text").
        init_temperature, gather_distributed: as in `ClipInfoNCELoss`.

    Shapes:
        a, b: (B, E); c: (T, E) with c_rows: (T,) long indices into the B rows (None: T = B, row i -> row i)

    Raises:
        ValueError: unknown or negative weights, all weights 0, names that are not three distinct strings;
            c_rows of another length than c.
    """

    PAIRS = ("ab", "ac", "bc")

    def __init__(self, weights: Mapping[str, float] | None = None, names: Sequence[str] = ("a", "b", "c"),
                 init_temperature: float = 0.07, gather_distributed: bool = True) -> None:
        super().__init__()
        given = dict(weights or {})
        unknown = set(given) - set(self.PAIRS)
        if unknown:
            raise ValueError(f"unknown triplet alignment pairs {sorted(unknown)}; use 'ab', 'ac', 'bc'")
        self.weights = {pair: float(given.get(pair, 1.0)) for pair in self.PAIRS}
        if min(self.weights.values()) < 0 or not any(self.weights.values()):
            raise ValueError(f"triplet alignment weights must be >= 0 and not all 0, got {self.weights}")
        names = tuple(names)
        if len(names) != 3 or len(set(names)) != 3 or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be three distinct non-empty strings, got {names!r}")
        index = {"a": 0, "b": 1, "c": 2}
        self.keys = {pair: f"{names[index[pair[0]]]}_{names[index[pair[1]]]}_loss" for pair in self.PAIRS}
        self.losses = nn.ModuleDict({
            pair: ClipInfoNCELoss(init_temperature, gather_distributed=gather_distributed, loss_name=self.keys[pair])
            for pair in self.PAIRS if self.weights[pair]})

    def forward(self, a: Tensor, b: Tensor, c: Tensor | None = None, c_rows: Tensor | None = None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if "ab" in self.losses:
            out[self.keys["ab"]] = self.weights["ab"] * self.losses["ab"](a, b)[self.keys["ab"]]
        if c is None or c.shape[0] == 0:
            return out
        if c_rows is None:
            c_rows_a, c_rows_b = a, b
        else:
            if c_rows.dim() != 1 or c_rows.shape[0] != c.shape[0]:
                raise ValueError(f"c_rows must be (T,) with T = {c.shape[0]} rows of c, got {tuple(c_rows.shape)}")
            c_rows_a, c_rows_b = a[c_rows], b[c_rows]
        for pair, rows in (("ac", c_rows_a), ("bc", c_rows_b)):
            if pair in self.losses:
                out[self.keys[pair]] = self.weights[pair] * self.losses[pair](rows, c)[self.keys[pair]]
        return out
