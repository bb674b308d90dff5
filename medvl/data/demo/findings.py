"""Finding catalogue of the demo set and insertion of findings into organs (phantom or real CT).

Every inserted finding is recorded as a `Finding` with its ground truth measured on the voxel grid
after insertion (diameters in mm, effusion thickness, spleen length), so report sentences state what
is really in the volume. A planned finding that does not fit (organ absent or too small for the
smallest visible lesion) is skipped and its label stays 0.

Catalogue (label keys of the manifest, in this order):
    "liver lesion"                  1-3 hypodense (-35..-55 HU vs liver) or hyperdense (+45..+70 HU)
                                    spheres inside the liver; size = the largest diameter.
    "kidney cyst"                   a water-density (0..15 HU) sphere inside one kidney.
    "lung nodule"                   a solid (20..60 HU) sphere inside one lung lobe (1-2 per case, each its
                                    own finding and sentence).
    "pleural effusion"              dependent fluid (5..20 HU) along the posterior wall of the lung base,
                                    thickest at the bottom; right, left or bilateral; size = thickest part.
    "splenomegaly"                  an enlarged spleen (phantom only: made large when generated); size =
                                    craniocaudal length.
    "arterial wall calcification"   3-8 calcified plaques (700..1100 HU) on the aortic wall.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medvl.data.demo.phantom import LUNG_LOBES

FINDING_NAMES: tuple[str, ...] = (
    "liver lesion",
    "kidney cyst",
    "lung nodule",
    "pleural effusion",
    "splenomegaly",
    "arterial wall calcification",
)

#: Chance of each finding in an abnormal case (findings are drawn independently, at least one kept).
FINDING_PREVALENCE: dict[str, float] = {
    "liver lesion": 0.35,
    "kidney cyst": 0.35,
    "lung nodule": 0.40,
    "pleural effusion": 0.25,
    "splenomegaly": 0.20,
    "arterial wall calcification": 0.35,
}

# Insertion order: fluid and organ enlargement first, so that later lesions avoid voxels already used.
_INSERTION_ORDER = ("splenomegaly", "pleural effusion", "arterial wall calcification", "liver lesion",
                    "kidney cyst", "lung nodule")

# Organs whose noise a solid lesion outside them (nodule, fluid) borrows in real CT.
_SOFT_TISSUE_ORGANS = ("liver", "spleen", "muscle")

#: Smallest inserted diameter, in voxels of the coarsest axis: smaller spheres are not visible.
MIN_DIAMETER_VOXELS = 2.4


@dataclass
class Finding:
    """Ground truth of one inserted finding (one report sentence).

    Attributes:
        name: the label key (one of `FINDING_NAMES`).
        organ: the organ-mask label name at `center_vox` (e.g. "liver", "lung_lower_lobe_right").
        side: "left", "right", "bilateral" or None.
        lobe: "upper", "middle", "lower" (lung nodules) or None.
        size_mm: diameter of the (largest) lesion, effusion thickness or spleen length, measured in mm.
        center_vox: [i, j, k] voxel inside `organ` (the largest lesion's centre).
        mask_id: value of this finding's voxels in the case's finding mask.
        attributes: finding-specific extras (count, density, hu, instances, ...), JSON-serialisable.
        sentence: the findings-section sentence that states it (set by the report writer).
        impression: the impression line that summarises it (set by the report writer).
    """

    name: str
    organ: str
    side: str | None
    lobe: str | None
    size_mm: float
    center_vox: list[int]
    mask_id: int
    attributes: dict = field(default_factory=dict)
    sentence: str = ""
    impression: str = ""

    def to_json(self) -> dict:
        """The manifest's `findings` entry: the fields above with `attributes` merged in."""
        return {
            "name": self.name,
            "organ": self.organ,
            "side": self.side,
            "lobe": self.lobe,
            "size_mm": self.size_mm,
            "center_vox": [int(c) for c in self.center_vox],
            "sentence": self.sentence,
            "impression": self.impression,
            "mask_id": self.mask_id,
            **self.attributes,
        }


@dataclass
class InsertionContext:
    """The arrays findings are painted into (modified in place) and how to paint.

    Attributes:
        hu: float32 (X, Y, Z) Hounsfield units.
        organs: int (X, Y, Z) organ label map.
        organ_labels: organ name -> label id of `organs`.
        spacing_mm: voxel size per axis (X, Y, Z) in mm.
        finding_mask: uint8 (X, Y, Z); inserted voxels get the finding's `mask_id`.
        anatomy_scale: multiplies the reference lesion sizes (phantom grids smaller than 320 mm).
        lesion_scale: multiplies the diameters of the focal findings (liver lesions, kidney cysts, lung
            nodules, calcified plaques) on top of `anatomy_scale`; > 1 makes them visible on coarse grids.
        lesion_noise_hu: noise added to painted voxels; None = the host organ's own noise (robust std,
            for real CT); 0 = none (the phantom builder adds acquisition noise afterwards).
    """

    hu: np.ndarray
    organs: np.ndarray
    organ_labels: dict[str, int]
    spacing_mm: tuple[float, float, float]
    finding_mask: np.ndarray
    anatomy_scale: float = 1.0
    lesion_noise_hu: float | None = 0.0
    lesion_scale: float = 1.0

    def organ_mask(self, *names: str) -> np.ndarray:
        """Voxels of any of the named organs that no earlier finding has claimed."""
        ids = [self.organ_labels[n] for n in names if n in self.organ_labels]
        return np.isin(self.organs, ids) & (self.finding_mask == 0)

    @property
    def min_diameter_mm(self) -> float:
        return MIN_DIAMETER_VOXELS * max(self.spacing_mm)

    def draw_diameter(self, rng: np.random.Generator, low_mm: float, high_mm: float) -> float:
        """A diameter U(low, high) reference mm scaled to the grid and by `lesion_scale`, at least
        `min_diameter_mm`."""
        diameter = float(rng.uniform(low_mm, high_mm)) * self.anatomy_scale * self.lesion_scale
        return max(diameter, self.min_diameter_mm)

    def noise_for(self, *host_organs: str) -> float:
        """Noise level for painted voxels (see `lesion_noise_hu`): for real CT the robust standard deviation
        1.4826 * MAD of the named organs' voxels (10 HU when none of them is present)."""
        if self.lesion_noise_hu is not None:
            return float(self.lesion_noise_hu)
        values = self.hu[self.organ_mask(*host_organs)]
        if values.size == 0:
            return 10.0
        return float(1.4826 * np.median(np.abs(values - np.median(values))))

    def label_name_at(self, center: list[int]) -> str:
        label = int(self.organs[tuple(center)])
        return next((name for name, value in self.organ_labels.items() if value == label), "unlabelled")


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Index slices of the smallest box holding `mask`, grown by `margin` voxels (clipped to the array)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _place_sphere(
    ctx: InsertionContext, host: np.ndarray, diameter_mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, float] | None:
    """Pick a random centre where a sphere of `diameter_mm` lies fully inside `host`.

    When no voxel has room, the sphere shrinks to 90% of the largest room available; None when even the
    smallest visible sphere (`ctx.min_diameter_mm`) does not fit. Returns (centre voxel (3,), radius mm).
    """
    if not host.any():
        return None
    box = _bounding_box(host, margin=1)
    # Pad with background so the edge of the field of view counts as outside the organ.
    room = ndimage.distance_transform_edt(np.pad(host[box], 1), sampling=ctx.spacing_mm)[1:-1, 1:-1, 1:-1]
    radius = diameter_mm / 2.0
    if room.max() <= radius:
        radius = 0.9 * float(room.max())
        if 2.0 * radius < ctx.min_diameter_mm:
            return None
    candidates = np.argwhere(room > radius)
    offset = np.array([s.start for s in box])
    return candidates[rng.integers(len(candidates))] + offset, radius


def _paint_sphere(
    ctx: InsertionContext,
    center: np.ndarray,
    radius_mm: float,
    value_hu: float,
    host: np.ndarray,
    mask_id: int,
    noise_hu: float,
    rng: np.random.Generator,
) -> None:
    """Blend `value_hu` into `ctx.hu` inside a sphere, anti-aliased over one voxel (partial volume).

    Weight w = clip(0.5 + (r - d) / min(spacing), 0, 1) inside `host`, hu <- (1 - w) hu + w (value + noise);
    voxels with d <= r get `mask_id` in the finding mask.
    """
    spacing = np.asarray(ctx.spacing_mm)
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    low = np.maximum(center - half, 0)
    high = np.minimum(center + half + 1, ctx.hu.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grids = np.ogrid[box]
    dist = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing)))
    inside_host = host[box]
    weight = np.clip(0.5 + (radius_mm - dist) / spacing.min(), 0.0, 1.0) * inside_host
    value = value_hu + (rng.normal(0.0, noise_hu, size=weight.shape) if noise_hu > 0 else 0.0)
    ctx.hu[box] = (1.0 - weight) * ctx.hu[box] + weight * value
    ctx.finding_mask[box][(dist <= radius_mm) & inside_host] = mask_id


def insert_liver_lesions(ctx: InsertionContext, rng: np.random.Generator, mask_id: int) -> Finding | None:
    """1-3 hypo- or hyperdense spherical lesions inside the liver, not overlapping (one finding)."""
    liver = ctx.organ_mask("liver")
    if not liver.any():
        return None
    count = int(rng.choice([1, 1, 1, 2, 3]))
    density = "hypodense" if rng.random() < 0.7 else "hyperdense"
    offset = -rng.uniform(35, 55) if density == "hypodense" else rng.uniform(45, 70)
    lesion_hu = float(np.median(ctx.hu[liver]) + offset)
    noise = ctx.noise_for("liver")
    instances = []
    for _ in range(count):
        placed = _place_sphere(ctx, liver, ctx.draw_diameter(rng, 12, 35), rng)
        if placed is None:
            break
        center, radius = placed
        _paint_sphere(ctx, center, radius, lesion_hu, liver, mask_id, noise, rng)
        instances.append({"center_vox": [int(c) for c in center], "size_mm": round(2 * radius, 1)})
        liver = ctx.organ_mask("liver")  # the next lesion avoids this one
        liver &= ~ndimage.binary_dilation(ctx.finding_mask == mask_id, iterations=1)
    if not instances:
        return None
    largest = max(instances, key=lambda inst: inst["size_mm"])
    return Finding("liver lesion", "liver", None, None, largest["size_mm"], largest["center_vox"], mask_id,
                   {"count": len(instances), "density": density, "hu": round(lesion_hu, 1), "instances": instances})


def insert_kidney_cyst(ctx: InsertionContext, rng: np.random.Generator, mask_id: int) -> Finding | None:
    """A water-density spherical cyst inside one kidney (random side among those with room)."""
    for side in rng.permutation(["left", "right"]):
        kidney = ctx.organ_mask(f"kidney_{side}")
        placed = _place_sphere(ctx, kidney, ctx.draw_diameter(rng, 12, 30), rng)
        if placed is None:
            continue
        center, radius = placed
        cyst_hu = float(rng.uniform(0, 15))
        _paint_sphere(ctx, center, radius, cyst_hu, kidney, mask_id, ctx.noise_for(f"kidney_{side}"), rng)
        return Finding("kidney cyst", f"kidney_{side}", str(side), None, round(2 * radius, 1),
                       [int(c) for c in center], mask_id, {"hu": round(cyst_hu, 1)})
    return None


def insert_lung_nodule(
    ctx: InsertionContext, rng: np.random.Generator, mask_id: int, exclude_lobes: tuple[str, ...] = ()
) -> Finding | None:
    """A solid spherical nodule inside one lung lobe (random lobe with room, not in `exclude_lobes`)."""
    lobes = [name for name in LUNG_LOBES if name in ctx.organ_labels and name not in exclude_lobes]
    for lobe_name in rng.permutation(lobes):
        lobe_mask = ctx.organ_mask(str(lobe_name))
        placed = _place_sphere(ctx, lobe_mask, ctx.draw_diameter(rng, 8, 24), rng)
        if placed is None:
            continue
        center, radius = placed
        nodule_hu = float(rng.uniform(20, 60))
        # Lung noise is that of air-tissue mixtures; a solid nodule gets soft-tissue noise instead.
        noise = ctx.noise_for(*_SOFT_TISSUE_ORGANS)
        _paint_sphere(ctx, center, radius, nodule_hu, lobe_mask, mask_id, noise, rng)
        side, lobe = LUNG_LOBES[str(lobe_name)]
        return Finding("lung nodule", str(lobe_name), side, lobe, round(2 * radius, 1),
                       [int(c) for c in center], mask_id, {"hu": round(nodule_hu, 1)})
    return None


def _effusion_region(ctx: InsertionContext, lung: np.ndarray, thickness_mm: float, height_mm: float) -> np.ndarray:
    """Dependent fluid: lung voxels within t(z) of the lung's posterior edge in their (i, k) column, with
    t(z) = thickness * (1 - (z - z_base) / height) tapering from the lung base upwards (a crescent).

    Shapes:
        lung: (X, Y, Z) bool; returns (X, Y, Z) bool.
    """
    sx, sy, sz = ctx.spacing_mm
    first_j = np.argmax(lung, axis=1)  # (X, Z): index of the most posterior lung voxel per column
    depth_mm = (np.arange(lung.shape[1])[None, :, None] - first_j[:, None, :]) * sy  # (X, Y, Z)
    base_k = int(np.flatnonzero(lung.any(axis=(0, 1)))[0])
    height = (np.arange(lung.shape[2]) - base_k) * sz  # (Z,)
    allowed = thickness_mm * np.clip(1.0 - height / height_mm, 0.0, 1.0)
    return lung & (depth_mm < allowed[None, None, :])


def insert_pleural_effusion(ctx: InsertionContext, rng: np.random.Generator, mask_id: int) -> Finding | None:
    """Right, left or bilateral dependent pleural fluid in the posterior lung base (one finding)."""
    lungs = {side: ctx.organ_mask(*[n for n, (s, _) in LUNG_LOBES.items() if s == side]) for side in ("right", "left")}
    min_voxels = 4
    sides = [side for side, mask in lungs.items() if mask.sum() >= 4 * min_voxels]
    if not sides:
        return None
    chosen = sides if len(sides) == 2 and rng.random() < 0.3 else [str(rng.choice(sides))]
    fluid_hu = float(rng.uniform(5, 20))
    instances = {}
    for side in chosen:
        thickness = max(float(rng.uniform(20, 45)) * ctx.anatomy_scale, ctx.min_diameter_mm)
        height = max(float(rng.uniform(60, 110)) * ctx.anatomy_scale, 2.0 * thickness)
        fluid = _effusion_region(ctx, lungs[side], thickness, height)
        if fluid.sum() < min_voxels:
            continue
        noise = ctx.noise_for(*_SOFT_TISSUE_ORGANS)
        ctx.hu[fluid] = fluid_hu + (rng.normal(0.0, noise, size=int(fluid.sum())) if noise > 0 else 0.0)
        ctx.finding_mask[fluid] = mask_id
        voxels = np.argwhere(fluid)
        center = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
        measured = float(fluid.sum(axis=1).max() * ctx.spacing_mm[1])  # thickest column, mm along A-P
        instances[side] = {"center_vox": [int(c) for c in center], "size_mm": round(measured, 1)}
    if not instances:
        return None
    main_side = max(instances, key=lambda s: instances[s]["size_mm"])
    side = "bilateral" if len(instances) == 2 else main_side
    center = instances[main_side]["center_vox"]
    return Finding("pleural effusion", ctx.label_name_at(center), side, None, instances[main_side]["size_mm"],
                   center, mask_id, {"hu": round(fluid_hu, 1), "instances": instances})


def insert_aortic_calcification(ctx: InsertionContext, rng: np.random.Generator, mask_id: int) -> Finding | None:
    """3-8 small calcified plaques (700..1100 HU) centred on voxels of the aortic wall (diameters times
    `ctx.lesion_scale`, painted only inside the aorta)."""
    aorta = ctx.organ_mask("aorta")
    if aorta.sum() < 8:
        return None
    wall = aorta & ~ndimage.binary_erosion(aorta)
    wall_voxels = np.argwhere(wall)
    count = min(int(rng.integers(3, 9)), len(wall_voxels))
    plaques = []
    for index in rng.choice(len(wall_voxels), size=count, replace=False):
        center = wall_voxels[index]
        diameter = max(float(rng.uniform(1.2, 2.0)) * max(ctx.spacing_mm), float(rng.uniform(3, 8)))
        diameter *= ctx.lesion_scale
        plaque_hu = float(rng.uniform(700, 1100))
        _paint_sphere(ctx, center, diameter / 2.0, plaque_hu, aorta, mask_id, 0.0, rng)
        plaques.append({"center_vox": [int(c) for c in center], "size_mm": round(diameter, 1),
                        "hu": round(plaque_hu, 1)})
    largest = max(plaques, key=lambda p: p["size_mm"])
    return Finding("arterial wall calcification", "aorta", None, None, largest["size_mm"], largest["center_vox"],
                   mask_id, {"count": len(plaques), "instances": plaques})


def describe_splenomegaly(ctx: InsertionContext, rng: np.random.Generator, mask_id: int) -> Finding | None:
    """Record an already enlarged spleen (the phantom generator enlarges it): its craniocaudal length."""
    spleen = ctx.organ_mask("spleen")
    if not spleen.any():
        return None
    slices = np.flatnonzero(spleen.any(axis=(0, 1)))
    length = float((slices[-1] - slices[0] + 1) * ctx.spacing_mm[2])
    voxels = np.argwhere(spleen)
    center = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    ctx.finding_mask[spleen] = mask_id
    return Finding("splenomegaly", "spleen", None, None, round(length, 1), [int(c) for c in center], mask_id,
                   {"volume_ml": round(float(spleen.sum() * np.prod(ctx.spacing_mm)) / 1000.0, 1)})


_INSERTERS = {
    "liver lesion": insert_liver_lesions,
    "kidney cyst": insert_kidney_cyst,
    "pleural effusion": insert_pleural_effusion,
    "splenomegaly": describe_splenomegaly,
    "arterial wall calcification": insert_aortic_calcification,
}


def sample_finding_plan(
    rng: np.random.Generator, available: tuple[str, ...] | list[str], normal_fraction: float = 0.3
) -> list[str]:
    """Which findings a case gets: [] with probability `normal_fraction`, else each available finding with
    its `FINDING_PREVALENCE` (at least one); "lung nodule" may appear twice (two nodules).

    Raises:
        ValueError: an unknown finding name or `normal_fraction` outside [0, 1].
    """
    unknown = sorted(set(available) - set(FINDING_NAMES))
    if unknown:
        raise ValueError(f"unknown finding names {unknown}; choose from {list(FINDING_NAMES)}")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError(f"normal_fraction must be in [0, 1], got {normal_fraction}")
    if not available or rng.random() < normal_fraction:
        return []
    ordered = [name for name in FINDING_NAMES if name in available]
    plan: list[str] = []
    while not plan:
        plan = [name for name in ordered if rng.random() < FINDING_PREVALENCE[name]]
    if "lung nodule" in plan and rng.random() < 0.25:
        plan.append("lung nodule")
    return plan


def insert_findings(ctx: InsertionContext, plan: list[str], rng: np.random.Generator) -> list[Finding]:
    """Insert the planned findings (see `sample_finding_plan`) in a fixed order; mask ids count from 1.

    Returns the findings that fit, in insertion order.
    """
    findings: list[Finding] = []
    for name in _INSERTION_ORDER:
        for _ in range(plan.count(name)):
            mask_id = len(findings) + 1
            if name == "lung nodule":
                used = tuple(f.organ for f in findings if f.name == "lung nodule")
                finding = insert_lung_nodule(ctx, rng, mask_id, exclude_lobes=used)
            else:
                finding = _INSERTERS[name](ctx, rng, mask_id)
            if finding is not None:
                findings.append(finding)
    return findings
