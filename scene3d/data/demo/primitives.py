"""Point-sampled shapes with colours: the geometry every demo object is made of.

A shape is a list of parts: axis-aligned boxes and vertical cylinders (the demo's rooms are axis-aligned, as
ScanNet scenes are after their axis alignment). `sample_parts` scatters a fixed number of points over the
parts' surfaces, area-weighted, so a sofa gets more points than a lamp and a part's points are spread evenly
over its faces, as on a scanned mesh. Surface points lie exactly on the faces (plus optional sensor noise), so
the axis-aligned box of a box part's points is the part itself: support ("the lamp stands on the table") shows
up in the points as "the lamp's lowest point is the table's highest".

Colours come from `NAMED_COLORS`, the words the referring expressions use; each part gets a shade of its
object's colour and each point a little noise, like a scanned texture.

Written here rather than taken from open3d: open3d samples triangle meshes, and building meshes of every
part only to sample them would add a dependency on its native library to data generation without gaining
anything for boxes and cylinders.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

# Named colours (RGB in [0, 1]); the names are the words descriptions use ("the red chair").
NAMED_COLORS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "red": (0.78, 0.16, 0.14),
    "orange": (0.93, 0.50, 0.12),
    "yellow": (0.93, 0.82, 0.20),
    "green": (0.20, 0.55, 0.25),
    "blue": (0.17, 0.32, 0.72),
    "brown": (0.45, 0.29, 0.16),
    "beige": (0.87, 0.80, 0.65),
    "white": (0.93, 0.93, 0.91),
    "grey": (0.52, 0.52, 0.54),
    "black": (0.10, 0.10, 0.11),
})


@dataclass(frozen=True)
class Box:
    """An axis-aligned box part, its surface sampled (all six faces unless `open_bottom`).

    Args:
        lo: lower corner (x, y, z) in metres.
        hi: upper corner; every edge must be >= 0 (a zero edge is a flat rectangle).
        shade: brightness factor applied to the object's colour for this part (1 = the colour itself).
        open_bottom: leave the bottom face out (it faces the floor or a support and is never scanned).

    Raises:
        ValueError: a corner that is not 3 finite numbers, hi < lo on some axis, or shade <= 0.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    shade: float = 1.0
    open_bottom: bool = False

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"Box corners must be 3 finite numbers each, got lo={self.lo}, hi={self.hi}")
        if np.any(hi < lo):
            raise ValueError(f"Box hi must be >= lo on every axis, got lo={self.lo}, hi={self.hi}")
        if not self.shade > 0:
            raise ValueError(f"shade must be > 0, got {self.shade}")
        object.__setattr__(self, "lo", tuple(float(v) for v in lo))
        object.__setattr__(self, "hi", tuple(float(v) for v in hi))

    def face_areas(self) -> np.ndarray:
        """Areas of the faces -x, +x, -y, +y, -z (0 when open_bottom), +z; shape (6,)."""
        dx, dy, dz = (h - l for l, h in zip(self.lo, self.hi))
        bottom = 0.0 if self.open_bottom else dx * dy
        return np.array([dy * dz, dy * dz, dx * dz, dx * dz, bottom, dx * dy])

    def area(self) -> float:
        """Sampled surface area in m^2."""
        return float(self.face_areas().sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` points uniform over the sampled faces; (n, 3) float64."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        areas = self.face_areas()
        if n == 0:
            return np.zeros((0, 3))
        if areas.sum() <= 0:  # a degenerate box (a segment or a point): its points lie on it
            return lo + rng.random((n, 1)) * (hi - lo)
        face = rng.choice(6, size=n, p=areas / areas.sum())
        points = lo + rng.random((n, 3)) * (hi - lo)  # uniform in the box, then pushed onto the chosen face
        axis, side = face // 2, face % 2  # faces are ordered (-x, +x, -y, +y, -z, +z)
        points[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
        return points


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder part (axis along z), lateral surface plus top and (unless open_bottom) bottom cap.

    Args:
        center: (x, y) of the axis.
        z0, z1: bottom and top height, z1 >= z0.
        radius: > 0.
        shade, open_bottom: as for `Box`.

    Raises:
        ValueError: non-finite values, z1 < z0, radius <= 0 or shade <= 0.
    """

    center: tuple[float, float]
    z0: float
    z1: float
    radius: float
    shade: float = 1.0
    open_bottom: bool = False

    def __post_init__(self) -> None:
        values = [*self.center, self.z0, self.z1, self.radius]
        if len(self.center) != 2 or not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"Cylinder needs a finite 2D center, z0, z1 and radius, got {values}")
        if self.z1 < self.z0 or self.radius <= 0 or not self.shade > 0:
            raise ValueError(f"Cylinder needs z1 >= z0, radius > 0, shade > 0; got z0={self.z0}, z1={self.z1}, "
                             f"radius={self.radius}, shade={self.shade}")
        object.__setattr__(self, "center", (float(self.center[0]), float(self.center[1])))

    def area(self) -> float:
        """Sampled surface area in m^2."""
        caps = 1 if self.open_bottom else 2
        return 2 * math.pi * self.radius * (self.z1 - self.z0) + caps * math.pi * self.radius ** 2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` points uniform over the lateral surface and caps; (n, 3) float64."""
        lateral = 2 * math.pi * self.radius * (self.z1 - self.z0)
        cap = math.pi * self.radius ** 2
        weights = np.array([lateral, cap, 0.0 if self.open_bottom else cap])
        where = rng.choice(3, size=n, p=weights / weights.sum())
        angle = rng.random(n) * 2 * math.pi
        # Uniform on a disc: radius sqrt(u) * R; on the lateral surface: radius R.
        radius = np.where(where == 0, self.radius, self.radius * np.sqrt(rng.random(n)))
        height = np.select([where == 0, where == 1], [self.z0 + rng.random(n) * (self.z1 - self.z0), self.z1],
                           self.z0)
        return np.stack([self.center[0] + radius * np.cos(angle), self.center[1] + radius * np.sin(angle), height],
                        axis=1)  # 3 x (n,) -> (n, 3)


Part = Box | Cylinder


def part_bounds(part: Part) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) corners (3,) of the part's axis-aligned bounding box."""
    if isinstance(part, Box):
        return np.asarray(part.lo), np.asarray(part.hi)
    cx, cy = part.center
    return (np.array([cx - part.radius, cy - part.radius, part.z0]),
            np.array([cx + part.radius, cy + part.radius, part.z1]))


def parts_bounds(parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) corners (3,) of the box around all parts.

    Raises:
        ValueError: `parts` is empty.
    """
    if not parts:
        raise ValueError("parts_bounds needs at least one part")
    bounds = [part_bounds(part) for part in parts]
    return np.min([lo for lo, _ in bounds], axis=0), np.max([hi for _, hi in bounds], axis=0)


def allocate_points(areas: Sequence[float], total: int, minimum: int) -> np.ndarray:
    """Split `total` points over surfaces proportionally to their areas, each getting at least `minimum`.

    Largest-remainder rounding, so the counts sum to exactly max(total, minimum * len(areas)).

    Args:
        areas: surface area of each item (>= 0).
        total: points to distribute.
        minimum: floor per item.

    Shapes:
        areas: (K,) -> (K,) int64.

    Raises:
        ValueError: empty or negative areas, or negative total / minimum.
    """
    areas = np.asarray(areas, dtype=np.float64)
    if areas.ndim != 1 or areas.size == 0 or np.any(areas < 0) or not np.isfinite(areas).all():
        raise ValueError(f"areas must be a non-empty 1D array of finite values >= 0, got {areas}")
    if total < 0 or minimum < 0:
        raise ValueError(f"total and minimum must be >= 0, got total={total}, minimum={minimum}")
    total = max(int(total), minimum * areas.size)
    spare = total - minimum * areas.size
    weights = areas / areas.sum() if areas.sum() > 0 else np.full(areas.size, 1.0 / areas.size)
    exact = weights * spare
    counts = np.floor(exact).astype(np.int64)
    remainder = spare - int(counts.sum())
    # Largest remainders first; ties broken by index (stable sort) so the result is deterministic.
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return counts + minimum


def shade_color(color: str | Sequence[float], shade: float) -> np.ndarray:
    """RGB in [0, 1] of a named colour (or an RGB triple) times `shade`, clipped; shape (3,).

    Raises:
        ValueError: an unknown colour name (the message lists `NAMED_COLORS`).
    """
    if isinstance(color, str):
        if color not in NAMED_COLORS:
            raise ValueError(f"unknown colour {color!r}; use one of {sorted(NAMED_COLORS)}")
        rgb = np.asarray(NAMED_COLORS[color])
    else:
        rgb = np.asarray(color, dtype=np.float64)
    return np.clip(rgb * shade, 0.0, 1.0)


def sample_parts(
    rng: np.random.Generator,
    parts: Sequence[Part],
    color: str | Sequence[float],
    n_points: int,
    *,
    noise_m: float = 0.0,
    color_noise: float = 0.03,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scatter `n_points` points over the parts' surfaces (area-weighted, at least one per part).

    Args:
        rng: the random generator (all randomness comes from it).
        parts: the shape's parts.
        color: the object's named colour (or an RGB triple in [0, 1]); part k is shaded by `parts[k].shade`.
        n_points: points for the whole shape (raised to len(parts) if smaller).
        noise_m: standard deviation of Gaussian position noise in metres (scanner noise), 0 for none.
        color_noise: standard deviation of Gaussian colour noise per point, in [0, 1] units.

    Returns:
        (xyz float64 metres, rgb uint8 0..255, part index of every point).

    Shapes:
        -> xyz (P, 3), rgb (P, 3), part (P,) with P = max(n_points, len(parts)).

    Raises:
        ValueError: no parts, negative noise, or an unknown colour name.
    """
    if not parts:
        raise ValueError("sample_parts needs at least one part")
    if noise_m < 0 or color_noise < 0:
        raise ValueError(f"noise_m and color_noise must be >= 0, got {noise_m}, {color_noise}")
    counts = allocate_points([part.area() for part in parts], n_points, 1)
    xyz = np.concatenate([part.sample(rng, int(n)) for part, n in zip(parts, counts)])
    part_index = np.repeat(np.arange(len(parts)), counts)
    base = np.stack([shade_color(color, part.shade) for part in parts])[part_index]  # (K, 3) -> (P, 3)
    if noise_m > 0:
        xyz = xyz + rng.normal(0.0, noise_m, size=xyz.shape)
    if color_noise > 0:
        base = base + rng.normal(0.0, color_noise, size=base.shape)
    rgb = np.clip(np.round(base * 255.0), 0, 255).astype(np.uint8)
    return xyz, rgb, part_index
