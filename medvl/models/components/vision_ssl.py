"""Vision self-supervision for CT volumes: rotation prediction, contrastive views, masked-block reconstruction.

The three tasks of Swin-UNETR's self-supervised pre-training (Tang et al., CVPR 2022), which VELVET-Med adds to
its vision-language losses. Each head is a small module returning {"<name>_loss": scalar}; the volume
transforms (`rotate_batch`, `mask_blocks`, `random_intensity_views`) take an optional torch.Generator for
reproducible draws. One training step, as in Swin-UNETR (two views, every task on both):

    view_a, view_b = random_intensity_views(x, generator=g)                  # (B, 1, D, H, W) each
    view_a, rot_a = rotation.rotate_batch(view_a, generator=g)
    view_b, rot_b = rotation.rotate_batch(view_b, generator=g)
    input_a, masked_a = mask_blocks(view_a, block_size=8, mask_ratio=0.3, generator=g, fill="noise")
    input_b, masked_b = mask_blocks(view_b, block_size=8, mask_ratio=0.3, generator=g, fill="noise")
    out_a, out_b = encoder.encode_volume(input_a), encoder.encode_volume(input_b)
    rotation(out_a["pooled"], rot_a), rotation(out_b["pooled"], rot_b)      # average the two
    contrastive(out_a["pooled"], out_b["pooled"])
    reconstruction(out_a["fine"], out_a["fine_grid"], view_a, masked_a)     # and the same for b
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.layers.projection import ProjectionHead
from common.losses.contrastive import ClipInfoNCELoss

__all__ = [
    "ROTATIONS",
    "MaskedBlockReconstruction",
    "RotationPrediction",
    "ViewContrastive",
    "mask_blocks",
    "masked_l1_loss",
    "random_intensity_views",
]

# Rotation classes: label -> (quarter turns k, tensor dims of the rotation plane) for (B, C, D, H, W) volumes,
# applied as torch.rot90(x, k, dims).
#   4 classes (Swin-UNETR pre-training, default): 0 / 90 / 180 / 270 degrees in the (H, W) plane, i.e. about
#     the D axis (axial slices turn in place; the body axis stays where it is).
#   10 classes: identity, then 90 / 180 / 270 degrees about D (labels 1-3, plane (H, W)), about H (4-6, plane
#     (D, W)) and about W (7-9, plane (D, H)); needs cubic volumes.
ROTATIONS: dict[int, tuple[tuple[int, tuple[int, int]], ...]] = {
    4: ((0, (3, 4)), (1, (3, 4)), (2, (3, 4)), (3, (3, 4))),
    10: (
        (0, (3, 4)),
        (1, (3, 4)), (2, (3, 4)), (3, (3, 4)),
        (1, (2, 4)), (2, (2, 4)), (3, (2, 4)),
        (1, (2, 3)), (2, (2, 3)), (3, (2, 3)),
    ),
}
_AXIS_NAMES = {2: "D", 3: "H", 4: "W"}


def _uniform(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """U[0, 1) drawn on the generator's device (seeded results do not depend on `device`), moved to `device`."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=draw_device).to(device=device, dtype=dtype)


def _check_volume_batch(x: Tensor, where: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[0] < 1 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where} expects a floating (B, C, D, H, W) volume batch with B >= 1; got {got}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------- rotation
class RotationPrediction(nn.Module):
    """Predict which rotation was applied to a volume from its pooled feature (cross-entropy).

        loss = mean_b CE(W f_b + c, y_b)        (f_b: pooled feature of rotated volume b, y_b: its rotation label)

    Classes: see `ROTATIONS`. Default 4 (0/90/180/270 degrees about the D axis), as in Swin-UNETR pre-training:
    it needs only square axial slices, and turns about the body axis keep the task about anatomy layout rather
    than about the anisotropic slice spacing; 10 adds turns about H and W (cubic volumes only).

    Args:
        dim: channels of the pooled feature.
        num_classes: 4 or 10.

    Shapes:
        rotate_batch: x (B, C, D, H, W) -> x_rot (B, C, D', H', W'), labels (B,) int64
        forward: features (B, dim), labels (B,) -> {"rotation_loss": ()}; logits: (B, dim) -> (B, num_classes)

    Raises:
        ValueError: bad arguments at construction; volumes whose rotation planes are not square; features or
            labels of the wrong shape, or labels outside [0, num_classes).
    """

    def __init__(self, dim: int, num_classes: int = 4) -> None:
        super().__init__()
        _positive_int("dim", dim)
        if num_classes not in ROTATIONS:
            raise ValueError(
                f"num_classes must be 4 (0/90/180/270 degrees about D) or 10 (identity + 3 turns about each axis), "
                f"got {num_classes!r}"
            )
        self.dim = dim
        self.num_classes = num_classes
        self.head = nn.Linear(dim, num_classes)  # a linear probe, as Swin-UNETR's rotation head

    def rotate_batch(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Rotate each volume by a uniformly drawn class of `ROTATIONS[num_classes]`; return it with the labels."""
        _check_volume_batch(x, "rotate_batch")
        for dims in {dims for _, dims in ROTATIONS[self.num_classes]}:
            if x.shape[dims[0]] != x.shape[dims[1]]:
                axes = ", ".join(_AXIS_NAMES[d] for d in dims)
                raise ValueError(
                    f"rotation classes of num_classes={self.num_classes} turn the ({axes}) plane, which must be "
                    f"square; got volume shape {tuple(x.shape)} (crop or pad to equal sides, or use num_classes=4 for "
                    "non-cubic volumes with square axial slices)"
                )
        draw_device = generator.device if generator is not None else x.device
        labels = torch.randint(self.num_classes, (x.shape[0],), generator=generator, device=draw_device).to(x.device)
        rotated = torch.empty_like(x)
        for label, (turns, dims) in enumerate(ROTATIONS[self.num_classes]):
            index = (labels == label).nonzero(as_tuple=True)[0]
            if index.numel():
                rotated[index] = torch.rot90(x[index], turns, dims)
        return rotated, labels

    def logits(self, features: Tensor) -> Tensor:
        """Rotation class scores of pooled features."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected pooled features of shape (B, {self.dim}), got {tuple(features.shape)}")
        return self.head(features)

    def forward(self, features: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """{"rotation_loss": mean cross-entropy of the predicted rotation}."""
        logits = self.logits(features)
        if labels.shape != (features.shape[0],) or labels.dtype != torch.long:
            raise ValueError(
                f"labels must be a (B,) = ({features.shape[0]},) int64 tensor (from rotate_batch), got shape "
                f"{tuple(labels.shape)}, dtype {labels.dtype}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"rotation labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
        return {"rotation_loss": F.cross_entropy(logits, labels)}


# --------------------------------------------------------------------------------------- contrastive views
def random_intensity_views(
    x: Tensor,
    num_views: int = 2,
    *,
    scale: float = 0.1,
    shift: float = 0.1,
    noise_std: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, ...]:
    """Independent intensity-augmented copies of a [0, 1] volume batch, one random draw per volume and view.

        view = clamp(a * x + b + n, 0, 1),   a ~ U[1 - scale, 1 + scale], b ~ U[-shift, shift], n ~ N(0, noise_std^2)

    Intensity only, on the batch (and device) it is given: spatial variety comes from `rotate_batch` and
    `mask_blocks`, as in Swin-UNETR's view pairs; random flips are left out because they would make the rotation
    labels ambiguous (a flip composed with a turn is another orientation).

    Shapes:
        x: (B, C, D, H, W) -> num_views tensors of the same shape

    Raises:
        ValueError: num_views < 1, negative scale / shift / noise_std, scale >= 1, or x not a (B, C, D, H, W)
            floating batch.
    """
    _check_volume_batch(x, "random_intensity_views")
    _positive_int("num_views", num_views)
    if not (0.0 <= scale < 1.0 and shift >= 0.0 and noise_std >= 0.0):
        raise ValueError(f"need 0 <= scale < 1, shift >= 0, noise_std >= 0; got {scale}, {shift}, {noise_std}")
    per_volume = (x.shape[0],) + (1,) * (x.dim() - 1)  # (B, 1, 1, 1, 1): one gain / offset per volume
    views = []
    for _ in range(num_views):
        gain = 1.0 + scale * (2.0 * _uniform(per_volume, generator, x.device, x.dtype) - 1.0)
        offset = shift * (2.0 * _uniform(per_volume, generator, x.device, x.dtype) - 1.0)
        draw_device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=draw_device).to(device=x.device, dtype=x.dtype)
        views.append((gain * x + offset + noise_std * noise).clamp(0.0, 1.0))
    return tuple(views)


class ViewContrastive(nn.Module):
    """Contrastive learning between two views of the same volumes: projection MLP, then symmetric InfoNCE.

        z = MLP(f);   loss = ClipInfoNCE(z_a, z_b)  (see common.losses.contrastive.ClipInfoNCELoss)

    Choice of loss: the CLIP form (each view's negatives are the other view's rows) rather than SimCLR's NT-Xent
    (which also uses same-view rows): it reuses the tested loss that gathers negatives from all ranks with exact
    gradients, which matters more with the 2-8 CT volumes that fit on one GPU than NT-Xent's extra same-view
    negatives. The temperature is fixed by default (SimCLR-style, 0.1); a learnable one can collapse the
    uniformity of view features early in training.

    Args:
        dim: channels of the pooled features.
        proj_dim: channels of the projected views.
        hidden_dim: hidden width of the 2-layer projection MLP (default dim).
        temperature: initial (or fixed) temperature, > 0.
        learnable_temperature: learn it (as CLIP) instead of keeping it fixed.
        gather_distributed: use other ranks' rows as negatives under DDP.

    Shapes:
        forward: features_a, features_b (B, dim), row i of both from the same volume -> {"view_contrastive_loss": ()}

    Raises:
        ValueError: bad arguments at construction; features that are not two (B, dim) tensors of equal shape.
    """

    def __init__(
        self,
        dim: int,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.dim = _positive_int("dim", dim)
        self.projection = ProjectionHead(dim, proj_dim, hidden_dim=hidden_dim, num_layers=2)
        self.loss = ClipInfoNCELoss(
            init_temperature=temperature,
            learnable_temperature=learnable_temperature,
            gather_distributed=gather_distributed,
            loss_name="view_contrastive_loss",
        )

    def forward(self, features_a: Tensor, features_b: Tensor) -> dict[str, Tensor]:
        """{"view_contrastive_loss": InfoNCE between the projected views}."""
        if features_a.dim() != 2 or features_a.shape != features_b.shape or features_a.shape[1] != self.dim:
            raise ValueError(
                f"expected two (B, {self.dim}) pooled features of the same shape, got {tuple(features_a.shape)} and "
                f"{tuple(features_b.shape)}"
            )
        return self.loss(self.projection(features_a), self.projection(features_b))


# ------------------------------------------------------------------------------------ masked reconstruction
def mask_blocks(
    x: Tensor,
    block_size: int | Sequence[int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    fill: str = "zero",
) -> tuple[Tensor, Tensor]:
    """Hide a random share of cubic blocks of each volume (the same blocks in every channel).

    The volume is tiled with blocks of `block_size` (edge blocks are cut by the volume's border); exactly
    k = clamp(round(mask_ratio * number of blocks), 1, number of blocks) blocks per volume are drawn without
    replacement, so the hidden share of voxels equals mask_ratio up to rounding (exactly, when the sides are
    multiples of the block). Hidden voxels become 0 (fill="zero") or U[0, 1) noise (fill="noise"). (Not
    common's `mask_positions`, whose Bernoulli draws vary the hidden share per volume, nor MONAI's
    RandCoarseDropout, which works per sample in the data pipeline and returns no mask.)

    Args:
        x: volume batch.
        block_size: block side (int) or (bD, bH, bW), each at most the volume's side.
        mask_ratio: share of blocks to hide, in (0, 1).
        generator: optional torch.Generator (draws on its device, then moved).
        fill: "zero" or "noise".

    Shapes:
        x: (B, C, D, H, W) -> x_masked: (B, C, D, H, W), masked: (B, 1, D, H, W) bool, True = hidden
        (the voxels to reconstruct)

    Raises:
        ValueError: x not a (B, C, D, H, W) floating batch, a block larger than the volume, mask_ratio outside
            (0, 1), or an unknown fill.
    """
    _check_volume_batch(x, "mask_blocks")
    sides = tuple(x.shape[2:])
    blocks = (block_size,) * 3 if isinstance(block_size, int) else tuple(block_size)
    valid_sides = all(not isinstance(b, bool) and isinstance(b, int) and 1 <= b <= s for b, s in zip(blocks, sides))
    if len(blocks) != 3 or not valid_sides:
        raise ValueError(
            f"block_size must be an int or 3 ints between 1 and the volume's sides {sides}, got {block_size!r}"
        )
    if not (isinstance(mask_ratio, (int, float)) and 0.0 < mask_ratio < 1.0):
        raise ValueError(f"mask_ratio must be in (0, 1) (e.g. 0.3), got {mask_ratio!r}")
    if fill not in ("zero", "noise"):
        raise ValueError(f"fill must be 'zero' or 'noise', got {fill!r}")
    grid = tuple(math.ceil(s / b) for s, b in zip(sides, blocks))  # blocks per axis
    num_blocks = math.prod(grid)
    num_hidden = min(max(1, round(mask_ratio * num_blocks)), num_blocks)
    batch = x.shape[0]
    order = _uniform((batch, num_blocks), generator, x.device).argsort(dim=1)  # (B, nb): random block order per volume
    hidden = torch.zeros(batch, num_blocks, dtype=torch.bool, device=x.device)
    hidden.scatter_(1, order[:, :num_hidden], True)  # (B, nb): the first k blocks of the order
    masked = hidden.view(batch, 1, *grid)  # (B, nb) -> (B, 1, gD, gH, gW)
    for axis, size in zip((2, 3, 4), blocks):
        masked = masked.repeat_interleave(size, dim=axis)  # (B, 1, gD, gH, gW) -> (B, 1, gD*bD, gH*bH, gW*bW)
    masked = masked[:, :, : sides[0], : sides[1], : sides[2]]  # cut the edge blocks: -> (B, 1, D, H, W)
    if fill == "zero":
        x_masked = x.masked_fill(masked, 0.0)
    else:
        x_masked = torch.where(masked, _uniform(x.shape, generator, x.device, x.dtype), x)
    return x_masked, masked


def masked_l1_loss(prediction: Tensor, target: Tensor, masked: Tensor) -> Tensor:
    """Mean absolute error over the hidden voxels only (all channels).

        loss = sum_{b,c,v} m_bv |p_bcv - t_bcv| / (C * sum_{b,v} m_bv)

    Shapes:
        prediction, target: (B, C, D, H, W); masked: (B, 1, D, H, W) bool, True = hidden -> ()

    Raises:
        ValueError: mismatched shapes, a non-bool mask, or no hidden voxel.
    """
    if prediction.shape != target.shape or prediction.dim() != 5:
        raise ValueError(
            f"prediction and target must be (B, C, D, H, W) of the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    if masked.dtype != torch.bool or masked.shape != (target.shape[0], 1, *target.shape[2:]):
        raise ValueError(
            f"masked must be a (B, 1, D, H, W) = {(target.shape[0], 1, *target.shape[2:])} bool tensor, got shape "
            f"{tuple(masked.shape)}, dtype {masked.dtype}"
        )
    weight = masked.to(prediction.dtype)  # (B, 1, D, H, W), broadcast over channels
    count = weight.sum() * target.shape[1]
    if count.item() == 0:
        raise ValueError("masked has no hidden voxel: nothing to reconstruct (use mask_blocks to build it)")
    return ((prediction - target).abs() * weight).sum() / count


class MaskedBlockReconstruction(nn.Module):
    """Light decoder from encoder tokens back to voxels, trained with L1 on the hidden voxels only.

        y = Conv1x1( [Upsample x2 -> Conv3x3 -> GELU] x log2(upsample_factor) ( Conv1x1(tokens as a grid) ) )
        loss = masked_l1_loss(y, target, masked)

    Trilinear upsampling + convolution (Swin-UNETR's "vae" decoder, without its norms: token grids can be
    2^3 small) rather than transposed convolutions, which leave checkerboard artefacts. Channels halve per
    stage from hidden_dim down to at least 8.

    Args:
        in_dim: token channels (e.g. the encoder's out_dim).
        upsample_factor: voxels per token along each axis (e.g. `VolumeEncoder.fine_stride`), a power of 2.
        out_channels: channels of the reconstructed volume (1 for CT).
        hidden_dim: channels of the first decoder stage.

    Shapes:
        decode: tokens (B, N, in_dim), grid (Dg, Hg, Wg) with N = Dg*Hg*Wg, raster order
            -> (B, out_channels, Dg*f, Hg*f, Wg*f)
        forward: tokens, grid, target (B, out_channels, D, H, W), masked (B, 1, D, H, W) bool
            -> {"reconstruction_loss": ()}

    Raises:
        ValueError: bad arguments at construction; tokens that do not match the grid, or a target whose size
            is not grid * upsample_factor.
    """

    def __init__(self, in_dim: int, upsample_factor: int, out_channels: int = 1, hidden_dim: int = 32) -> None:
        super().__init__()
        self.in_dim = _positive_int("in_dim", in_dim)
        self.out_channels = _positive_int("out_channels", out_channels)
        _positive_int("hidden_dim", hidden_dim)
        _positive_int("upsample_factor", upsample_factor)
        if upsample_factor & (upsample_factor - 1):
            raise ValueError(f"upsample_factor must be a power of 2 (voxels per token), got {upsample_factor}")
        self.upsample_factor = upsample_factor
        layers: list[nn.Module] = [nn.Conv3d(in_dim, hidden_dim, kernel_size=1)]
        channels = hidden_dim
        for _ in range(upsample_factor.bit_length() - 1):  # log2(upsample_factor) doublings
            next_channels = max(channels // 2, min(8, channels))
            layers += [
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                nn.Conv3d(channels, next_channels, kernel_size=3, padding=1),
                nn.GELU(),
            ]
            channels = next_channels
        layers.append(nn.Conv3d(channels, out_channels, kernel_size=1))
        self.decoder = nn.Sequential(*layers)

    def decode(self, tokens: Tensor, grid: Sequence[int]) -> Tensor:
        """Voxel prediction from a token grid."""
        grid = tuple(int(g) for g in grid)
        if tokens.dim() != 3 or tokens.shape[2] != self.in_dim or len(grid) != 3 or tokens.shape[1] != math.prod(grid):
            raise ValueError(
                f"expected tokens (B, Dg*Hg*Wg, {self.in_dim}) for grid (Dg, Hg, Wg) = {grid}, got tokens "
                f"{tuple(tokens.shape)}"
            )
        # (B, Dg*Hg*Wg, C) -> (B, C, Dg, Hg, Wg)
        feature_map = tokens.transpose(1, 2).reshape(tokens.shape[0], self.in_dim, *grid)
        return self.decoder(feature_map)

    def forward(self, tokens: Tensor, grid: Sequence[int], target: Tensor, masked: Tensor) -> dict[str, Tensor]:
        """{"reconstruction_loss": L1 between the decoded volume and `target` on the hidden voxels}."""
        expected = tuple(int(g) * self.upsample_factor for g in grid)
        if target.dim() != 5 or target.shape[1] != self.out_channels or tuple(target.shape[2:]) != expected:
            raise ValueError(
                f"target must be (B, {self.out_channels}, {', '.join(map(str, expected))}) (token grid {tuple(grid)} "
                f"x upsample_factor {self.upsample_factor}), got {tuple(target.shape)}"
            )
        return {"reconstruction_loss": masked_l1_loss(self.decode(tokens, grid), target, masked)}
