"""The scene3d pre-training LightningModule: object encoder + scene-graph encoder + BERT with fusion.

Objectives (each weighted in ``loss_weights``; weight 0 switches it off and its heads are not built):

============== ===================================================================================================
key            what
============== ===================================================================================================
object_phrase  CLIP InfoNCE: contextual token of a described object <-> its noun phrase ("the blue chair")
triplet_phrase CLIP InfoNCE: (subject, anchor) pair of a relational description <-> that description
               ("the lamp on the table"), the pair embedded by `RelationPairHead`
scene_text     CLIP InfoNCE: mean of the scene's object tokens <-> mean of its descriptions' embeddings
mlm            masked language modelling of the descriptions, text tokens cross-attending to their scene's
               object tokens (`common.layers.CrossAttentionFusion`)
mom            masked object modelling: objects masked in the data (their points, colour and size hidden, their
               box a point in the graph: `scene3d.data.pretrain_dataset`) and classified into the 18 ScanRefer
               classes from their position and their context
============== ===================================================================================================

``context``: "graph" contextualises object tokens with `SceneGraphEncoder` (message passing over the typed,
geometric edges); "objectwise" (the ``no_graph`` experiment) with `ObjectwiseEncoder`, per-object blocks with
the same number of layers and parameters and no exchange between objects.

Validation and test epochs also score (held-out scenes):
- ``mom/acc``: accuracy of masked-object classification, every eligible object masked alone (leave-one-out);
  ``mom/balanced_acc`` (mean per-class recall); ``mom/majority_baseline``: accuracy of always answering the most
  frequent class of the TRAIN split's targets; ``mom/n_targets``;
- ``retrieval/obj2phrase_R@k`` and ``phrase2obj_R@k`` over every described object once, with its first noun
  phrase (identical phrases count as the same answer), with ``retrieval/obj2phrase_chance_R@1``; likewise
  ``triplet2text`` / ``text2triplet`` (one row per distinct relational description) and ``scene2text``.
The test epoch draws ``figures/mom_predictions.png`` (top-down scenes, true vs predicted classes).

Distributed training: contrastive negatives come from each rank's own batch (`gather_distributed=False`: the
rows per rank differ and can be zero, and a gathering loss must be called by every rank), an objective with
nothing to score in a batch still returns an exact-zero loss (`zero_losses_of_idle_objectives`), and evaluation
metrics are computed from the results of all ranks.

Everything the module needs from the data arrives as plain Python values (`ScenePretrainDataModule.model_kwargs`)
and is stored in the checkpoint's hyper-parameters, so ``load_from_checkpoint(path, weights_only=True)`` works.
"""
from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import scatter, to_dense_batch

from common.layers.cross_attention import CrossAttentionFusion
from common.layers.projection import ProjectionHead
from common.lightning.hparams import plain_container
from common.lightning.vlp_module import VLPModule
from common.losses.contrastive import ClipInfoNCELoss
from common.losses.masked_modeling import MaskedCategoryLoss, MaskedLanguageModelingLoss, mask_tokens
from common.metrics.retrieval import retrieval_recall_at_k
from common.text.tokenizer import tokenizer_from_json
from scene3d.models.components.graph_encoder import SceneGraphEncoder
from scene3d.models.components.heads import ObjectClassHead, RelationPairHead
from scene3d.models.components.object_encoder import PointNetObjectEncoder
from scene3d.models.components.objectwise_encoder import ObjectwiseEncoder, matched_hidden_dim
from scene3d.models.components.text_encoder import SceneTextEncoder

log = logging.getLogger(__name__)

OBJECTIVES = ("object_phrase", "triplet_phrase", "scene_text", "mlm", "mom")
TEXT_OBJECTIVES = ("object_phrase", "triplet_phrase", "scene_text", "mlm")
# The modules whose parameters each objective trains (see `zero_losses_of_idle_objectives`).
OBJECTIVE_MODULES = {
    "object_phrase": ("object_proj", "phrase_proj", "object_phrase_clip", "text_encoder"),
    "triplet_phrase": ("pair_head", "triplet_text_proj", "triplet_clip", "text_encoder"),
    "scene_text": ("scene_proj", "scene_text_proj", "scene_clip", "text_encoder"),
    "mlm": ("fusion", "text_encoder"),
    "mom": ("class_head", "object_encoder"),
}
CONTEXTS = ("graph", "objectwise")
DEFAULT_OBJECT_ENCODER = {"point_channels": [32, 64, 128]}
DEFAULT_GRAPH_ENCODER = {"num_layers": 3, "num_heads": 4, "ffn_ratio": 2.0, "dropout": 0.0}
DEFAULT_TEXT_ENCODER = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": None,
                        "dropout": 0.1, "pretrained_dir": None}
DEFAULT_FUSION = {"num_layers": 1, "num_heads": 2}


def _options(name: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    given = plain_container(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {name} options {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **given}


def first_unique(keys: Sequence[Any]) -> list[int]:
    """Positions of the first occurrence of every distinct key, in order."""
    seen: set[Any] = set()
    keep = []
    for position, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(position)
    return keep


def one_per_key(*keys: Sequence[Any]) -> list[int]:
    """Positions whose key in every list is seen for the first time (greedy, in order).

    E.g. (object, phrase) pairs such that no object and no phrase appears twice: an in-batch contrastive loss
    would otherwise treat a second pair of the same object or phrase as a negative of the first.
    """
    seen: list[set[Any]] = [set() for _ in keys]
    keep = []
    for position, row in enumerate(zip(*keys)):
        if all(key not in found for key, found in zip(row, seen)):
            keep.append(position)
            for key, found in zip(row, seen):
                found.add(key)
    return keep


def _text_group_ids(texts: Sequence[str]) -> Tensor:
    """One id per distinct text (identical texts are the same retrieval answer)."""
    return torch.tensor([int(hashlib.sha1(t.encode()).hexdigest()[:12], 16) for t in texts], dtype=torch.long)


class Scene3DPretrainModule(VLPModule):
    """Pre-train object, scene-graph and text encoders on scenes with descriptions (see the module docstring).

    Args:
        tokenizer_json: the tokenizer as JSON (from the datamodule).
        class_names: names of the masked-object classes (ScanRefer's 18).
        class_counts: targets per class in the TRAIN split (majority baseline); same length as class_names.
        num_relations, edge_geometry_dim: widths of the graphs' edge_attr and edge_geom.
        context: "graph" or "objectwise" (no message passing; same parameter budget).
        dim: object token channels C.
        embed_dim: width E of the shared embedding spaces of the contrastive objectives.
        object_encoder: `PointNetObjectEncoder` options (point_channels).
        graph_encoder: `SceneGraphEncoder` options (num_layers, num_heads, ffn_ratio, dropout); "objectwise"
            uses its num_layers and dropout and matches its parameter count.
        text_encoder: `SceneTextEncoder` options (hidden_size, num_layers, num_heads, intermediate_size, dropout,
            pretrained_dir).
        fusion: cross-attention fusion for MLM (num_layers, num_heads).
        loss_weights: objective -> weight (missing keys default to 1; 0 switches an objective off).
        mlm_probability: share of description tokens masked for MLM.
        temperature: initial temperature of every contrastive loss (learnable).
        max_text_length: texts are truncated to this many tokens.
        figure_scenes: test scenes drawn in figures/mom_predictions.png (0: no figure).
        optimizer, scheduler, scheduler_interval, lr_scales: see `VLPModule`.

    Raises:
        ValueError: unknown objectives or options, every objective off, an unknown context, or class_counts of
            another length than class_names.
    """

    def __init__(
        self,
        tokenizer_json: str,
        class_names: Sequence[str],
        class_counts: Sequence[int],
        num_relations: int = 17,
        edge_geometry_dim: int = 9,
        context: str = "graph",
        dim: int = 64,
        embed_dim: int = 64,
        object_encoder: Mapping[str, Any] | None = None,
        graph_encoder: Mapping[str, Any] | None = None,
        text_encoder: Mapping[str, Any] | None = None,
        fusion: Mapping[str, Any] | None = None,
        loss_weights: Mapping[str, float] | None = None,
        mlm_probability: float = 0.15,
        temperature: float = 0.07,
        max_text_length: int = 64,
        figure_scenes: int = 3,
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        lr_scales: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         lr_scales=lr_scales)
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS} ('objectwise' = no graph), got {context!r}")
        weights = {name: 1.0 for name in OBJECTIVES}
        given = plain_container(loss_weights or {})
        unknown = set(given) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"unknown objectives {sorted(unknown)} in loss_weights; known: {list(OBJECTIVES)}")
        weights.update({k: float(v) for k, v in given.items()})
        if not any(weights.values()):
            raise ValueError("every objective has weight 0: switch on at least one in loss_weights")
        class_names, class_counts = list(plain_container(class_names)), [int(c) for c in plain_container(class_counts)]
        if len(class_names) != len(class_counts) or len(class_names) < 2:
            raise ValueError(f"class_counts ({len(class_counts)}) must give one count per class name "
                             f"({len(class_names)}), with at least 2 classes")
        object_options = _options("object_encoder", object_encoder, DEFAULT_OBJECT_ENCODER)
        graph_options = _options("graph_encoder", graph_encoder, DEFAULT_GRAPH_ENCODER)
        text_options = _options("text_encoder", text_encoder, DEFAULT_TEXT_ENCODER)
        fusion_options = _options("fusion", fusion, DEFAULT_FUSION)
        self.save_hyperparameters({
            "tokenizer_json": tokenizer_json, "class_names": class_names, "class_counts": class_counts,
            "num_relations": num_relations, "edge_geometry_dim": edge_geometry_dim, "context": context, "dim": dim,
            "embed_dim": embed_dim, "object_encoder": object_options, "graph_encoder": graph_options,
            "text_encoder": text_options, "fusion": fusion_options, "loss_weights": weights,
            "mlm_probability": mlm_probability, "temperature": temperature, "max_text_length": max_text_length,
            "figure_scenes": figure_scenes, "scheduler_interval": scheduler_interval,
        })
        self.loss_weights = weights
        self.class_names = class_names
        self.majority_class = int(np.argmax(class_counts))
        self.max_text_length = max_text_length

        self.object_encoder = PointNetObjectEncoder(dim, point_channels=object_options["point_channels"])
        graph = SceneGraphEncoder(dim, num_relations=num_relations, geometry_dim=edge_geometry_dim, **graph_options)
        if context == "graph":
            self.context_encoder: SceneGraphEncoder | ObjectwiseEncoder = graph
        else:
            budget = sum(p.numel() for p in graph.parameters())
            hidden = matched_hidden_dim(budget, dim, graph_options["num_layers"])
            self.context_encoder = ObjectwiseEncoder(dim, graph_options["num_layers"], hidden,
                                                     dropout=graph_options["dropout"])
            log.info("objectwise context encoder: hidden width %d for the graph encoder's %d parameters",
                     hidden, budget)

        self.uses_text = any(weights[name] for name in TEXT_OBJECTIVES)
        if self.uses_text:
            self.tokenizer = tokenizer_from_json(tokenizer_json)
            specials = set(self.tokenizer.all_special_ids)
            self.register_buffer("random_token_ids", torch.tensor(
                [i for i in range(len(self.tokenizer)) if i not in specials], dtype=torch.long), persistent=False)
            self.text_encoder = SceneTextEncoder(len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
                                                 max_position_embeddings=max(128, max_text_length), **text_options)
            hidden_size = self.text_encoder.hidden_size
        if weights["object_phrase"]:
            self.object_proj = ProjectionHead(dim, embed_dim)
            self.phrase_proj = ProjectionHead(hidden_size, embed_dim)
            self.object_phrase_clip = ClipInfoNCELoss(temperature, gather_distributed=False,
                                                      loss_name="object_phrase_loss")
        if weights["triplet_phrase"]:
            self.pair_head = RelationPairHead(dim, embed_dim)
            self.triplet_text_proj = ProjectionHead(hidden_size, embed_dim)
            self.triplet_clip = ClipInfoNCELoss(temperature, gather_distributed=False, loss_name="triplet_phrase_loss")
        if weights["scene_text"]:
            self.scene_proj = ProjectionHead(dim, embed_dim)
            self.scene_text_proj = ProjectionHead(hidden_size, embed_dim)
            self.scene_clip = ClipInfoNCELoss(temperature, gather_distributed=False, loss_name="scene_text_loss")
        if weights["mlm"]:
            self.fusion = CrossAttentionFusion(hidden_size, fusion_options["num_layers"], fusion_options["num_heads"],
                                               kv_dim=dim)
            self.mlm_loss = MaskedLanguageModelingLoss(loss_name="mlm_loss")
        if weights["mom"]:
            self.class_head = ObjectClassHead(dim, len(class_names))
            self.mom_loss = MaskedCategoryLoss(loss_name="mom_loss")
        if not weights["mlm"] and self.uses_text:  # parameters no objective would ever train
            self.text_encoder.mlm_transform.requires_grad_(False)
            self.text_encoder.mlm_bias.requires_grad_(False)
        if not weights["mom"]:
            self.object_encoder.mask_token.requires_grad_(False)
        self._eval_store: dict[str, list[Any]] = defaultdict(list)

    # ------------------------------------------------------------------------------------------------ encoding
    def encode_objects(self, graph: Any, masked: Tensor | None = None) -> Tensor:
        """Contextual object tokens of a (batched) scene graph from the datamodule, (N, C)."""
        tokens = self.object_encoder(graph.points, graph.pos, graph.box_size, masked)
        return self.context_encoder(tokens, graph.edge_index, graph.edge_attr, graph.edge_geom)

    def encode_scene(self, graph: Any) -> dict[str, Tensor]:
        """Object tokens (N, C) and per-scene mean tokens (B, C) of a batched scene graph."""
        objects = self.encode_objects(graph)
        return {"objects": objects, "scene": global_mean_pool(objects, graph.batch)}

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """BERT inputs of `texts` on this module's device (padded, truncated to max_text_length)."""
        if not self.uses_text:
            raise RuntimeError("this model was built without text objectives; it has no text encoder")
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_length,
                                 return_tensors="pt", return_special_tokens_mask=True)
        return {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask", "special_tokens_mask")}

    def encode_text(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token states (T, L, H), pooled embeddings (T, H) and the attention mask (T, L) of `texts`."""
        inputs = self.tokenize(texts)
        return {**self.text_encoder(inputs["input_ids"], inputs["attention_mask"]),
                "attention_mask": inputs["attention_mask"]}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Object and scene tokens of a collated batch: {"objects": (N, C), "scene": (B, C)}."""
        return self.encode_scene(batch["graph"])

    # ------------------------------------------------------------------------------------------------ losses
    def _mom_logits(self, appearance: Tensor, graph: Any, views: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits, targets and global node ids of the masked objects of every view, (M, K), (M,), (M,)."""
        source = views.source_node
        tokens = self.object_encoder.combine(appearance[source], graph.pos[source], views.masked)
        states = self.context_encoder(tokens, views.edge_index, views.edge_attr, views.edge_geom)
        logits = self.class_head(states[views.masked])
        nodes = source[views.masked]
        return logits, graph.y[nodes], nodes

    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        graph, w = batch["graph"], self.loss_weights
        appearance = self.object_encoder.appearance(graph.points, graph.box_size)
        out: dict[str, Tensor] = {}
        evaluating = stage in ("val", "test")
        if w["mom"] and batch["mom"] is not None:
            logits, targets, nodes = self._mom_logits(appearance, graph, batch["mom"])
            every = torch.ones(1, targets.numel(), dtype=torch.bool, device=targets.device)
            result = self.mom_loss(logits[None], targets[None], every)  # (M, K) -> (1, M, K): one "sequence"
            out["mom_loss"] = w["mom"] * result["mom_loss"]
            if stage == "train":  # held-out accuracy is mom/acc, over all targets of the epoch
                out["mom_acc"] = result["mom_acc"]
            if evaluating:
                self._collect_mom(batch, logits, targets, nodes)
        texts = batch["descriptions"]
        if self.uses_text and texts:
            objects = self.context_encoder(self.object_encoder.combine(appearance, graph.pos), graph.edge_index,
                                           graph.edge_attr, graph.edge_geom)
            out.update(self._text_losses(batch, objects, evaluating))
        out.update(self.zero_losses_of_idle_objectives(out))
        return out

    def zero_losses_of_idle_objectives(self, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """An exact 0 for every switched-on objective missing from `out`, attached to that objective's parameters.

        A batch may give an objective nothing to score (no relational description, no eligible object, no text).
        Returning its loss anyway, as 0 * (sum of its parameters), keeps every rank of a DDP run logging the same
        keys (epoch-end synchronisation pairs them by name) and every parameter receiving a (zero) gradient (DDP
        without find_unused_parameters requires it). Such a batch adds a 0 to that loss's epoch mean.
        """
        zeros = {}
        for objective, modules in OBJECTIVE_MODULES.items():
            if not self.loss_weights[objective] or f"{objective}_loss" in out:
                continue
            params = [p for name in modules if hasattr(self, name)
                      for p in getattr(self, name).parameters() if p.requires_grad]
            zeros[f"{objective}_loss"] = torch.stack([p.sum() for p in params]).sum() * 0.0
        return zeros

    def _text_losses(self, batch: Mapping[str, Any], objects: Tensor, evaluating: bool) -> dict[str, Tensor]:
        w, graph = self.loss_weights, batch["graph"]
        texts = batch["descriptions"]
        nodes = batch["description_nodes"]
        out: dict[str, Tensor] = {}
        inputs = self.tokenize(texts)
        described = self.text_encoder(inputs["input_ids"], inputs["attention_mask"])
        if w["object_phrase"]:
            phrases = batch["phrases"]
            unique = first_unique(phrases)
            phrase_embeddings = self.phrase_proj(self.encode_text([phrases[u] for u in unique])["pooled"])
            index_of = {phrases[u]: i for i, u in enumerate(unique)}
            # one pair per phrase and per object, so that no pair is a false negative of another
            rows = one_per_key(phrases, nodes.tolist())
            pick = torch.tensor(rows, device=self.device)
            phrase_rows = phrase_embeddings[torch.tensor([index_of[phrases[r]] for r in rows], device=self.device)]
            object_rows = self.object_proj(objects[nodes[pick]])
            out["object_phrase_loss"] = w["object_phrase"] * self.object_phrase_clip(
                object_rows, phrase_rows)["object_phrase_loss"]
            if evaluating:  # every object once, with its first phrase (identical phrases: one retrieval group)
                rows = first_unique(nodes.tolist())
                pick = torch.tensor(rows, device=self.device)
                self._store("obj", self.object_proj(objects[nodes[pick]]), phrase_embeddings[
                    torch.tensor([index_of[phrases[r]] for r in rows], device=self.device)], [phrases[r] for r in rows])
        relational = (batch["description_anchors"] >= 0).nonzero().flatten().tolist()
        if w["triplet_phrase"] and relational:
            anchors = batch["description_anchors"]
            rows = [relational[i] for i in one_per_key([texts[r] for r in relational],
                                                       [(int(nodes[r]), int(anchors[r])) for r in relational])]
            pick = torch.tensor(rows, device=self.device)
            pairs = self.pair_head(objects, nodes[pick], anchors[pick])
            sentences = self.triplet_text_proj(described["pooled"][pick])
            out["triplet_phrase_loss"] = w["triplet_phrase"] * self.triplet_clip(
                pairs, sentences)["triplet_phrase_loss"]
            if evaluating:
                self._store("triplet", pairs, sentences, [texts[r] for r in rows])
        if w["scene_text"]:
            scene_of_text = batch["description_scene"]
            num_scenes = len(batch["scene_ids"])
            text_means = scatter(described["pooled"], scene_of_text, dim=0, dim_size=num_scenes, reduce="mean")
            has_text = torch.bincount(scene_of_text, minlength=num_scenes) > 0
            scenes = self.scene_proj(global_mean_pool(objects, graph.batch, size=num_scenes))[has_text]
            scene_texts = self.scene_text_proj(text_means)[has_text]
            out["scene_text_loss"] = w["scene_text"] * self.scene_clip(scenes, scene_texts)["scene_text_loss"]
            if evaluating:
                ids = [s for s, keep in zip(batch["scene_ids"], has_text.tolist()) if keep]
                self._store("scene", scenes, scene_texts, ids)
        if w["mlm"]:
            masked_ids, labels = mask_tokens(
                inputs["input_ids"], special_tokens_mask=inputs["special_tokens_mask"],
                attention_mask=inputs["attention_mask"], mask_token_id=int(self.tokenizer.mask_token_id),
                vocab_size=self.text_encoder.vocab_size, mlm_probability=float(self.hparams["mlm_probability"]),
                random_token_ids=self.random_token_ids)
            masked_text = self.text_encoder(masked_ids, inputs["attention_mask"])
            dense, node_mask = to_dense_batch(objects, graph.batch, batch_size=len(batch["scene_ids"]))  # (B, N_max, C)
            scene_of_text = batch["description_scene"]
            fused = self.fusion(masked_text["tokens"], inputs["attention_mask"].bool(), dense[scene_of_text],
                                node_mask[scene_of_text])
            out["mlm_loss"] = w["mlm"] * self.mlm_loss(self.text_encoder.mlm_logits(fused), labels)["mlm_loss"]
        return out

    # ------------------------------------------------------------------------------------------------ evaluation
    def _store(self, kind: str, a: Tensor, b: Tensor, keys: Sequence[str]) -> None:
        self._eval_store[f"{kind}_a"].append(a.detach().float().cpu())
        self._eval_store[f"{kind}_b"].append(b.detach().float().cpu())
        self._eval_store[f"{kind}_keys"].extend(keys)

    def _collect_mom(self, batch: Mapping[str, Any], logits: Tensor, targets: Tensor, nodes: Tensor) -> None:
        store = self._eval_store
        predicted = logits.detach().argmax(dim=-1).cpu()
        store["mom_pred"].append(predicted)
        store["mom_true"].append(targets.detach().cpu())
        wanted = int(self.hparams["figure_scenes"]) - len(store["figure"])
        if wanted <= 0:
            return
        graph = batch["graph"]
        ptr = graph.ptr.cpu()
        scene_of_node = graph.batch[nodes].cpu()
        for scene in range(min(wanted, len(batch["scene_ids"]))):
            start, stop = int(ptr[scene]), int(ptr[scene + 1])
            predicted_nodes = torch.full((stop - start,), -1, dtype=torch.long)
            mine = scene_of_node == scene
            predicted_nodes[nodes.cpu()[mine] - start] = predicted[mine]
            store["figure"].append({
                "scene_id": batch["scene_ids"][scene],
                "centers": graph.pos[start:stop].detach().cpu().numpy(),
                "sizes": graph.box_size[start:stop].detach().cpu().numpy(),
                "true": graph.y[start:stop].cpu().numpy(),
                "predicted": predicted_nodes.numpy(),
            })

    def _gathered_store(self) -> dict[str, list[Any]]:
        """The evaluation store of every rank, concatenated (the store itself outside distributed runs)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._eval_store
        stores: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(stores, dict(self._eval_store))
        merged: dict[str, list[Any]] = defaultdict(list)
        for store in stores:
            for key, values in store.items():
                merged[key].extend(values)
        return merged

    def evaluation_metrics(self) -> dict[str, float]:
        """Masked-object accuracy (and its majority baseline) and retrieval recalls over the epoch's batches.

        In a distributed run every rank gathers all ranks' results first, so the metrics cover the whole split
        (DistributedSampler may repeat a few scenes to even out the ranks) and are equal on every rank.
        """
        store, metrics = self._gathered_store(), {}
        if store.get("mom_true"):
            true, predicted = torch.cat(store["mom_true"]), torch.cat(store["mom_pred"])
            metrics["mom/acc"] = float((predicted == true).double().mean())
            recalls = [float((predicted[true == k] == k).double().mean()) for k in true.unique().tolist()]
            metrics["mom/balanced_acc"] = float(np.mean(recalls))
            metrics["mom/majority_baseline"] = float((true == self.majority_class).double().mean())
            metrics["mom/n_targets"] = float(true.numel())
        retrievals = (("obj", "obj", "phrase"), ("triplet", "triplet", "text"), ("scene", "scene", "text"))
        for kind, a_name, b_name in retrievals:
            if not store.get(f"{kind}_a"):
                continue
            a, b = torch.cat(store[f"{kind}_a"]), torch.cat(store[f"{kind}_b"])
            groups = _text_group_ids(store[f"{kind}_keys"])
            recalls = retrieval_recall_at_k(a, b, ks=(1, 5, 10), a_name=a_name, b_name=b_name, group_ids=groups)
            metrics.update({f"retrieval/{name}": value for name, value in recalls.items()})
            group_share = (groups[:, None] == groups[None, :]).double().mean(dim=1)  # (n,): |G(i)| / n
            metrics[f"retrieval/{a_name}2{b_name}_chance_R@1"] = float(group_share.mean())
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._eval_store = defaultdict(list)

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for name, value in self.evaluation_metrics().items():
            self.log(f"val/{name}", value, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        for name, value in self.evaluation_metrics().items():
            self.log(name, value, sync_dist=True)
        if self.trainer.is_global_zero and self._eval_store.get("figure"):
            from scene3d.models.figures import plot_masked_object_predictions

            path = Path(self.trainer.default_root_dir) / "figures" / "mom_predictions.png"
            plot_masked_object_predictions(self._eval_store["figure"][: int(self.hparams["figure_scenes"])],
                                           self.class_names, path)
