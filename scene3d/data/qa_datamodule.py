"""`QADataModule`: ScanQA questions as QA queries over a scene's proposals.

The answer vocabulary is every answer string of the TRAIN split's questions (exact strings, as ScanQA's answer
classifier uses them), most frequent first, keeping those seen at least `min_answer_count` times.

Query keys (one per question): text (the question), scene_id, question_id, answers (the reference strings;
empty for test files without answers), answer_scores ({vocabulary index: share of the question's reference
answers that are this answer}, the soft score; out-of-vocabulary answers get none), related (indices of the
proposals with the highest IoU with each object of `object_ids`: the related-object target).

SQA3D files can be converted to this format (situation + question as the question text); that reader is not
built yet.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scene3d.data.annotations import read_scanqa
from scene3d.data.finetune_datamodule import SceneFinetuneDataModule
from scene3d.data.finetune_scene import FinetuneScene
from scene3d.evaluation.box_iou import box_iou_matrix

__all__ = ["QADataModule", "build_answer_vocabulary"]


def build_answer_vocabulary(answer_lists: list[list[str]], min_count: int = 1, source: str = "train split") -> list[str]:
    """Answers seen at least `min_count` times, most frequent first (ties: alphabetical).

    Raises:
        ValueError: no answer at all, or none kept (naming `source`).
    """
    counts = Counter(answer for answers in answer_lists for answer in answers)
    if not counts:
        raise ValueError(f"{source}: the answer vocabulary would be built from an empty split (no question with "
                         "answers); the training split needs ScanQA questions with 'answers'")
    vocabulary = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
    if not vocabulary:
        raise ValueError(f"{source}: no answer occurs {min_count} times or more; lower data.min_answer_count")
    return vocabulary


class QADataModule(SceneFinetuneDataModule):
    """ScanQA data (arguments as `SceneFinetuneDataModule`, plus `min_answer_count`)."""

    default_language_file = "ScanQA_v1.0_{split}.json"

    def __init__(self, *args: Any, min_answer_count: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_answer_count = int(min_answer_count)
        self.answer_vocabulary: list[str] = []

    def build_queries(self, split: str, path: Path, scenes: Mapping[str, FinetuneScene],
                      proposals: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        entries = [q for q in read_scanqa(path) if q.scene_id in scenes]
        if split == "train":
            self.answer_vocabulary = build_answer_vocabulary([list(q.answers or ()) for q in entries],
                                                             self.min_answer_count, str(path))
        index_of = {a: i for i, a in enumerate(self.answer_vocabulary)}
        queries: dict[str, list[dict[str, Any]]] = {}
        for position, q in enumerate(entries):
            scene, props = scenes[q.scene_id], proposals[q.scene_id]
            related = []
            for object_id in q.object_ids or ():
                node = scene.node_of(object_id, f"{path} entry {position} ({q.question_id})")
                iou = box_iou_matrix(scene.prepared.centers[node][None], scene.prepared.sizes[node][None],
                                     props.centers, props.sizes)[0]
                related.append(int(np.argmax(iou)))
            answers = list(q.answers or ())
            counts = Counter(answers)
            scores = {index_of[a]: n / len(answers) for a, n in counts.items() if a in index_of}
            queries.setdefault(q.scene_id, []).append({
                "text": q.question, "scene_id": q.scene_id, "question_id": q.question_id, "answers": answers,
                "answer_scores": scores, "related": sorted(set(related)),
            })
        return queries

    def task_kwargs(self) -> dict[str, Any]:
        return {"answer_vocabulary": list(self.answer_vocabulary)}
