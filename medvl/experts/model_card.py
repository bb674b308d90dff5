"""The model card VILA-M3 prepends to the first user turn: one line per expert, then how to call one.

Format of ``m3/demo/gradio_m3.py``'s ``MODEL_CARDS``:

    Here is a list of available expert models:
    <VISTA3D(args)> Modality: CT, Task: segmentation, Overview: ..., Accuracy: ..., Valid args are: 'everything', \
'hepatic tumor', or 'muscles'
    <BRATS(args)> Modality: MRI, Task: segmentation, Overview: ..., Accuracy: ..., Valid args are: None
    Give the model <NAME(args)> when selecting a suitable expert model.
"""
from __future__ import annotations

from collections.abc import Iterable

from medvl.experts.expert import Expert

__all__ = ["CARD_FOOTER", "CARD_HEADER", "card_line", "model_card"]

CARD_HEADER = "Here is a list of available expert models:\n"
CARD_FOOTER = "Give the model <NAME(args)> when selecting a suitable expert model.\n"


def _valid_args(arguments: tuple[str, ...]) -> str:
    quoted = [f"'{a}'" for a in arguments]
    if not quoted:
        return "None"
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + ", or " + quoted[-1]


def card_line(expert: Expert) -> str:
    """``<NAME(args)> Modality: ..., Task: ..., Overview: ..., Accuracy: ..., Valid args are: ...`` (no newline)."""
    return (f"<{expert.name}(args)> Modality: {expert.modality}, Task: {expert.task}, Overview: {expert.overview}, "
            f"Accuracy: {expert.accuracy}, Valid args are: {_valid_args(expert.valid_arguments)}")


def model_card(experts: Iterable[Expert]) -> str:
    """The whole card (header, one line per expert, footer), or "" when there are no experts."""
    lines = [card_line(e) + "\n" for e in experts]
    return CARD_HEADER + "".join(lines) + CARD_FOOTER if lines else ""
