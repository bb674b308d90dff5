"""3D CT volume encoder with multi-scale token outputs for hierarchical vision-language alignment.

The backbone is a MONAI network used as-is, so that a pre-trained encoder drops into MONAI's segmentation
networks: the Swin transformer that SwinUNETR holds as `.swinViT` (default), the ViT that UNETR holds as
`.vit`, or the convolutional encoder of BasicUNet (its `.conv_0`, `.down_1` ... `.down_4`: conv-norm-act pairs
with 2x max pooling between levels; of the three, the one that learns small findings on a CPU budget, see
docs/results.md). `backbone_state_dict()` loads with strict=True into the attribute(s) of the network that
`backbone_spec()` describes.

Swin hidden states (MONAI `SwinTransformer.forward`, the list SwinUNETR calls `hidden_states_out`), for
patch_size p = 2, embed dim F (= feature_size) and an image side S:

    stage s   0 (patch embed)  1        2        3        4 (last)
    channels  F                2F       4F       8F       16F
    grid      S/2              S/4      S/8      S/16     S/32
    S = 64    32^3             16^3     8^3      4^3      2^3
    S = 96    48^3             24^3     12^3     6^3      3^3

"fine" tokens come from `fine_stage` (default 2: S/8, patches for word-level alignment), "coarse" tokens from
`coarse_stage` (default 3: S/16, regions for sentence-level alignment), "pooled" and "tokens" from stage 4.

BasicUNet encoder levels (features f0..f4, BasicUNet's first five `features`):

    level     0 (conv_0)  1 (down_1)  2 (down_2)  3 (down_3)  4 (down_4, last)
    channels  f0          f1          f2          f3          f4
    grid      S           S/2         S/4         S/8         S/16

with fine_stage 3 (S/8) and coarse_stage 4 (S/16) by default.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import monai
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, ViT
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from common.layers.projection import ProjectionHead

__all__ = ["PRESETS", "UNET_LEVELS", "VolumeEncoder", "swin_window_size"]

_SWIN_NUM_ATTENTION_STAGES = 4  # MONAI's SwinTransformer hard-codes layers1..layers4
_SWIN_LAST_STAGE = _SWIN_NUM_ATTENTION_STAGES  # hidden states 0..4: patch embedding + one per attention stage
_SWIN_FEATURE_MULTIPLE = 12  # SwinUNETR raises unless feature_size % 12 == 0
_SWIN_PATCH_SIZE = 2  # SwinUNETR's decoder upsamples by 2 five times: only patch_size 2 fits it
_UNETR_NUM_LAYERS = 12  # UNETR hard-codes a 12-block ViT (it reads hidden states 3, 6 and 9) ...
_UNETR_PATCH_SIZE = 16  # ... with 16^3 patches
UNET_LEVELS = ("conv_0", "down_1", "down_2", "down_3", "down_4")  # BasicUNet's encoder attributes, in order
_UNET_LAST_LEVEL = len(UNET_LEVELS) - 1

# Named configurations for `VolumeEncoder.from_preset`. Sizes (Swin, patch 2):
#   tiny:   ~0.53 M backbone parameters, 64^3 input, window 4 (clamped from 7, see `swin_window_size`);
#           fine 8^3 = 512 tokens x 4F = 48 ch, coarse 4^3 = 64 x 96 ch, last 2^3 = 8 x 192 ch.
#           A CPU model: forward + backward of a batch of 2 at 64^3 takes ~2-5 s on 2 CPU cores.
#   velvet: VELVET-Med / SwinUNETR-sized backbone (feature_size 48, ~8.0 M backbone parameters), 96^3 input
#           (SwinUNETR's standard ROI), window 6 (7 clamped to the 6^3 grid of the last attention stage, so
#           that no stage pads or runs with a mismatched relative-position table), fine 12^3 = 1728 x 192 ch,
#           coarse 6^3 = 216 x 384 ch, last 3^3 = 27 x 768 ch; gradient checkpointing on (GPU training).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone": "swin",
        "image_size": (64, 64, 64),
        "feature_size": 12,
        "depths": (2, 2, 2, 2),
        "num_heads": (3, 6, 12, 24),
        "window_size": 7,
        "out_dim": 64,
        "fine_stage": 2,
        "coarse_stage": 3,
    },
    "velvet": {
        "backbone": "swin",
        "image_size": (96, 96, 96),
        "feature_size": 48,
        "depths": (2, 2, 2, 2),
        "num_heads": (3, 6, 12, 24),
        "window_size": 7,
        "out_dim": 512,
        "fine_stage": 2,
        "coarse_stage": 3,
        "use_checkpoint": True,
    },
}


def swin_window_size(
    image_size: Sequence[int], window_size: int, patch_size: int = _SWIN_PATCH_SIZE
) -> tuple[int, int, int]:
    """Attention window per axis: min(window_size, grid of the last attention stage = image / (patch * 8)).

    MONAI's Swin blocks shrink the window at run time for a stage whose grid is not larger than the window,
    but keep the relative-position table of the configured window and slice its index (`[:n, :n]`), so that
    stage looks up biases of the wrong offsets; a window that does not divide a grid pads it. Clamping to the
    smallest grid avoids both whenever it applies: image sides are multiples of patch * 16, so every stage
    grid is a power-of-two multiple of the smallest one. The same window goes into `backbone_spec()`, so the
    segmentation network is built with the table shapes of the exported weights.

    Args:
        image_size: (D, H, W) input size, each a multiple of patch_size * 16.
        window_size: requested window side (SwinUNETR: 7).
        patch_size: Swin patch side.

    Returns:
        (wD, wH, wW) window sides.
    """
    return tuple(min(window_size, side // (patch_size * 2 ** (_SWIN_NUM_ATTENTION_STAGES - 1))) for side in image_size)


def _grid_to_tokens(feature_map: Tensor) -> Tensor:
    """Flatten a feature map into raster-ordered tokens (D slowest, W fastest)."""
    return feature_map.flatten(2).transpose(1, 2)  # (B, C, D, H, W) -> (B, D*H*W, C)


def _tokens_to_grid(tokens: Tensor, grid: Sequence[int]) -> Tensor:
    """Inverse of `_grid_to_tokens`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)  # (B, D*H*W, C) -> (B, C, D, H, W)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _int_triple(name: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != 3:
        raise ValueError(f"{name} must be an int or 3 ints (D, H, W), got {value!r}")
    for v in values:
        _positive_int(name, v)
    return values  # type: ignore[return-value]


def _nearest_multiple(side: int, multiple: int) -> int:
    return max(multiple, math.floor(side / multiple + 0.5) * multiple)


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively (for JSON)."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class VolumeEncoder(nn.Module):
    """CT volume -> fine patch tokens, coarse region tokens, a pooled global feature and last-stage tokens.

    Swin (default): MONAI `SwinTransformer` (SwinUNETR's `swinViT`) run with `normalize=True` (parameter-free
    layer norm of each hidden state, as SwinUNETR does); fine / coarse tokens are the hidden states of
    `fine_stage` / `coarse_stage` (0..4, see the module docstring), "tokens" are stage 4 and "pooled" is their
    mean. ViT: MONAI `ViT` (UNETR's `vit`); fine tokens are the output of block `fine_stage`, coarse tokens
    the 2x2x2 average pool of block `coarse_stage`'s grid (both with a parameter-free layer norm, like Swin's),
    "tokens" the final (layer-normed) output and "pooled" its mean; MONAI builds a `norm_cross_attn` layer norm
    in every ViT block that it only uses with cross-attention: it stays in the state dict (UNETR.vit has it) but
    is frozen (requires_grad=False). BasicUNet encoder ("unet"): MONAI `BasicUNet`'s `conv_0`, `down_1` ...
    `down_4` (held in a ModuleDict under the same names); fine / coarse tokens are levels `fine_stage` /
    `coarse_stage` (see the module docstring), "tokens" level 4, each with a parameter-free layer norm. Each
    output has its own `ProjectionHead` to `out_dim`.

    Args:
        backbone: "swin", "vit" or "unet".
        in_channels: input channels (1 for CT).
        image_size: (D, H, W) input size (or one int); Swin: multiples of 32; ViT: multiples of
            2 * vit_patch_size; unet: multiples of 16. Inputs must have exactly this size.
        out_dim: channels of every output (the shared embedding space).
        fine_stage: stage of the fine tokens. Swin: 0..3 (default 2); ViT: block index (default
            vit_layers // 2 - 1); unet: level 0..3 (default 3).
        coarse_stage: stage of the coarse tokens. Swin: fine_stage+1..4 (default 3); ViT: block index
            >= fine_stage (default vit_layers - 1); unet: level fine_stage+1..4 (default 4).
        feature_size: Swin embed dim F, a multiple of 12 (12: tiny CPU model; 48: SwinUNETR's standard).
        depths: Swin blocks per stage (4 stages).
        num_heads: Swin heads per stage; F * 2**i must be divisible by num_heads[i].
        window_size: Swin window side, clamped per axis to the last attention stage's grid (see
            `swin_window_size`): 7 -> 4 at 64^3, 2 at 32^3, 6 at 96^3, 7 at 128^3.
        patch_size: Swin patch side; must be 2 (the only size SwinUNETR's decoder fits).
        vit_hidden_size, vit_layers, vit_heads: ViT width, blocks, heads (UNETR: 768, 12, 12).
        vit_mlp_dim: ViT MLP width (default 4 * vit_hidden_size).
        vit_patch_size: ViT patch side (UNETR: 16).
        unet_features: channels of the five BasicUNet encoder levels (BasicUNet's default: 32, 32, 64, 128,
            256); the segmentation network gets (*unet_features, unet_features[0]).
        dropout_path_rate: Swin stochastic-depth rate in [0, 1); must be 0 for ViT and unet (no stochastic depth).
        use_checkpoint: gradient checkpointing of every transformer block (unet: every encoder level) while
            training (saves GPU memory).
        projection_layers: 1 (Linear) or 2 (Linear-GELU-Linear) for every output projection.
        pooled_norm: "batch" standardises the pooled last-stage feature per channel over the batch
            (BatchNorm1d without affine, running statistics at eval) before its projection; "none" skips it.
            A randomly initialised Swin maps different volumes to nearly the same pooled vector (cross-sample
            std ~1e-3 of the feature scale on the demo set), so a contrastive loss on it starts collapsed;
            standardising over the batch restores the differences (as in SimCLR's projection head).

    Shapes:
        x: (B, in_channels, D, H, W), intensities in [0, 1] -> encode_volume(x) / forward(x): dict with
            "fine": (B, Nf, out_dim), "fine_grid": (Df, Hf, Wf) with Nf = Df*Hf*Wf,
            "coarse": (B, Nc, out_dim), "coarse_grid": (Dc, Hc, Wc),
            "tokens": (B, Nt, out_dim), "tokens_grid": (Dt, Ht, Wt), "pooled": (B, out_dim),
            "pooled_tokens": (B, Nt, out_dim) (last-stage tokens through the pooled projection).
        Tokens are in raster order (D slowest, W fastest): token n of a grid sits at
        (n // (H*W), (n // W) % H, n % W); `fine_stride` / `coarse_stride` voxels per token along each axis.

    Raises:
        ValueError: bad constructor arguments (an image size that does not fit names the nearest valid one);
            an input that is not a floating (B, in_channels, *image_size) tensor.
    """

    def __init__(
        self,
        backbone: str = "swin",
        *,
        in_channels: int = 1,
        image_size: int | Sequence[int] = (64, 64, 64),
        out_dim: int = 256,
        fine_stage: int | None = None,
        coarse_stage: int | None = None,
        feature_size: int = 12,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = _SWIN_PATCH_SIZE,
        vit_hidden_size: int = 768,
        vit_layers: int = _UNETR_NUM_LAYERS,
        vit_heads: int = 12,
        vit_mlp_dim: int | None = None,
        vit_patch_size: int = _UNETR_PATCH_SIZE,
        unet_features: Sequence[int] = (8, 16, 32, 64, 64),
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        projection_layers: int = 1,
        pooled_norm: str = "batch",
    ) -> None:
        super().__init__()
        if backbone not in ("swin", "vit", "unet"):
            raise ValueError(
                "backbone must be 'swin' (SwinUNETR's Swin transformer), 'vit' (UNETR's ViT) or 'unet' (BasicUNet's "
                f"convolutional encoder), got {backbone!r}"
            )
        self.backbone_name = backbone
        self.in_channels = _positive_int("in_channels", in_channels)
        self.image_size = _int_triple("image_size", image_size)
        self.out_dim = _positive_int("out_dim", out_dim)
        if not 0.0 <= dropout_path_rate < 1.0:
            raise ValueError(f"dropout_path_rate must be in [0, 1), got {dropout_path_rate}")
        self.use_checkpoint = bool(use_checkpoint)

        if backbone == "swin":
            fine_stage, coarse_stage = self._init_swin(
                feature_size, depths, num_heads, window_size, patch_size, dropout_path_rate, fine_stage, coarse_stage
            )
        else:
            if dropout_path_rate != 0.0:
                raise ValueError(f"dropout_path_rate must be 0 for backbone={backbone!r}: it has no stochastic depth")
            if backbone == "vit":
                fine_stage, coarse_stage = self._init_vit(
                    vit_hidden_size, vit_layers, vit_heads, vit_mlp_dim, vit_patch_size, fine_stage, coarse_stage
                )
            else:
                fine_stage, coarse_stage = self._init_unet(unet_features, fine_stage, coarse_stage)
        self.fine_stage = fine_stage
        self.coarse_stage = coarse_stage
        self.fine_grid = tuple(side // self.fine_stride for side in self.image_size)
        self.coarse_grid = tuple(side // self.coarse_stride for side in self.image_size)
        self.tokens_grid = tuple(side // self.tokens_stride for side in self.image_size)

        def head(in_dim: int) -> ProjectionHead:
            return ProjectionHead(in_dim, out_dim, num_layers=projection_layers)

        self.fine_proj = head(self._fine_dim)
        self.coarse_proj = head(self._coarse_dim)
        self.tokens_proj = head(self._tokens_dim)
        self.pooled_proj = head(self._tokens_dim)
        if pooled_norm not in ("batch", "none"):
            raise ValueError(f"pooled_norm must be 'batch' or 'none', got {pooled_norm!r}")
        self.pooled_norm = nn.BatchNorm1d(self._tokens_dim, affine=False) if pooled_norm == "batch" else None

    # ----------------------------------------------------------------------------------------- construction
    def _init_swin(
        self,
        feature_size: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        patch_size: int,
        dropout_path_rate: float,
        fine_stage: int | None,
        coarse_stage: int | None,
    ) -> tuple[int, int]:
        _positive_int("feature_size", feature_size)
        if feature_size % _SWIN_FEATURE_MULTIPLE:
            raise ValueError(
                f"feature_size must be a multiple of {_SWIN_FEATURE_MULTIPLE} (SwinUNETR requires it), got "
                f"{feature_size}; e.g. 12 (tiny) or 48 (SwinUNETR's standard)"
            )
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != _SWIN_NUM_ATTENTION_STAGES or len(num_heads) != _SWIN_NUM_ATTENTION_STAGES:
            raise ValueError(
                f"depths and num_heads need {_SWIN_NUM_ATTENTION_STAGES} entries (MONAI's Swin has 4 stages), got "
                f"depths={depths}, num_heads={num_heads}"
            )
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            _positive_int(f"depths[{i}]", depth)
            _positive_int(f"num_heads[{i}]", heads)
            if (feature_size * 2**i) % heads:
                raise ValueError(
                    f"stage {i + 1} has {feature_size * 2**i} channels (feature_size * 2**{i}), not divisible by "
                    f"num_heads[{i}]={heads}; choose heads that divide it (SwinUNETR: 3, 6, 12, 24)"
                )
        _positive_int("window_size", window_size)
        if patch_size != _SWIN_PATCH_SIZE:
            raise ValueError(
                f"patch_size must be {_SWIN_PATCH_SIZE} for the Swin backbone (SwinUNETR's decoder upsamples by 2 "
                f"five times, so its backbone only fits patch_size 2), got {patch_size!r}; use backbone='vit' for "
                "larger patches"
            )
        multiple = patch_size * 2**_SWIN_NUM_ATTENTION_STAGES
        if any(side % multiple for side in self.image_size):
            nearest = tuple(_nearest_multiple(side, multiple) for side in self.image_size)
            raise ValueError(
                f"image_size {self.image_size} does not fit the Swin backbone: every side must be a multiple of "
                f"{multiple} (patch_size {patch_size} x 2**4 patch-merging steps, as SwinUNETR requires); nearest "
                f"valid size: {nearest} (crop or pad the volumes to it)"
            )
        fine_stage = 2 if fine_stage is None else fine_stage
        coarse_stage = 3 if coarse_stage is None else coarse_stage
        stages_are_ints = isinstance(fine_stage, int) and isinstance(coarse_stage, int)
        if not (stages_are_ints and 0 <= fine_stage < coarse_stage <= _SWIN_LAST_STAGE):
            raise ValueError(
                f"Swin stages must satisfy 0 <= fine_stage < coarse_stage <= {_SWIN_LAST_STAGE} (0 = patch embedding, "
                f"4 = last stage), got fine_stage={fine_stage!r}, coarse_stage={coarse_stage!r}"
            )
        self._backbone_kwargs: dict[str, Any] = {
            "in_chans": self.in_channels,
            "embed_dim": feature_size,
            "window_size": swin_window_size(self.image_size, window_size, patch_size),
            "patch_size": (patch_size,) * 3,
            "depths": depths,
            "num_heads": num_heads,
            "mlp_ratio": 4.0,
            "qkv_bias": True,
            "drop_rate": 0.0,
            "attn_drop_rate": 0.0,
            "drop_path_rate": float(dropout_path_rate),
            "patch_norm": False,
            "use_checkpoint": self.use_checkpoint,
            "spatial_dims": 3,
            "downsample": "merging",
            "use_v2": False,
        }
        self.backbone = SwinTransformer(**self._backbone_kwargs)
        self.fine_stride = patch_size * 2**fine_stage
        self.coarse_stride = patch_size * 2**coarse_stage
        self.tokens_stride = patch_size * 2**_SWIN_LAST_STAGE
        self._fine_dim = feature_size * 2**fine_stage
        self._coarse_dim = feature_size * 2**coarse_stage
        self._tokens_dim = feature_size * 2**_SWIN_LAST_STAGE
        return fine_stage, coarse_stage

    def _init_vit(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int | None,
        patch_size: int,
        fine_stage: int | None,
        coarse_stage: int | None,
    ) -> tuple[int, int]:
        for name, value in (
            ("vit_hidden_size", hidden_size),
            ("vit_layers", num_layers),
            ("vit_heads", num_heads),
            ("vit_patch_size", patch_size),
        ):
            _positive_int(name, value)
        mlp_dim = 4 * hidden_size if mlp_dim is None else _positive_int("vit_mlp_dim", mlp_dim)
        if hidden_size % num_heads:
            raise ValueError(f"vit_hidden_size={hidden_size} must be divisible by vit_heads={num_heads}")
        multiple = 2 * patch_size  # the coarse tokens pool the patch grid 2x2x2
        if any(side % multiple for side in self.image_size):
            nearest = tuple(_nearest_multiple(side, multiple) for side in self.image_size)
            raise ValueError(
                f"image_size {self.image_size} does not fit the ViT backbone: every side must be a multiple of "
                f"{multiple} (2 x vit_patch_size {patch_size}: whole patches, and an even patch grid for the 2x2x2 "
                f"pooled coarse tokens); nearest valid size: {nearest} (crop or pad the volumes to it)"
            )
        fine_stage = max(0, num_layers // 2 - 1) if fine_stage is None else fine_stage
        coarse_stage = num_layers - 1 if coarse_stage is None else coarse_stage
        stages_are_ints = isinstance(fine_stage, int) and isinstance(coarse_stage, int)
        if not (stages_are_ints and 0 <= fine_stage <= coarse_stage < num_layers):
            raise ValueError(
                f"ViT stages are block indices with 0 <= fine_stage <= coarse_stage < vit_layers={num_layers}, got "
                f"fine_stage={fine_stage!r}, coarse_stage={coarse_stage!r}"
            )
        self._backbone_kwargs = {
            "in_channels": self.in_channels,
            "img_size": self.image_size,
            "patch_size": (patch_size,) * 3,
            "hidden_size": hidden_size,
            "mlp_dim": mlp_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "proj_type": "conv",
            "pos_embed_type": "learnable",
            "classification": False,
            "dropout_rate": 0.0,
            "spatial_dims": 3,
            "qkv_bias": False,
        }
        self.backbone = ViT(**self._backbone_kwargs)
        for block in self.backbone.blocks:
            # MONAI's TransformerBlock always builds `norm_cross_attn` but uses it only with cross-attention: keep it
            # (UNETR.vit has the key, strict loading needs it) but frozen, so that DDP (find_unused_parameters=False)
            # and "every trainable parameter gets a gradient" checks hold.
            if not getattr(block, "with_cross_attention", True) and hasattr(block, "norm_cross_attn"):
                block.norm_cross_attn.requires_grad_(False)
        self.fine_stride = patch_size
        self.coarse_stride = 2 * patch_size
        self.tokens_stride = patch_size
        self._fine_dim = self._coarse_dim = self._tokens_dim = hidden_size
        return fine_stage, coarse_stage

    def _init_unet(
        self, features: Sequence[int], fine_stage: int | None, coarse_stage: int | None
    ) -> tuple[int, int]:
        features = tuple(features)
        if len(features) != len(UNET_LEVELS):
            raise ValueError(
                f"unet_features needs {len(UNET_LEVELS)} channel counts (BasicUNet's conv_0 and down_1..down_4), got "
                f"{list(features)}"
            )
        for i, channels in enumerate(features):
            _positive_int(f"unet_features[{i}]", channels)
        multiple = 2**_UNET_LAST_LEVEL  # four 2x max poolings
        if any(side % multiple for side in self.image_size):
            nearest = tuple(_nearest_multiple(side, multiple) for side in self.image_size)
            raise ValueError(
                f"image_size {self.image_size} does not fit the BasicUNet encoder: every side must be a multiple of "
                f"{multiple} (four 2x poolings); nearest valid size: {nearest} (crop or pad the volumes to it)"
            )
        fine_stage = 3 if fine_stage is None else fine_stage
        coarse_stage = _UNET_LAST_LEVEL if coarse_stage is None else coarse_stage
        stages_are_ints = isinstance(fine_stage, int) and isinstance(coarse_stage, int)
        if not (stages_are_ints and 0 <= fine_stage < coarse_stage <= _UNET_LAST_LEVEL):
            raise ValueError(
                f"unet stages are encoder levels with 0 <= fine_stage < coarse_stage <= {_UNET_LAST_LEVEL} (0 = full "
                f"resolution, 4 = 1/16), got fine_stage={fine_stage!r}, coarse_stage={coarse_stage!r}"
            )
        # BasicUNet's own defaults for everything but the widths, so its segmentation network is the stock one.
        self._backbone_kwargs = {
            "spatial_dims": 3,
            "in_channels": self.in_channels,
            "features": (*features, features[0]),
            "act": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
            "norm": ("instance", {"affine": True}),
            "bias": True,
            "dropout": 0.0,
            "upsample": "deconv",
        }
        network = BasicUNet(out_channels=2, **self._backbone_kwargs)
        self.backbone = nn.ModuleDict({name: getattr(network, name) for name in UNET_LEVELS})  # keys as in BasicUNet
        self.fine_stride, self.coarse_stride, self.tokens_stride = 2**fine_stage, 2**coarse_stage, 2**_UNET_LAST_LEVEL
        self._fine_dim, self._coarse_dim, self._tokens_dim = features[fine_stage], features[coarse_stage], features[-1]
        return fine_stage, coarse_stage

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VolumeEncoder:
        """Build a named configuration from `PRESETS` ("tiny", "velvet"), with keyword overrides.

        Raises:
            ValueError: unknown preset name (lists the known ones).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown VolumeEncoder preset {name!r}; known presets: {sorted(PRESETS)}")
        kwargs = {**PRESETS[name], **overrides}
        return cls(kwargs.pop("backbone"), **kwargs)

    # ------------------------------------------------------------------------------------------------ export
    def backbone_state_dict(self) -> dict[str, Tensor]:
        """State dict of the MONAI backbone alone: keys exactly as in `SwinUNETR.swinViT` / `UNETR.vit`."""
        return self.backbone.state_dict()

    def backbone_spec(self) -> dict[str, Any]:
        """JSON-able description of the backbone and of the MONAI segmentation network that takes its weights.

        Returns a dict with:
            backbone: "swin", "vit" or "unet"; image_size: [D, H, W] (the segmentation ROI the weights were
                trained at);
            monai_version: the MONAI version that built the backbone;
            backbone_class / backbone_kwargs: the MONAI backbone (`SwinTransformer` / `ViT` / `BasicUNet`, of
                which the unet backbone is the five encoder levels) and its arguments;
            segmentation_class / segmentation_kwargs: `monai.networks.nets.SwinUNETR` / `UNETR` / `BasicUNet` and
                its arguments except `out_channels` (the caller's number of classes): build it with
                `cls(out_channels=K, **segmentation_kwargs)`, then
                `getattr(net, backbone_attribute).load_state_dict(backbone_state_dict(), strict=True)`;
                both None for a ViT that UNETR cannot hold;
            backbone_attribute: "swinViT" or "vit"; for unet the list of BasicUNet attributes
                ["conv_0", "down_1", ..., "down_4"], each loading the state-dict keys under its own name;
            segmentation_notes: list of strings, each a restriction of the segmentation network (why it is None,
                or input sizes it cannot run at); empty when there is none.
        """
        kwargs = self._backbone_kwargs
        spec: dict[str, Any] = {
            "backbone": self.backbone_name,
            "image_size": self.image_size,
            "monai_version": monai.__version__,
            "backbone_kwargs": kwargs,
            "segmentation_notes": [],
        }
        if self.backbone_name == "swin":
            spec["backbone_class"] = "monai.networks.nets.swin_unetr.SwinTransformer"
            spec["backbone_attribute"] = "swinViT"
            if math.prod(side // self.tokens_stride for side in self.image_size) == 1:
                spec["segmentation_notes"].append(
                    f"image_size {list(self.image_size)} leaves a single voxel at SwinUNETR's 1/32 bottleneck, where "
                    "its instance norm raises; run the segmentation network on inputs with a side >= 64 (the Swin "
                    "weights do not depend on the input size)"
                )
            spec["segmentation_class"] = "monai.networks.nets.SwinUNETR"
            spec["segmentation_kwargs"] = {
                "in_channels": kwargs["in_chans"],
                "feature_size": kwargs["embed_dim"],
                "patch_size": kwargs["patch_size"][0],
                "depths": kwargs["depths"],
                "num_heads": kwargs["num_heads"],
                "window_size": kwargs["window_size"],
                "mlp_ratio": kwargs["mlp_ratio"],
                "qkv_bias": kwargs["qkv_bias"],
                "dropout_path_rate": kwargs["drop_path_rate"],
                "patch_norm": kwargs["patch_norm"],
                "use_checkpoint": kwargs["use_checkpoint"],
                "spatial_dims": 3,
                "downsample": kwargs["downsample"],
                "use_v2": kwargs["use_v2"],
            }
        elif self.backbone_name == "unet":
            spec["backbone_class"] = "monai.networks.nets.BasicUNet"
            spec["backbone_attribute"] = list(UNET_LEVELS)
            spec["segmentation_class"] = "monai.networks.nets.BasicUNet"
            spec["segmentation_kwargs"] = dict(kwargs)
        else:
            spec["backbone_class"] = "monai.networks.nets.ViT"
            spec["backbone_attribute"] = "vit"
            if kwargs["num_layers"] != _UNETR_NUM_LAYERS or kwargs["patch_size"][0] != _UNETR_PATCH_SIZE:
                spec["segmentation_class"] = None
                spec["segmentation_kwargs"] = None
                spec["segmentation_notes"].append(
                    f"no UNETR: it hard-codes a {_UNETR_NUM_LAYERS}-block ViT with {_UNETR_PATCH_SIZE}^3 patches; this "
                    f"encoder has vit_layers={kwargs['num_layers']}, vit_patch_size={kwargs['patch_size'][0]} (the "
                    "backbone alone still loads into backbone_class(**backbone_kwargs))"
                )
            else:
                spec["segmentation_class"] = "monai.networks.nets.UNETR"
                spec["segmentation_kwargs"] = {
                    "in_channels": kwargs["in_channels"],
                    "img_size": kwargs["img_size"],
                    "hidden_size": kwargs["hidden_size"],
                    "mlp_dim": kwargs["mlp_dim"],
                    "num_heads": kwargs["num_heads"],
                    "proj_type": kwargs["proj_type"],
                    "qkv_bias": kwargs["qkv_bias"],
                    "spatial_dims": 3,
                }
        return _jsonable(spec)

    # ----------------------------------------------------------------------------------------------- forward
    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, *self.image_size)
        if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[0] < 1 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"VolumeEncoder expects a (B, {', '.join(map(str, expected))}) tensor (B >= 1: batch, channels, "
                f"D, H, W as configured by in_channels / image_size), got {got}; crop or pad volumes to "
                f"{self.image_size}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"VolumeEncoder expects a floating-point volume with values in [0, 1], got dtype {x.dtype}"
            )

    def _swin_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = self.backbone(x, normalize=True)  # 5 x (B, C_s, D_s, H_s, W_s), see the module docstring
        fine = _grid_to_tokens(hidden[self.fine_stage])  # (B, C, Df, Hf, Wf) -> (B, Df*Hf*Wf, C)
        coarse = _grid_to_tokens(hidden[self.coarse_stage])  # (B, C, Dc, Hc, Wc) -> (B, Dc*Hc*Wc, C)
        last = _grid_to_tokens(hidden[_SWIN_LAST_STAGE])  # (B, C, Dt, Ht, Wt) -> (B, Dt*Ht*Wt, C)
        return fine, coarse, last

    def _vit_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # The steps of monai ViT.forward (classification=False), block by block so that blocks can be
        # checkpointed and intermediate outputs taken; tests check equality with ViT.forward.
        tokens = self.backbone.patch_embedding(x)  # (B, 1, D, H, W) -> (B, Dt*Ht*Wt, C), raster order
        outputs = []
        for block in self.backbone.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
            outputs.append(tokens)
        last = self.backbone.norm(tokens)  # (B, Nt, C)
        channels = last.shape[-1]
        fine = F.layer_norm(outputs[self.fine_stage], (channels,))  # (B, Nf, C), Nf = Nt
        coarse_map = _tokens_to_grid(outputs[self.coarse_stage], self.tokens_grid)  # (B, Nt, C) -> (B, C, Dt, Ht, Wt)
        coarse_map = F.avg_pool3d(coarse_map, kernel_size=2)  # (B, C, Dt, Ht, Wt) -> (B, C, Dt/2, Ht/2, Wt/2)
        coarse = F.layer_norm(_grid_to_tokens(coarse_map), (channels,))  # (B, C, Dc, Hc, Wc) -> (B, Dc*Hc*Wc, C)
        return fine, coarse, last

    def _unet_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        levels = []
        for name in UNET_LEVELS:  # (B, C_l, S/2^l, ...) per level, see the module docstring
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(self.backbone[name], x, use_reentrant=False)
            else:
                x = self.backbone[name](x)
            levels.append(x)

        def tokens(level: int) -> Tensor:  # (B, C, d, h, w) -> (B, d*h*w, C), layer-normed like Swin's states
            grid_tokens = _grid_to_tokens(levels[level])
            return F.layer_norm(grid_tokens, grid_tokens.shape[-1:])

        return tokens(self.fine_stage), tokens(self.coarse_stage), tokens(_UNET_LAST_LEVEL)

    def encode_volume(self, x: Tensor) -> dict[str, Any]:
        """Encode a batch of volumes (see the class docstring for the returned keys and shapes)."""
        self._check_input(x)
        features = {"swin": self._swin_features, "vit": self._vit_features, "unet": self._unet_features}
        fine, coarse, last = features[self.backbone_name](x)
        return {
            "fine": self.fine_proj(fine),
            "fine_grid": self.fine_grid,
            "coarse": self.coarse_proj(coarse),
            "coarse_grid": self.coarse_grid,
            "tokens": self.tokens_proj(last),
            "tokens_grid": self.tokens_grid,
            "pooled": self.pooled_proj(self._normalise_pooled(last.mean(dim=1))),  # (B, Nt, C) -> (B, C) -> (B, out)
            # last-stage tokens in the pooled feature's space (class activation maps of global models)
            "pooled_tokens": self.pooled_proj(self._normalise_tokens(last)),  # (B, Nt, C) -> (B, Nt, out_dim)
        }

    def _normalise_pooled(self, pooled: Tensor) -> Tensor:
        if self.pooled_norm is None:
            return pooled
        if self.training and pooled.shape[0] == 1:  # batch statistics need two samples: use the running ones
            return self._normalise_tokens(pooled)
        return self.pooled_norm(pooled)

    def _normalise_tokens(self, tokens: Tensor) -> Tensor:
        """Tokens standardised with the pooled feature's running statistics (no update), so that with a linear
        projection the mean of "pooled_tokens" tracks "pooled" at eval time."""
        if self.pooled_norm is None:
            return tokens
        norm = self.pooled_norm
        return (tokens - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Same as `encode_volume`."""
        return self.encode_volume(x)
