"""MONAI transform pipelines for CT volumes: loading, deterministic preprocessing and SSL augmentation.

The preprocessing pipeline (`build_preprocessing`) is deterministic, so its output can be cached on
disk (see `medvl.data.cache`); the augmentation pipeline (`build_augmentation`) is random and runs
AFTER the cache, on every access.

Preprocessing, in order (each step is a maintained MONAI transform):

1. `LoadVolumed`            file / DICOM folder -> MetaTensor (1, X, Y, Z) HU with its RAS affine
2. `EnsureSameGeometryd`    the organ mask (if any) must share the image's grid (shape and affine)
3. `Orientationd`           reorder / flip axes to `orientation` (default "RAS")
4. `Spacingd`               resample to `spacing` mm (bilinear for the image, nearest for the mask)
5. `ScaleIntensityRanged`   HU window (lo, hi) -> [0, 1], clipped
6. `CropForegroundd`        optional: crop to the box of voxels above `foreground_hu_threshold`
7. `ResizeWithPadOrCropd`   centre crop / pad to `spatial_size`
8. `CastToTyped`            image float32, mask int64

Scaling comes before any constant padding on purpose: after step 5 the value 0 is the window
minimum (air), so every pad of steps 6-7 fills with air. Padding with 0 before scaling would insert
HU 0 (water), i.e. mid-grey after a [-1000, 1000] window. Step 4 pads the image with its border
values for the same reason (and the mask with 0 = background).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    MapTransform,
    Orientationd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)
from monai.utils.enums import MetaKeys, SpaceKeys

from medvl.data.separable_spacing import SeparableSpacingd
from medvl.data.volume import Volume, load_volume

IMAGE_KEY = "image"
MASK_KEY = "organ_mask"
_VALID_INTERPOLATIONS = ("bilinear", "nearest")
_VALID_AXIS_LETTERS = ("LR", "PA", "IS")

VolumeLoader = Callable[[Path], Volume]


def check_orientation_code(code: str) -> None:
    """Raise ValueError unless `code` has one letter from each of L/R, P/A, I/S (e.g. "RAS", "LPS")."""
    letters = code.upper()
    groups = sorted(next((i for i, pair in enumerate(_VALID_AXIS_LETTERS) if c in pair), -1) for c in letters)
    if len(letters) != 3 or groups != [0, 1, 2]:
        raise ValueError(
            f"orientation must be a 3-letter axis code with one of L/R, P/A, I/S each (e.g. 'RAS'), "
            f"got {code!r}"
        )


def _positive_triple(name: str, value: Sequence[float], *, integer: bool) -> tuple:
    """Validate a (x, y, z) triple of positive numbers and return it as a tuple."""
    try:
        triple = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of 3 numbers, got {value!r}") from None
    if len(triple) != 3:
        raise ValueError(f"{name} must have 3 entries (one per spatial axis), got {triple!r}")
    for v in triple:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} entries must be finite positive numbers, got {triple!r}")
        if integer and int(v) != v:
            raise ValueError(f"{name} entries must be whole numbers of voxels, got {triple!r}")
    return tuple(int(v) for v in triple) if integer else tuple(float(v) for v in triple)


@dataclass(frozen=True)
class PreprocessConfig:
    """Every knob of the deterministic CT preprocessing; hashed into the cache key.

    Args:
        orientation: target axis code for `Orientationd` (e.g. "RAS", "LPS").
        spacing: target voxel spacing in mm (x, y, z), or None to keep the source spacing.
        hu_window: (lo, hi) Hounsfield units mapped linearly to [0, 1] and clipped.
        spatial_size: output (D, H, W) after centre crop / pad, or None to keep the resampled size.
        foreground_crop: crop to the bounding box of voxels above `foreground_hu_threshold` first.
        foreground_hu_threshold: HU threshold of the foreground crop (must lie inside `hu_window`).
        foreground_margin: voxels kept around the foreground box.
        image_interpolation: "bilinear" or "nearest" for resampling the image (masks always nearest).
        stored_values_are_hu: DICOM only: accept CT series without RescaleSlope / RescaleIntercept, taking
            their stored values as HU (otherwise such a series is an error; see `medvl.data.dicom`).

    Raises:
        ValueError: on an invalid orientation code, non-positive spacing / size, an empty window,
            or a foreground threshold outside the window while `foreground_crop` is on.
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = (5.0, 5.0, 5.0)
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    spatial_size: tuple[int, int, int] | None = (64, 64, 64)
    foreground_crop: bool = False
    foreground_hu_threshold: float = -500.0
    foreground_margin: int = 0
    image_interpolation: str = "bilinear"
    stored_values_are_hu: bool = False

    def __post_init__(self) -> None:
        check_orientation_code(self.orientation)
        # Normalise lists (from YAML / JSON) to tuples so that the dataclass stays hashable.
        object.__setattr__(self, "orientation", self.orientation.upper())
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _positive_triple("spacing", self.spacing, integer=False))
        if self.spatial_size is not None:
            object.__setattr__(
                self, "spatial_size", _positive_triple("spatial_size", self.spatial_size, integer=True)
            )
        window = tuple(float(v) for v in self.hu_window)
        if len(window) != 2 or not all(math.isfinite(v) for v in window) or window[0] >= window[1]:
            raise ValueError(f"hu_window must be (lo, hi) with lo < hi, e.g. (-1000, 1000); got {self.hu_window!r}")
        object.__setattr__(self, "hu_window", window)
        object.__setattr__(self, "foreground_hu_threshold", float(self.foreground_hu_threshold))
        if self.foreground_crop and not window[0] < self.foreground_hu_threshold < window[1]:
            raise ValueError(
                f"foreground_hu_threshold={self.foreground_hu_threshold} must lie inside hu_window={window} "
                f"(outside it, every voxel or none is foreground); move it inside or set foreground_crop=False"
            )
        if isinstance(self.foreground_margin, bool) or not isinstance(self.foreground_margin, int) \
                or self.foreground_margin < 0:
            raise ValueError(f"foreground_margin must be an int >= 0, got {self.foreground_margin!r}")
        if not isinstance(self.stored_values_are_hu, bool):
            raise ValueError(f"stored_values_are_hu must be true or false, got {self.stored_values_are_hu!r}")
        if self.image_interpolation not in _VALID_INTERPOLATIONS:
            raise ValueError(
                f"image_interpolation must be one of {_VALID_INTERPOLATIONS}, got {self.image_interpolation!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PreprocessConfig:
        """Build from a plain mapping (e.g. a Hydra node); unknown keys raise a ValueError listing the valid ones."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing option(s) {unknown}; valid options are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with sorted keys and lists for tuples: the same config always gives the same JSON."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(out.items())}


class LoadVolumed(MapTransform):
    """Load each key's path with `medvl.data.volume.load_volume` into a MONAI MetaTensor.

    The MetaTensor carries the volume's affine (voxel -> RAS world mm, MONAI's default space), so
    `Orientationd`, `Spacingd` and the crop/pad transforms update the geometry correctly.

    Args:
        keys: keys of the data dict holding a NIfTI file or DICOM folder path.
        loader: function path -> `Volume`; defaults to `load_volume` (tests inject a counting one).
        allow_missing_keys: skip keys absent from the data dict (e.g. a record without organ mask).

    Shapes:
        output per key: (1, X, Y, Z) float32, voxel order of the loaded affine.

    Raises:
        ValueError: the loaded array is not 3-D, the affine is not 4x4, or it holds NaN / inf
            (the message names the file). Errors from the loader (`VolumeReadError`) pass through.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        loader: VolumeLoader | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = loader if loader is not None else load_volume

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            volume = self.loader(path)
            array = np.asarray(volume.array)
            affine = np.asarray(volume.affine, dtype=np.float64)
            if array.ndim != 3:
                raise ValueError(f"{path}: expected a 3-D volume (X, Y, Z), got array of shape {array.shape}")
            if affine.shape != (4, 4) or not np.isfinite(affine).all():
                raise ValueError(f"{path}: expected a finite 4x4 affine, got {affine.tolist()}")
            if not np.isfinite(array).all():
                raise ValueError(f"{path}: volume contains NaN or infinite values")
            meta = {
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                "volume_meta": dict(volume.meta),
            }
            # (X, Y, Z) -> (1, X, Y, Z): MONAI's channel-first layout. nibabel returns NIfTI data in Fortran
            # order; it is wrapped as a strided view (no 4-bytes-per-voxel copy into C order): every later step
            # allocates its own output (the separable resampler's first gather along Z is even faster on it).
            array = array.astype(np.float32, copy=False)
            if array.flags.f_contiguous and not array.flags.c_contiguous:
                tensor = torch.from_numpy(array.T).permute(2, 1, 0)[None]
            else:
                tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
            d[key] = MetaTensor(tensor, affine=torch.from_numpy(affine), meta=meta)
        return d


class EnsureSameGeometryd(MapTransform):
    """Check that every key shares the reference key's voxel grid (shape and affine) before resampling.

    A mask on another grid would otherwise be resized to `spatial_size` with the image and look
    aligned while it is not.

    Args:
        keys: keys to compare with `reference_key`.
        reference_key: the key whose grid is the reference (the image).
        atol_mm: tolerance on affine entries, in mm.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: the spatial shape or the affine differs (the message gives both).
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        reference_key: str = IMAGE_KEY,
        atol_mm: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.atol_mm = atol_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.reference_key]
        for key in self.key_iterator(d):
            if key == self.reference_key:
                continue
            other = d[key]
            if tuple(other.shape[1:]) != tuple(ref.shape[1:]):
                raise ValueError(
                    f"'{key}' has spatial shape {tuple(other.shape[1:])} but '{self.reference_key}' has "
                    f"{tuple(ref.shape[1:])}: they must share one voxel grid"
                )
            if not torch.allclose(other.affine, ref.affine, atol=self.atol_mm, rtol=0.0):
                raise ValueError(
                    f"'{key}' affine {other.affine.tolist()} differs from '{self.reference_key}' affine "
                    f"{ref.affine.tolist()}: they must share one voxel grid"
                )
        return d


class GreaterThan:
    """Picklable `select_fn` for `CropForegroundd` (a lambda would break DataLoader workers under spawn)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x > self.threshold


def build_preprocessing(
    config: PreprocessConfig, loader: VolumeLoader | None = None, invertible: bool = True
) -> Compose:
    """Deterministic MONAI pipeline: {"image": path[, "organ_mask": path]} -> preprocessed MetaTensors.

    Args:
        config: the preprocessing knobs (see `PreprocessConfig`).
        loader: optional replacement for `load_volume` (path -> `Volume`).
        invertible: step 4 is MONAI's `Spacingd`, which records its inverse for `Invertd` (segmentation
            inference maps predictions back to the scan). False: `SeparableSpacingd`, the same output grid
            resampled axis by axis in float32 (no coordinate grid, no float64 copies; several times less
            memory and faster), without an inverse record: for the training datasets.

    Shapes:
        output "image": (1, D, H, W) float32 in [0, 1]; "organ_mask" (if given): (1, D, H, W) int64
        on the same grid. (D, H, W) = `config.spatial_size` when set.
    """
    keys = [IMAGE_KEY, MASK_KEY]
    lo, hi = config.hu_window
    if loader is None:
        loader = partial(load_volume, stored_values_are_hu=config.stored_values_are_hu)
    steps: list[Callable] = [
        LoadVolumed(keys, loader=loader, allow_missing_keys=True),
        EnsureSameGeometryd(keys, reference_key=IMAGE_KEY, allow_missing_keys=True),
        # labels=None: read the axis labels from the MetaTensor's space (RAS, set by LoadVolumed).
        Orientationd(keys, axcodes=config.orientation, labels=None, allow_missing_keys=True),
    ]
    if config.spacing is not None and not invertible:
        steps.append(
            SeparableSpacingd(
                keys,
                pixdim=config.spacing,
                mode=(config.image_interpolation, "nearest"),
                padding_mode=("border", "zeros"),
                allow_missing_keys=True,
            )
        )
    elif config.spacing is not None:
        steps.append(
            Spacingd(
                keys,
                pixdim=config.spacing,
                mode=(config.image_interpolation, "nearest"),
                # Image: replicate border values (0 would be HU 0 = water); mask: 0 = background.
                padding_mode=("border", "zeros"),
                allow_missing_keys=True,
            )
        )
    steps.append(ScaleIntensityRanged(IMAGE_KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if config.foreground_crop:
        scaled_threshold = (config.foreground_hu_threshold - lo) / (hi - lo)
        steps.append(
            CropForegroundd(
                keys,
                source_key=IMAGE_KEY,
                select_fn=GreaterThan(scaled_threshold),
                margin=config.foreground_margin,
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
                allow_missing_keys=True,
            )
        )
    if config.spatial_size is not None:
        # Constant 0 padding = the window minimum (air) because intensities are already scaled.
        steps.append(ResizeWithPadOrCropd(keys, spatial_size=config.spatial_size, mode="constant",
                                          allow_missing_keys=True))
    steps.append(CastToTyped(keys, dtype=(torch.float32, torch.int64), allow_missing_keys=True))
    return Compose(steps)


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations for self-supervision, applied after the cache (probabilities per call).

    Args:
        flip_prob: probability of flipping along EACH spatial axis (independently).
        rotate90_prob: probability of a k * 90 degree rotation (k uniform in 1..3) in `rotate90_axes`.
        rotate90_axes: the two spatial axes (0, 1, 2 = D, H, W) of the rotation plane; their sizes must match.
        intensity_scale_prob: probability of v -> v * (1 + f), f ~ U(-intensity_scale, intensity_scale).
        intensity_scale: range of f.
        intensity_shift_prob: probability of v -> v + o, o ~ U(-intensity_shift, intensity_shift).
        intensity_shift: range of o.
        noise_prob: probability of adding Gaussian noise N(0, s^2), s ~ U(0, noise_std).
        noise_std: upper bound of the noise standard deviation.
        clip: clip intensities back to [0, 1] after the intensity augmentations.

    Raises:
        ValueError: a probability outside [0, 1], a negative magnitude, or invalid rotation axes.
    """

    flip_prob: float = 0.5
    rotate90_prob: float = 0.5
    rotate90_axes: tuple[int, int] = (0, 1)
    intensity_scale_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift_prob: float = 0.5
    intensity_shift: float = 0.1
    noise_prob: float = 0.2
    noise_std: float = 0.02
    clip: bool = True

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rotate90_prob", "intensity_scale_prob", "intensity_shift_prob", "noise_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        for name in ("intensity_scale", "intensity_shift", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        axes = tuple(self.rotate90_axes)
        if len(axes) != 2 or axes[0] == axes[1] or not all(a in (0, 1, 2) for a in axes):
            raise ValueError(f"rotate90_axes must be two different axes out of 0, 1, 2; got {self.rotate90_axes!r}")
        object.__setattr__(self, "rotate90_axes", axes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a plain mapping; unknown keys raise a ValueError listing the valid ones."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {unknown}; valid options are {sorted(known)}")
        return cls(**values)


def build_augmentation(config: AugmentConfig, spatial_size: Sequence[int] | None = None) -> Compose:
    """Random MONAI pipeline for SSL views; geometric steps move "image" and "organ_mask" together.

    Args:
        config: augmentation knobs (see `AugmentConfig`).
        spatial_size: the (D, H, W) the inputs will have, if known: checked against the rotation plane
            (a 90 degree turn of a non-square plane would change the shape and break batching).

    Shapes:
        "image" (1, D, H, W) float -> same; "organ_mask" (1, D, H, W) -> same (nearest: flips and
        rotations only permute voxels).

    Raises:
        ValueError: `rotate90_prob` > 0 while the rotation plane of `spatial_size` is not square.
    """
    geometric_keys = [IMAGE_KEY, MASK_KEY]
    a, b = config.rotate90_axes
    if spatial_size is not None and config.rotate90_prob > 0 and spatial_size[a] != spatial_size[b]:
        raise ValueError(
            f"rotate90_axes={config.rotate90_axes} span a {spatial_size[a]}x{spatial_size[b]} plane of "
            f"spatial_size={tuple(spatial_size)}; 90-degree turns need a square plane: pick other axes, "
            f"a cubic spatial_size, or set rotate90_prob=0"
        )
    steps: list[Callable] = [
        RandFlipd(geometric_keys, prob=config.flip_prob, spatial_axis=axis, allow_missing_keys=True)
        for axis in range(3)
    ]
    steps += [
        RandRotate90d(geometric_keys, prob=config.rotate90_prob, max_k=3, spatial_axes=(a, b),
                      allow_missing_keys=True),
        RandScaleIntensityd(IMAGE_KEY, factors=config.intensity_scale, prob=config.intensity_scale_prob),
        RandShiftIntensityd(IMAGE_KEY, offsets=config.intensity_shift, prob=config.intensity_shift_prob),
        RandGaussianNoised(IMAGE_KEY, prob=config.noise_prob, mean=0.0, std=config.noise_std),
    ]
    if config.clip:
        # MONAI's identity window with clip=True is its plain "clip to [0, 1]" transform.
        steps.append(ScaleIntensityRanged(IMAGE_KEY, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return Compose(steps)
