"""`QAModule`: 3D question answering (ScanQA) as answer classification with the pre-trained backbone.

Model: the question attends to its scene's object tokens through the pre-trained fusion; `AnswerClassifierHead`
gives logits over the training split's answer vocabulary; `ProposalScoringHead` scores which proposals the
question is about (ScanQA's object localisation).

Losses (``loss_weights``):

========== ========================================================================================================
answer     ``answer_loss`` (a `components.answer_losses` object: soft-score BCE, ScanQA's, or cross-entropy)
related    cross-entropy over the proposals against the uniform distribution over the question's related objects'
           proposals (ScanQA's related-object localisation loss, here for one or several objects); questions
           without related objects are left out; 0 switches it off (the head is still built: its top proposal
           is the submission's bbox, untrained then)
========== ========================================================================================================

Evaluation: `evaluation.qa_exact_match` on the top-10 answers (``em@1``, ``em@10``: exact strings, ScanQA's rule;
``refined_em@1`` / ``refined_em@10``: normalised), ``em@1/majority_baseline`` (always the most frequent training
answer), and in the test epoch BLEU-1..4 / METEOR / ROUGE-L / CIDEr of the top-1 answer against the references
(`common.metrics.caption_scores`, as ScanQA reports them; ``text_metrics_on_val`` adds them to validation). The
test epoch writes ``predictions/scanqa_predictions.json`` (ScanQA's submission format: scene_id, question_id,
answer_top10, bbox = 8 corners of the top related proposal, ScanNet's axis-aligned frame).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from common.io import atomic_write_json
from common.lightning.hparams import plain_container
from scene3d.evaluation.box_iou import box_corners
from scene3d.evaluation.qa_exact_match import qa_exact_match
from scene3d.models.components.answer_head import AnswerClassifierHead
from scene3d.models.components.proposal_scoring_head import ProposalScoringHead
from scene3d.models.finetune_module import SceneFinetuneModule, component_config

__all__ = ["QAModule"]

LOSSES = ("answer", "related")
PREDICTIONS_FILE = "scanqa_predictions.json"
DEFAULT_ANSWER_LOSS = {"_target_": "scene3d.models.components.answer_losses.SoftScoreBCE"}


class QAModule(SceneFinetuneModule):
    """QA fine-tuning (module docstring). Arguments as `SceneFinetuneModule`, plus:

    Args:
        answer_vocabulary: the answers (from the datamodule), most frequent first.
        answer_loss: the answer loss object or its ``_target_`` config (default soft-score BCE).
        head, related_head: `AnswerClassifierHead` / `ProposalScoringHead` options.
        loss_weights: {"answer", "related"} -> weight.
        text_metrics_on_val: also compute the pycocoevalcap scores in validation epochs (starts Java each time).

    Raises:
        ValueError: an empty vocabulary, unknown loss names, or the answer loss switched off.
    """

    def __init__(self, tokenizer_json: str, class_names: Sequence[str], class_counts: Sequence[int],
                 answer_vocabulary: Sequence[str], num_relations: int = 17, edge_geometry_dim: int = 9,
                 backbone: Mapping[str, Any] | None = None, init_checkpoint: str | None = None,
                 initialised_from: str | None = None, adaptation: Mapping[str, Any] | None = None,
                 answer_loss: Any = None, head: Mapping[str, Any] | None = None,
                 related_head: Mapping[str, Any] | None = None, loss_weights: Mapping[str, float] | None = None,
                 text_metrics_on_val: bool = False, optimizer: Any = None, scheduler: Any = None,
                 scheduler_interval: str = "step", lr_scales: Mapping[str, float] | None = None) -> None:
        vocabulary = list(plain_container(answer_vocabulary))
        if not vocabulary:
            raise ValueError("answer_vocabulary is empty: build it from a training split with answers")
        weights = {name: 1.0 for name in LOSSES}
        given = dict(loss_weights or {})
        unknown = set(given) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown QA losses {sorted(unknown)} in loss_weights; known: {list(LOSSES)}")
        weights.update({k: float(v) for k, v in given.items()})
        if not weights["answer"]:
            raise ValueError("loss_weights.answer is 0: the answer classifier would never be trained")
        loss_config, loss = component_config(answer_loss if answer_loss is not None else DEFAULT_ANSWER_LOSS)
        head, related_head = dict(head or {}), dict(related_head or {})
        super().__init__(tokenizer_json=tokenizer_json, class_names=class_names, class_counts=class_counts,
                         num_relations=num_relations, edge_geometry_dim=edge_geometry_dim, backbone=backbone,
                         init_checkpoint=init_checkpoint, initialised_from=initialised_from, adaptation=adaptation,
                         task_hparams={"answer_vocabulary": vocabulary, "answer_loss": loss_config, "head": head,
                                       "related_head": related_head, "loss_weights": weights,
                                       "text_metrics_on_val": bool(text_metrics_on_val)},
                         optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         lr_scales=lr_scales)
        self.vocabulary, self.answer_loss, self.loss_weights = vocabulary, loss, weights
        self.text_metrics_on_val = bool(text_metrics_on_val)
        c, h = self.backbone.object_dim, self.backbone.text_dim
        self.answer_head = AnswerClassifierHead(c, h, len(vocabulary), **head)
        self.related_head = ProposalScoringHead(c, h, **related_head)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Answer logits (Q, A) and related-proposal logits (Q, K) (-inf at padding)."""
        graph, queries = batch["graph"], batch["queries"]
        objects = self.backbone.encode_objects(graph)
        text = self.backbone.encode_text([q["text"] for q in queries])
        fused = self.backbone.fuse(text, objects, graph.batch, batch["query_scene"], len(batch["scene_ids"]))
        return {"answer_logits": self.answer_head(fused["text"], text["mask"], fused["objects"], fused["object_mask"]),
                "related_logits": self.related_head(fused["objects"], fused["object_mask"], fused["text"], text["mask"])}

    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        queries, w = batch["queries"], self.loss_weights
        outputs = self(batch)
        logits = outputs["answer_logits"]
        scores = torch.zeros_like(logits)
        for row, query in enumerate(queries):
            for index, value in query["answer_scores"].items():
                scores[row, int(index)] = float(value)
        out = {"answer_loss": w["answer"] * self.answer_loss(logits, scores)}
        if w["related"]:
            related = outputs["related_logits"]
            target = torch.zeros_like(related)
            for row, query in enumerate(queries):
                for k in query["related"]:
                    target[row, k] = 1.0 / len(query["related"])
            keep = target.sum(1) > 0
            log_p = torch.log_softmax(related, dim=1).masked_fill(target == 0, 0.0)  # -inf * 0 would be NaN
            out["related_loss"] = (w["related"] * -(target * log_p).sum(1)[keep].mean() if keep.any()
                                   else related.masked_fill(torch.isinf(related), 0.0).sum() * 0.0)
        if stage in ("val", "test"):
            self.store(self._rows_of(batch, logits.detach(), outputs["related_logits"].detach()))
        return out

    def _rows_of(self, batch: Mapping[str, Any], logits: Tensor, related: Tensor) -> list[dict[str, Any]]:
        graph = batch["graph"]
        centers, _ = to_dense_batch(graph.pos, graph.batch, batch_size=len(batch["scene_ids"]))
        sizes, _ = to_dense_batch(graph.box_size, graph.batch, batch_size=len(batch["scene_ids"]))
        centers, sizes = centers.cpu().double().numpy(), sizes.cpu().double().numpy()
        top = logits.topk(min(10, logits.shape[1]), dim=1).indices.cpu().tolist()
        box = related.argmax(dim=1).cpu().tolist()
        origins = batch["origins"].numpy()
        rows = []
        for t, (query, scene) in enumerate(zip(batch["queries"], batch["query_scene"].tolist())):
            rows.append({"key": query["question_id"], "scene_id": query["scene_id"], "question_id": query["question_id"],
                         "answers": list(query["answers"]), "answer_top10": [self.vocabulary[i] for i in top[t]],
                         "bbox": box_corners(centers[scene, box[t]] + origins[scene], sizes[scene, box[t]]).tolist()})
        return rows

    def evaluation_metrics(self, rows: Sequence[dict[str, Any]], text_metrics: bool = False) -> dict[str, float]:
        answered = [r for r in rows if r["answers"]]
        if not answered:
            return {}
        metrics = qa_exact_match([r["answer_top10"] for r in answered], [r["answers"] for r in answered])
        majority = self.vocabulary[0]
        metrics["em@1/majority_baseline"] = float(np.mean([majority in r["answers"] for r in answered]))
        if text_metrics:
            from common.metrics.caption_scores import caption_scores

            scores = caption_scores({r["key"]: r["answer_top10"][0] for r in answered},
                                    {r["key"]: r["answers"] for r in answered})
            metrics.update({f"answer_{name}": value for name, value in scores.items()})
        return metrics

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        rows = self._gathered_rows()
        for name, value in self.evaluation_metrics(rows, self.text_metrics_on_val).items():
            self.log(f"val/{name}", value, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        rows = self._gathered_rows()
        for name, value in self.evaluation_metrics(rows, text_metrics=True).items():
            self.log(name, value, sync_dist=False)
        if rows and self.trainer.is_global_zero:
            self.write_predictions(rows, Path(self.trainer.default_root_dir) / "predictions")

    def write_predictions(self, rows: Sequence[dict[str, Any]], folder: Path) -> None:
        atomic_write_json(folder / PREDICTIONS_FILE, [
            {"scene_id": r["scene_id"], "question_id": r["question_id"], "answer_top10": r["answer_top10"],
             "bbox": r["bbox"]} for r in rows])
