"""`GroundingModule`: 3D visual grounding (ScanRefer) on proposals with the pre-trained scene-language backbone.

Model: object tokens (object + scene-graph encoders) and description tokens (BERT); the description attends to
its scene's object tokens through the pre-trained fusion; `ProposalScoringHead` scores every proposal.

Losses (``loss_weights``; 0 switches a term off and its head is not built):

============= =====================================================================================================
grounding     cross-entropy over the scene's proposals, target = the proposal with the highest IoU with the
              ground-truth box (ScanRefer / 3D-VisTA)
object_cls    cross-entropy of every proposal token over the 18 ScanRefer classes (3D-VisTA's auxiliary
              object classification; proposal class = that of the ground-truth object it overlaps most)
text_cls      cross-entropy of the fused description (mean of its tokens) over the target's class (3D-VisTA's
              auxiliary text / "language" classification)
============= =====================================================================================================

Evaluation (val and test epochs, `evaluation.grounding_accuracy`): Acc@0.25 / Acc@0.5 overall / unique / multiple
of the chosen (top-scored) proposal's box against the ground-truth box, plus ``acc@k/random_baseline`` = the
expected Acc@k of choosing one of the scene's proposals uniformly at random (the mean over descriptions of the
share of the scene's proposals with IoU >= k), and ``proposal_acc`` = share choosing the training target
proposal. The test epoch writes ``predictions/scanrefer_predictions.json`` in the ScanRefer benchmark's format:
a list of {"scene_id", "object_id", "ann_id", "bbox"} with bbox the chosen box's 8 corners
(`box_iou.box_corners` order) in ScanNet's axis-aligned frame.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from common.io import atomic_write_json
from scene3d.evaluation.box_iou import box_corners, box_iou_matrix
from scene3d.evaluation.grounding_accuracy import THRESHOLDS, grounding_accuracy
from scene3d.models.components.heads import ObjectClassHead
from scene3d.models.components.proposal_scoring_head import ProposalScoringHead
from scene3d.models.finetune_module import SceneFinetuneModule

__all__ = ["GroundingModule"]

LOSSES = ("grounding", "object_cls", "text_cls")
PREDICTIONS_FILE = "scanrefer_predictions.json"


class GroundingModule(SceneFinetuneModule):
    """Grounding fine-tuning (module docstring). Arguments as `SceneFinetuneModule`, plus:

    Args:
        head: `ProposalScoringHead` options (num_layers, num_heads, hidden_dim, dropout).
        loss_weights: {"grounding", "object_cls", "text_cls"} -> weight (missing = 1).

    Raises:
        ValueError: unknown loss names, or grounding switched off.
    """

    def __init__(self, tokenizer_json: str, class_names: Sequence[str], class_counts: Sequence[int],
                 num_relations: int = 17, edge_geometry_dim: int = 9, backbone: Mapping[str, Any] | None = None,
                 init_checkpoint: str | None = None, initialised_from: str | None = None,
                 adaptation: Mapping[str, Any] | None = None, head: Mapping[str, Any] | None = None,
                 loss_weights: Mapping[str, float] | None = None, optimizer: Any = None, scheduler: Any = None,
                 scheduler_interval: str = "step", lr_scales: Mapping[str, float] | None = None) -> None:
        weights = {name: 1.0 for name in LOSSES}
        given = dict(loss_weights or {})
        unknown = set(given) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown grounding losses {sorted(unknown)} in loss_weights; known: {list(LOSSES)}")
        weights.update({k: float(v) for k, v in given.items()})
        if not weights["grounding"]:
            raise ValueError("loss_weights.grounding is 0: the proposal scores would never be trained")
        head = dict(head or {})
        super().__init__(tokenizer_json=tokenizer_json, class_names=class_names, class_counts=class_counts,
                         num_relations=num_relations, edge_geometry_dim=edge_geometry_dim, backbone=backbone,
                         init_checkpoint=init_checkpoint, initialised_from=initialised_from, adaptation=adaptation,
                         task_hparams={"head": head, "loss_weights": weights}, optimizer=optimizer,
                         scheduler=scheduler, scheduler_interval=scheduler_interval, lr_scales=lr_scales)
        self.loss_weights = weights
        c, h = self.backbone.object_dim, self.backbone.text_dim
        self.grounding_head = ProposalScoringHead(c, h, **head)
        if weights["object_cls"]:
            self.object_cls_head = ObjectClassHead(c, len(self.class_names))
        if weights["text_cls"]:
            self.text_cls_head = ObjectClassHead(h, len(self.class_names))

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Proposal logits (T, K) (-inf at padding), object tokens (N, C), fused text (T, L, H) and its mask."""
        graph, queries = batch["graph"], batch["queries"]
        objects = self.backbone.encode_objects(graph)
        text = self.backbone.encode_text([q["text"] for q in queries])
        fused = self.backbone.fuse(text, objects, graph.batch, batch["query_scene"], len(batch["scene_ids"]))
        logits = self.grounding_head(fused["objects"], fused["object_mask"], fused["text"], text["mask"])
        return {"logits": logits, "objects": objects, "text": fused["text"], "text_mask": text["mask"]}

    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        queries, w = batch["queries"], self.loss_weights
        out_model = self(batch)
        logits = out_model["logits"]
        target = torch.tensor([q["target"] for q in queries], device=logits.device)
        out: dict[str, Tensor] = {"grounding_loss": w["grounding"] * F.cross_entropy(logits, target)}
        if w["object_cls"]:
            out["object_cls_loss"] = w["object_cls"] * F.cross_entropy(
                self.object_cls_head(out_model["objects"]), batch["graph"].y)
        if w["text_cls"]:
            mask = out_model["text_mask"].unsqueeze(-1).to(out_model["text"].dtype)
            sentence = (out_model["text"] * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (T, H)
            classes = torch.tensor([q["target_class"] for q in queries], device=logits.device)
            out["text_cls_loss"] = w["text_cls"] * F.cross_entropy(self.text_cls_head(sentence), classes)
        if stage in ("val", "test"):
            self.store(self._rows_of(batch, logits.detach()))
        return out

    def _rows_of(self, batch: Mapping[str, Any], logits: Tensor) -> list[dict[str, Any]]:
        graph = batch["graph"]
        centers, _ = to_dense_batch(graph.pos, graph.batch, batch_size=len(batch["scene_ids"]))  # (B, K, 3)
        sizes, valid = to_dense_batch(graph.box_size, graph.batch, batch_size=len(batch["scene_ids"]))
        centers, sizes, valid = centers.cpu().double().numpy(), sizes.cpu().double().numpy(), valid.cpu().numpy()
        chosen = logits.argmax(dim=1).cpu().numpy()
        origins = batch["origins"].numpy()
        rows = []
        for t, (query, scene) in enumerate(zip(batch["queries"], batch["query_scene"].tolist())):
            k = valid[scene].sum()
            iou_all = box_iou_matrix(np.asarray(query["gt_center"])[None], np.asarray(query["gt_size"])[None],
                                     centers[scene, :k], sizes[scene, :k])[0]
            pick = int(chosen[t])
            rows.append({
                "key": (query["scene_id"], query["object_id"], query["ann_id"]),
                "scene_id": query["scene_id"], "object_id": query["object_id"], "ann_id": query["ann_id"],
                "iou": float(iou_all[pick]), "unique": bool(query["unique"]),
                "chance": {f"{th:g}": float((iou_all >= th).mean()) for th in THRESHOLDS},
                "hit_target": pick == query["target"],
                "bbox": box_corners(centers[scene, pick] + origins[scene], sizes[scene, pick]).tolist(),
            })
        return rows

    def evaluation_metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        metrics = grounding_accuracy([r["iou"] for r in rows], [r["unique"] for r in rows])
        for th in THRESHOLDS:
            metrics[f"acc@{th:g}/random_baseline"] = float(np.mean([r["chance"][f"{th:g}"] for r in rows]))
        metrics["proposal_acc"] = float(np.mean([r["hit_target"] for r in rows]))
        return {name: value for name, value in metrics.items() if not np.isnan(value)}

    def write_predictions(self, rows: Sequence[dict[str, Any]], folder: Path) -> None:
        atomic_write_json(folder / PREDICTIONS_FILE, [
            {"scene_id": r["scene_id"], "object_id": str(r["object_id"]), "ann_id": str(r["ann_id"]), "bbox": r["bbox"]}
            for r in rows])
