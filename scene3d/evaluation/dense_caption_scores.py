"""Scan2Cap dense-captioning metrics m@kIoU (CIDEr / BLEU-4 / METEOR / ROUGE-L at IoU k).

Definition (Scan2Cap, Chen et al. 2021, Eq. "m@kIoU = 1/N sum_i m_i u_i"; the same formula in Vote2Cap-DETR's
`score * (iou >= k)` evaluation): for every ground-truth object i (N of them, every described object of the split)
take the proposal whose box has the highest IoU with object i's box; u_i = 1 when that IoU is >= k, else 0;
m_i = the caption metric of that proposal's caption against object i's reference descriptions. An object whose
best proposal misses the threshold (or whose scene has no proposal) therefore scores exactly as an empty caption
would, 0; it is never dropped from the mean.

Inequality: ``>=``. The benchmark code (Scan2Cap's evaluation and Vote2Cap-DETR's) keeps a proposal when
``iou >= min_iou``; the Scan2Cap paper's text says "IoU larger than k". For real boxes, an IoU exactly equal to
0.5 almost never happens, so the two only differ on constructed cases; ``>=`` reproduces the code's numbers.

Scores come from `common.metrics.caption_scores` (pycocoevalcap per-object scores; the IDF of CIDEr-D is taken
over the references of all N objects). Keys follow Scan2Cap's corpus: ``"<scene_id>|<object_id>|<object_name>"``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.metrics.caption_scores import caption_scores
from scene3d.evaluation.box_iou import box_iou_matrix

__all__ = ["CaptionTarget", "SceneCaptionPredictions", "caption_key", "dense_caption_scores", "match_captions"]

SCAN2CAP_METRICS = ("cider", "bleu4", "meteor", "rouge_l")


def caption_key(scene_id: str, object_id: int, object_name: str) -> str:
    """Scan2Cap's corpus key "scene|object_id|object_name"."""
    return f"{scene_id}|{int(object_id)}|{object_name}"


@dataclass(frozen=True)
class CaptionTarget:
    """One ground-truth object to caption: its key parts, box (centre, size) and reference descriptions."""

    scene_id: str
    object_id: int
    object_name: str
    center: np.ndarray
    size: np.ndarray
    references: tuple[str, ...]

    @property
    def key(self) -> str:
        return caption_key(self.scene_id, self.object_id, self.object_name)


@dataclass(frozen=True)
class SceneCaptionPredictions:
    """A model's proposals in one scene: boxes (P, 3) centres and sizes, and one caption per proposal."""

    centers: np.ndarray
    sizes: np.ndarray
    captions: Sequence[str]


def match_captions(targets: Sequence[CaptionTarget],
                   predictions: Mapping[str, SceneCaptionPredictions]) -> tuple[dict[str, str], np.ndarray]:
    """Per target: the caption of its highest-IoU proposal and that IoU (0 when the scene has no proposal).

    Returns:
        ({key: caption}, (N,) IoUs in target order).

    Raises:
        ValueError: a scene of the targets without predictions, or captions / boxes of different counts.
    """
    captions, ious = {}, np.zeros(len(targets), dtype=np.float64)
    for index, target in enumerate(targets):
        if target.scene_id not in predictions:
            raise ValueError(f"no predictions for scene {target.scene_id} (target {target.key}); give every scene "
                             "of the split, with empty boxes if nothing was detected")
        scene = predictions[target.scene_id]
        centers, sizes = np.asarray(scene.centers).reshape(-1, 3), np.asarray(scene.sizes).reshape(-1, 3)
        if len(scene.captions) != len(centers):
            raise ValueError(f"scene {target.scene_id}: {len(centers)} boxes but {len(scene.captions)} captions")
        if len(centers) == 0:
            captions[target.key] = ""
            continue
        row = box_iou_matrix(np.asarray(target.center)[None], np.asarray(target.size)[None], centers, sizes)[0]
        best = int(np.argmax(row))
        captions[target.key], ious[index] = str(scene.captions[best]), float(row[best])
    return captions, ious


def dense_caption_scores(targets: Sequence[CaptionTarget], predictions: Mapping[str, SceneCaptionPredictions],
                         thresholds: Sequence[float] = (0.25, 0.5)) -> dict[str, float]:
    """m@kIoU of CIDEr, BLEU-4, METEOR (skipped without Java) and ROUGE-L (module docstring).

    Returns:
        {"cider@0.5", "bleu4@0.5", "meteor@0.5", "rouge_l@0.5", same at every other k, "n"}.

    Raises:
        ValueError: no target, duplicate target keys, a target without references, a scene without predictions.
    """
    if not targets:
        raise ValueError("no ground-truth object to caption")
    keys = [t.key for t in targets]
    if len(set(keys)) != len(keys):
        raise ValueError("two targets share a key scene|object_id|name; give each object once with all its "
                         "descriptions as references")
    captions, ious = match_captions(targets, predictions)
    _, items = caption_scores(captions, {t.key: list(t.references) for t in targets}, per_item=True)
    out: dict[str, float] = {}
    for k in thresholds:
        matched = ious >= k
        for metric in SCAN2CAP_METRICS:
            if metric in items:
                out[f"{metric}@{k:g}"] = float(np.mean(np.asarray(items[metric]) * matched))
    out["n"] = float(len(targets))
    return out
