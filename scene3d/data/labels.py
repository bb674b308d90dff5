"""ScanNet label maps: raw category (aggregation.json) -> NYU40 class -> ScanRefer's 18 classes.

ScanNet annotators label each object with a free-text raw category ("office chair", "kitchen cabinets").
`scannetv2-labels.combined.tsv` maps every raw category (column `raw_category`) to an NYU40 id (`nyu40id`,
1..40) and name (`nyu40class`). A copy ships inside the open3d wheel
(`open3d/_ml3d/datasets/_resources/scannet/`); `load_label_map(None)` finds it there without importing open3d.

ScanRefer's 18 classes (Chen et al., ECCV 2020; `ScannetDatasetConfig.type2class` in its
`data/scannet/model_util_scannet.py`) are 17 NYU40 classes kept by name plus "others", in this order:
cabinet(3) bed(4) chair(5) sofa(6) table(7) door(8) window(9) bookshelf(10) picture(11) counter(12)
desk(14) curtain(16) refrigerator(24) shower curtain(28) toilet(33) sink(34) bathtub(36), others.
Mapping used here (ScanRefer's `_get_raw2label` for the grounding labels): an object whose NYU40 class is one
of the 17 gets that class; every other NYU40 class (otherfurniture 39, but also wall, floor, otherprop, ...)
becomes "others". ScanRefer's detection targets (the VoteNet setting) additionally drop every object whose
NYU40 id is not in `SCANREFER_NYU40_IDS` (the 17 ids above plus 39, otherfurniture, as "others"); that
filter is the caller's choice, so this module only maps and never drops. Labels missing from the tsv map to
`UNKNOWN_NYU40_ID` / `UNKNOWN_NYU40_CLASS` and to "others".

Raw categories are matched after `normalize_label` (lower case, "_" -> " ", runs of spaces collapsed), so
ScanRefer's underscored object names ("kitchen_cabinet") find their tsv row too.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

SCANREFER_CLASSES: tuple[str, ...] = (
    "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter", "desk",
    "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "others",
)
SCANREFER_CLASS_TO_ID: Mapping[str, int] = MappingProxyType({name: i for i, name in enumerate(SCANREFER_CLASSES)})
SCANREFER_OTHERS = "others"
# NYU40 id -> ScanRefer class for the 17 named classes; every other id maps to "others".
SCANREFER_NYU40_ID_TO_CLASS: Mapping[int, str] = MappingProxyType({
    3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door", 9: "window", 10: "bookshelf",
    11: "picture", 12: "counter", 14: "desk", 16: "curtain", 24: "refrigerator", 28: "shower curtain",
    33: "toilet", 34: "sink", 36: "bathtub",
})
# The NYU40 ids ScanRefer's detection targets keep (its `nyu40ids`): the 17 above and 39 (otherfurniture).
SCANREFER_NYU40_IDS: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# NYU40 class names as spelled in the tsv's `nyu40class` column; index = nyu40 id - 1.
NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)
# What a raw label missing from the tsv maps to (ScanNet uses 0 for "unannotated").
UNKNOWN_NYU40_ID = 0
UNKNOWN_NYU40_CLASS = "unknown"

LABEL_MAP_FILENAME = "scannetv2-labels.combined.tsv"
# Where the open3d wheel keeps its copy, relative to the open3d package folder.
_OPEN3D_LABEL_MAP = Path("_ml3d", "datasets", "_resources", "scannet", LABEL_MAP_FILENAME)
_REQUIRED_COLUMNS = ("raw_category", "nyu40id", "nyu40class")


class LabelMapError(ValueError):
    """A label map could not be found or read; the message names the file and the problem."""


def normalize_label(label: str) -> str:
    """Canonical form of a category name: lower case, "_" -> " ", surrounding / repeated spaces removed."""
    return " ".join(label.replace("_", " ").lower().split())


def scanrefer_class_for_nyu40(nyu40_id: int) -> str:
    """ScanRefer class name of an NYU40 id: one of the 17 named classes, else "others"."""
    return SCANREFER_NYU40_ID_TO_CLASS.get(int(nyu40_id), SCANREFER_OTHERS)


@dataclass(frozen=True)
class LabelMapEntry:
    """One row of the label map.

    Args:
        raw_category: the raw category as written in the tsv.
        nyu40_id: NYU40 id, 1..40 (`UNKNOWN_NYU40_ID` for labels missing from the tsv).
        nyu40_class: NYU40 class name from the tsv's `nyu40class` column.
        scanrefer_class: one of `SCANREFER_CLASSES` (see the module docstring for the rule).
    """

    raw_category: str
    nyu40_id: int
    nyu40_class: str
    scanrefer_class: str


UNKNOWN_ENTRY = LabelMapEntry("", UNKNOWN_NYU40_ID, UNKNOWN_NYU40_CLASS, SCANREFER_OTHERS)


@dataclass(frozen=True)
class LabelMap:
    """Raw category -> `LabelMapEntry`, read from a `scannetv2-labels.combined.tsv`.

    Args:
        source: the tsv it was read from.
        entries: normalised raw category (`normalize_label`) -> entry; read-only.
    """

    source: Path
    entries: Mapping[str, LabelMapEntry]

    def get(self, raw_label: str) -> LabelMapEntry | None:
        """The entry of `raw_label` (matched after `normalize_label`), or None when the tsv lacks it."""
        return self.entries.get(normalize_label(raw_label))

    def __contains__(self, raw_label: object) -> bool:
        return isinstance(raw_label, str) and normalize_label(raw_label) in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def default_label_map_path() -> Path | None:
    """The `scannetv2-labels.combined.tsv` inside the installed open3d wheel, or None when there is none.

    Uses `importlib.util.find_spec`, so open3d (and its native library) is never imported.
    """
    try:
        spec = importlib.util.find_spec("open3d")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _OPEN3D_LABEL_MAP
        if candidate.is_file():
            return candidate
    return None


def load_label_map(path: str | os.PathLike | None = None) -> LabelMap:
    """Read a ScanNet label map (`scannetv2-labels.combined.tsv`); results are cached per file version.

    Args:
        path: the tsv; None uses the copy inside the open3d wheel (`default_label_map_path`).

    Raises:
        LabelMapError: `path` is None and open3d ships no tsv; the file is missing or unreadable; it lacks one
            of the columns raw_category, nyu40id, nyu40class; a row has a non-integer nyu40id or one outside
            0..40; or a raw category appears twice with different NYU40 ids.
    """
    if path is None:
        found = default_label_map_path()
        if found is None:
            raise LabelMapError(
                f"no ScanNet label map given and none found inside an installed open3d wheel; pass "
                f"label_map_path=<path to {LABEL_MAP_FILENAME}> (it ships with ScanNet and with ScanRefer)"
            )
        path = found
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise LabelMapError(f"{path}: label map not found (expected a {LABEL_MAP_FILENAME}-style tsv)")
    stat = path.stat()
    return _load_label_map_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_label_map_cached(path: Path, mtime_ns: int, size: int) -> LabelMap:
    """Parse the tsv; `mtime_ns` and `size` only key the cache, so an edited file is read again."""
    del mtime_ns, size
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as error:
        raise LabelMapError(f"{path}: cannot read the label map ({error})") from error
    if not rows:
        raise LabelMapError(f"{path}: empty label map; expected a header row with {', '.join(_REQUIRED_COLUMNS)}")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        raise LabelMapError(f"{path}: label map lacks column(s) {missing}; its header is {header}")
    i_raw, i_id, i_class = (header.index(name) for name in _REQUIRED_COLUMNS)
    needed = max(i_raw, i_id, i_class) + 1
    entries: dict[str, LabelMapEntry] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < needed:
            raise LabelMapError(f"{path}, line {line_number}: {len(row)} columns, need at least {needed}")
        raw = row[i_raw].strip()
        try:
            nyu40_id = int(row[i_id])
        except ValueError:
            raise LabelMapError(
                f"{path}, line {line_number}: nyu40id {row[i_id]!r} of {raw!r} is not an integer"
            ) from None
        if not 0 <= nyu40_id <= len(NYU40_CLASSES):
            raise LabelMapError(f"{path}, line {line_number}: nyu40id {nyu40_id} of {raw!r} is outside 0..40")
        entry = LabelMapEntry(raw, nyu40_id, row[i_class].strip(), scanrefer_class_for_nyu40(nyu40_id))
        key = normalize_label(raw)
        previous = entries.get(key)
        if previous is not None and previous.nyu40_id != nyu40_id:
            raise LabelMapError(
                f"{path}, line {line_number}: raw category {raw!r} maps to nyu40id {nyu40_id} here but to "
                f"{previous.nyu40_id} on an earlier line"
            )
        entries.setdefault(key, entry)
    if not entries:
        raise LabelMapError(f"{path}: label map has a header but no rows")
    return LabelMap(source=path, entries=MappingProxyType(entries))
