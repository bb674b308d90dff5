"""Furniture and fixtures as composite shapes (a table = top + legs, a chair = seat + back + legs, ...).

Every builder draws its sizes from the generator it is given and returns a `Shape` in the object's local frame:
the footprint is centred on the origin, the object stands on z = 0 (wall fixtures: z is the absolute height
above the floor), width runs along x, depth along y, and the front (the side one sits on, looks at or walks
through) faces +y. `rooms.py` turns the shape to face into the room and moves it into place; the turn is a
multiple of 90 degrees, so box parts stay axis-aligned.

`raw_label` is the ScanNet raw category written to the aggregation file; the ScanNet label map sends it to
its NYU40 class and to ScanRefer's 18 classes (see `scene3d.data.labels`): the 17 named ScanRefer classes are
covered by their own names, the rest ("lamp", "pillow", "nightstand", "tv", "monitor", "trash can", "plant",
"mirror", "towel", "whiteboard", "box") become ScanRefer's "others". Descriptions use `raw_label` as the noun.

`support` is the surface other objects can stand on (a table top, a mattress), as (x0, y0, x1, y1, z) in the
local frame, or None.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from scene3d.data.demo.primitives import Box, Cylinder, Part, parts_bounds


@dataclass(frozen=True)
class Shape:
    """An object's geometry in its local frame.

    Args:
        raw_label: ScanNet raw category ("chair", "nightstand", ...).
        parts: the boxes and cylinders it is made of.
        support: (x0, y0, x1, y1, z) of its top surface that other objects may stand on, or None.
        mount: "floor" (stands on the floor), "wall" (hangs on a wall: z is absolute), or "on" (stands on
            another object's support surface).
    """

    raw_label: str
    parts: tuple[Part, ...]
    support: tuple[float, float, float, float, float] | None = None
    mount: str = "floor"

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) corners (3,) of the shape's box."""
        return parts_bounds(self.parts)


# Colours each kind of object is drawn in (names from primitives.NAMED_COLORS).
CATEGORY_COLORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "chair": ("red", "blue", "black", "brown", "grey", "green", "white"),
    "table": ("brown", "white", "black", "grey"),
    "desk": ("brown", "white", "black", "grey"),
    "sofa": ("grey", "blue", "green", "red", "brown", "black", "beige"),
    "bed": ("white", "blue", "grey", "beige", "brown"),
    "cabinet": ("brown", "white", "grey", "black"),
    "bookshelf": ("brown", "white", "black"),
    "door": ("brown", "white"),
    "window": ("white", "grey"),
    "picture": ("red", "blue", "green", "yellow", "orange", "black"),
    "curtain": ("red", "blue", "beige", "white", "green", "grey"),
    "refrigerator": ("white", "grey", "black"),
    "counter": ("white", "grey", "black", "brown"),
    "toilet": ("white",),
    "sink": ("white", "grey"),
    "bathtub": ("white",),
    "shower curtain": ("white", "blue", "green"),
    "lamp": ("white", "black", "yellow", "red"),
    "pillow": ("white", "red", "blue", "yellow", "green", "orange"),
    "nightstand": ("brown", "white"),
    "tv": ("black",),
    "monitor": ("black", "grey"),
    "trash can": ("grey", "black", "blue", "green"),
    "plant": ("green",),
    "mirror": ("grey",),
    "towel": ("white", "blue", "red", "yellow"),
    "whiteboard": ("white",),
    "box": ("brown",),
})


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float, shade: float = 1.0,
         open_bottom: bool = False) -> Box:
    return Box((x0, y0, z0), (x1, y1, z1), shade=shade, open_bottom=open_bottom)


def _legs(width: float, depth: float, height: float, thickness: float, inset: float, shade: float) -> list[Box]:
    """Four square legs under a width x depth top, from the floor to `height`."""
    xs = (-width / 2 + inset, width / 2 - inset - thickness)
    ys = (-depth / 2 + inset, depth / 2 - inset - thickness)
    return [_box(x, y, 0.0, x + thickness, y + thickness, height, shade, open_bottom=True) for x in xs for y in ys]


def table(rng: np.random.Generator, kind: str = "dining") -> Shape:
    """A table: top + four legs ("dining", "coffee", "side") or a round top on a pedestal ("round")."""
    if kind == "round":
        radius, height = _u(rng, 0.45, 0.6), _u(rng, 0.72, 0.76)
        parts: list[Part] = [
            Cylinder((0.0, 0.0), height - 0.04, height, radius),
            Cylinder((0.0, 0.0), 0.04, height - 0.04, 0.05, shade=0.8),
            Cylinder((0.0, 0.0), 0.0, 0.04, 0.3, shade=0.8, open_bottom=True),
        ]
        half = radius / np.sqrt(2.0)  # the square inside the disc is what objects may stand on
        return Shape("table", tuple(parts), support=(-half, -half, half, half, height))
    sizes = {"dining": ((1.2, 1.8), (0.8, 1.0), (0.72, 0.76)), "coffee": ((0.9, 1.3), (0.5, 0.7), (0.38, 0.46)),
             "side": ((0.45, 0.6), (0.45, 0.6), (0.5, 0.65))}
    if kind not in sizes:
        raise ValueError(f"unknown table kind {kind!r}; use one of {sorted(sizes) + ['round']}")
    (w0, w1), (d0, d1), (h0, h1) = sizes[kind]
    width, depth, height = _u(rng, w0, w1), _u(rng, d0, d1), _u(rng, h0, h1)
    top = _box(-width / 2, -depth / 2, height - 0.04, width / 2, depth / 2, height)
    parts = [top, *_legs(width, depth, height - 0.04, 0.05, 0.04, 0.85)]
    return Shape("table", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def desk(rng: np.random.Generator) -> Shape:
    """A desk: top, two side panels and a drawer block under one side."""
    width, depth, height = _u(rng, 1.1, 1.6), _u(rng, 0.6, 0.75), _u(rng, 0.73, 0.76)
    parts = [
        _box(-width / 2, -depth / 2, height - 0.03, width / 2, depth / 2, height),
        _box(-width / 2, -depth / 2, 0.0, -width / 2 + 0.03, depth / 2, height - 0.03, 0.85, True),
        _box(width / 2 - 0.03, -depth / 2, 0.0, width / 2, depth / 2, height - 0.03, 0.85, True),
        _box(width / 2 - 0.45, -depth / 2 + 0.05, 0.1, width / 2 - 0.03, depth / 2 - 0.02, height - 0.03, 0.92),
    ]
    return Shape("desk", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def chair(rng: np.random.Generator, kind: str = "dining") -> Shape:
    """A chair facing +y: seat, back at -y and four legs ("dining"), or a padded "armchair" with arms."""
    if kind == "armchair":
        width, depth = _u(rng, 0.75, 0.9), _u(rng, 0.75, 0.9)
        seat, back = _u(rng, 0.4, 0.45), _u(rng, 0.8, 0.95)
        parts = [
            _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, seat, open_bottom=True),
            _box(-width / 2, -depth / 2, seat, width / 2, -depth / 2 + 0.18, back, 0.9),
            _box(-width / 2, -depth / 2 + 0.18, seat, -width / 2 + 0.15, depth / 2, seat + 0.2, 0.95),
            _box(width / 2 - 0.15, -depth / 2 + 0.18, seat, width / 2, depth / 2, seat + 0.2, 0.95),
        ]
        return Shape("chair", tuple(parts))
    if kind != "dining":
        raise ValueError(f"unknown chair kind {kind!r}; use 'dining' or 'armchair'")
    width, depth = _u(rng, 0.42, 0.5), _u(rng, 0.42, 0.5)
    seat, back = _u(rng, 0.43, 0.48), _u(rng, 0.82, 0.95)
    parts = [
        _box(-width / 2, -depth / 2, seat - 0.05, width / 2, depth / 2, seat),
        _box(-width / 2, -depth / 2, seat, width / 2, -depth / 2 + 0.05, back, 0.9),
        *_legs(width, depth, seat - 0.05, 0.04, 0.0, 0.8),
    ]
    return Shape("chair", tuple(parts))


def sofa(rng: np.random.Generator) -> Shape:
    """A sofa facing +y: base, back cushion at -y and two arms."""
    width, depth = _u(rng, 1.6, 2.3), _u(rng, 0.85, 0.95)
    seat, back, arm = _u(rng, 0.4, 0.45), _u(rng, 0.8, 0.9), _u(rng, 0.58, 0.65)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, seat, open_bottom=True),
        _box(-width / 2, -depth / 2, seat, width / 2, -depth / 2 + 0.22, back, 0.9),
        _box(-width / 2, -depth / 2 + 0.22, seat, -width / 2 + 0.18, depth / 2, arm, 0.95),
        _box(width / 2 - 0.18, -depth / 2 + 0.22, seat, width / 2, depth / 2, arm, 0.95),
    ]
    support = (-width / 2 + 0.18, -depth / 2 + 0.22, width / 2 - 0.18, depth / 2, seat)
    return Shape("sofa", tuple(parts), support=support)


def bed(rng: np.random.Generator) -> Shape:
    """A bed whose foot faces +y: frame, mattress and a headboard at -y."""
    width, length = float(rng.choice([0.95, 1.4, 1.6, 1.8])), _u(rng, 2.0, 2.1)
    frame, mattress, head = _u(rng, 0.25, 0.3), _u(rng, 0.5, 0.58), _u(rng, 0.75, 0.9)
    parts = [
        _box(-width / 2, -length / 2, 0.0, width / 2, length / 2, frame, 0.9, open_bottom=True),
        _box(-width / 2 + 0.02, -length / 2 + 0.06, frame, width / 2 - 0.02, length / 2 - 0.02, mattress),
        _box(-width / 2, -length / 2, 0.0, width / 2, -length / 2 + 0.06, head, 0.9, open_bottom=True),
    ]
    support = (-width / 2 + 0.02, -length / 2 + 0.06, width / 2 - 0.02, length / 2 - 0.02, mattress)
    return Shape("bed", tuple(parts), support=support)


def cabinet(rng: np.random.Generator, kind: str = "low") -> Shape:
    """A cabinet: a body on a plinth with a door line; "low" (sideboard, vanity), "tall" or "kitchen"."""
    sizes = {"low": ((0.8, 1.4), (0.42, 0.5), (0.7, 0.85)), "tall": ((0.8, 1.2), (0.5, 0.6), (1.8, 2.1)),
             "kitchen": ((0.8, 1.6), (0.55, 0.62), (0.86, 0.9)), "vanity": ((0.6, 0.9), (0.45, 0.5), (0.8, 0.85))}
    if kind not in sizes:
        raise ValueError(f"unknown cabinet kind {kind!r}; use one of {sorted(sizes)}")
    (w0, w1), (d0, d1), (h0, h1) = sizes[kind]
    width, depth, height = _u(rng, w0, w1), _u(rng, d0, d1), _u(rng, h0, h1)
    parts = [
        _box(-width / 2 + 0.03, -depth / 2, 0.0, width / 2 - 0.03, depth / 2 - 0.04, 0.08, 0.6, True),
        _box(-width / 2, -depth / 2, 0.08, width / 2, depth / 2, height),
        _box(-0.005, depth / 2, 0.15, 0.005, depth / 2 + 0.01, height - 0.05, 0.7),  # the gap between doors
    ]
    return Shape("cabinet", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def bookshelf(rng: np.random.Generator) -> Shape:
    """A bookshelf open at +y: sides, back, top, bottom and shelves."""
    width, depth, height = _u(rng, 0.8, 1.2), _u(rng, 0.3, 0.38), _u(rng, 1.5, 2.0)
    n_shelves = int(rng.integers(3, 6))
    parts: list[Part] = [
        _box(-width / 2, -depth / 2, 0.0, -width / 2 + 0.02, depth / 2, height, 1.0, True),
        _box(width / 2 - 0.02, -depth / 2, 0.0, width / 2, depth / 2, height, 1.0, True),
        _box(-width / 2, -depth / 2, 0.0, width / 2, -depth / 2 + 0.01, height, 0.8, True),
    ]
    for z in np.linspace(0.0, height - 0.02, n_shelves + 1):
        parts.append(_box(-width / 2 + 0.02, -depth / 2 + 0.01, z, width / 2 - 0.02, depth / 2, z + 0.02, 0.95))
    return Shape("bookshelf", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def nightstand(rng: np.random.Generator) -> Shape:
    """A nightstand: a small box with a drawer front."""
    width, depth, height = _u(rng, 0.4, 0.5), _u(rng, 0.35, 0.45), _u(rng, 0.5, 0.6)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, height, open_bottom=True),
        _box(-width / 2 + 0.03, depth / 2, height - 0.2, width / 2 - 0.03, depth / 2 + 0.01, height - 0.05, 0.8),
    ]
    return Shape("nightstand", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def refrigerator(rng: np.random.Generator) -> Shape:
    """A refrigerator: body, freezer line and a handle on the front."""
    width, depth, height = _u(rng, 0.6, 0.8), _u(rng, 0.65, 0.75), _u(rng, 1.7, 1.95)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, height, open_bottom=True),
        _box(width / 2 - 0.08, depth / 2, 0.6, width / 2 - 0.05, depth / 2 + 0.04, 1.2, 0.6),
    ]
    return Shape("refrigerator", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def counter(rng: np.random.Generator) -> Shape:
    """A kitchen counter: base units and a worktop overhanging at the front."""
    width, depth, height = _u(rng, 1.6, 2.8), _u(rng, 0.6, 0.65), _u(rng, 0.88, 0.92)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2 - 0.03, height - 0.04, 0.93, True),
        _box(-width / 2, -depth / 2, height - 0.04, width / 2, depth / 2, height),
    ]
    return Shape("counter", tuple(parts), support=(-width / 2, -depth / 2, width / 2, depth / 2, height))


def toilet(rng: np.random.Generator) -> Shape:
    """A toilet facing +y: bowl on a base, tank at -y."""
    depth = _u(rng, 0.65, 0.72)
    parts = [
        _box(-0.16, -depth / 2 + 0.15, 0.0, 0.16, depth / 2 - 0.05, 0.38, 1.0, True),
        Cylinder((0.0, depth / 2 - 0.2), 0.38, 0.42, 0.19),
        _box(-0.2, -depth / 2, 0.38, 0.2, -depth / 2 + 0.17, 0.78, 0.95),
    ]
    return Shape("toilet", tuple(parts))


def sink(rng: np.random.Generator) -> Shape:
    """A washbasin standing on a counter or vanity: a shallow basin (rim and bottom) and a tap."""
    width, depth, height = _u(rng, 0.45, 0.6), _u(rng, 0.35, 0.45), _u(rng, 0.12, 0.16)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, 0.03, 0.9, True),
        _box(-width / 2, -depth / 2, 0.03, -width / 2 + 0.03, depth / 2, height),
        _box(width / 2 - 0.03, -depth / 2, 0.03, width / 2, depth / 2, height),
        _box(-width / 2 + 0.03, -depth / 2, 0.03, width / 2 - 0.03, -depth / 2 + 0.03, height),
        _box(-width / 2 + 0.03, depth / 2 - 0.03, 0.03, width / 2 - 0.03, depth / 2, height),
        Cylinder((0.0, -depth / 2 + 0.06), height, height + 0.12, 0.015, shade=0.7),
    ]
    return Shape("sink", tuple(parts), mount="on")


def bathtub(rng: np.random.Generator) -> Shape:
    """A bathtub, long side along x, open side at +y: four rims around a bottom."""
    width, depth, height = _u(rng, 1.5, 1.75), _u(rng, 0.7, 0.8), _u(rng, 0.5, 0.58)
    parts = [
        _box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, 0.08, 0.9, True),
        _box(-width / 2, -depth / 2, 0.0, width / 2, -depth / 2 + 0.07, height, 1.0, True),
        _box(-width / 2, depth / 2 - 0.07, 0.0, width / 2, depth / 2, height, 1.0, True),
        _box(-width / 2, -depth / 2 + 0.07, 0.0, -width / 2 + 0.07, depth / 2 - 0.07, height, 1.0, True),
        _box(width / 2 - 0.07, -depth / 2 + 0.07, 0.0, width / 2, depth / 2 - 0.07, height, 1.0, True),
    ]
    return Shape("bathtub", tuple(parts))


def lamp(rng: np.random.Generator, kind: str = "table") -> Shape:
    """A lamp: base, pole and shade; "table" (stands on furniture) or "floor"."""
    if kind not in ("table", "floor"):
        raise ValueError(f"unknown lamp kind {kind!r}; use 'table' or 'floor'")
    height = _u(rng, 0.4, 0.55) if kind == "table" else _u(rng, 1.4, 1.7)
    shade_radius = _u(rng, 0.1, 0.15) if kind == "table" else _u(rng, 0.18, 0.23)
    shade_height = _u(rng, 0.15, 0.2) if kind == "table" else _u(rng, 0.25, 0.3)
    base = shade_radius * 0.7
    parts = [
        Cylinder((0.0, 0.0), 0.0, 0.03, base, shade=0.6),
        Cylinder((0.0, 0.0), 0.03, height - shade_height, 0.015, shade=0.6),
        Cylinder((0.0, 0.0), height - shade_height, height, shade_radius, open_bottom=True),
    ]
    return Shape("lamp", tuple(parts), mount="on" if kind == "table" else "floor")


def pillow(rng: np.random.Generator) -> Shape:
    """A pillow lying flat."""
    width, depth, height = _u(rng, 0.45, 0.6), _u(rng, 0.3, 0.4), _u(rng, 0.1, 0.15)
    return Shape("pillow", (_box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, height),), mount="on")


def screen(rng: np.random.Generator, kind: str) -> Shape:
    """A "tv" or a "monitor": a thin panel on a stand, facing +y, standing on furniture."""
    if kind == "tv":
        width, height, foot = _u(rng, 0.7, 1.0), _u(rng, 0.45, 0.65), 0.08
    elif kind == "monitor":
        width, height, foot = _u(rng, 0.5, 0.65), _u(rng, 0.3, 0.4), 0.12
    else:
        raise ValueError(f"unknown screen kind {kind!r}; use 'tv' or 'monitor'")
    parts = [
        _box(-0.12, -0.1, 0.0, 0.12, 0.1, 0.02, 0.7),
        _box(-0.02, -0.03, 0.02, 0.02, -0.01, foot, 0.7),
        _box(-width / 2, -0.02, foot, width / 2, 0.02, foot + height),
    ]
    return Shape(kind, tuple(parts), mount="on")


def trash_can(rng: np.random.Generator) -> Shape:
    """A trash can: an open cylinder."""
    return Shape("trash can", (Cylinder((0.0, 0.0), 0.0, _u(rng, 0.3, 0.45), _u(rng, 0.12, 0.18), open_bottom=True),))


def plant(rng: np.random.Generator) -> Shape:
    """A potted plant: pot and a column of foliage."""
    pot, height = _u(rng, 0.12, 0.18), _u(rng, 0.6, 1.2)
    parts = [
        Cylinder((0.0, 0.0), 0.0, 0.3, pot, shade=0.45, open_bottom=True),
        Cylinder((0.0, 0.0), 0.3, height, pot * 1.8),
    ]
    return Shape("plant", tuple(parts))


def box(rng: np.random.Generator) -> Shape:
    """A cardboard box."""
    width, depth, height = _u(rng, 0.25, 0.5), _u(rng, 0.25, 0.4), _u(rng, 0.15, 0.35)
    return Shape("box", (_box(-width / 2, -depth / 2, 0.0, width / 2, depth / 2, height),), mount="on")


def _panel(label: str, width: float, z0: float, z1: float, thickness: float, frame: float | None) -> Shape:
    """A flat wall fixture of width x (z1 - z0), `thickness` deep, with an optional frame of that width."""
    if frame is None:
        parts: list[Part] = [_box(-width / 2, -thickness / 2, z0, width / 2, thickness / 2, z1)]
    else:
        parts = [
            _box(-width / 2, -thickness / 2, z0, width / 2, thickness / 2, z0 + frame),
            _box(-width / 2, -thickness / 2, z1 - frame, width / 2, thickness / 2, z1),
            _box(-width / 2, -thickness / 2, z0 + frame, -width / 2 + frame, thickness / 2, z1 - frame),
            _box(width / 2 - frame, -thickness / 2, z0 + frame, width / 2, thickness / 2, z1 - frame),
            _box(-width / 2 + frame, -thickness / 2, z0 + frame, width / 2 - frame, -thickness / 2 + 0.01,
                 z1 - frame, 0.95),
        ]
    return Shape(label, tuple(parts), mount="wall")


def door(rng: np.random.Generator) -> Shape:
    """A door leaf in its frame, floor to ~2.05 m, with a handle."""
    width, height = _u(rng, 0.8, 0.95), _u(rng, 2.0, 2.1)
    shape = _panel("door", width, 0.0, height, 0.06, None)
    handle = _box(width / 2 - 0.12, 0.03, 1.0, width / 2 - 0.06, 0.07, 1.04, 0.5)
    return Shape("door", (*shape.parts, handle), mount="wall")


def window(rng: np.random.Generator, small: bool = False) -> Shape:
    """A window: frame and pane; sill at 0.8-1.0 m ("small": a high bathroom window)."""
    if small:
        width, sill, height = _u(rng, 0.5, 0.7), _u(rng, 1.4, 1.6), _u(rng, 0.5, 0.6)
    else:
        width, sill, height = _u(rng, 0.9, 1.6), _u(rng, 0.8, 1.0), _u(rng, 1.1, 1.4)
    return _panel("window", width, sill, sill + height, 0.08, 0.06)


def picture(rng: np.random.Generator) -> Shape:
    """A framed picture centred at 1.45-1.7 m (its bottom edge at 1.15 m or higher)."""
    width, height, center = _u(rng, 0.35, 1.0), _u(rng, 0.3, 0.6), _u(rng, 1.45, 1.7)
    return _panel("picture", width, center - height / 2, center + height / 2, 0.03, 0.03)


def mirror(rng: np.random.Generator) -> Shape:
    """A bathroom mirror, bottom edge at 1.3 m (clear of a washbasin's tap on a vanity below)."""
    width, height = _u(rng, 0.5, 0.8), _u(rng, 0.6, 0.8)
    return _panel("mirror", width, 1.3, 1.3 + height, 0.02, None)


def whiteboard(rng: np.random.Generator) -> Shape:
    """An office whiteboard, bottom edge at ~0.9 m."""
    width, height = _u(rng, 1.2, 2.0), _u(rng, 0.9, 1.2)
    return _panel("whiteboard", width, 0.9, 0.9 + height, 0.03, 0.03)


def towel(rng: np.random.Generator) -> Shape:
    """A towel hanging on a wall rail."""
    width, length = _u(rng, 0.3, 0.5), _u(rng, 0.5, 0.8)
    return _panel("towel", width, 1.5 - length, 1.5, 0.04, None)


def curtain(rng: np.random.Generator, width: float, top: float, bottom: float) -> Shape:
    """A curtain panel of the given width hanging from `top` to `bottom` (heights in m)."""
    del rng  # the room decides its size, to fit the window
    return _panel("curtain", width, bottom, top, 0.05, None)


def shower_curtain(rng: np.random.Generator, width: float, rim: float) -> Shape:
    """A shower curtain along a bathtub's open side, from ~2 m down to 0.15-0.2 m above the tub's rim (`rim`,
    its height): clear of the rim by more than the scene graph's contact tolerance, so it is above the tub and
    not on it."""
    return _panel("shower curtain", width, rim + _u(rng, 0.15, 0.2), _u(rng, 1.95, 2.05), 0.03, None)


# Builders that need only a generator, by name (rooms.py uses these names in its room recipes).
SIMPLE_BUILDERS: Mapping[str, Callable[[np.random.Generator], Shape]] = MappingProxyType({
    "dining table": lambda rng: table(rng, "dining"),
    "coffee table": lambda rng: table(rng, "coffee"),
    "side table": lambda rng: table(rng, "side"),
    "round table": lambda rng: table(rng, "round"),
    "desk": desk,
    "chair": lambda rng: chair(rng, "dining"),
    "armchair": lambda rng: chair(rng, "armchair"),
    "sofa": sofa,
    "bed": bed,
    "cabinet": lambda rng: cabinet(rng, "low"),
    "tall cabinet": lambda rng: cabinet(rng, "tall"),
    "kitchen cabinet": lambda rng: cabinet(rng, "kitchen"),
    "vanity": lambda rng: cabinet(rng, "vanity"),
    "bookshelf": bookshelf,
    "nightstand": nightstand,
    "refrigerator": refrigerator,
    "counter": counter,
    "toilet": toilet,
    "sink": sink,
    "bathtub": bathtub,
    "table lamp": lambda rng: lamp(rng, "table"),
    "floor lamp": lambda rng: lamp(rng, "floor"),
    "pillow": pillow,
    "tv": lambda rng: screen(rng, "tv"),
    "monitor": lambda rng: screen(rng, "monitor"),
    "trash can": trash_can,
    "plant": plant,
    "box": box,
    "door": door,
    "window": window,
    "small window": lambda rng: window(rng, small=True),
    "picture": picture,
    "mirror": mirror,
    "whiteboard": whiteboard,
    "towel": towel,
})
