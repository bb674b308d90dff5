"""Pointing accuracy: does the peak of a finding sentence's attention over the volume fall in the right organ?"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample_attention(attention: Tensor, grid: Sequence[int], volume_shape: Sequence[int]) -> Tensor:
    """A token-grid attention map upsampled (trilinear) to the volume.

    Shapes:
        attention: (N,) in raster order (D slowest), N = prod(grid) -> (D, H, W) float32

    Raises:
        ValueError: when N does not match the grid.
    """
    grid = tuple(int(g) for g in grid)
    if attention.dim() != 1 or attention.numel() != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"attention of {attention.numel()} values does not fit grid {grid}")
    # (N,) -> (1, 1, Dg, Hg, Wg) -> (1, 1, D, H, W)
    return F.interpolate(attention.float().reshape(1, 1, *grid), size=tuple(int(s) for s in volume_shape),
                         mode="trilinear", align_corners=False)[0, 0]


def attention_peak_voxel(attention: Tensor, grid: Sequence[int], volume_shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel (d, h, w) of the maximum of a token-grid attention map upsampled (trilinear) to the volume.

    When the maximum is a plateau (trilinear upsampling is flat over the outer half-cell of a border token, so a
    peak at a border token of a coarse grid, e.g. 2^3, is a whole block), the tied voxel nearest the plateau's
    mean position is taken rather than the first in raster order, which would be a volume corner.

    Shapes:
        attention: (N,) weights over the grid's tokens in raster order (D slowest), N = prod(grid)

    Raises:
        ValueError: when N does not match the grid.
    """
    volume = upsample_attention(attention, grid, volume_shape)
    peak = volume.max()
    tied = torch.nonzero(volume >= peak - 1e-6 * peak.abs().clamp_min(1e-12)).float()  # (T, 3) voxel indices
    centre = tied.mean(dim=0)
    d, h, w = tied[int(((tied - centre) ** 2).sum(dim=1).argmin())].long().tolist()
    return d, h, w


def pointing_hit(attention: Tensor, grid: Sequence[int], organ_mask: Tensor, organ_id: int) -> bool:
    """True when the attention peak lies inside ``organ_mask == organ_id``.

    Shapes:
        attention: (N,); organ_mask: (D, H, W) integer labels
    """
    d, h, w = attention_peak_voxel(attention, grid, organ_mask.shape)
    return bool(organ_mask[d, h, w] == organ_id)


def organ_fraction(organ_mask: Tensor, organ_id: int) -> float:
    """Share of the volume's voxels in the organ: the hit rate of pointing at a uniformly random voxel (chance)."""
    return float((organ_mask == organ_id).float().mean())


def find_sentence(sentences: Sequence[str], target: str) -> int | None:
    """Index of the report sentence that states a finding (exact match after whitespace/case folding, else
    containment either way); None when the sentence was dropped (e.g. truncation)."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).rstrip(".")

    wanted = norm(target)
    normalised = [norm(s) for s in sentences]
    if wanted in normalised:
        return normalised.index(wanted)
    for i, sentence in enumerate(normalised):
        if wanted and (wanted in sentence or sentence in wanted) and len(sentence) > 10:
            return i
    return None


def pointing_summary(hits: Sequence[float], organs: Sequence[str], chance: Sequence[float],
                     control_hits: Sequence[float] | None = None) -> dict[str, float]:
    """Pointing metrics over finding sentences.

    "pointing_acc" (hit rate), "pointing_chance" (mean share of the volume in the organ: a random voxel's hit
    rate), "pointing_n", per organ "pointing_acc/<organ>" and "pointing_chance/<organ>", and with control hits
    (the same organs pointed at by a sentence that states no finding; NaN where the report has none)
    "pointing_acc_control_sentence" and "pointing_acc_control_sentence/<organ>" over the non-NaN ones.

    Shapes:
        hits, organs, chance, control_hits: one entry per finding sentence (at least one)
    """
    control = [float("nan")] * len(hits) if control_hits is None else [float(c) for c in control_hits]
    if not hits or not (len(hits) == len(organs) == len(chance) == len(control)):
        raise ValueError(f"pointing_summary needs one entry per finding sentence (at least one); got {len(hits)} "
                         f"hits, {len(organs)} organs, {len(chance)} chance values, {len(control)} control hits")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, organ in enumerate(organs):
        groups[""].append(index)
        groups[f"/{organ}"].append(index)
    out = {"pointing_n": float(len(hits))}
    for suffix, members in sorted(groups.items()):
        out[f"pointing_acc{suffix}"] = sum(float(hits[i]) for i in members) / len(members)
        out[f"pointing_chance{suffix}"] = sum(float(chance[i]) for i in members) / len(members)
        controls = [control[i] for i in members if not math.isnan(control[i])]
        if controls:
            out[f"pointing_acc_control_sentence{suffix}"] = sum(controls) / len(controls)
    return out
