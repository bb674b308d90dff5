"""Procedural room layouts: bedrooms, living rooms, offices, kitchens and bathrooms.

A room is the box [0, width] x [0, depth] x [0, height] in the aligned ScanNet frame (metres, z up, floor at
z = 0). Its four walls are numbered 0 (y = 0), 1 (x = width), 2 (y = depth), 3 (x = 0); wall k runs along the
unit vector `u_k` and faces into the room along `n_k` (`RoomLayout.wall_frame`). An object turned by k quarter
turns has its front (local +y, see `furniture.py`) along n_k, so furniture against wall k faces into the room.

Objects are placed one by one with a 3D clearance check against everything placed before (`_Planner`):
- wall fixtures (door, windows, curtains, pictures, mirror, whiteboard, towels) hang on a wall;
- furniture stands against a wall (bed head, sofa back, cabinets, desks, ...) or free in the room (dining
  tables), in groups that follow how rooms are furnished: chairs around a table facing it, a chair in front
  of each desk, nightstands beside the bed, a coffee table in front of the sofa, a TV on a cabinet facing it;
- small objects stand on a support surface (lamps on nightstands, tables and desks, pillows on beds and
  sofas, monitors on desks, sinks on counters and vanities); `PlacedObject.on` records the support, which the
  language generator uses as ground truth ("supported by").
A door keeps a free zone in front of it. Several objects of one class per room (chairs, pictures, pillows,
cabinets, windows, curtains, ...) give referring expressions same-class distractors.

Everything is drawn from the generator passed in, so a layout is a function of the seed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from scene3d.data.demo.furniture import CATEGORY_COLORS, SIMPLE_BUILDERS, Shape, curtain, shower_curtain
from scene3d.data.demo.primitives import Box, Cylinder, Part, parts_bounds

__all__ = ["ROOM_TYPES", "PlacedObject", "RoomLayout", "generate_room", "in_openings", "layout_summary",
           "room_floor_area", "structure_parts", "transform_part", "wall_frame"]

ROOM_TYPES: tuple[str, ...] = ("bedroom", "living room", "office", "kitchen", "bathroom")
# (width range, depth range) in metres per room type; the height is 2.5-3.0 m for all.
ROOM_SIZES: Mapping[str, tuple[tuple[float, float], tuple[float, float]]] = MappingProxyType({
    "bedroom": ((3.4, 5.0), (3.2, 4.6)),
    "living room": ((4.5, 7.0), (3.8, 6.0)),
    "office": ((4.2, 7.0), (3.6, 6.0)),
    "kitchen": ((3.6, 6.0), (3.2, 5.0)),
    "bathroom": ((2.6, 3.6), (2.2, 3.2)),
})
CLEARANCE = 0.03  # minimum gap between two objects' boxes, metres (a supported object may touch its support)
# Minimum height gap between a wall fixture and anything below / above it. Larger than the scene graph's
# contact tolerance (0.10 m), so a window over a cabinet is never "on" it.
FIXTURE_Z_CLEARANCE = 0.15
WALL_GAP = 0.02  # gap between furniture and the wall it stands against
DOOR_CLEARANCE = 0.9  # depth of the free zone in front of a door
MAX_LAYOUT_ATTEMPTS = 25


@dataclass
class PlacedObject:
    """One object of a layout, in the room frame.

    Args:
        raw_label: ScanNet raw category (the noun of descriptions).
        color: named colour (`primitives.NAMED_COLORS`).
        parts: geometry in the room frame.
        support: world (x0, y0, x1, y1, z) of its top surface others may stand on, or None.
        facing: unit (x, y) of its front.
        wall: index of the wall it hangs on or stands against, or None.
        on: index (in `RoomLayout.objects`) of the object it stands on, or None.
        mount: "floor", "wall" or "on" (`furniture.Shape.mount`).
    """

    raw_label: str
    color: str
    parts: tuple[Part, ...]
    support: tuple[float, float, float, float, float] | None
    facing: tuple[float, float]
    wall: int | None = None
    on: int | None = None
    mount: str = "floor"

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) corners (3,) of the object's box."""
        return parts_bounds(self.parts)


@dataclass
class RoomLayout:
    """A furnished room.

    Args:
        room_type: one of `ROOM_TYPES`.
        width, depth, height: room extent along x, y, z in metres.
        objects: the placed objects, in placement order.
        openings: per wall index, (s0, s1, z0, z1) rectangles (door, windows) where the wall has no surface.
    """

    room_type: str
    width: float
    depth: float
    height: float
    objects: list[PlacedObject] = field(default_factory=list)
    openings: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    def wall_frame(self, wall: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(origin (2,), along u (2,), inward normal n (2,), length) of wall 0..3 (module docstring)."""
        return wall_frame(self.width, self.depth, wall)


def wall_frame(width: float, depth: float, wall: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin (2,), along u (2,), inward normal n (2,), length) of wall 0..3 of a width x depth room.

    Raises:
        ValueError: wall not in 0..3.
    """
    frames = {
        0: ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), width),
        1: ((width, 0.0), (0.0, 1.0), (-1.0, 0.0), depth),
        2: ((width, depth), (-1.0, 0.0), (0.0, -1.0), width),
        3: ((0.0, depth), (0.0, -1.0), (1.0, 0.0), depth),
    }
    if wall not in frames:
        raise ValueError(f"wall must be 0, 1, 2 or 3, got {wall!r}")
    origin, along, normal, length = frames[wall]
    return np.array(origin), np.array(along), np.array(normal), float(length)


def _rotate_xy(x: float, y: float, quarter_turns: int) -> tuple[float, float]:
    """(x, y) turned counter-clockwise by quarter_turns * 90 degrees (exact for multiples of 90)."""
    for _ in range(quarter_turns % 4):
        x, y = -y, x
    return x, y


def transform_part(part: Part, quarter_turns: int, offset: tuple[float, float, float]) -> Part:
    """`part` turned about the z axis by quarter_turns * 90 degrees, then moved by `offset`."""
    dx, dy, dz = offset
    if isinstance(part, Cylinder):
        cx, cy = _rotate_xy(*part.center, quarter_turns)
        return Cylinder((cx + dx, cy + dy), part.z0 + dz, part.z1 + dz, part.radius, part.shade, part.open_bottom)
    corners = [_rotate_xy(x, y, quarter_turns) for x in (part.lo[0], part.hi[0]) for y in (part.lo[1], part.hi[1])]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return Box((min(xs) + dx, min(ys) + dy, part.lo[2] + dz), (max(xs) + dx, max(ys) + dy, part.hi[2] + dz),
               part.shade, part.open_bottom)


def _transform_rect(rect: tuple[float, float, float, float, float], quarter_turns: int,
                    offset: tuple[float, float, float]) -> tuple[float, float, float, float, float]:
    x0, y0, x1, y1, z = rect
    corners = [_rotate_xy(x, y, quarter_turns) for x in (x0, x1) for y in (y0, y1)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs) + offset[0], min(ys) + offset[1], max(xs) + offset[0], max(ys) + offset[1], z + offset[2])


def _facing(quarter_turns: int) -> tuple[float, float]:
    x, y = _rotate_xy(0.0, 1.0, quarter_turns)
    return (float(x), float(y))


def _boxes_overlap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray,
                   margin: float | np.ndarray) -> bool:
    """Whether two boxes come closer than `margin` (per axis, or one value for all) on every axis."""
    return bool(np.all(lo_a < hi_b + margin) and np.all(lo_b < hi_a + margin))


class _Planner:
    """Places shapes in a room without collisions; each method returns the new object's index or None."""

    def __init__(self, rng: np.random.Generator, layout: RoomLayout) -> None:
        self.rng = rng
        self.layout = layout
        self.keep_out: list[tuple[np.ndarray, np.ndarray]] = []  # free zones (in front of doors)

    # -- the generic step -------------------------------------------------------------------------------
    def _color(self, raw_label: str, color: str | None) -> str:
        return color if color is not None else str(self.rng.choice(CATEGORY_COLORS[raw_label]))

    def _fits(self, lo: np.ndarray, hi: np.ndarray, mount: str, ignore: set[int]) -> bool:
        """Inside the room, clear of every placed object but `ignore` (CLEARANCE apart; FIXTURE_Z_CLEARANCE
        vertically where a wall fixture is involved) and outside the keep-out zones."""
        room_hi = np.array([self.layout.width, self.layout.depth, self.layout.height])
        if np.any(lo < -1e-9) or np.any(hi > room_hi + 1e-9):
            return False
        for index, placed in enumerate(self.layout.objects):
            fixture = "wall" in (mount, placed.mount)
            margin = np.array([CLEARANCE, CLEARANCE, FIXTURE_Z_CLEARANCE if fixture else CLEARANCE])
            if index not in ignore and _boxes_overlap(lo, hi, *placed.bounds, margin):
                return False
        return not any(_boxes_overlap(lo, hi, zone_lo, zone_hi, 0.0) for zone_lo, zone_hi in self.keep_out)

    def place(self, shape: Shape, quarter_turns: int, offset: tuple[float, float, float], *,
              color: str | None = None, wall: int | None = None, on: int | None = None,
              ignore: set[int] | None = None) -> int | None:
        """Add `shape` turned and moved as given, if it fits; returns its index or None."""
        parts = tuple(transform_part(part, quarter_turns, offset) for part in shape.parts)
        lo, hi = parts_bounds(parts)
        skip = set(ignore or ()) | ({on} if on is not None else set())
        if not self._fits(lo, hi, shape.mount, skip):
            return None
        support = None if shape.support is None else _transform_rect(shape.support, quarter_turns, offset)
        self.layout.objects.append(PlacedObject(
            raw_label=shape.raw_label, color=self._color(shape.raw_label, color), parts=parts, support=support,
            facing=_facing(quarter_turns), wall=wall, on=on, mount=shape.mount,
        ))
        return len(self.layout.objects) - 1

    # -- against / on a wall ----------------------------------------------------------------------------
    def at_wall(self, shape: Shape, wall: int, s: float, distance: float, **kwargs) -> int | None:
        """Place `shape` facing into the room from wall `wall`, centred at `s` along it, its back `distance`
        from the wall."""
        origin, along, normal, _ = self.layout.wall_frame(wall)
        (x_lo, y_lo, _), (x_hi, _, _) = shape.bounds
        lateral = s - (x_lo + x_hi) / 2  # local x runs along the wall
        xy = origin + lateral * along + (distance - y_lo) * normal
        return self.place(shape, wall, (float(xy[0]), float(xy[1]), 0.0), wall=wall, **kwargs)

    def against_wall(self, name: str | Shape, *, walls: tuple[int, ...] | None = None, s: float | None = None,
                     distance: float = WALL_GAP, tries: int = 40, **kwargs) -> int | None:
        """Try random walls / positions (or the given ones) until `name`'s shape fits against a wall."""
        shape = SIMPLE_BUILDERS[name](self.rng) if isinstance(name, str) else name
        (x_lo, _, _), (x_hi, _, _) = shape.bounds
        for _ in range(tries):
            wall = int(self.rng.choice(walls if walls is not None else (0, 1, 2, 3)))
            length = self.layout.wall_frame(wall)[3]
            half = (x_hi - x_lo) / 2
            if length < 2 * half + 0.02:
                continue
            position = s if s is not None else float(self.rng.uniform(half + 0.01, length - half - 0.01))
            index = self.at_wall(shape, wall, position, distance, **kwargs)
            if index is not None:
                return index
            if s is not None and walls is not None and len(walls) == 1:
                return None  # a fixed spot that does not fit will not fit on a retry either
        return None

    def opening(self, index: int) -> None:
        """Record object `index` (a door or window on a wall) as an opening of its wall."""
        placed = self.layout.objects[index]
        origin, along, _, _ = self.layout.wall_frame(placed.wall)
        lo, hi = placed.bounds
        s_values = [float(np.dot(np.array(corner) - origin, along)) for corner in ((lo[0], lo[1]), (hi[0], hi[1]))]
        self.layout.openings.setdefault(placed.wall, []).append((min(s_values), max(s_values), float(lo[2]),
                                                                 float(hi[2])))

    # -- free standing, in front of, on top ---------------------------------------------------------------
    def free_standing(self, name: str | Shape, *, margin: float = 0.6, tries: int = 60, **kwargs) -> int | None:
        """Place the shape somewhere at least `margin` from the walls, turned by a random quarter turn."""
        shape = SIMPLE_BUILDERS[name](self.rng) if isinstance(name, str) else name
        for _ in range(tries):
            turns = int(self.rng.integers(0, 4))
            x_lo, y_lo, x_hi, y_hi = self._turned_footprint(shape, turns)
            x_min, x_max = margin - x_lo, self.layout.width - margin - x_hi
            y_min, y_max = margin - y_lo, self.layout.depth - margin - y_hi
            if x_min > x_max or y_min > y_max:
                continue
            xy = (float(self.rng.uniform(x_min, x_max)), float(self.rng.uniform(y_min, y_max)))
            index = self.place(shape, turns, (*xy, 0.0), **kwargs)
            if index is not None:
                return index
        return None

    @staticmethod
    def _turned_footprint(shape: Shape, turns: int) -> tuple[float, float, float, float]:
        (x_lo, y_lo, _), (x_hi, y_hi, _) = shape.bounds
        corners = [_rotate_xy(x, y, turns) for x in (x_lo, x_hi) for y in (y_lo, y_hi)]
        return (min(c[0] for c in corners), min(c[1] for c in corners),
                max(c[0] for c in corners), max(c[1] for c in corners))

    def facing_toward(self, name: str | Shape, anchor: int, side: tuple[float, float], gap: float,
                      lateral: float = 0.0, **kwargs) -> int | None:
        """Place a shape beside object `anchor` on `side` (a unit axis vector away from it), `gap` from its
        box, centred on that side (+ `lateral` along it), with its front towards the anchor."""
        shape = SIMPLE_BUILDERS[name](self.rng) if isinstance(name, str) else name
        side_vec = np.array(side, dtype=float)
        turns = next(k for k in range(4) if np.allclose(_facing(k), -side_vec))  # front towards the anchor
        x_lo, y_lo, x_hi, y_hi = self._turned_footprint(shape, turns)
        a_lo, a_hi = self.layout.objects[anchor].bounds
        along = np.array([-side_vec[1], side_vec[0]])
        center = (a_lo[:2] + a_hi[:2]) / 2
        extent_a = float(np.abs(side_vec) @ (a_hi[:2] - a_lo[:2])) / 2  # anchor half-size along `side`
        # Distance from the shape's origin to its footprint edge that faces the anchor (the edge towards -side).
        toward = {(1, 0): -x_lo, (-1, 0): x_hi, (0, 1): -y_lo, (0, -1): y_hi}[(round(side[0]), round(side[1]))]
        xy = center + side_vec * (extent_a + gap + toward) + along * lateral
        return self.place(shape, turns, (float(xy[0]), float(xy[1]), 0.0), **kwargs)

    def on_top(self, name: str | Shape, parent: int, *, region: tuple[float, float] = (0.0, 1.0),
               lateral: tuple[float, float] = (0.0, 1.0), tries: int = 30, **kwargs) -> int | None:
        """Stand the shape on object `parent`'s support surface, facing as the parent does.

        `region` / `lateral` restrict the position to a share of the surface, measured from the parent's back
        to its front / from its left to its right (0..1).
        """
        shape = SIMPLE_BUILDERS[name](self.rng) if isinstance(name, str) else name
        placed = self.layout.objects[parent]
        if placed.support is None:
            return None
        turns = next(k for k in range(4) if np.allclose(_facing(k), placed.facing))
        x_lo, y_lo, x_hi, y_hi = self._turned_footprint(shape, turns)
        sx0, sy0, sx1, sy1, z = placed.support
        # The shape's origin must keep its footprint inside the support rectangle.
        low = np.array([sx0 - x_lo, sy0 - y_lo])
        high = np.array([sx1 - x_hi, sy1 - y_hi])
        if np.any(low > high):
            return None
        front = np.array(placed.facing)
        right = np.array([front[1], -front[0]])
        for _ in range(tries):
            fractions = {"front": float(self.rng.uniform(*region)), "right": float(self.rng.uniform(*lateral))}
            origin = np.empty(2)
            for axis in (0, 1):
                key = "front" if front[axis] != 0 else "right"
                direction = front[axis] if key == "front" else right[axis]
                t = fractions[key] if direction > 0 else 1.0 - fractions[key]  # 0 = back / left edge
                origin[axis] = low[axis] + t * (high[axis] - low[axis])
            index = self.place(shape, turns, (float(origin[0]), float(origin[1]), z), on=parent, wall=placed.wall,
                               **kwargs)
            if index is not None:
                return index
        return None

    # -- groups ------------------------------------------------------------------------------------------
    def door(self) -> int | None:
        """A door on a random wall, with a free zone in front of it."""
        index = self.against_wall("door", distance=0.0)
        if index is not None:
            self.opening(index)
            placed = self.layout.objects[index]
            lo, hi = placed.bounds
            normal = np.array(placed.facing)
            zone_lo = np.minimum(lo[:2], lo[:2] + normal * DOOR_CLEARANCE)
            zone_hi = np.maximum(hi[:2], hi[:2] + normal * DOOR_CLEARANCE)
            self.keep_out.append((np.array([*zone_lo, 0.0]), np.array([*zone_hi, hi[2]])))
        return index

    def window(self, *, small: bool = False, curtains: float = 0.0) -> int | None:
        """A window on a random wall; with probability `curtains`, one or two curtain panels beside it."""
        index = self.against_wall("small window" if small else "window", distance=0.0)
        if index is None:
            return None
        self.opening(index)
        if self.rng.random() < curtains:
            placed = self.layout.objects[index]
            origin, along, _, _ = self.layout.wall_frame(placed.wall)
            lo, hi = placed.bounds
            s_values = sorted(float(np.dot(np.array(c) - origin, along)) for c in ((lo[0], lo[1]), (hi[0], hi[1])))
            color = str(self.rng.choice(CATEGORY_COLORS["curtain"]))
            top = min(self.layout.height - 0.05, float(hi[2]) + float(self.rng.uniform(0.1, 0.3)))
            bottom = float(self.rng.uniform(0.25, 0.45))
            panel = float(self.rng.uniform(0.3, 0.45))
            sides = [0, 1] if self.rng.random() < 0.7 else [int(self.rng.integers(0, 2))]
            for side in sides:
                s = s_values[0] - panel / 2 + 0.05 if side == 0 else s_values[1] + panel / 2 - 0.05
                self.at_wall(curtain(self.rng, panel, top, bottom), placed.wall, s, 0.12, color=color)
        return index

    def table_with_chairs(self, table_kind: str, n_chairs: int, *, chair_kind: str = "chair",
                          same_color: float = 0.6) -> int | None:
        """A free-standing table with up to n_chairs chairs around it, facing it."""
        table = self.free_standing(table_kind, margin=0.75)
        if table is None:
            return None
        lo, hi = self.layout.objects[table].bounds
        extent = hi[:2] - lo[:2]
        long_axis = int(np.argmax(extent))
        long_sides = [tuple(float(v) for v in np.eye(2)[1 - long_axis] * sign) for sign in (-1, 1)]
        end_sides = [tuple(float(v) for v in np.eye(2)[long_axis] * sign) for sign in (-1, 1)]
        per_side = max(1, int(extent[long_axis] // 0.6))
        slots = [(side, (k + 0.5) / per_side - 0.5) for side in long_sides for k in range(per_side)]
        slots += [(side, 0.0) for side in end_sides]
        order = self.rng.permutation(len(slots))
        chair_color = str(self.rng.choice(CATEGORY_COLORS["chair"]))
        placed = 0
        for slot in order:
            if placed >= n_chairs:
                break
            side, fraction = slots[slot]
            span = float(np.abs(np.array([-side[1], side[0]])) @ extent)
            color = chair_color if self.rng.random() < same_color else None
            gap = float(self.rng.uniform(0.08, 0.2))
            if self.facing_toward(chair_kind, table, side, gap, lateral=fraction * span, color=color) is not None:
                placed += 1
        return table

    def in_front(self, name: str, anchor: int, gap: float, *, lateral: float = 0.0, **kwargs) -> int | None:
        """Place the shape in front of object `anchor` (along its facing), facing it."""
        return self.facing_toward(name, anchor, self.layout.objects[anchor].facing, gap, lateral, **kwargs)

    def beside_on_wall(self, name: str, anchor: int, side: int, gap: float = 0.05, **kwargs) -> int | None:
        """Against the same wall as `anchor`, just left (side=-1) or right (+1) of it along the wall."""
        placed = self.layout.objects[anchor]
        if placed.wall is None:
            return None
        shape = SIMPLE_BUILDERS[name](self.rng)
        origin, along, _, _ = self.layout.wall_frame(placed.wall)
        lo, hi = placed.bounds
        s_values = [float(np.dot(np.array(c) - origin, along)) for c in ((lo[0], lo[1]), (hi[0], hi[1]))]
        (x_lo, _, _), (x_hi, _, _) = shape.bounds
        half = (x_hi - x_lo) / 2
        s = min(s_values) - gap - half if side < 0 else max(s_values) + gap + half
        return self.at_wall(shape, placed.wall, s, WALL_GAP, **kwargs)

    def on_wall(self, name: str, *, walls: tuple[int, ...] | None = None, s: float | None = None,
                tries: int = 40, **kwargs) -> int | None:
        """A wall fixture (picture, mirror, whiteboard, towel) flat on a wall."""
        return self.against_wall(name, walls=walls, s=s, distance=0.0, tries=tries, **kwargs)

    def wall_position(self, index: int) -> float:
        """Centre of object `index` along its wall (`s`)."""
        placed = self.layout.objects[index]
        origin, along, _, _ = self.layout.wall_frame(placed.wall)
        lo, hi = placed.bounds
        return float(np.dot((lo[:2] + hi[:2]) / 2 - origin, along))

    def maybe(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def count(self, low: int, high: int) -> int:
        """A random integer in [low, high]."""
        return int(self.rng.integers(low, high + 1))


def _lateral_extent(placed: PlacedObject) -> float:
    """Width of an object across its facing direction (its footprint along the wall it faces away from)."""
    lo, hi = placed.bounds
    return float(hi[0] - lo[0]) if placed.facing[0] == 0 else float(hi[1] - lo[1])


def _depth_extent(placed: PlacedObject) -> float:
    """Depth of an object along its facing direction."""
    lo, hi = placed.bounds
    return float(hi[1] - lo[1]) if placed.facing[0] == 0 else float(hi[0] - lo[0])


def _bedroom(p: _Planner) -> bool:
    if p.door() is None:
        return False
    for _ in range(p.count(1, 2)):
        p.window(curtains=0.75)
    bed = p.against_wall("bed")
    if bed is None:
        return False
    sides = [(-1, 1), (-1,), (1,)][int(p.rng.choice(3, p=[0.6, 0.2, 0.2]))]
    for side in sides:
        stand = p.beside_on_wall("nightstand", bed, side)
        if stand is not None and p.maybe(0.8):
            p.on_top("table lamp", stand, region=(0.3, 0.7))
    for _ in range(p.count(1, 3 if _lateral_extent(p.layout.objects[bed]) > 1.2 else 2)):
        p.on_top("pillow", bed, region=(0.0, 0.3))
    if p.maybe(0.6):
        p.on_wall("picture", walls=(p.layout.objects[bed].wall,), s=p.wall_position(bed))
    for _ in range(p.count(1, 2)):
        p.against_wall("tall cabinet" if p.maybe(0.5) else "cabinet")
    if p.maybe(0.5):
        desk = p.against_wall("desk")
        if desk is not None:
            p.in_front("chair", desk, float(p.rng.uniform(0.05, 0.25)))
            if p.maybe(0.4):
                p.on_top("table lamp", desk, region=(0.0, 0.4))
    if p.maybe(0.4):
        p.against_wall("bookshelf")
    for name, probability in (("trash can", 0.5), ("plant", 0.3), ("box", 0.3)):
        if p.maybe(probability):
            p.free_standing(name, margin=0.3)
    for _ in range(p.count(0, 2)):
        p.on_wall("picture")
    return True


def _living_room(p: _Planner) -> bool:
    if p.door() is None:
        return False
    for _ in range(p.count(1, 3)):
        p.window(curtains=0.7)
    sofa = p.against_wall("sofa")
    if sofa is None:
        return False
    for _ in range(p.count(1, 3)):
        p.on_top("pillow", sofa, region=(0.0, 0.4))
    coffee = p.in_front("coffee table", sofa, float(p.rng.uniform(0.35, 0.5)))
    if coffee is not None:
        along = np.array(p.layout.objects[coffee].facing)
        sides = [(float(along[1]), float(-along[0])), (float(-along[1]), float(along[0]))]
        chair_color = str(p.rng.choice(CATEGORY_COLORS["chair"]))
        for side in sides[: p.count(1, 2)]:
            p.facing_toward("armchair", coffee, side, float(p.rng.uniform(0.25, 0.4)), color=chair_color)
    sofa_wall = p.layout.objects[sofa].wall
    if p.maybe(0.8):
        # The TV faces the sofa from the opposite wall when there is room, else from any wall.
        stand = p.against_wall("cabinet", walls=((sofa_wall + 2) % 4,))
        stand = p.against_wall("cabinet") if stand is None else stand
        if stand is not None:
            p.on_top("tv", stand, region=(0.2, 0.6), lateral=(0.4, 0.6))
    if p.maybe(0.5):
        p.beside_on_wall("floor lamp", sofa, int(p.rng.choice([-1, 1])), gap=0.1)
    if p.maybe(0.5):
        side_table = p.beside_on_wall("side table", sofa, int(p.rng.choice([-1, 1])))
        if side_table is not None:
            p.on_top("table lamp", side_table, region=(0.3, 0.7))
    for _ in range(p.count(0, 2)):
        p.against_wall("bookshelf")
    if p.maybe(0.3):
        p.against_wall("sofa")
    if p.maybe(0.6):
        p.on_wall("picture", walls=(sofa_wall,), s=p.wall_position(sofa))
    for _ in range(p.count(0, 2)):
        p.on_wall("picture")
    for _ in range(p.count(0, 2)):
        p.free_standing("plant", margin=0.25)
    if p.maybe(0.3):
        p.free_standing("trash can", margin=0.3)
    return True


def _office(p: _Planner) -> bool:
    if p.door() is None:
        return False
    for _ in range(p.count(1, 2)):
        p.window(curtains=0.3)
    desks = [d for d in (p.against_wall("desk") for _ in range(p.count(2, 4))) if d is not None]
    if len(desks) < 2:
        return False
    chair_color = str(p.rng.choice(CATEGORY_COLORS["chair"]))
    for desk in desks:
        color = chair_color if p.maybe(0.6) else None
        p.in_front("chair", desk, float(p.rng.uniform(0.05, 0.25)), lateral=float(p.rng.uniform(-0.2, 0.2)),
                   color=color)
        if p.maybe(0.8):
            p.on_top("monitor", desk, region=(0.0, 0.35), lateral=(0.2, 0.8))
        if p.maybe(0.3):
            p.on_top("table lamp", desk, region=(0.0, 0.4))
    if p.maybe(0.5):
        p.table_with_chairs("round table" if p.maybe(0.4) else "dining table", p.count(2, 4))
    for _ in range(p.count(1, 2)):
        p.against_wall("bookshelf")
    for _ in range(p.count(1, 2)):
        p.against_wall("cabinet" if p.maybe(0.6) else "tall cabinet")
    for _ in range(p.count(1, 2)):
        p.free_standing("trash can", margin=0.3)
    if p.maybe(0.6):
        p.on_wall("whiteboard")
    if p.maybe(0.5):
        p.on_wall("picture")
    if p.maybe(0.4):
        p.free_standing("plant", margin=0.25)
    if p.maybe(0.3):
        p.free_standing("box", margin=0.3)
    return True


def _kitchen(p: _Planner) -> bool:
    if p.door() is None:
        return False
    for _ in range(p.count(1, 2)):
        p.window(curtains=0.3)
    counters = [c for c in (p.against_wall("counter") for _ in range(p.count(1, 2))) if c is not None]
    if not counters or p.on_top("sink", counters[0], region=(0.0, 0.3), lateral=(0.2, 0.8)) is None:
        return False
    if p.against_wall("refrigerator") is None:
        return False
    for _ in range(p.count(1, 3)):
        p.against_wall("kitchen cabinet")
    if p.table_with_chairs("round table" if p.maybe(0.3) else "dining table", p.count(2, 4)) is None:
        return False
    if p.maybe(0.3):
        p.against_wall("tall cabinet")
    if p.maybe(0.7):
        p.free_standing("trash can", margin=0.3)
    if p.maybe(0.5):
        p.on_wall("picture")
    if p.maybe(0.3):
        p.free_standing("plant", margin=0.25)
    return True


def _bathroom(p: _Planner) -> bool:
    if p.door() is None:
        return False
    if p.maybe(0.6):
        p.window(small=True)
    tub = p.against_wall("bathtub")
    if tub is None:
        return False
    placed = p.layout.objects[tub]
    tub_width, tub_depth = _lateral_extent(placed), _depth_extent(placed)
    if p.maybe(0.85):
        rim = float(placed.bounds[1][2])
        p.at_wall(shower_curtain(p.rng, tub_width - 0.05, rim), placed.wall, p.wall_position(tub),
                  WALL_GAP + tub_depth - 0.04, ignore={tub})
    if p.against_wall("toilet") is None:
        return False
    vanity = p.against_wall("vanity")
    if vanity is None or p.on_top("sink", vanity, region=(0.0, 0.2), lateral=(0.3, 0.7)) is None:
        return False
    p.on_wall("mirror", walls=(p.layout.objects[vanity].wall,), s=p.wall_position(vanity))
    if p.maybe(0.3):
        counter = p.against_wall("counter")
        if counter is not None:
            p.on_top("sink", counter, region=(0.0, 0.2), lateral=(0.2, 0.8))
    for _ in range(p.count(1, 2)):
        p.on_wall("towel")
    if p.maybe(0.6):
        p.free_standing("trash can", margin=0.2)
    return True


ROOM_RECIPES: Mapping[str, Callable[[_Planner], bool]] = MappingProxyType({
    "bedroom": _bedroom, "living room": _living_room, "office": _office, "kitchen": _kitchen,
    "bathroom": _bathroom,
})


def generate_room(rng: np.random.Generator, room_type: str) -> RoomLayout:
    """A furnished room of the given type; sizes, contents and placements are drawn from `rng`.

    A recipe that cannot place one of its defining objects (a bedroom without a bed) starts over in a
    freshly drawn room; the generator's state then differs, but stays a function of the seed.

    Raises:
        ValueError: an unknown room type.
        RuntimeError: no valid layout after `MAX_LAYOUT_ATTEMPTS` attempts (a bug in a recipe).
    """
    if room_type not in ROOM_RECIPES:
        raise ValueError(f"unknown room type {room_type!r}; use one of {list(ROOM_TYPES)}")
    (w0, w1), (d0, d1) = ROOM_SIZES[room_type]
    for _ in range(MAX_LAYOUT_ATTEMPTS):
        layout = RoomLayout(room_type, round(float(rng.uniform(w0, w1)), 3), round(float(rng.uniform(d0, d1)), 3),
                            round(float(rng.uniform(2.5, 3.0)), 3))
        if ROOM_RECIPES[room_type](_Planner(rng, layout)):
            return layout
    raise RuntimeError(f"could not lay out a {room_type} in {MAX_LAYOUT_ATTEMPTS} attempts")


def structure_parts(layout: RoomLayout) -> dict[str, list[tuple[Part, int | None]]]:
    """Floor and wall surfaces: {"floor": [(flat box, None)], "wall": [(flat box, wall index), ...]}.

    Walls are flat rectangles on the room's boundary (the inner surface, as a scan sees it); the floor is the
    rectangle at z = 0. Sampled points inside `layout.openings` are removed by the caller (doors, windows).
    """
    w, d, h = layout.width, layout.depth, layout.height
    walls = [
        (Box((0.0, 0.0, 0.0), (w, 0.0, h)), 0),
        (Box((w, 0.0, 0.0), (w, d, h)), 1),
        (Box((0.0, d, 0.0), (w, d, h)), 2),
        (Box((0.0, 0.0, 0.0), (0.0, d, h)), 3),
    ]
    return {"floor": [(Box((0.0, 0.0, 0.0), (w, d, 0.0)), None)], "wall": walls}


def in_openings(layout: RoomLayout, wall: int, xyz: np.ndarray) -> np.ndarray:
    """Which points of wall `wall` fall inside one of its openings; (P, 3) -> (P,) bool."""
    origin, along, _, _ = layout.wall_frame(wall)
    s = (xyz[:, :2] - origin) @ along  # (P, 2) @ (2,) -> (P,) position along the wall
    inside = np.zeros(xyz.shape[0], dtype=bool)
    for s0, s1, z0, z1 in layout.openings.get(wall, []):
        inside |= (s > s0) & (s < s1) & (xyz[:, 2] > z0) & (xyz[:, 2] < z1)
    return inside


def room_floor_area(layout: RoomLayout) -> float:
    """Floor area in m^2."""
    return layout.width * layout.depth


def layout_summary(layout: RoomLayout) -> dict[str, int]:
    """{raw label: number of objects} of a layout (for logs and tests)."""
    counts: dict[str, int] = {}
    for placed in layout.objects:
        counts[placed.raw_label] = counts.get(placed.raw_label, 0) + 1
    return counts
