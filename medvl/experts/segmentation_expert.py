"""The segmentation expert: a MONAI bundle on the whole volume (sliding windows inside the bundle), the structures
found with their volumes in mL, and an overlay PNG.

    <CTSEG(group)>  -> labels = bundle(volume) -> for each structure of the group: voxels x voxel volume = mL
                    -> "CTSEG segmented 'everything': liver 1510.2 mL (red), spleen 221.3 mL (green); not found: ..."

Arguments are label groups, VILA-M3's ``label_groups_dict.json`` shape: ``{group: {structure name: label id}}``, a
group may instead name a label-dict JSON file (``{"name": id}``) relative to the groups file, as VILA-M3's
``"everything": "../experts/vista3d/label_dict.json"``; when that file is absent, the group is every class of the
bundle's metadata.json. Without a groups file the groups are ``everything`` and one per class of the bundle.
Without ``bundle_dir`` the bundle is the default one, trained on the demo set on first use
(``medvl.experts.default_bundle``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.volume import Volume
from medvl.experts.default_bundle import DEFAULT_BUNDLE_OVERRIDES, ensure_default_bundle
from medvl.experts.expert import Expert, ExpertResult
from medvl.experts.monai_bundle import BundleError, MonaiBundle, bundle_eval_metrics
from medvl.experts.overlay import write_overlay
from medvl.experts.regions import voxel_volume_ml

__all__ = ["DEFAULT_CLASSES", "SegmentationExpert", "read_label_groups"]

log = logging.getLogger(__name__)

#: Classes of the default bundle (configs/data/medvl_segmentation.yaml), known before it is built.
DEFAULT_CLASSES = {1: "liver", 2: "spleen", 3: "kidney"}
EVERYTHING = "everything"


def read_label_groups(path: str | Path, bundle_classes: Mapping[int, str]) -> dict[str, dict[str, int]]:
    """``{group: {structure: label id}}`` from a VILA-M3 ``label_groups_dict.json``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON, or a group that is neither a mapping of names to integer ids nor a file name.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label groups file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must map group names to {{structure: label id}} (VILA-M3's label_groups_dict.json)")
    groups: dict[str, dict[str, int]] = {}
    for group, members in raw.items():
        if isinstance(members, str):  # a label-dict file, relative to the groups file
            target = (path.parent / members).resolve()
            if target.is_file():
                members = json.loads(target.read_text(encoding="utf-8"))
            elif bundle_classes:
                log.warning("label group %r names %s, which does not exist; using the bundle's classes", group, target)
                members = {name: label for label, name in bundle_classes.items() if label != 0}
            else:
                raise ValueError(f"{path}: group {group!r} names {target}, which does not exist, and the bundle's "
                                 "metadata.json lists no classes")
        if not isinstance(members, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in members.values()):
            raise ValueError(f"{path}: group {group!r} must map structure names to label ids > 0, got {members!r}")
        groups[str(group)] = {str(k): int(v) for k, v in members.items()}
    return groups


def _accuracy_text(metrics: Mapping[str, float]) -> str:
    dice = {k.rsplit("/", 1)[-1]: v for k, v in metrics.items() if k.startswith("test/dice/")}
    if not dice:
        return "not measured (the bundle's metadata.json holds no test Dice)"
    return "Dice on the demo test split: " + ", ".join(f"{n} {v:.2f}" for n, v in dice.items())


class SegmentationExpert(Expert):
    """Segment with a MONAI bundle; report the structures of a label group with their volumes and an overlay.

    Args:
        bundle_dir: the MONAI bundle folder; None = the default bundle (built on first use under ``default_root``).
        label_groups: a VILA-M3 ``label_groups_dict.json``; None = ``everything`` + one group per bundle class.
        default_root, data_dir: where the default bundle and the demo data it trains on live.
        default_overrides: extra ``medvl_segment`` overrides of the default bundle's training.
        input_key, overrides: see ``MonaiBundle`` (for bundles with other config keys).
        label_prompt_key: a config key that gets the group's label ids (prompt-driven bundles such as VISTA3D).
        accuracy: the card's Accuracy; None = the test Dice in the bundle's metadata.json.
        name, modality, overview, default_argument: model card fields (see ``Expert``).

    Raises:
        BundleError / ValueError / FileNotFoundError: a bad bundle folder or groups file.
    """

    def __init__(self, bundle_dir: str | Path | None = None, label_groups: str | Path | None = None, *,
                 default_root: str | Path = "data/experts/default_segmentation", data_dir: str | Path = "data",
                 default_overrides: Sequence[str] = (), input_key: str = "input_file",
                 overrides: Mapping[str, Any] | None = None, label_prompt_key: str | None = None,
                 accuracy: str | None = None, name: str = "CTSEG", modality: str = "CT",
                 overview: str = "a MONAI bundle segmenting the whole CT volume with sliding windows; gives the "
                                 "volume of each structure in mL and an overlay",
                 default_argument: str = EVERYTHING) -> None:
        self._default = bundle_dir is None
        self._default_root, self._data_dir = Path(default_root), Path(data_dir)
        self._default_overrides = list(default_overrides)
        self._bundle_kwargs = {"input_key": input_key, "overrides": dict(overrides or {})}
        self._bundle: MonaiBundle | None = None
        folder = self._default_root / "bundle" if self._default else Path(bundle_dir).expanduser()
        if not self._default:
            self._bundle = MonaiBundle(folder, **self._bundle_kwargs)
        classes = self._bundle.class_names() if self._bundle else DEFAULT_CLASSES
        self.classes = {k: v for k, v in classes.items() if k != 0}
        if label_groups is not None:
            self.groups = read_label_groups(label_groups, self.classes)
        else:
            if not self.classes:
                raise BundleError(f"{folder}: metadata.json lists no pred_classes; give a label_groups file")
            self.groups = {EVERYTHING: {n: k for k, n in self.classes.items()},
                           **{n: {n: k} for k, n in self.classes.items()}}
        self.label_prompt_key = label_prompt_key
        if accuracy is None:
            measured = bundle_eval_metrics(folder) if folder.is_dir() else {}
            accuracy = _accuracy_text(measured) if measured or not self._default else (
                "measured when the default bundle is first built (test Dice in its metadata.json)")
        super().__init__(name, modality=modality, task="segmentation", overview=overview, accuracy=accuracy,
                         valid_arguments=list(self.groups), default_argument=default_argument)
        self._lock = threading.Lock()
        self._cache: tuple[str, np.ndarray] | None = None

    def bundle(self) -> MonaiBundle:
        """The bundle in use (the default one is trained here on first use)."""
        if self._bundle is None:
            folder = ensure_default_bundle(self._default_root, self._data_dir, DEFAULT_BUNDLE_OVERRIDES,
                                           self._default_overrides)
            self._bundle = MonaiBundle(folder, **self._bundle_kwargs)
        return self._bundle

    def segment(self, volume: Volume, group: str | None = None) -> np.ndarray:
        """The label map of ``volume`` (the last volume's is kept, so a measurement after a segmentation reuses it).

        Shapes:
            volume.array (X, Y, Z) -> (X, Y, Z) int32
        """
        key = hashlib.sha1(np.ascontiguousarray(volume.array).tobytes() + volume.affine.tobytes()).hexdigest()
        extra = None
        if self.label_prompt_key:  # prompt-driven bundles segment only the asked group
            extra = {self.label_prompt_key: sorted(self.groups[group or self.default_argument].values())}
            key += f":{group}"
        with self._lock:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        labels = self.bundle().segment(volume, extra)
        with self._lock:
            self._cache = (key, labels)
        return labels

    def run(self, volume: Volume, argument: str | None, output_dir: Path) -> ExpertResult:
        group_name = argument or self.default_argument
        group = self.groups[group_name]
        labels = self.segment(volume, group_name)
        unit_ml = voxel_volume_ml(volume.spacing)
        found = {name: label for name, label in group.items() if (labels == label).any()}
        missing = [name for name in group if name not in found]
        overlay, colours, slice_index = None, {}, None
        if found:
            index = list(self.groups).index(group_name)  # the file name never holds the argument text
            overlay, colours, slice_index = write_overlay(
                volume.array, volume.affine, labels, {label: name for name, label in found.items()},
                Path(output_dir) / f"{self.name.lower()}_overlay_{index}.png")
        structures = {name: {"voxels": int((labels == label).sum()),
                             "volume_ml": round(float((labels == label).sum()) * unit_ml, 1),
                             "colour": colours.get(name)} for name, label in found.items()}
        parts = [f"{name} {s['volume_ml']:.1f} mL ({s['colour']})" for name, s in structures.items()]
        text = f"{self.name} segmented '{group_name}': " + ("; ".join(parts) if parts else "no structure found")
        if missing:
            text += "; not found: " + ", ".join(missing)
        if overlay is not None:
            text += f". Overlay: axial slice {slice_index} with the colours named."
        return ExpertResult(text=text, overlay=overlay,
                            data={"group": group_name, "structures": structures, "missing": missing,
                                  "slice": slice_index})
