"""`SceneFinetuneModule`: what the fine-tuning tasks share (backbone, fine-tuning mode, evaluation store, outputs).

Backbone: `scene_language_backbone.build_backbone` with the pre-training module's options: from random weights,
or from ``init_checkpoint`` (a ``scene3d.train`` checkpoint, read with ``weights_only=True``), whose architecture
options and tokenizer then replace the configured ones. The hyper-parameters saved in a fine-tuned checkpoint
are the resolved options with ``init_checkpoint`` cleared (``initialised_from`` keeps the path), so
``load_from_checkpoint(path, weights_only=True)`` rebuilds the model without the pre-training file.

Mode (``adaptation``): a `components.adaptation` config (``_target_``), applied to the backbone after the
weights are loaded (full / frozen / LoRA).

A subclass builds its heads, implements `compute_losses` (storing evaluation rows with `store`) and
`evaluation_metrics(rows)` / `write_predictions(rows, folder)`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from common.lightning.hparams import plain_container
from common.lightning.vlp_module import VLPModule
from scene3d.models.components.scene_language_backbone import (
    ARCHITECTURE_KEYS,
    build_backbone,
    parameter_count,
    pretrained_options,
)

log = logging.getLogger(__name__)

__all__ = ["SceneFinetuneModule"]

DATA_KEYS = ("tokenizer_json", "class_names", "class_counts", "num_relations", "edge_geometry_dim")


class SceneFinetuneModule(VLPModule):
    """Shared base of `GroundingModule` and `QAModule` (module docstring).

    Args:
        tokenizer_json, class_names, class_counts, num_relations, edge_geometry_dim: from the datamodule (the
            tokenizer is replaced by the checkpoint's when ``init_checkpoint`` is given).
        backbone: `Scene3DPretrainModule` architecture options (context, dim, embed_dim, object_encoder,
            graph_encoder, text_encoder, fusion, loss_weights, max_text_length); ignored with ``init_checkpoint``.
        init_checkpoint: a ``scene3d.train`` checkpoint to start from, or None (random init).
        initialised_from: provenance only (set when saving).
        adaptation: the fine-tuning mode's config (``_target_``), None = full fine-tuning.
        task_hparams: the subclass's own hyper-parameters (saved too).
        optimizer, scheduler, scheduler_interval, lr_scales: see `VLPModule`.
    """

    def __init__(self, *, tokenizer_json: str, class_names: Sequence[str], class_counts: Sequence[int],
                 num_relations: int, edge_geometry_dim: int, backbone: Mapping[str, Any] | None,
                 init_checkpoint: str | None, initialised_from: str | None, adaptation: Mapping[str, Any] | None,
                 task_hparams: Mapping[str, Any], optimizer: Any = None, scheduler: Any = None,
                 scheduler_interval: str = "step", lr_scales: Mapping[str, float] | None = None) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         lr_scales=lr_scales)
        state_dict = None
        if init_checkpoint:
            options, state_dict = pretrained_options(str(init_checkpoint))
            initialised_from = str(init_checkpoint)
            log.info("backbone initialised from %s", init_checkpoint)
        else:
            given = dict(plain_container(backbone) or {})
            unknown = set(given) - set(ARCHITECTURE_KEYS)
            if unknown:
                raise ValueError(f"unknown backbone options {sorted(unknown)}; known: {list(ARCHITECTURE_KEYS[5:])}")
            options = {**given, "tokenizer_json": tokenizer_json, "class_names": list(plain_container(class_names)),
                       "class_counts": [int(c) for c in plain_container(class_counts)],
                       "num_relations": int(num_relations), "edge_geometry_dim": int(edge_geometry_dim)}
        options = plain_container(options)
        self.backbone = build_backbone(options, state_dict)
        adaptation, adapt = component_config(adaptation)
        if adapt is not None:
            adapt(self.backbone)
        self.save_hyperparameters({
            **{key: options[key] for key in DATA_KEYS},
            "backbone": {key: value for key, value in options.items() if key not in DATA_KEYS},
            "init_checkpoint": None, "initialised_from": initialised_from, "adaptation": adaptation,
            **plain_container(dict(task_hparams)), "scheduler_interval": scheduler_interval,
        })
        self.class_names = list(options["class_names"])
        log.info("backbone: %d parameters, %d trained", parameter_count(self.backbone),
                 parameter_count(self.backbone, trainable_only=True))
        self._rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ evaluation plumbing
    def store(self, rows: Sequence[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    def on_validation_epoch_start(self) -> None:
        self._rows = []

    on_test_epoch_start = on_validation_epoch_start

    def _gathered_rows(self) -> list[dict[str, Any]]:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._rows
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, self._rows)
        # DistributedSampler may repeat items to even out ranks: keep each query once
        seen, rows = set(), []
        for row in (r for part in gathered for r in part):
            if row["key"] not in seen:
                seen.add(row["key"])
                rows.append(row)
        return rows

    def evaluation_metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def write_predictions(self, rows: Sequence[dict[str, Any]], folder: Path) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        rows = self._gathered_rows()
        if rows:
            for name, value in self.evaluation_metrics(rows).items():
                self.log(f"val/{name}", value, sync_dist=False, rank_zero_only=False)

    def on_test_epoch_end(self) -> None:
        rows = self._gathered_rows()
        if not rows:
            return
        for name, value in self.evaluation_metrics(rows).items():
            self.log(name, value, sync_dist=False)
        if self.trainer.is_global_zero:
            self.write_predictions(rows, Path(self.trainer.default_root_dir) / "predictions")


def component_config(adaptation: Any) -> tuple[dict[str, Any] | None, Any]:
    """(config to save, object) of a component (fine-tuning mode, loss) given as a ``_target_`` config or as the object Hydra built
    from one (its constructor arguments are its attributes)."""
    if adaptation is None:
        return None, None
    if isinstance(adaptation, Mapping) or hasattr(adaptation, "keys"):
        config = dict(plain_container(adaptation))
        return config, instantiate(config)
    cls = type(adaptation)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **plain_container(dict(vars(adaptation)))}, adaptation
