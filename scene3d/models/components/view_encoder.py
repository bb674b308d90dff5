"""2D view encoders for object crops, and attention pooling of an object's k views into one feature.

Encoders (chosen in config by ``_target_``, built random-init: no weights are downloaded at run time):

- `SmallCNNViewEncoder` (default): conv-GroupNorm-GELU blocks, each halving the resolution, global average
  pooling, a linear layer. Small enough for CPU pre-training on the demo crops.
- `MonaiResNetViewEncoder`: MONAI's ResNet (``monai.networks.nets.ResNet``) with ``spatial_dims=2``, for
  larger crops on a GPU. ``weights_path`` loads a local state dict (safetensors or a torch file, read with
  ``weights_only=True``) when configured.

Every encoder maps uint8 or float crops (B, 3, S, S) to (B, out_dim); uint8 input is scaled to [0, 1], and
then every input is standardised with ImageNet's channel mean / std. `MultiViewObjectEncoder` runs one of them on
every valid crop of every object and fuses each object's views with `AttentionViewPooling`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["SmallCNNViewEncoder", "MonaiResNetViewEncoder", "AttentionViewPooling", "MultiViewObjectEncoder",
           "prepare_crops"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def prepare_crops(crops: Tensor) -> Tensor:
    """uint8 crops (0..255) or float crops in [0, 1], channels first, -> standardised float32.

    Shapes:
        crops: (B, 3, S, S) -> (B, 3, S, S)

    Raises:
        ValueError: not (B, 3, S, S).
    """
    if crops.dim() != 4 or crops.shape[1] != 3:
        raise ValueError(f"view crops must be (B, 3, S, S) RGB, got {tuple(crops.shape)}")
    x = crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()
    mean = torch.tensor(_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class SmallCNNViewEncoder(nn.Module):
    """A small CNN: per width in `channels`, a 3x3 stride-2 conv + GroupNorm + GELU and a 3x3 conv + GroupNorm +
    GELU; then global average pooling and a linear layer to `out_dim`.

    Args:
        out_dim: output channels C.
        channels: widths of the blocks (each >= 1; GroupNorm uses min(8, width) groups dividing the width).

    Shapes:
        crops: (B, 3, S, S) uint8 or float -> (B, C)

    Raises:
        ValueError: an empty `channels`, or a width / out_dim < 1.
    """

    def __init__(self, out_dim: int = 64, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or out_dim < 1:
            raise ValueError(f"SmallCNNViewEncoder needs out_dim >= 1 and a non-empty list of widths >= 1, got "
                             f"out_dim={out_dim}, channels={channels}")
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            groups = next(g for g in (8, 4, 2, 1) if width % g == 0)
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(groups, width), nn.GELU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.GELU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, out_dim)
        self.out_dim = out_dim

    def forward(self, crops: Tensor) -> Tensor:
        maps = self.features(prepare_crops(crops))  # (B, C_last, S', S')
        return self.head(maps.mean(dim=(2, 3)))  # global average pool: (B, C_last) -> (B, C)


class MonaiResNetViewEncoder(nn.Module):
    """MONAI's 2D ResNet as a view encoder (random init, or a local state dict).

    Args:
        out_dim: output channels C (the ResNet's final linear layer).
        layers: blocks per stage (ResNet-10: [1, 1, 1, 1]; ResNet-18: [2, 2, 2, 2]).
        block_inplanes: widths of the stages.
        weights_path: optional local file of this module's state dict (``.safetensors`` or a torch file).

    Shapes:
        crops: (B, 3, S, S) uint8 or float -> (B, C)

    Raises:
        ValueError: a weights_path that does not exist or does not fit.
    """

    def __init__(self, out_dim: int = 64, layers: Sequence[int] = (1, 1, 1, 1),
                 block_inplanes: Sequence[int] = (32, 64, 128, 256), weights_path: str | None = None) -> None:
        super().__init__()
        from monai.networks.nets import ResNet

        self.net = ResNet("basic", list(layers), list(block_inplanes), spatial_dims=2, n_input_channels=3,
                          conv1_t_size=3, conv1_t_stride=1, num_classes=out_dim)
        self.out_dim = out_dim
        if weights_path:
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise ValueError(f"view encoder weights_path {path}: file not found")
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                self.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(f"view encoder weights_path {path}: does not fit this encoder ({error})") from None

    def forward(self, crops: Tensor) -> Tensor:
        return self.net(prepare_crops(crops))


class AttentionViewPooling(nn.Module):
    """Fuse the k views of each object: a learned query attends over the valid views (multi-head attention),
    plus the mean of the valid views (a residual that keeps the fused feature useful from the first step).

    Args:
        dim: channels C. num_heads: attention heads (must divide dim).

    Shapes:
        views: (N, k, C); valid: (N, k) bool -> (N, C); objects without a valid view get zeros.
    """

    def __init__(self, dim: int, num_heads: int = 2) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"AttentionViewPooling: num_heads ({num_heads}) must divide dim ({dim})")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, views: Tensor, valid: Tensor) -> Tensor:
        has_view = valid.any(dim=1)  # (N,)
        # rows without any valid view would make attention softmax over nothing (NaN): let them see view 0,
        # then zero their output
        key_padding = ~(valid | (~has_view)[:, None] & (torch.arange(valid.shape[1], device=valid.device) == 0))
        attended, _ = self.attention(self.query.expand(views.shape[0], -1, -1), views, views,
                                     key_padding_mask=key_padding, need_weights=False)  # (N, 1, C)
        weights = valid.to(views.dtype)[..., None]  # (N, k, 1)
        mean = (views * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (N, C)
        fused = self.norm(attended[:, 0] + mean)
        return torch.where(has_view[:, None], fused, torch.zeros_like(fused))


class MultiViewObjectEncoder(nn.Module):
    """Encode every valid crop of every object with `encoder`, project to `dim`, fuse each object's views.

    Args:
        encoder: a view encoder (crops (B, 3, S, S) -> (B, encoder.out_dim)).
        dim: channels C of the view features.
        num_heads: heads of `AttentionViewPooling`.

    Returns (forward): {"views": (N, k, C) per-view features (zeros where invalid), "fused": (N, C),
        "has_view": (N,) bool}

    Shapes:
        crops: (N, k, S, S, 3) uint8 channels last (as `SceneViews.crops`) or (N, k, 3, S, S); valid: (N, k) bool
    """

    def __init__(self, encoder: nn.Module, dim: int, num_heads: int = 2) -> None:
        super().__init__()
        out_dim = getattr(encoder, "out_dim", None)
        if not isinstance(out_dim, int):
            raise ValueError(f"view encoder {type(encoder).__name__} must expose an int out_dim")
        self.encoder = encoder
        self.proj = nn.Identity() if out_dim == dim else nn.Linear(out_dim, dim)
        self.pool = AttentionViewPooling(dim, num_heads)
        self.dim = dim

    def forward(self, crops: Tensor, valid: Tensor) -> dict[str, Tensor]:
        if crops.dim() != 5 or tuple(crops.shape[:2]) != tuple(valid.shape):
            raise ValueError(f"crops must be (N, k, S, S, 3) or (N, k, 3, S, S) with valid (N, k), got "
                             f"{tuple(crops.shape)} and {tuple(valid.shape)}")
        if crops.shape[-1] == 3 and crops.shape[2] != 3:
            crops = crops.permute(0, 1, 4, 2, 3)  # (N, k, S, S, 3) -> (N, k, 3, S, S)
        num_objects, k = valid.shape
        features = torch.zeros(num_objects, k, self.dim, device=crops.device)
        if valid.any():
            encoded = self.proj(self.encoder(crops[valid]))  # only the valid crops: (M, 3, S, S) -> (M, C)
            features = features.to(encoded.dtype).index_put((valid,), encoded)
        return {"views": features, "fused": self.pool(features, valid), "has_view": valid.any(dim=1)}
