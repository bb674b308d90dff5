"""Procedural chest-abdomen CT phantoms: a body with fat, muscle, lungs, heart, aorta, liver, spleen,
kidneys, spine and ribs, in Hounsfield units, with an organ label map.

The anatomy is defined in a *reference frame* of 320 mm (a chest-abdomen field of view) and scaled to
the requested grid: `anatomy_scale = size * spacing_mm / 320`. With the default 64^3 voxels at 5 mm
the phantom has adult proportions; smaller grids hold a proportionally smaller body. Every length that
leaves this module (lesion sizes, spleen length, ...) is measured on the actual voxel grid in mm.

Voxel axes follow RAS (the affine is diagonal and positive): i runs to the patient's Right,
j to Anterior, k to Superior. Shape variation per case: random body size and pose, a smooth random
displacement field (elastic-ish warp of all organs together) and, per organ, random radii, offsets and
rotations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

REFERENCE_FOV_MM = 320.0

#: Fixed organ table of every demo label map (phantom and real-anatomy mode). 0 = outside the body
#: (phantom) or "not one of these structures" (real anatomy). Lungs are split into lobes (the phantom
#: has no right middle lobe; real TotalSegmentator masks do).
ORGAN_LABELS: dict[str, int] = {
    "soft_tissue": 1,
    "subcutaneous_fat": 2,
    "muscle": 3,
    "lung_upper_lobe_left": 4,
    "lung_lower_lobe_left": 5,
    "lung_upper_lobe_right": 6,
    "lung_middle_lobe_right": 7,
    "lung_lower_lobe_right": 8,
    "trachea": 9,
    "heart": 10,
    "aorta": 11,
    "liver": 12,
    "spleen": 13,
    "kidney_left": 14,
    "kidney_right": 15,
    "spine": 16,
    "ribs": 17,
}

#: Lung lobe label name -> (side, lobe).
LUNG_LOBES: dict[str, tuple[str, str]] = {
    "lung_upper_lobe_left": ("left", "upper"),
    "lung_lower_lobe_left": ("left", "lower"),
    "lung_upper_lobe_right": ("right", "upper"),
    "lung_middle_lobe_right": ("right", "middle"),
    "lung_lower_lobe_right": ("right", "lower"),
}

CONTRAST_PHASES = ("non-contrast", "arterial")


@dataclass
class Phantom:
    """One generated case before findings and acquisition noise.

    Attributes:
        hu: float32 (X, Y, Z) noise-free Hounsfield units (partial-volume blurred).
        organs: int16 (X, Y, Z) label map with ids from `ORGAN_LABELS`.
        affine: (4, 4) float64 voxel -> RAS mm, diagonal `spacing_mm`, volume centred on the origin.
        spacing_mm: voxel size (isotropic).
        anatomy_scale: world mm per reference mm (see the module docstring).
        contrast_phase: "non-contrast" or "arterial".
        noise_hu: standard deviation of the acquisition noise the builder adds after inserting findings.
    """

    hu: np.ndarray
    organs: np.ndarray
    affine: np.ndarray
    spacing_mm: float
    anatomy_scale: float
    contrast_phase: str
    noise_hu: float


def phantom_affine(size: int, spacing_mm: float) -> np.ndarray:
    """RAS affine of a `size`^3 grid of `spacing_mm` voxels centred on world (0, 0, 0)."""
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = -(size - 1) / 2.0 * spacing_mm
    return affine


def _linear_upsampling_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells) matrix that linearly interpolates `cells` samples (cell centres) onto `size` voxels."""
    position = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0.0, cells - 1.0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells - 1)
    frac = position - low
    matrix = np.zeros((size, cells), dtype=np.float32)
    matrix[np.arange(size), low] += 1.0 - frac
    matrix[np.arange(size), high] += frac
    return matrix


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, std: float) -> np.ndarray:
    """A smooth random field: i.i.d. N(0, std) values on a `cells`^3 grid, trilinearly upsampled to `size`^3.

    Trilinear upsampling is separable: three small matrix products (~100x faster than ndimage.zoom).
    """
    coarse = rng.normal(0.0, std, size=(cells, cells, cells)).astype(np.float32)
    up = _linear_upsampling_matrix(cells, size)
    field = coarse @ up.T  # (c, c, c) -> (c, c, n): interpolate the last axis
    field = np.matmul(up, field)  # (c, c, n) -> (c, n, n): (n, c) @ each (c, n) slice
    return (up @ field.reshape(cells, -1)).reshape(size, size, size)  # (c, n*n) -> (n, n, n)


def _rotation(rng: np.random.Generator, std_deg: float, base_deg: tuple[float, float, float] = (0, 0, 0)) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx with angles base + N(0, std) degrees."""
    ax, ay, az = np.deg2rad(np.asarray(base_deg, dtype=np.float64) + rng.normal(0.0, std_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Frame:
    """Canonical body coordinates (u, v, w) in reference mm of every voxel, after warp and body pose.

    Shapes are only evaluated inside an index bounding box: the range of u over each i-slab (and v per
    j-slab, w per k-slab) is precomputed, so a shape of radius R about c only touches the slabs whose
    coordinate range meets [c - R, c + R]. This keeps a 64^3 phantom at ~0.1 s.
    """

    def __init__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray):
        self.u, self.v, self.w = u, v, w
        self._ranges = [
            (coord.min(axis=others), coord.max(axis=others))
            for coord, others in ((u, (1, 2)), (v, (0, 2)), (w, (0, 1)))
        ]

    def _box(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice]:
        """Index slices of the slabs whose coordinates can fall inside [low, high] on every axis."""
        box = []
        for axis, (lo_axis, hi_axis) in enumerate(self._ranges):
            hit = np.flatnonzero((hi_axis >= low[axis]) & (lo_axis <= high[axis]))
            box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0))
        return tuple(box)

    def ellipsoid(self, center, radii, rotation: np.ndarray) -> np.ndarray:
        """Voxels inside the ellipsoid sum_a ((R^T (p - c))_a / r_a)^2 <= 1."""
        center = np.asarray(center, dtype=np.float64)
        reach = float(np.max(radii))
        box = self._box(center - reach, center + reach)
        out = np.zeros(self.u.shape, dtype=bool)
        # Python floats keep the float32 arrays float32 (numpy scalars would promote to float64).
        du, dv, dw = (self.u[box] - float(center[0]), self.v[box] - float(center[1]), self.w[box] - float(center[2]))
        inside = np.zeros(du.shape, dtype=np.float32)
        for axis in range(3):  # coordinates along the ellipsoid's own (rotated) axes
            r0, r1, r2 = (float(rotation[row, axis]) for row in range(3))
            local = r0 * du + r1 * dv + r2 * dw
            local /= float(radii[axis])
            inside += local * local
        out[box] = inside <= 1.0
        return out

    def tube(self, points: np.ndarray, radius: float) -> np.ndarray:
        """Voxels within `radius` of the polyline through `points` (P, 3) (min distance over segments)."""
        out = np.zeros(self.u.shape, dtype=bool)
        box = self._box(points.min(axis=0) - radius, points.max(axis=0) + radius)
        u, v, w = self.u[box], self.v[box], self.w[box]
        best = np.full(u.shape, np.inf, dtype=np.float32)
        for a, b in zip(points[:-1], points[1:]):
            ab = [float(value) for value in b - a]
            ab_norm2 = ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2
            pu, pv, pw = u - float(a[0]), v - float(a[1]), w - float(a[2])
            t = np.clip((pu * ab[0] + pv * ab[1] + pw * ab[2]) / ab_norm2, 0.0, 1.0)
            dist2 = (pu - t * ab[0]) ** 2 + (pv - t * ab[1]) ** 2 + (pw - t * ab[2]) ** 2
            np.minimum(best, dist2, out=best)
        out[box] = best <= radius**2
        return out


def _organ_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """Per-case mean HU per tissue for the contrast phase (non-contrast values follow standard CT tables)."""
    arterial = phase == "arterial"
    return {
        "fat": rng.uniform(-110, -85),
        "muscle": rng.uniform(40, 55),
        "lung": rng.uniform(-870, -830),
        "liver": rng.uniform(58, 66) if arterial else rng.uniform(50, 62),
        "spleen": rng.uniform(85, 110) if arterial else rng.uniform(42, 50),
        "kidney": rng.uniform(130, 170) if arterial else rng.uniform(28, 36),
        "blood": rng.uniform(220, 320) if arterial else rng.uniform(35, 48),
        "cancellous": rng.uniform(380, 480),
        "cortical": rng.uniform(800, 1000),
        "rib": rng.uniform(450, 650),
        "disc": rng.uniform(70, 100),
        "csf": rng.uniform(5, 20),
        "air": rng.uniform(-1000, -980),
    }


class _ScaledVariation:
    """A random generator whose draws are pulled towards their mean by `variation` (0 = always the mean).

    normal(loc, scale) -> N(loc, (variation * scale)^2); uniform(low, high) -> mid + variation * (U(low, high) - mid);
    other methods (random, integers, choice, permutation) pass through unchanged. One wrapper instead of a
    scale argument on every anatomical draw keeps the phantom's reference distributions readable.
    """

    def __init__(self, rng: np.random.Generator, variation: float) -> None:
        self._rng = rng
        self._variation = float(variation)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._rng.normal(loc, np.multiply(scale, self._variation), size=size)

    def uniform(self, low=0.0, high=1.0, size=None):
        mid = (np.asarray(low) + np.asarray(high)) / 2.0
        return mid + self._variation * (self._rng.uniform(low, high, size=size) - mid)

    def __getattr__(self, name):
        return getattr(self._rng, name)


def generate_phantom(
    size: int,
    spacing_mm: float,
    rng: np.random.Generator,
    *,
    splenomegaly: bool = False,
    arterial_probability: float = 0.4,
    anatomy_variation: float = 1.0,
) -> Phantom:
    """Generate one random phantom (anatomy only; findings are inserted by `findings.insert_findings`).

    Args:
        size: voxels per axis (the volume is `size`^3).
        spacing_mm: isotropic voxel size in mm.
        rng: the case's random generator (same generator state -> identical phantom).
        splenomegaly: scale the spleen up 1.6-1.9x craniocaudally (1.35-1.6x in-plane).
        arterial_probability: chance of an arterial contrast phase (enhanced aorta, heart, kidneys, spleen).
        anatomy_variation: scales every per-case anatomical deviation from the reference phantom (pose, body
            size, warp, organ sizes / offsets / rotations, organ HU, noise level) in [0, 1]: 1 = the full
            variation, 0 = one fixed anatomy (cases then differ only by contrast phase, findings and noise).

    Shapes:
        returned `hu` and `organs` are (X, Y, Z) = (size, size, size).

    Raises:
        ValueError: `size` < 16, `spacing_mm` <= 0 or `anatomy_variation` outside [0, 1].
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 voxels per axis to hold the phantom's organs, got {size}")
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
    if not 0.0 <= anatomy_variation <= 1.0:
        raise ValueError(f"anatomy_variation must be in [0, 1], got {anatomy_variation}")
    rng = _ScaledVariation(rng, anatomy_variation)
    n = size
    step = REFERENCE_FOV_MM / n
    phase = CONTRAST_PHASES[int(rng.random() < arterial_probability)]
    hu_of = _organ_hu(rng, phase)

    grid = (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * step  # reference mm of voxel centres
    x, y, z = np.meshgrid(grid, grid, grid, indexing="ij")
    # Elastic-ish warp: one smooth displacement field (reference mm) moves all organs together.
    x = x + _smooth_noise(rng, n, cells=4, std=6.0)
    y = y + _smooth_noise(rng, n, cells=4, std=6.0)
    z = z + _smooth_noise(rng, n, cells=4, std=6.0)

    # Body pose and size: axial ellipse with semi-axes (ax, ay), rotated by a few degrees about z.
    # (Python floats throughout keep every coordinate array float32.)
    cx, cy, cz = float(rng.normal(0.0, 4.0)), float(rng.normal(-3.0, 4.0)), float(rng.normal(0.0, 8.0))
    ax, ay = float(rng.uniform(128, 150)), float(rng.uniform(92, 115))
    theta = float(np.deg2rad(rng.normal(0.0, 3.0)))
    xr = np.cos(theta) * (x - cx) + np.sin(theta) * (y - cy)
    yr = -np.sin(theta) * (x - cx) + np.cos(theta) * (y - cy)
    del x, y
    fat_mm, muscle_mm = float(rng.uniform(6, 22)), float(rng.uniform(6, 14))

    def axial_ellipse(shrink_mm: float) -> np.ndarray:
        return (xr / (ax - shrink_mm)) ** 2 + (yr / (ay - shrink_mm)) ** 2 <= 1.0

    body = axial_ellipse(0.0)
    inside_fat = axial_ellipse(fat_mm)
    cavity = axial_ellipse(fat_mm + muscle_mm)
    inside_ribs = axial_ellipse(fat_mm + muscle_mm + 9.0)
    # Organs live in canonical body coordinates (a 140 x 105 mm half-axis body), so they follow its size.
    frame = _Frame(xr * (140.0 / ax), yr * (105.0 / ay), z - cz)
    u, v, w = frame.u, frame.v, frame.w

    def jitter(center, radii, offset_std=4.0, scale=(0.9, 1.1)):
        c = np.asarray(center, dtype=np.float64) + rng.normal(0.0, offset_std, size=3)
        r = np.asarray(radii, dtype=np.float64) * rng.uniform(scale[0], scale[1], size=3)
        return c, r

    hu = np.full((n, n, n), -1000.0, dtype=np.float32)
    organs = np.zeros((n, n, n), dtype=np.int16)

    def paint(mask: np.ndarray, label: str, value) -> None:
        organs[mask] = ORGAN_LABELS[label]
        hu[mask] = value[mask] if isinstance(value, np.ndarray) else value

    # Abdominal / mediastinal soft tissue: patches of fat (-95 HU) within ~35 HU tissue.
    fat_fraction = 1.0 / (1.0 + np.exp(-3.0 * (_smooth_noise(rng, n, cells=8, std=1.0) - 0.7)))
    soft = (35.0 * (1.0 - fat_fraction) + hu_of["fat"] * fat_fraction).astype(np.float32)
    paint(body, "soft_tissue", soft)
    paint(body & ~inside_fat, "subcutaneous_fat", hu_of["fat"])
    paint(inside_fat & ~cavity, "muscle", hu_of["muscle"])
    paraspinal = np.zeros_like(body)
    for side in (-1.0, 1.0):
        c, r = jitter((side * 30.0, -80.0, 0.0), (22.0, 16.0, 1e6), offset_std=2.0)
        paraspinal |= frame.ellipsoid(c, r, np.eye(3))
    paint(paraspinal & body, "muscle", hu_of["muscle"])

    # Ribs: oblique bands in the chest wall just inside the muscle, open anteriorly at the sternum.
    rib_band = cavity & ~inside_ribs & (w > -55.0) & (w < 150.0) & ~((np.abs(u) < 25.0) & (v > 0.0))
    rib_period, rib_phase = rng.uniform(22, 27), rng.uniform(0, 25)
    ribs = rib_band & (np.mod(w + 0.4 * v + rib_phase, rib_period) < 9.0)
    paint(ribs, "ribs", hu_of["rib"])

    # Diaphragm domes and mediastinum carve the lungs.
    liver_c, liver_r = jitter((55.0, 10.0, -20.0), (70.0, 72.0, 68.0))
    liver_rot = _rotation(rng, 6.0)
    liver_left_c, liver_left_r = jitter((-5.0, 35.0, -25.0), (50.0, 32.0, 28.0))
    liver = (frame.ellipsoid(liver_c, liver_r, liver_rot) | frame.ellipsoid(liver_left_c, liver_left_r, liver_rot))
    liver &= cavity
    left_dome = frame.ellipsoid(*jitter((-55.0, -5.0, -25.0), (62.0, 75.0, 58.0)), _rotation(rng, 5.0))
    heart = frame.ellipsoid(*jitter((-18.0, 30.0, 40.0), (58.0, 45.0, 45.0)), _rotation(rng, 6.0, (0, 15, -25)))
    heart &= cavity
    mediastinum = frame.ellipsoid(*jitter((0.0, 5.0, 90.0), (26.0, 60.0, 110.0), offset_std=2.0), np.eye(3))

    lungs = inside_ribs & ~paraspinal & ~mediastinum & ~heart & ~liver & ~left_dome & (w < 158.0)
    for side, center_u in (("right", 62.0), ("left", -62.0)):
        c, r = jitter((center_u, -5.0, 62.0), (55.0, 72.0, 100.0))
        lung = lungs & frame.ellipsoid(c, r, _rotation(rng, 4.0)) & (np.sign(u) == np.sign(center_u))
        lung_hu = (hu_of["lung"] + 40.0 * np.clip(-(v - c[1]) / r[1], -1, 1)).astype(np.float32)  # dependent density
        # Oblique fissure: the lower lobe lies postero-inferior to a plane rising towards the back.
        fissure_z = c[2] + 15.0 + rng.normal(0.0, 6.0) - rng.uniform(0.6, 1.0) * (v - c[1])
        lower = lung & (w < fissure_z)
        paint(lung & ~lower, f"lung_upper_lobe_{side}", lung_hu)
        paint(lower, f"lung_lower_lobe_{side}", lung_hu)

    paint(liver, "liver", hu_of["liver"])
    paint(heart, "heart", hu_of["blood"])

    spleen_c, spleen_r = jitter((-75.0, -30.0, -10.0), (30.0, 42.0, 46.0), scale=(0.92, 1.08))
    if splenomegaly:
        growth_z, growth_xy = rng.uniform(1.6, 1.9), rng.uniform(1.35, 1.6)
        spleen_r = spleen_r * np.array([growth_xy, growth_xy, growth_z])
        spleen_c = spleen_c + np.array([8.0, 10.0, -(growth_z - 1.0) * 40.0])  # grows down and forwards
    spleen = frame.ellipsoid(spleen_c, spleen_r, _rotation(rng, 6.0, (0, 0, 30))) & cavity & ~lungs
    paint(spleen & (organs != ORGAN_LABELS["heart"]), "spleen", hu_of["spleen"])

    for side, sign, z0 in (("right", 1.0, -82.0), ("left", -1.0, -72.0)):
        c, r = jitter((sign * 58.0, -35.0, z0), (25.0, 22.0, 48.0))
        kidney = frame.ellipsoid(c, r, _rotation(rng, 5.0, (0, -sign * 15.0, sign * 20.0))) & cavity
        paint(kidney, f"kidney_{side}", hu_of["kidney"])

    # Aorta: ascending from the heart, arch, descending left-anterior of the spine (reference mm points).
    aorta_points = np.array(
        [[8, 25, 50], [10, 20, 95], [-5, -10, 118], [-22, -30, 95], [-22, -18, 20], [-15, -18, -70], [-8, -15, -170]],
        dtype=np.float64,
    )
    aorta_points += rng.normal(0.0, 3.0, size=aorta_points.shape)
    aorta = frame.tube(aorta_points, radius=rng.uniform(11.0, 14.0)) & body
    paint(aorta, "aorta", hu_of["blood"])

    trachea = frame.tube(np.array([[0, 8, 175], [0, 5, 95]], dtype=np.float64), radius=9.0)
    for sign in (-1.0, 1.0):
        trachea |= frame.tube(np.array([[0, 5, 95], [sign * 38, 0, 72]], dtype=np.float64), radius=6.0)
    paint(trachea & cavity, "trachea", hu_of["air"])

    # Spine: vertebral bodies (cancellous core, cortical rim) separated by discs, posterior arch, canal.
    body_r, period, disc = rng.uniform(16, 20), rng.uniform(28, 34), rng.uniform(6, 8)
    spine_v = -45.0 + rng.normal(0.0, 2.0)
    in_vertebra = np.mod(w + rng.uniform(0, period), period) > disc
    radial = np.sqrt(u**2 + (v - spine_v) ** 2)
    canal_radial = np.sqrt(u**2 + (v - (spine_v - body_r - 8.0)) ** 2)
    column = radial <= body_r
    arch = (canal_radial <= 15.0) & (canal_radial > 8.0) & (v < spine_v)
    spinous = (np.abs(u) < 4.0) & (v < spine_v - body_r - 20.0) & (v > spine_v - body_r - 42.0)
    bone = (column | arch | spinous) & in_vertebra & body
    bone_hu = np.where(radial > body_r - 3.0, hu_of["cortical"], hu_of["cancellous"]).astype(np.float32)
    bone_hu[arch | spinous] = hu_of["cortical"] * 0.8
    paint(column & ~in_vertebra & body, "soft_tissue", hu_of["disc"])
    paint((canal_radial <= 8.0) & body, "soft_tissue", hu_of["csf"])
    paint(bone, "spine", bone_hu)

    # Partial volume (scanner point-spread) and a smooth +-~5 HU inhomogeneity.
    hu = ndimage.gaussian_filter(hu, sigma=0.6, mode="nearest")
    hu += _smooth_noise(rng, n, cells=5, std=3.0)
    return Phantom(
        hu=hu.astype(np.float32),
        organs=organs,
        affine=phantom_affine(size, spacing_mm),
        spacing_mm=float(spacing_mm),
        anatomy_scale=size * spacing_mm / REFERENCE_FOV_MM,
        contrast_phase=phase,
        noise_hu=float(rng.uniform(10.0, 20.0)),
    )
