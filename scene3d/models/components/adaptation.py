"""How the pre-trained backbone is fine-tuned: config group ``adaptation`` (``adaptation=full`` | ``frozen`` | ``lora``).

Each is a callable applied to the `SceneLanguageBackbone` once, when the fine-tuning module is built (also when a
fine-tuned checkpoint is loaded, so a LoRA model's parameter names match its checkpoint). The task heads are
always trained.

- `FullFinetune`: every backbone parameter is trained.
- `FrozenBackbone`: no backbone parameter is trained (linear / head-only probing of the pre-trained features).
- `LoraAdapters`: low-rank adapters through peft's `inject_adapter_in_model` on the `target_modules` (names of
  Linear layers inside the backbone, matched as peft matches them: a full name or a suffix); the backbone's own
  weights stay frozen and only the adapters train. Merge before exporting: `merge_lora(backbone)`.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["FrozenBackbone", "FullFinetune", "LoraAdapters", "merge_lora"]


class FullFinetune:
    """Train every backbone parameter."""

    def __call__(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(True)
        return backbone


class FrozenBackbone:
    """Train no backbone parameter (the heads only)."""

    def __call__(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(False)
        return backbone


class LoraAdapters:
    """LoRA adapters (peft) on the named Linear layers of the backbone.

    Args:
        r: adapter rank. alpha: scaling numerator (scale = alpha / r). dropout: dropout on the adapter input.
        target_modules: module names (or name suffixes) to adapt, e.g. BERT's "query", "key", "value".

    Raises:
        ValueError: r < 1 or no target module (at construction); a name that matches no module of the backbone
            (when applied; peft's error, re-raised with the backbone's Linear names).
    """

    def __init__(self, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 target_modules: Sequence[str] = ("query", "key", "value")) -> None:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be an int >= 1, got {r!r}")
        self.target_modules = list(target_modules)
        if not self.target_modules:
            raise ValueError("LoRA needs at least one target module name")
        self.r, self.alpha, self.dropout = r, float(alpha), float(dropout)

    def __call__(self, backbone: nn.Module) -> nn.Module:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.target_modules, bias="none")
        backbone.requires_grad_(False)
        try:
            inject_adapter_in_model(config, backbone)
        except ValueError as error:
            linears = sorted({n.split(".")[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"LoRA target_modules {self.target_modules}: {error}; Linear layer names in the "
                             f"backbone: {linears}") from None
        for name, param in backbone.named_parameters():
            param.requires_grad_("lora_" in name)
        return backbone


def merge_lora(backbone: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base weight (in place) and unwrap the layers: plain torch modules again."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(backbone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            setattr(parent, child, module.get_base_layer())
    return backbone
