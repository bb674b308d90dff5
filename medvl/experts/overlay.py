"""The expert's overlay PNG: one axial CT slice with the segmented structures in colours, and a legend.

    volume (X, Y, Z) HU + label map + {label id: name}
        --reorient to RAS (nibabel)--> axial slice k with the most labelled voxels
        --soft-tissue window [-160, 240] HU--> grey; each structure blended in its colour (alpha 0.45)
        --radiological display (patient's right on the image's left, anterior up)--> PNG with a legend strip

The PNG holds voxels and structure names only: no text from the volume's source (no path, no identifiers).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["PALETTE", "write_overlay"]

#: (colour name, RGB) in the order structures get them; the result text names the colour of each structure.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 40, 40)), ("green", (40, 200, 60)), ("blue", (50, 90, 240)), ("yellow", (240, 220, 30)),
    ("cyan", (30, 220, 230)), ("magenta", (220, 40, 220)), ("orange", (250, 140, 20)), ("purple", (140, 60, 200)),
    ("pink", (250, 150, 190)), ("brown", (150, 90, 40)), ("lime", (170, 250, 60)), ("teal", (20, 140, 140)),
)
WINDOW_HU = (-160.0, 240.0)
_ALPHA = 0.45
_MIN_SIDE = 256
_LEGEND_ROW = 16


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array with its axes permuted / flipped so that i, j, k grow toward Right, Anterior, Superior."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt("RAS"))
    return nib.orientations.apply_orientation(array, transform)


def write_overlay(hu: np.ndarray, affine: np.ndarray, labels: np.ndarray, names: Mapping[int, str],
                  path: str | Path, slice_index: int | None = None) -> tuple[Path, dict[str, str], int]:
    """Write the overlay PNG.

    Args:
        hu: (X, Y, Z) CT in HU; affine: its (4, 4) voxel -> RAS mm.
        labels: (X, Y, Z) integer label map on the same grid.
        names: label id -> structure name of the structures to draw (others stay grey).
        path: the PNG to write.
        slice_index: the axial (superior-inferior, after RAS reorientation) slice; None = the slice with the most
            voxels of the drawn structures.

    Returns:
        (path, {structure name: colour name}, the axial slice drawn).

    Raises:
        ValueError: labels of another shape than the volume, or more structures than colours.
    """
    hu, labels = np.asarray(hu, np.float32), np.asarray(labels)
    if hu.shape != labels.shape or hu.ndim != 3:
        raise ValueError(f"the label map {labels.shape} must have the volume's 3D shape {hu.shape}")
    if len(names) > len(PALETTE):
        raise ValueError(f"{len(names)} structures to draw, more than the {len(PALETTE)} overlay colours")
    hu, labels = _to_ras(hu, affine), _to_ras(labels, affine)
    drawn = np.isin(labels, list(names))
    if slice_index is None:
        per_slice = drawn.sum(axis=(0, 1))  # (Z,) voxels of the structures per axial slice
        slice_index = int(per_slice.argmax()) if per_slice.any() else hu.shape[2] // 2
    # (X, Y) slice -> display rows = anterior..posterior, columns = patient right..left
    def display(a: np.ndarray) -> np.ndarray:
        return np.flipud(np.fliplr(a[:, :, slice_index].T))

    lo, hi = WINDOW_HU
    grey = np.clip((display(hu) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    shown = display(labels)
    colours: dict[str, str] = {}
    for (label, name), (colour_name, colour) in zip(names.items(), PALETTE):
        inside = shown == label
        rgb[inside] = (1.0 - _ALPHA) * rgb[inside] + _ALPHA * np.asarray(colour, np.float32)
        colours[str(name)] = colour_name
    image = Image.fromarray(rgb.round().astype(np.uint8), mode="RGB")
    scale = max(1, int(np.ceil(_MIN_SIDE / max(image.size))))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + _LEGEND_ROW * max(1, len(names)) + 4), (0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, ((name, colour_name), (_, colour)) in enumerate(zip(colours.items(), PALETTE)):
        top = image.height + 2 + row * _LEGEND_ROW
        draw.rectangle([4, top + 2, 14, top + 12], fill=colour)
        draw.text((20, top), f"{name} ({colour_name})", fill=(255, 255, 255))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path, colours, slice_index
