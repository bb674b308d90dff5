"""PointNet-style object encoder: each object's point set + box -> one token, with a mask token for hidden objects.

    appearance_n = MLP_a([max_p phi(q_np) ; mean_p phi(q_np) ; psi(s_n)])       phi: shared point MLP
    position_n   = MLP_c(c_n)
    token_n      = LN(appearance_n + position_n)            if object n is visible
                 = LN(m + position_n)                       if object n is masked (m: learned mask token)

q_np = (xyz of point p relative to the box centre, rgb) (6 channels), s_n = (box size, log(box size + 1 cm)),
c_n = box centre in the scene frame. A masked object keeps only its position: none of its points, colours or
extent reach its token, so a prediction about it must come from where it is and from its context.
Pure PyTorch (no compiled point-cloud ops); `appearance` and `combine` are exposed separately so a caller can
compute the point features once and reuse them under several masks.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["PointNetObjectEncoder"]

POINT_CHANNELS = 6  # xyz relative to the box centre + rgb
_SIZE_EPS = 0.01  # metres: log(size + 1 cm) keeps flat objects (pictures, 0-size boxes) finite


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear -> GELU between consecutive widths (no activation after the last Linear)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class PointNetObjectEncoder(nn.Module):
    """Encode objects (point sets with boxes) into tokens; masked objects keep only their position.

    Args:
        dim: output channels C.
        point_channels: widths of the shared point MLP phi (its last width is the pooled feature width).
        in_channels: channels per point (6: xyz offset + rgb).

    Shapes:
        points: (N, P, in_channels); centers, sizes: (N, 3); masked: (N,) bool or None -> (N, C)

    Raises:
        ValueError: bad constructor arguments; inputs of the wrong shape, an empty point set (P = 0), a
            non-bool mask, or non-finite values.
    """

    def __init__(self, dim: int = 64, point_channels: Sequence[int] = (32, 64, 128), in_channels: int = POINT_CHANNELS
                 ) -> None:
        super().__init__()
        point_channels = list(point_channels)
        checked = (("dim", dim), ("in_channels", in_channels), *(("point_channels", c) for c in point_channels))
        for name, value in checked:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must hold positive ints, got {value!r}")
        if not point_channels:
            raise ValueError("point_channels must list at least one width, e.g. (32, 64, 128)")
        self.dim = dim
        self.in_channels = in_channels
        self.point_mlp = nn.Sequential(_mlp([in_channels, *point_channels]), nn.GELU())
        pooled = 2 * point_channels[-1]  # max and mean pooling
        self.size_mlp = _mlp([6, dim, dim])
        self.appearance_mlp = _mlp([pooled + dim, dim, dim])
        self.position_mlp = _mlp([3, dim, dim])
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.norm = nn.LayerNorm(dim)

    def _check(self, points: Tensor | None, centers: Tensor | None, sizes: Tensor | None, num: int) -> None:
        if points is not None and (points.dim() != 3 or points.shape[0] != num or points.shape[2] != self.in_channels):
            raise ValueError(
                f"points must have shape (N, P, {self.in_channels}) with N = {num}, got {tuple(points.shape)}")
        if points is not None and points.shape[1] == 0:
            raise ValueError("points has P = 0 points per object; sample at least one point per object")
        for name, tensor in (("centers", centers), ("sizes", sizes), ("points", points)):
            if tensor is None:
                continue
            if name != "points" and tuple(tensor.shape) != (num, 3):
                raise ValueError(f"{name} must have shape (N, 3) = ({num}, 3), got {tuple(tensor.shape)}")
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{name} holds NaN or inf values")

    def appearance(self, points: Tensor, sizes: Tensor) -> Tensor:
        """What an object looks like (points, colours, box size), without its position.

        Shapes:
            points: (N, P, in_channels); sizes: (N, 3) -> (N, C)
        """
        self._check(points, None, sizes, points.shape[0] if points.dim() == 3 else -1)
        per_point = self.point_mlp(points)  # (N, P, in) -> (N, P, C_p)
        pooled = torch.cat([per_point.amax(dim=1), per_point.mean(dim=1)], dim=-1)  # (N, 2 C_p)
        size_features = self.size_mlp(torch.cat([sizes, torch.log(sizes.clamp_min(0) + _SIZE_EPS)], dim=-1))
        return self.appearance_mlp(torch.cat([pooled, size_features], dim=-1))

    def combine(self, appearance: Tensor, centers: Tensor, masked: Tensor | None = None) -> Tensor:
        """Tokens from appearance features and positions; masked objects get the mask token instead.

        Shapes:
            appearance: (N, C); centers: (N, 3); masked: (N,) bool or None -> (N, C)
        """
        if appearance.dim() != 2 or appearance.shape[1] != self.dim:
            raise ValueError(f"appearance must have shape (N, {self.dim}), got {tuple(appearance.shape)}")
        self._check(None, centers, None, appearance.shape[0])
        if masked is not None:
            if masked.dtype != torch.bool or tuple(masked.shape) != (appearance.shape[0],):
                raise ValueError(f"masked must be a bool tensor of shape (N,) = ({appearance.shape[0]},), "
                                 f"got {masked.dtype} {tuple(masked.shape)}")
            # (N, 1) selects per object between its appearance and the shared (C,) mask token
            appearance = torch.where(masked[:, None], self.mask_token.to(appearance.dtype), appearance)
        return self.norm(appearance + self.position_mlp(centers))

    def forward(self, points: Tensor, centers: Tensor, sizes: Tensor, masked: Tensor | None = None) -> Tensor:
        """`combine(appearance(points, sizes), centers, masked)`."""
        return self.combine(self.appearance(points, sizes), centers, masked)
