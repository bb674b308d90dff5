"""Region measurements on a binary mask in the volume's real voxel spacing (scikit-image ``regionprops``).

    mask (X, Y, Z) bool --skimage.measure.label (26-connectivity)--> components
        --regionprops(spacing=voxel mm)--> per component: voxels, volume mL, diameter mm, mean HU, centroid

Volumes: voxel count x voxel volume (mm^3) / 1000 = mL. Diameters: ``equivalent_diameter_area`` with the spacing,
the diameter of the sphere of the same volume (the demo set's lesions are spheres and their ``size_mm`` is the
sphere's diameter); for elongated regions the largest extent along a principal axis (``axis_major_length``) is
kept too, as ``major_axis_mm``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from skimage.measure import label as label_components
from skimage.measure import regionprops

__all__ = ["Region", "measure_regions", "voxel_volume_ml"]


@dataclass(frozen=True)
class Region:
    """One connected component.

    Attributes:
        voxels: voxel count.
        volume_ml: volume in mL.
        diameter_mm: diameter of the sphere of the same volume.
        major_axis_mm: length of the principal axis of the ellipsoid with the same second moments.
        mean_hu: mean intensity of the image inside (None when no image was given).
        centroid_vox: (i, j, k) centroid in voxel indices.
    """

    voxels: int
    volume_ml: float
    diameter_mm: float
    major_axis_mm: float
    mean_hu: float | None
    centroid_vox: tuple[float, float, float]

    def to_json(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL: the product of the spacing (mm) / 1000."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def measure_regions(mask: np.ndarray, spacing: Sequence[float], image: np.ndarray | None = None,
                    min_voxels: int = 1) -> list[Region]:
    """Connected components of ``mask`` (26-connected), largest first.

    Args:
        mask: (X, Y, Z) boolean (or 0/1) mask.
        spacing: voxel size in mm along the three axes.
        image: (X, Y, Z) intensities (HU) for ``mean_hu``, or None.
        min_voxels: components with fewer voxels are dropped.

    Raises:
        ValueError: a mask that is not 3D, a spacing that is not 3 positive numbers, or an image of another shape.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers in mm, got {spacing}")
    if image is not None and np.shape(image) != mask.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from the mask's {mask.shape}")
    components = label_components(mask.astype(bool), connectivity=3)
    unit_ml = voxel_volume_ml(spacing)
    regions = []
    for props in regionprops(components, intensity_image=None if image is None else np.asarray(image, np.float32),
                             spacing=spacing):
        voxels = int(props.area / (unit_ml * 1000.0) + 0.5)  # props.area is in mm^3 when a spacing is given
        if voxels < min_voxels:
            continue
        regions.append(Region(
            voxels=voxels,
            volume_ml=voxels * unit_ml,
            diameter_mm=float(props.equivalent_diameter_area),
            major_axis_mm=float(props.axis_major_length) if voxels > 1 else float(min(spacing)),
            mean_hu=None if image is None else float(props.intensity_mean),
            centroid_vox=tuple(float(c) for c in props.coords.mean(axis=0)),  # voxel indices, not mm
        ))
    return sorted(regions, key=lambda r: -r.voxels)
