"""The benchmarks' submission files: write, read back, and score.

- ScanRefer benchmark JSON: a list of {"scene_id", "object_id", "ann_id", "bbox"} with bbox the 8 corners of the
  predicted box (`box_iou.box_corners`), ScanNet's axis-aligned frame; ids as strings, as in the release files.
- ScanQA submission JSON: a list of {"scene_id", "question_id", "answer_top10": [10 strings, best first],
  "bbox": 8 corners of the box of the object the answer is about}.

`score_scanrefer_submission` scores a ScanRefer file against ground-truth boxes with
`grounding_accuracy.grounding_accuracy`, the same function fine-tuning evaluation uses.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from scene3d.evaluation.box_iou import box_iou_matrix, corners_to_box
from scene3d.evaluation.grounding_accuracy import grounding_accuracy

__all__ = ["read_scanqa_submission", "read_scanrefer_submission", "score_scanrefer_submission"]

Key = tuple[str, int, int]


def _load_list(path: str | os.PathLike, what: str) -> tuple[Path, list]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the {what} ({error})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: the {what} must be a JSON list, got {type(data).__name__}")
    return path, data


def read_scanrefer_submission(path: str | os.PathLike) -> dict[Key, tuple[np.ndarray, np.ndarray]]:
    """{(scene_id, object_id, ann_id): (centre (3,), size (3,))} of a ScanRefer benchmark file.

    Raises:
        ValueError: unreadable file, an entry without the four keys, a bbox that is not 8 x 3, a duplicate query.
    """
    path, data = _load_list(path, "ScanRefer predictions")
    out: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
    for index, entry in enumerate(data):
        try:
            key = (str(entry["scene_id"]), int(entry["object_id"]), int(entry["ann_id"]))
            box = corners_to_box(np.asarray(entry["bbox"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: entry {index} must have scene_id, object_id, ann_id and an 8 x 3 bbox "
                             f"({error})") from None
        if key in out:
            raise ValueError(f"{path}: entry {index} repeats the query {key}")
        out[key] = box
    return out


def read_scanqa_submission(path: str | os.PathLike) -> dict[str, dict]:
    """{question_id: {"scene_id", "answer_top10", "bbox"}} of a ScanQA submission file.

    Raises:
        ValueError: unreadable file or an entry without scene_id / question_id / a list answer_top10 / a bbox.
    """
    path, data = _load_list(path, "ScanQA predictions")
    out = {}
    for index, entry in enumerate(data):
        if not (isinstance(entry, dict) and {"scene_id", "question_id", "answer_top10", "bbox"} <= set(entry)
                and isinstance(entry["answer_top10"], list)):
            raise ValueError(f"{path}: entry {index} must have scene_id, question_id, answer_top10 (a list) and bbox")
        out[str(entry["question_id"])] = {"scene_id": entry["scene_id"], "answer_top10": list(entry["answer_top10"]),
                                          "bbox": np.asarray(entry["bbox"], dtype=np.float64)}
    return out


def score_scanrefer_submission(predictions: Mapping[Key, tuple[np.ndarray, np.ndarray]],
                               targets: Sequence[tuple[Key, np.ndarray, np.ndarray, bool]]) -> dict[str, float]:
    """Acc@k overall / unique / multiple of a submission.

    Args:
        predictions: from `read_scanrefer_submission`.
        targets: per query, (key, ground-truth centre, size, unique flag), boxes in ScanNet's axis-aligned frame.

    Raises:
        ValueError: a query without a prediction (the first few named).
    """
    missing = [key for key, *_ in targets if key not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} queries have no prediction, e.g. {missing[:3]}")
    ious = [box_iou_matrix(np.asarray(c)[None], np.asarray(s)[None], predictions[k][0][None],
                           predictions[k][1][None])[0, 0] for k, c, s, _ in targets]
    return grounding_accuracy(ious, [u for *_, u in targets])
