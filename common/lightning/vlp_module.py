"""The base LightningModule of every pre-training / fine-tuning model in the platform.

A subclass implements one method, ``compute_losses(batch, stage) -> dict``; this base class

* sums every entry whose key ends in ``_loss`` into the optimised ``loss`` (weights belong to the subclass,
  which usually multiplies each term by its configured weight before returning it),
* logs each term as ``<stage>/<name>`` and the total as ``<stage>/loss``; other scalar entries (accuracies,
  temperatures) are logged as ``<stage>/<name>`` without being optimised,
* builds the optimiser and the scheduler from *partial* callables (Hydra ``_partial_: true`` configs), putting
  biases and normalisation weights in a no-weight-decay group.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from common.checkpoint_loading import MODULE_CLASS_KEY, check_checkpoint_module, qualified_name

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]

STAGES = ("train", "val", "test")


class VLPModule(L.LightningModule):
    """Sums and logs ``*_loss`` terms; builds optimiser + scheduler from partial configs.

    Args:
        optimizer: callable taking parameter groups and returning an optimiser
            (e.g. ``functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.05)``). ``None`` -> AdamW(1e-4).
        scheduler: optional callable taking the optimiser (and, if it accepts one, ``total_steps``: filled with
            ``trainer.estimated_stepping_batches`` when not given) and returning an LR scheduler.
        scheduler_interval: "step" or "epoch".
        lr_scales: {sub-module name: factor} multiplying the optimiser's learning rate for that sub-module's
            parameters (e.g. ``{"text_encoder": 0.03}`` to fine-tune pre-trained weights gently while new layers
            learn at the full rate); the longest matching name wins; 0 freezes in effect.

    Raises:
        ValueError: on an unknown ``scheduler_interval`` or a negative / non-finite ``lr_scales`` factor; when the
            optimiser is built, a ``lr_scales`` name that matches no parameter; at run time, when
            ``compute_losses`` returns no ``*_loss`` term or a non-finite one.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        lr_scales: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.lr_scales = {str(name): float(factor) for name, factor in dict(lr_scales or {}).items()}
        bad = {name: factor for name, factor in self.lr_scales.items() if not (math.isfinite(factor) and factor >= 0)}
        if bad:
            raise ValueError(f"lr_scales factors must be finite and >= 0, got {bad}")

    # ------------------------------------------------------------------ to implement
    def compute_losses(self, batch: Any, stage: str) -> dict[str, Tensor]:
        """Return ``{"<name>_loss": scalar, ...}`` (summed and optimised) plus optional scalar metrics."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_losses(batch, stage)")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the module's class, so loaders refuse another model's checkpoint by name (see
        ``common.checkpoint_loading.check_checkpoint_module``)."""
        checkpoint[MODULE_CLASS_KEY] = qualified_name(type(self))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse (before any weight is loaded) a checkpoint of another model, e.g. when resuming."""
        check_checkpoint_module(checkpoint, type(self))

    # ------------------------------------------------------------------ steps
    def _step(self, batch: Any, stage: str) -> Tensor:
        outputs = self.compute_losses(batch, stage)
        total = sum_losses(outputs, where=f"{type(self).__name__}.compute_losses ({stage})")
        batch_size = _batch_size(batch)
        on_step = stage == "train"
        for name, value in outputs.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"{stage}/{name}", value.detach().float(), on_step=on_step, on_epoch=True,
                         batch_size=batch_size, sync_dist=stage != "train")
        self.log(f"{stage}/loss", total.detach(), on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=stage != "train")
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self, weight_decay: float | None = None) -> list[dict[str, Any]]:
        """Weights with decay; biases, norms, embeddings' scalars (ndim <= 1) without. With ``lr_scales``, each
        of the two is split further by learning-rate factor (the group's ``"lr_scale"``, applied to its lr by
        `configure_optimizers`)."""
        by_key: dict[tuple[bool, float], list[nn.Parameter]] = {}
        used: set[str] = set()
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            matches = [prefix for prefix in self.lr_scales if name == prefix or name.startswith(prefix + ".")]
            prefix = max(matches, key=len) if matches else None
            if prefix is not None:
                used.add(prefix)
            scale = self.lr_scales[prefix] if prefix is not None else 1.0
            by_key.setdefault((param.ndim <= 1, scale), []).append(param)
        unused = sorted(set(self.lr_scales) - used)
        if unused:
            top = sorted({name.split(".")[0] for name, _ in self.named_parameters()})
            raise ValueError(f"lr_scales name(s) {unused} match no trainable parameter of {type(self).__name__}; "
                             f"its top-level modules are {top}")
        groups: list[dict[str, Any]] = []
        # weights with decay first (group 0 without lr_scales, as before), then the no-decay groups
        for (no_decay, scale), params in sorted(by_key.items(), key=lambda item: (item[0][0], -item[0][1])):
            group: dict[str, Any] = {"params": params}
            if no_decay:
                group["weight_decay"] = 0.0
            elif weight_decay is not None:
                group["weight_decay"] = weight_decay
            if self.lr_scales:
                group["lr_scale"] = scale
            groups.append(group)
        return groups or [{"params": []}]

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory
        if factory is None:
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(self.parameter_groups(), lr=1e-4)
        else:
            optimizer = factory(self.parameter_groups())
        for group in optimizer.param_groups:  # before the scheduler records each group's initial lr
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        kwargs: dict[str, Any] = {}
        if _accepts_unset(self.scheduler_factory, "total_steps"):
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}


def sum_losses(outputs: Mapping[str, Any], where: str = "model") -> Tensor:
    """Sum the ``*_loss`` entries of ``outputs``.

    Raises:
        ValueError: when there is no ``*_loss`` entry, or a term is not a finite scalar (names the term).
    """
    terms = {k: v for k, v in outputs.items() if k.endswith("_loss")}
    if not terms:
        raise ValueError(f"{where} returned no '*_loss' entry (got keys {sorted(outputs)}); "
                         "switch on at least one objective")
    for name, value in terms.items():
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(f"{where}: '{name}' must be a scalar tensor, got {type(value).__name__}"
                             f"{tuple(value.shape) if isinstance(value, Tensor) else ''}")
        if not torch.isfinite(value.detach()).all():
            raise ValueError(f"{where}: '{name}' is {value.item()} (not finite); lower the learning rate, "
                             "check the inputs for NaN, or use fp32 precision")
    return torch.stack([v.reshape(()) for v in terms.values()]).sum()


def _accepts_unset(factory: Callable[..., Any], name: str) -> bool:
    """True if ``factory`` has a parameter ``name`` that a functools.partial did not already bind."""
    bound = getattr(factory, "keywords", {}) or {}
    if name in bound:
        return False
    target = getattr(factory, "func", factory)
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _batch_size(batch: Any) -> int | None:
    """Best-effort batch size so Lightning does not have to guess from nested structures."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    if isinstance(batch, Mapping):
        for value in batch.values():
            if isinstance(value, Tensor) and value.ndim > 0:
                return value.shape[0]
            if isinstance(value, list):
                return len(value)
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0].shape[0]
    return None


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int = 0,
                           total_steps: int | None = None, min_lr_ratio: float = 0.0
                           ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``.

    lr(t) = lr * t / warmup                                   for t < warmup
    lr(t) = lr * (r + (1 - r) * 0.5 * (1 + cos(pi * p)))      p = (t - warmup) / (total - warmup), clipped to 1

    Raises:
        ValueError: when ``total_steps`` is missing or not larger than ``warmup_steps``.
    """
    if total_steps is None or total_steps <= 0:
        raise ValueError("warmup_cosine_schedule needs total_steps > 0 (VLPModule fills it from the trainer)")
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["VLPModule", "sum_losses", "warmup_cosine_schedule", "STAGES"]
