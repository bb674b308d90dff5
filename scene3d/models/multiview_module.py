"""`Scene3DMultiViewPretrainModule`: scene3d pre-training plus 2D-view / 3D-object / text triplet alignment.

Everything of `Scene3DPretrainModule` (its objectives and metrics unchanged), plus, for every object of the batch
with at least one view crop (`scene3d.data.multiview_datamodule`):

- its k crops go through the view encoder (chosen by ``_target_`` in ``view_encoder``; default
  `SmallCNNViewEncoder`) and are fused by attention pooling (`MultiViewObjectEncoder`): the fused view feature;
- `TripletAlignmentLoss` (``common.losses``) between the projected fused view feature, the projected contextual
  3D object token and the projected appearance phrase, each pair weighted in ``view_loss_weights``:
  ``view_object``, ``view_text``, ``object_text`` (logged as ``view_object_loss``, ``view_text_loss``,
  ``object_text_loss``). Identical phrases in a batch are kept once (they would be false negatives).

The 3D object tokens are recomputed for these terms with `encode_objects` (the parent's losses compute theirs
inside `compute_losses` without returning them): one extra object / context encoder pass per step.

Validation / test add ``retrieval/view2obj_R@k``, ``obj2view_R@k`` (over every object with a view in the split,
chance ``retrieval/view2obj_chance_R@1`` = 1 / count), and ``view2text`` / ``text2view``.
``encode_views(crops, valid)`` gives the fused view features (N, C) for downstream use.

Checkpoints: ``view_encoder`` is stored as its ``_target_`` mapping, so ``load_from_checkpoint(path,
weights_only=True)`` rebuilds it.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor

from common.layers.projection import ProjectionHead
from common.lightning.hparams import plain_container
from common.losses.triplet_alignment import TripletAlignmentLoss
from common.metrics.retrieval import retrieval_recall_at_k
from scene3d.models.components.view_encoder import MultiViewObjectEncoder
from scene3d.models.scene3d_module import Scene3DPretrainModule, _text_group_ids, one_per_key

__all__ = ["Scene3DMultiViewPretrainModule", "DEFAULT_VIEW_ENCODER"]

DEFAULT_VIEW_ENCODER = {"_target_": "scene3d.models.components.view_encoder.SmallCNNViewEncoder", "out_dim": 64,
                        "channels": [16, 32, 64]}
VIEW_PAIRS = {"view_object": "ab", "view_text": "ac", "object_text": "bc"}
VIEW_MODULES = ("view_model", "view_proj", "view_object_proj", "view_text_proj", "view_alignment")


def view_encoder_spec(value: Any) -> dict[str, Any]:
    """A plain ``{"_target_": ..., kwargs}`` mapping of a view encoder given as a mapping or a functools.partial
    (what Hydra's ``_partial_: true`` yields).

    Raises:
        ValueError: anything else, or a mapping without ``_target_``.
    """
    if isinstance(value, functools.partial):
        target = f"{value.func.__module__}.{value.func.__qualname__}"
        return {"_target_": target, **plain_container(dict(value.keywords))}
    value = plain_container(value)
    if isinstance(value, Mapping) and "_target_" in value:
        return {k: v for k, v in value.items() if k != "_partial_"}
    raise ValueError(f"view_encoder must be a mapping with _target_ (or a Hydra partial), got {value!r}")


class Scene3DMultiViewPretrainModule(Scene3DPretrainModule):
    """`Scene3DPretrainModule` plus view encoding and triplet alignment (see the module docstring).

    Args:
        view_encoder: ``{"_target_": ..., **kwargs}`` of a view encoder with an ``out_dim`` (or the partial Hydra
            builds from it with ``_partial_: true``); None: `DEFAULT_VIEW_ENCODER`.
        view_fusion: {"num_heads": ...} of the attention pooling.
        view_loss_weights: view_object, view_text, object_text -> weight (missing: 1; not all 0).
        **kwargs: `Scene3DPretrainModule` arguments.

    Raises:
        ValueError: unknown weight keys, all weights 0, text weights without a text encoder, a bad view encoder.
    """

    def __init__(self, *args: Any, view_encoder: Any = None, view_fusion: Mapping[str, Any] | None = None,
                 view_loss_weights: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = view_encoder_spec(view_encoder if view_encoder is not None else DEFAULT_VIEW_ENCODER)
        fusion = {"num_heads": 2, **(plain_container(view_fusion) or {})}
        if set(fusion) != {"num_heads"}:
            raise ValueError(f"view_fusion takes only num_heads, got {sorted(fusion)}")
        given = plain_container(view_loss_weights or {})
        unknown = set(given) - set(VIEW_PAIRS)
        if unknown:
            raise ValueError(f"unknown view_loss_weights {sorted(unknown)}; known: {list(VIEW_PAIRS)}")
        weights = {name: float(given.get(name, 1.0)) for name in VIEW_PAIRS}
        if (weights["view_text"] or weights["object_text"]) and not self.uses_text:
            raise ValueError("view_text / object_text need the text encoder: switch on a text objective in "
                             "loss_weights or set those view_loss_weights to 0")
        self.save_hyperparameters({"view_encoder": spec, "view_fusion": fusion, "view_loss_weights": weights})
        self.view_loss_weights = weights
        dim, embed_dim = int(self.hparams["dim"]), int(self.hparams["embed_dim"])
        try:
            encoder = instantiate(spec)
        except Exception as error:  # Hydra wraps import / argument errors in its own exception types
            raise ValueError(f"view_encoder {spec}: cannot be built ({error})") from None
        self.view_model = MultiViewObjectEncoder(encoder, dim, num_heads=int(fusion["num_heads"]))
        self.view_proj = ProjectionHead(dim, embed_dim)
        self.view_object_proj = ProjectionHead(dim, embed_dim)
        if weights["view_text"] or weights["object_text"]:
            self.view_text_proj = ProjectionHead(self.text_encoder.hidden_size, embed_dim)
        self.view_alignment = TripletAlignmentLoss({VIEW_PAIRS[k]: w for k, w in weights.items()},
                                                   names=("view", "object", "text"),
                                                   init_temperature=float(self.hparams["temperature"]),
                                                   gather_distributed=False)

    def encode_views(self, crops: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Per-view features (N, k, C), fused features (N, C) and has_view (N,) of object crops (N, k, S, S, 3)."""
        return self.view_model(crops, valid)

    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        out = super().compute_losses(batch, stage)
        out.update(self._view_losses(batch, stage in ("val", "test")))
        return out

    def _view_losses(self, batch: Mapping[str, Any], evaluating: bool) -> dict[str, Tensor]:
        if "view_crops" not in batch:
            raise ValueError("Scene3DMultiViewPretrainModule needs batches with view_crops / view_valid / "
                             "view_phrases: use scene3d.data.multiview_datamodule.MultiViewPretrainDataModule")
        valid = batch["view_valid"]
        rows = valid.any(dim=1).nonzero().flatten()  # objects with at least one view
        out: dict[str, Tensor] = {}
        if rows.numel() >= 2:  # InfoNCE needs a negative
            objects = self.encode_objects(batch["graph"])
            fused = self.view_model(batch["view_crops"][rows], valid[rows])["fused"]
            views, objects3d = self.view_proj(fused), self.view_object_proj(objects[rows])
            phrases = [batch["view_phrases"][i] for i in rows.tolist()]
            texts, text_rows = None, None
            if hasattr(self, "view_text_proj"):
                named = [i for i, p in enumerate(phrases) if p]
                keep = [named[j] for j in one_per_key([phrases[i] for i in named])]  # one row per distinct phrase
                if len(keep) >= 2:
                    texts = self.view_text_proj(self.encode_text([phrases[i] for i in keep])["pooled"])
                    text_rows = torch.tensor(keep, device=views.device)
            out = self.view_alignment(views, objects3d, texts, text_rows)
            if evaluating:
                keys = [f"{batch['scene_ids'][int(s)]}:{int(n)}" for s, n in
                        zip(batch["graph"].batch[rows].tolist(), rows.tolist())]
                self._store("view", views, objects3d, keys)
                if texts is not None:
                    self._store("viewtext", views[text_rows], texts, [phrases[i] for i in keep])
        return {**out, **self._idle_view_zeros(out)}

    def _idle_view_zeros(self, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Exact zeros for the view terms a batch could not score (see `zero_losses_of_idle_objectives`)."""
        missing = [self.view_alignment.keys[pair] for name, pair in VIEW_PAIRS.items()
                   if self.view_loss_weights[name] and self.view_alignment.keys[pair] not in out]
        if not missing:
            return {}
        params = [p for name in VIEW_MODULES if hasattr(self, name) for p in getattr(self, name).parameters()
                  if p.requires_grad]
        zero = torch.stack([p.sum() for p in params]).sum() * 0.0
        return {key: zero for key in missing}

    def evaluation_metrics(self) -> dict[str, float]:
        metrics = super().evaluation_metrics()
        store = self._gathered_store()
        for kind, a_name, b_name in (("view", "view", "obj"), ("viewtext", "view", "text")):
            if not store.get(f"{kind}_a"):
                continue
            a, b = torch.cat(store[f"{kind}_a"]), torch.cat(store[f"{kind}_b"])
            groups = _text_group_ids(store[f"{kind}_keys"])
            recalls = retrieval_recall_at_k(a, b, ks=(1, 5, 10), a_name=a_name, b_name=b_name, group_ids=groups)
            metrics.update({f"retrieval/{name}": value for name, value in recalls.items()})
            group_share = (groups[:, None] == groups[None, :]).double().mean(dim=1)
            metrics[f"retrieval/{a_name}2{b_name}_chance_R@1"] = float(group_share.mean())
        return metrics
