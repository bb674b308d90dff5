"""ScanRefer's grounding metrics: Acc@0.25 and Acc@0.5, overall / unique / multiple.

Definition (ScanRefer, Chen et al. 2020, and its benchmark's `eval_ref`): a description is correct at k when the
axis-aligned 3D IoU of the box of the chosen proposal with the ground-truth box is >= k. Acc@k is the share of
correct descriptions. "unique" descriptions are those whose target's ScanRefer (18-class) label occurs exactly
once among the objects that the split's ScanRefer data annotates in that scene (ScanRefer's
`unique_multiple` lookup built from `ScanRefer_filtered_<split>.json`: the classes of the annotated object ids per
scene, not of every object in the scan); "multiple" are the others.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["THRESHOLDS", "grounding_accuracy", "scanrefer_unique_mask"]

THRESHOLDS = (0.25, 0.5)


def scanrefer_unique_mask(entries: Sequence[tuple[str, int, str]],
                          class_of: Callable[[str], str] | None = None) -> np.ndarray:
    """ScanRefer's unique / multiple split of descriptions.

    Args:
        entries: one (scene_id, object_id, object_name) per description of the split (all of them: the lookup is
            built from the whole split).
        class_of: maps an `object_name` to its 18-class ScanRefer label (e.g. `labels.scanrefer_class`);
            None keeps the names as they are.

    Returns:
        (T,) bool, True where the target's class occurs once among the scene's annotated objects.
    """
    class_of = class_of or (lambda name: name)
    classes_in_scene: dict[str, dict[int, str]] = defaultdict(dict)
    for scene_id, object_id, name in entries:
        classes_in_scene[scene_id][int(object_id)] = class_of(name)
    counts: dict[str, dict[str, int]] = {}
    for scene_id, objects in classes_in_scene.items():
        per_class: dict[str, int] = defaultdict(int)
        for label in objects.values():
            per_class[label] += 1
        counts[scene_id] = per_class
    return np.array([counts[scene_id][class_of(name)] == 1 for scene_id, _, name in entries], dtype=bool)


def grounding_accuracy(ious: Iterable[float], unique: Iterable[bool],
                       thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Acc@k overall / unique / multiple (module docstring) from one IoU per description.

    Args:
        ious: IoU of the chosen proposal's box with the ground-truth box, per description.
        unique: per description, True for ScanRefer's "unique" subset (`scanrefer_unique_mask`).
        thresholds: the k of Acc@k (a description counts when IoU >= k).

    Returns:
        {"acc@0.25": ..., "acc@0.25/unique": ..., "acc@0.25/multiple": ..., same for 0.5, "n", "n/unique",
        "n/multiple"}; a subset with no description gets NaN (not 0: nothing was measured).

    Raises:
        ValueError: different lengths, or no description at all.
    """
    ious, unique = np.asarray(list(ious), dtype=np.float64), np.asarray(list(unique), dtype=bool)
    if ious.shape != unique.shape or ious.ndim != 1:
        raise ValueError(f"one IoU and one unique flag per description, got {ious.shape} and {unique.shape}")
    if ious.size == 0:
        raise ValueError("no description to score")
    metrics: dict[str, float] = {}
    subsets = {"": np.ones_like(unique), "/unique": unique, "/multiple": ~unique}
    for k in thresholds:
        correct = ious >= k
        for suffix, mask in subsets.items():
            metrics[f"acc@{k:g}{suffix}"] = float(correct[mask].mean()) if mask.any() else float("nan")
    for suffix, mask in subsets.items():
        metrics[f"n{suffix}"] = float(mask.sum())
    return metrics
