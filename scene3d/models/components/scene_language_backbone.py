"""The pre-trained encoders that every fine-tuning task starts from, taken out of `Scene3DPretrainModule`.

`SceneLanguageBackbone` holds the object encoder, the context (scene-graph) encoder, the BERT text encoder, the
text -> object cross-attention fusion (pre-trained by scene-conditioned MLM) and the tokenizer. `build_backbone`
makes one from the pre-training module's options: random weights, or the weights of a ``scene3d.train``
checkpoint (loaded with ``weights_only=True``; its architecture options and tokenizer replace the given ones,
so the weights always fit).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from common.export import load_checkpoint
from common.layers.cross_attention import CrossAttentionFusion

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURE_KEYS", "SceneLanguageBackbone", "build_backbone", "pretrained_options"]

# Options of Scene3DPretrainModule that fix the encoders' shapes (what a checkpoint must supply).
ARCHITECTURE_KEYS = ("tokenizer_json", "class_names", "class_counts", "num_relations", "edge_geometry_dim", "context",
                     "dim", "embed_dim", "object_encoder", "graph_encoder", "text_encoder", "fusion", "loss_weights",
                     "max_text_length")


class SceneLanguageBackbone(nn.Module):
    """Object, context and text encoders plus the text -> objects fusion.

    Shapes:
        encode_objects: graph (N nodes) -> (N, C); encode_text: T texts -> tokens (T, L, H), mask (T, L) bool,
        pooled (T, H); fuse: text (T, L, H), objects (N, C), scene of each node (N,), scene of each text (T,)
        -> fused text (T, L, H), dense objects (T, K, C) and their mask (T, K).
    """

    def __init__(self, object_encoder: nn.Module, context_encoder: nn.Module, text_encoder: nn.Module,
                 fusion: nn.Module, tokenizer: Any, max_text_length: int) -> None:
        super().__init__()
        self.object_encoder, self.context_encoder = object_encoder, context_encoder
        self.text_encoder, self.fusion = text_encoder, fusion
        self.tokenizer, self.max_text_length = tokenizer, max_text_length
        self.object_dim = int(fusion.kv_dim)
        self.text_dim = int(text_encoder.hidden_size)

    def encode_objects(self, graph: Any) -> Tensor:
        tokens = self.object_encoder(graph.points, graph.pos, graph.box_size)
        return self.context_encoder(tokens, graph.edge_index, graph.edge_attr, graph.edge_geom)

    def encode_text(self, texts: Sequence[str]) -> dict[str, Tensor]:
        device = next(self.text_encoder.parameters()).device
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_length,
                                 return_tensors="pt")
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        out = self.text_encoder(ids, mask)
        return {"tokens": out["tokens"], "pooled": out["pooled"], "mask": mask.bool()}

    def fuse(self, text: Mapping[str, Tensor], objects: Tensor, node_scene: Tensor, text_scene: Tensor,
             num_scenes: int) -> dict[str, Tensor]:
        dense, node_mask = to_dense_batch(objects, node_scene, batch_size=num_scenes)  # (B, K, C), (B, K)
        dense, node_mask = dense[text_scene], node_mask[text_scene]  # (T, K, C): each text sees its own scene
        fused = self.fusion(text["tokens"], text["mask"], dense, node_mask)
        return {"text": fused, "objects": dense, "object_mask": node_mask}


def pretrained_options(path: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Architecture options and state dict of a ``scene3d.train`` checkpoint.

    Raises:
        ValueError: the file is not a scene3d pre-training checkpoint (naming the missing options).
    """
    checkpoint = load_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    missing = [key for key in ARCHITECTURE_KEYS if key not in hparams]
    if missing or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a scene3d.train checkpoint (hyper-parameters {missing} or the state_dict are "
                         "missing); give a .ckpt written by python -m scene3d.train")
    return {key: hparams[key] for key in ARCHITECTURE_KEYS}, checkpoint["state_dict"]


def build_backbone(options: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None) -> SceneLanguageBackbone:
    """Build the pre-training module from `options` (random init), load `state_dict` if given, take its encoders.

    A pre-training run without MLM has no fusion: a new, randomly initialised one is made (with a warning).
    """
    from scene3d.models.scene3d_module import Scene3DPretrainModule  # the module defines the architecture

    options = dict(options)
    weights = dict(options.get("loss_weights") or {})
    if not any(weights.get(k, 1.0) for k in ("object_phrase", "triplet_phrase", "scene_text", "mlm")):
        raise ValueError("the backbone options switch every text objective off, so there is no text encoder; "
                         "fine-tuning needs one")
    module = Scene3DPretrainModule(**options)
    if state_dict is not None:
        module.load_state_dict(state_dict, strict=True)
    fusion = getattr(module, "fusion", None)
    if fusion is None:
        fusion_options = dict(options.get("fusion") or {"num_layers": 1, "num_heads": 2})
        log.warning("the pre-trained model has no fusion (mlm weight 0): a new text -> object fusion starts from "
                    "random weights")
        fusion = CrossAttentionFusion(module.text_encoder.hidden_size, int(fusion_options["num_layers"]),
                                      int(fusion_options["num_heads"]), kv_dim=int(options.get("dim", 64)))
    return SceneLanguageBackbone(module.object_encoder, module.context_encoder, module.text_encoder, fusion,
                                 module.tokenizer, int(module.max_text_length))


@torch.no_grad()
def parameter_count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
