"""The measurement expert: on a segmentation, organ volume, mean HU and lesions (connected components,
scikit-image region properties) in the volume's real spacing.

    <CTMEASURE(liver)> -> labels = the segmentation expert's label map (its cache: no second inference)
        organ = labels in the organ's ids, holes filled (a lesion the network left out is inside the organ)
        background = the organ's own HU smoothed inside the organ (normalised convolution, Gaussian of
            ``background_sigma_voxels``), so slow density changes across the organ are not lesions
        lesions = components of |organ-only gaussian(HU, sigma) - background| > grow_fraction * hu_delta inside the organ
            eroded by ``erode_voxels`` (partial volume at the border is no lesion), each holding a voxel over
            hu_delta (hysteresis)
        -> measure_regions: count, largest diameter in mm, volumes in mL, mean HU
    -> "liver: volume 1510.2 mL, mean 57 HU; 2 lesions, largest 21.0 mm (4.9 mL, mean 12 HU)"

The lesion rule is a density threshold against the organ's own median, which finds the focal hypo- and
hyperdense lesions of the demo set (and cysts); it is no lesion-segmentation network, and the card says so.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medvl.data.volume import Volume
from medvl.experts.expert import Expert, ExpertResult
from medvl.experts.regions import measure_regions, voxel_volume_ml
from medvl.experts.segmentation_expert import EVERYTHING, SegmentationExpert

__all__ = ["LesionRule", "MeasurementExpert", "measure_organ"]

ALL = "all"


@dataclass(frozen=True)
class LesionRule:
    """How lesions are found inside an organ.

    Attributes:
        hu_delta: a voxel whose smoothed HU differs from the organ's background by more than this is a lesion voxel.
        sigma_voxels: Gaussian smoothing (voxels) before thresholding, against noise.
        background_sigma_voxels: Gaussian width of the organ's background density (wider than a lesion).
        grow_fraction: a lesion grows from its seeds over voxels above ``grow_fraction * hu_delta`` (hysteresis).
        erode_voxels: organ erosion before the search (border voxels mix with neighbouring tissue).
        min_voxels: smaller components are noise.
    """

    hu_delta: float = 20.0
    sigma_voxels: float = 1.0
    background_sigma_voxels: float = 3.0
    grow_fraction: float = 0.75
    erode_voxels: int = 2
    min_voxels: int = 4

    def __post_init__(self) -> None:
        if not self.hu_delta > 0 or self.sigma_voxels < 0 or not self.background_sigma_voxels > 0 or not 0 < self.grow_fraction <= 1 or self.erode_voxels < 0 or self.min_voxels < 1:
            raise ValueError(f"bad lesion rule {self}: hu_delta > 0, sigma_voxels >= 0, erode_voxels >= 0 and "
                             "min_voxels >= 1 are needed")


def _organ_smooth(hu: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that averages voxels of ``mask`` only (normalised convolution): near the organ's border
    the neighbouring tissue (lung at -800 HU above the liver's dome) does not pull the values."""
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    return ndimage.gaussian_filter(np.where(mask, hu, 0.0).astype(np.float32), sigma) / np.maximum(weight, 1e-6)


def measure_organ(hu: np.ndarray, organ: np.ndarray, spacing: tuple[float, float, float],
                  rule: LesionRule = LesionRule()) -> dict:
    """Volume, mean HU and lesions of one organ mask.

    Shapes:
        hu, organ: (X, Y, Z)

    Returns:
        {"volume_ml", "mean_hu", "lesion_count", "largest_lesion_mm", "lesions": [Region.to_json()]};
        volume_ml 0 and no lesions when the mask is empty.
    """
    organ = ndimage.binary_fill_holes(np.asarray(organ, bool))
    if not organ.any():
        return {"volume_ml": 0.0, "mean_hu": None, "lesion_count": 0, "largest_lesion_mm": None, "lesions": []}
    hu = np.asarray(hu, np.float32)
    inner = ndimage.binary_erosion(organ, iterations=rule.erode_voxels) if rule.erode_voxels else organ
    if not inner.any():
        inner = organ
    # the background from the inner voxels only: border voxels are mixed with the neighbouring tissue
    background = _organ_smooth(hu, inner, rule.background_sigma_voxels)
    smooth = _organ_smooth(hu, organ, rule.sigma_voxels) if rule.sigma_voxels else hu
    difference = np.abs(smooth - background)
    # hysteresis: a lesion is a component of (difference > grow_fraction * hu_delta) inside the organ, seeded by
    # a voxel over hu_delta in the inner organ (skimage's apply_hysteresis_threshold takes one mask for both)
    weak = inner & (difference > rule.grow_fraction * rule.hu_delta)
    strong = inner & (difference > rule.hu_delta)
    components, _ = ndimage.label(weak, structure=np.ones((3, 3, 3)))
    seeded = np.isin(components, np.unique(components[strong & weak]).tolist()) & (components > 0)
    lesions = measure_regions(seeded, spacing, image=hu, min_voxels=rule.min_voxels)
    return {
        "volume_ml": round(float(organ.sum()) * voxel_volume_ml(spacing), 1),
        "mean_hu": round(float(hu[organ].mean()), 1),
        "lesion_count": len(lesions),
        "largest_lesion_mm": round(lesions[0].diameter_mm, 1) if lesions else None,
        "lesions": [r.to_json() for r in lesions],
    }


def _organ_text(name: str, m: dict) -> str:
    if not m["volume_ml"]:
        return f"{name}: not found"
    text = f"{name}: volume {m['volume_ml']:.1f} mL, mean {m['mean_hu']:.0f} HU; "
    if not m["lesion_count"]:
        return text + "no lesion"
    big = m["lesions"][0]
    noun = "lesion" if m["lesion_count"] == 1 else "lesions"
    return text + (f"{m['lesion_count']} {noun}, largest {m['largest_lesion_mm']:.1f} mm "
                   f"({big['volume_ml']:.1f} mL, mean {big['mean_hu']:.0f} HU)")


class MeasurementExpert(Expert):
    """Organ volume, mean HU, lesion count and largest lesion diameter on the segmentation expert's label map.

    Args:
        segmentation: the segmentation expert whose label map is measured (its groups other than "everything" are
            the organs; "all" measures each).
        lesion_rules: {organ: {hu_delta, sigma_voxels, erode_voxels, min_voxels}}; organs not listed get
            ``default_rule``.
        default_rule: the lesion rule of the other organs.
        accuracy: the card's Accuracy (state what was measured, e.g. with ``python -m medvl.experts.evaluate``).
        name, modality, overview: model card fields.

    Raises:
        ValueError: a lesion rule for an organ the segmentation does not have, or a bad rule.
    """

    def __init__(self, segmentation: SegmentationExpert, *, lesion_rules: Mapping[str, Mapping] | None = None,
                 default_rule: Mapping | None = None, accuracy: str = "not measured", name: str = "CTMEASURE",
                 modality: str = "CT",
                 overview: str = "connected components and region properties (scikit-image) on the segmentation: "
                                 "organ volume in mL, mean HU, lesion count and largest lesion diameter in mm; "
                                 "lesions are found by density against the organ's median HU") -> None:
        if not isinstance(segmentation, SegmentationExpert):
            raise ValueError(f"segmentation must be a SegmentationExpert, got {type(segmentation).__name__}")
        self.segmentation = segmentation
        self.organs = {g: ids for g, ids in segmentation.groups.items() if g != EVERYTHING}
        unknown = sorted(set(lesion_rules or {}) - set(self.organs))
        if unknown:
            raise ValueError(f"lesion_rules name {unknown}, which the segmentation does not have; its organs: "
                             f"{sorted(self.organs)}")
        self.default_rule = LesionRule(**dict(default_rule or {}))
        self.rules = {o: LesionRule(**{**vars(self.default_rule), **dict((lesion_rules or {}).get(o, {}))})
                      for o in self.organs}
        super().__init__(name, modality=modality, task="measurement", overview=overview, accuracy=accuracy,
                         valid_arguments=[ALL, *self.organs], default_argument=ALL)

    def measure(self, volume: Volume, labels: np.ndarray, organs: list[str]) -> dict[str, dict]:
        """{organ: measure_organ(...)} on a label map of the volume's grid."""
        out = {}
        for organ in organs:
            mask = np.isin(labels, list(self.organs[organ].values()))
            out[organ] = measure_organ(volume.array, mask, volume.spacing, self.rules[organ])
        return out

    def run(self, volume: Volume, argument: str | None, output_dir: Path) -> ExpertResult:
        argument = argument or ALL
        organs = list(self.organs) if argument == ALL else [argument]
        labels = self.segmentation.segment(volume)
        measured = self.measure(volume, labels, organs)
        text = f"{self.name} on '{argument}': " + "; ".join(_organ_text(o, m) for o, m in measured.items())
        return ExpertResult(text=text, data={"organs": measured, "spacing_mm": [round(s, 3) for s in volume.spacing]})
