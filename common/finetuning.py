"""How a pre-trained encoder is fine-tuned: every weight, none (frozen, head only), or LoRA adapters.

Each strategy is chosen by ``_target_`` in a config (e.g. ``model.finetuning``) and applied once to the encoder
module before the optimiser is built; the head stays trainable in every case. LoRA goes through the `peft`
library (``inject_adapter_in_model`` works on plain torch modules: no ``PreTrainedModel`` wrapper needed).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["FrozenEncoder", "FullFinetuning", "LoraAdapters"]


class FullFinetuning:
    """Train every encoder weight (the default)."""

    def apply(self, encoder: nn.Module) -> nn.Module:
        """Returns `encoder` unchanged, all parameters trainable."""
        for param in encoder.parameters():
            param.requires_grad_(True)
        return encoder


class FrozenEncoder:
    """Freeze the encoder (weights and dropout: it runs in eval mode) so only the head learns (a linear probe)."""

    def apply(self, encoder: nn.Module) -> nn.Module:
        """Returns `encoder` with no trainable parameter, kept in eval mode."""
        for param in encoder.parameters():
            param.requires_grad_(False)
        encoder.eval()
        encoder.train = _stay_in_eval.__get__(encoder)  # Lightning calls .train() every epoch; a frozen encoder stays eval
        return encoder


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


class LoraAdapters:
    """Low-rank adapters (LoRA) on the encoder's linear layers whose names end with one of `target_modules`.

    Args:
        r: adapter rank.
        alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input.
        target_modules: module name suffixes to adapt; the default fits transformers' BERT attention
            (``query`` / ``value``), which TriBERT is built from.
    """

    def __init__(self, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                 target_modules: Sequence[str] = ("query", "value")) -> None:
        if int(r) < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        self.r, self.alpha, self.dropout = int(r), int(alpha), float(dropout)
        self.target_modules = [str(name) for name in target_modules]

    def apply(self, encoder: nn.Module) -> nn.Module:
        """Inject adapters (in place) and freeze everything else in `encoder`; returns the same module.

        Raises:
            ValueError: no module of `encoder` matches `target_modules`.
        """
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.target_modules)
        try:
            encoder = inject_adapter_in_model(config, encoder)
        except ValueError as error:  # peft: "Target modules ... not found in the base model"
            raise ValueError(f"LoRA target_modules={self.target_modules} match no layer of "
                             f"{type(encoder).__name__}: {error}") from None
        for name, param in encoder.named_parameters():
            param.requires_grad_("lora_" in name)
        return encoder
