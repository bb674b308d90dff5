"""`SeparableSpacingd`: MONAI `Spacingd`'s output grid, resampled axis by axis in float32.

Why not `monai.transforms.Spacingd` alone: it resamples through `affine_grid` + `grid_sample` in float64 by default,
which for a 512 x 512 x 224 CT at 0.75 x 0.75 x 1.5 mm materialises a (D, H, W, 3) coordinate grid (24 bytes per
output voxel) next to float64 copies of the input and output: about 4 GB, and slower than CT-CLIP's loader
(benchmarks/bench_medvl_data.py). When the voxel axes of the input and the output grid are parallel (the usual
case after `Orientationd`: the input-voxel <- output-voxel map is a diagonal scaling plus an offset), trilinear
interpolation factorises into three 1-D linear interpolations, one per axis, each a gather of two neighbouring
slabs and a lerp; nearest neighbour factorises into one gather per axis. This is the same sampling as
`grid_sample` (voxel-centre coordinates, border padding for the image, zero padding for masks) on the same grid,
computed with float64 coordinates and float32 values, without any coordinate grid.

The output grid (affine and shape) is computed with MONAI's own `zoom_affine` / `compute_shape_offset`, exactly as
`Spacing` does (min/max pixdim unset, `diagonal=False`, `scale_extent=False`), so both transforms agree on the
geometry; an oblique or sheared input (gantry tilt) is handed to `Spacingd` with float32 computation.

This transform records no inverse (no `applied_operations` entry): use it where nothing calls `Invertd`
(the training datasets); `medvl.segmentation.inference` keeps MONAI's invertible `Spacingd`.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import compute_shape_offset, to_affine_nd, zoom_affine
from monai.transforms import MapTransform, Spacingd

_LERP_CHUNKS = 16  # chunks of output slices per axis for the upper-neighbour gather of the linear pass
_AXIS_ALIGNED_TOL = 1e-6  # off-diagonal entries of the voxel map (in voxels per voxel) treated as zero


def output_grid(affine: np.ndarray, spatial_shape: Sequence[int], pixdim: Sequence[float]) -> tuple[np.ndarray, list[int]]:
    """MONAI `Spacing`'s output (affine, spatial shape) for an input grid and a target spacing in mm.

    Shapes:
        affine: (4, 4) voxel -> world mm of the input; returns a (4, 4) float64 affine and 3 ints.
    """
    affine = to_affine_nd(3, np.asarray(affine, dtype=np.float64))
    new_affine = zoom_affine(affine, np.asarray(pixdim, dtype=np.float64), diagonal=False)
    shape, offset = compute_shape_offset(list(spatial_shape), affine, new_affine, False)
    new_affine[:3, -1] = offset[:3]
    return new_affine, [int(n) for n in shape]


def axis_maps(xform: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, offset) per axis when `xform` (input voxel <- output voxel) is a diagonal scaling + shift, else None."""
    linear = xform[:3, :3]
    off_diagonal = linear - np.diag(np.diag(linear))
    if np.abs(off_diagonal).max() > _AXIS_ALIGNED_TOL:
        return None
    return np.diag(linear).copy(), xform[:3, 3].copy()


def _linear_along(x: torch.Tensor, dim: int, coords: np.ndarray) -> torch.Tensor:
    """1-D linear interpolation of `x` along `dim` at fractional indices `coords` (clamped: border padding)."""
    n = x.shape[dim]
    c = np.clip(coords, 0.0, n - 1)
    lower = np.floor(c).astype(np.int64)
    upper = np.minimum(lower + 1, n - 1)
    weight = torch.from_numpy((c - lower).astype(np.float32))
    shape = [1] * x.ndim
    shape[dim] = -1
    out = x.index_select(dim, torch.from_numpy(lower))
    upper_t = torch.from_numpy(upper)
    # The upper neighbours in chunks of output slices: one output-sized buffer per axis plus a small one,
    # instead of two full ones (at 512 x 512 x 224 -> 0.75 mm that saves ~200 MB at the peak).
    step = max(1, -(-len(c) // _LERP_CHUNKS))
    for start in range(0, len(c), step):
        part = slice(start, start + step)
        high = x.index_select(dim, upper_t[part])
        low = out.narrow(dim, start, high.shape[dim])
        high.sub_(low).mul_(weight[part].view(shape))
        low.add_(high)
    return out


def _nearest_along(x: torch.Tensor, dim: int, coords: np.ndarray, zero_outside: bool) -> torch.Tensor:
    """Nearest-neighbour gather along `dim` (round half to even, as grid_sample); outside: 0 or the border value."""
    n = x.shape[dim]
    index = np.rint(coords).astype(np.int64)
    outside = (index < 0) | (index > n - 1)
    out = x.index_select(dim, torch.from_numpy(np.clip(index, 0, n - 1)))
    if zero_outside and outside.any():
        out.index_fill_(dim, torch.from_numpy(np.flatnonzero(outside)), 0)
    return out


def resample_axis_aligned(
    image: torch.Tensor, scale: np.ndarray, offset: np.ndarray, out_shape: Sequence[int], mode: str,
    zero_outside: bool,
) -> torch.Tensor:
    """Resample (C, X, Y, Z) at input index `scale * j + offset` per axis for output indices j.

    Axes that shrink are done first, so the later passes work on fewer voxels.

    Shapes:
        image: (C, X, Y, Z); returns (C, *out_shape) in image's dtype (float32 for "bilinear").
    """
    order = sorted(range(3), key=lambda a: out_shape[a] / image.shape[a + 1])
    out = image
    for axis in order:
        coords = scale[axis] * np.arange(out_shape[axis], dtype=np.float64) + offset[axis]
        if out_shape[axis] == out.shape[axis + 1] and np.allclose(coords, np.arange(out_shape[axis]), atol=1e-6):
            continue  # this axis keeps its grid
        if mode == "bilinear":
            out = _linear_along(out, axis + 1, coords)
        else:
            out = _nearest_along(out, axis + 1, coords, zero_outside)
    return out


class SeparableSpacingd(MapTransform):
    """Resample keys to `pixdim` mm on MONAI `Spacingd`'s grid; axis-aligned cases without a coordinate grid.

    Args:
        keys: keys of MetaTensors (1, X, Y, Z) sharing one grid (the image and its organ mask).
        pixdim: target spacing in mm per axis.
        mode: per key, "bilinear" (float32 result) or "nearest" (keeps the dtype: labels stay exact).
        padding_mode: per key, "border" (replicate the edge) or "zeros".
        allow_missing_keys: skip absent keys.

    Shapes:
        per key: (1, X, Y, Z) -> (1, X', Y', Z') with the affine of the new grid.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        pixdim: Sequence[float],
        mode: Sequence[str],
        padding_mode: Sequence[str],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim = tuple(float(v) for v in pixdim)
        self.mode = dict(zip(self.keys, mode))
        self.padding_mode = dict(zip(self.keys, padding_mode))
        for key in self.keys:
            if self.mode.get(key) not in ("bilinear", "nearest"):
                raise ValueError(f"SeparableSpacingd: mode for '{key}' must be 'bilinear' or 'nearest', "
                                 f"got {self.mode.get(key)!r}")
            if self.padding_mode.get(key) not in ("border", "zeros") or (
                    self.mode[key] == "bilinear" and self.padding_mode[key] != "border"):
                raise ValueError(f"SeparableSpacingd: padding_mode for '{key}' must be 'border' (bilinear) or "
                                 f"'border' / 'zeros' (nearest), got {self.padding_mode.get(key)!r}")
        # Oblique inputs: MONAI's general resampler, computed in float32 (not its float64 default).
        self.fallback = Spacingd(keys, pixdim=self.pixdim, mode=tuple(mode), padding_mode=tuple(padding_mode),
                                 dtype=torch.float32, allow_missing_keys=allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        reference = d[present[0]]
        src_affine = np.asarray(reference.affine, dtype=np.float64)
        dst_affine, out_shape = output_grid(src_affine, reference.shape[1:], self.pixdim)
        maps = axis_maps(np.linalg.solve(src_affine, dst_affine))
        if maps is None:
            return self.fallback(d)
        scale, offset = maps
        for key in present:
            img = d[key]
            values = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            if self.mode[key] == "bilinear" and values.dtype != torch.float32:
                values = values.to(torch.float32)
            out = resample_axis_aligned(values, scale, offset, out_shape, self.mode[key],
                                        zero_outside=self.padding_mode[key] == "zeros")
            meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
            meta.pop("affine", None)  # replaced by the new grid's affine below
            d[key] = MetaTensor(out, affine=torch.from_numpy(dst_affine.copy()), meta=meta)
        return d
