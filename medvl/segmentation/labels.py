"""Segmentation classes: which source label ids (of a label map) make up each class, and the remapping transform.

A label map from a manifest (e.g. TotalSegmentator's 117 structures, or the demo set's organ masks) holds source
ids; a fine-tuning run trains K classes, each the union of some source ids:

    classes = {"liver": ["liver"], "spleen": ["spleen"], "kidney": ["kidney_left", "kidney_right"]}

Source labels are given by id (int) or by name, resolved through ``source_labels`` (name -> id; the demo
manifest's ``organ_labels``, or a JSON file such as TotalSegmentator's ``{"1": "spleen", ...}``). Class k of
``classes`` (1-based, in order) gets every listed id; every other id becomes 0 (background).
"""
from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["RemapLabelsd", "read_source_labels", "resolve_class_map"]


def read_source_labels(source: str | Path | Mapping[Any, Any]) -> dict[str, int]:
    """Name -> id of a label map's structures, from a mapping or a JSON file, in either direction.

    Accepts ``{"liver": 5, ...}`` or ``{"5": "liver", ...}`` (TotalSegmentator's ``*_labels.json``).

    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: not a flat mapping of names and integer ids, or a name given twice.
    """
    where = "source_labels"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"source_labels file {path} does not exist")
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        where = str(path)
    if not isinstance(source, Mapping) or not source:
        raise ValueError(f"{where} must be a non-empty mapping name -> id (or id -> name)")
    out: dict[str, int] = {}
    for key, value in source.items():
        if isinstance(value, str) and str(key).lstrip("-").isdigit():
            name, label = value, int(key)  # {"5": "liver"}
        elif isinstance(value, int) and not isinstance(value, bool):
            name, label = str(key), value  # {"liver": 5}
        else:
            raise ValueError(f"{where}: entry {key!r}: {value!r} is neither name -> integer id nor id -> name")
        if name in out and out[name] != label:
            raise ValueError(f"{where}: structure {name!r} has two ids, {out[name]} and {label}")
        out[name] = label
    return out


def resolve_class_map(
    classes: Mapping[str, Sequence[int | str] | int | str], source_labels: Mapping[str, int] | None = None
) -> dict[int, int]:
    """Source label id -> class index (1..K in the order of ``classes``); ids not listed map to 0.

    Args:
        classes: class name -> source ids or names (a single id / name is accepted too). Not "background".
        source_labels: name -> id, to resolve names.

    Raises:
        ValueError: no classes, a class named "background", an empty class, a name that ``source_labels`` lacks
            (lists the known names), or a source id claimed by two classes.
    """
    if not isinstance(classes, Mapping) or not classes:
        raise ValueError("classes must map each class name to its source label ids or names, e.g. "
                         "{'liver': ['liver'], 'kidney': ['kidney_left', 'kidney_right']}")
    class_map: dict[int, int] = {}
    owner: dict[int, str] = {}
    for index, (name, members) in enumerate(classes.items(), start=1):
        if str(name).lower() == "background":
            raise ValueError("class 0 is always the background; do not list it in classes")
        members = [members] if isinstance(members, (int, str)) else list(members)
        if not members:
            raise ValueError(f"class {name!r} lists no source labels")
        for member in members:
            if isinstance(member, bool) or not isinstance(member, (int, str)):
                raise ValueError(f"class {name!r}: {member!r} is neither a label id nor a structure name")
            if isinstance(member, str):
                if source_labels is None or member not in source_labels:
                    known = sorted(source_labels) if source_labels else []
                    raise ValueError(
                        f"class {name!r}: unknown structure name {member!r}; "
                        + (f"known names: {known}" if known else "set data.source_labels=<a JSON file of structure name -> "
                                                 "label id, e.g. {\"1\": \"liver\"}>, or use label ids in data.classes")
                    )
                label = int(source_labels[member])
            else:
                label = member
            if label == 0:
                raise ValueError(f"class {name!r}: source id 0 is the background of the label map")
            if label in owner and owner[label] != name:
                raise ValueError(f"source label {member!r} (id {label}) is claimed by classes {owner[label]!r} and {name!r}")
            owner[label] = str(name)
            class_map[label] = index
    return class_map


class RemapLabelsd(MapTransform):
    """Map source label ids to class indices with a lookup table; ids not in the table become 0.

    MONAI's ``MapLabelValued`` keeps values it was not told about, so structures outside the chosen classes
    would survive as stray classes; a lookup table zeroes them.

    Args:
        keys: keys of integer label maps.
        class_map: source id -> class index (from ``resolve_class_map``).
        allow_missing_keys: skip absent keys.

    Shapes:
        (1, D, H, W) integer (or integral float) -> same shape, int64.

    Raises:
        ValueError: negative or non-integral label values (the key is named).
    """

    def __init__(self, keys: str | Sequence[str], class_map: Mapping[int, int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not class_map:
            raise ValueError("class_map is empty: resolve the classes with resolve_class_map first")
        self.class_map = {int(k): int(v) for k, v in class_map.items()}
        size = max(self.class_map) + 1
        self._table = torch.zeros(size, dtype=torch.int64)
        for source, target in self.class_map.items():
            self._table[source] = target

    def remap(self, labels: torch.Tensor, key: Hashable = "label") -> torch.Tensor:
        """The remapped copy of one label map (its MetaTensor meta, if any, kept)."""
        values = labels.as_tensor() if isinstance(labels, MetaTensor) else torch.as_tensor(labels)
        if values.is_floating_point():
            if not torch.equal(values, values.round()):
                raise ValueError(f"'{key}' holds non-integer values; give a label map (integer ids), not an image")
        values = values.long()
        if values.numel() and int(values.min()) < 0:
            raise ValueError(f"'{key}' holds negative label ids ({int(values.min())}); label maps use ids >= 0")
        inside = values < self._table.numel()
        mapped = torch.where(inside, self._table[values.clamp(max=self._table.numel() - 1)], torch.zeros_like(values))
        if isinstance(labels, MetaTensor):  # keep the geometry and the record of applied transforms
            return MetaTensor(mapped, meta=labels.meta, applied_operations=labels.applied_operations)
        return mapped

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remap(d[key], key)
        return d
