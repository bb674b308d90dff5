"""The contract of an expert tool: what its model card line says, which arguments it takes, and what it returns.

An expert is a plain object built from ``configs/experts/<name>.yaml`` (``_target_``); the tool caller only runs
experts it was given, and only with an argument from the expert's own ``valid_arguments``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re

import numpy as np

from medvl.data.volume import Volume

__all__ = ["Expert", "ExpertResult", "anonymous_volume"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")  # what medvl.experts.trigger reads as a name


@dataclass
class ExpertResult:
    """What an expert returns.

    Attributes:
        text: the result as the model reads it (e.g. "liver: 1 lesion, largest 21.0 mm; organ volume 1510 mL").
        overlay: a PNG of the CT slice with the segmentation in colours (the colours named in ``text``), or None.
        data: the same result as JSON-serialisable numbers, for evaluation and the web page.
    """

    text: str
    overlay: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)


def anonymous_volume(volume: Volume) -> Volume:
    """The volume's voxels and geometry only: its ``meta`` (source path, series UID) never reaches an expert."""
    return Volume(np.asarray(volume.array), np.asarray(volume.affine), meta={})


class Expert(ABC):
    """An expert tool with a model card line.

    Args:
        name: the trigger name, ``<NAME(arg)>`` (letters, digits, ``_`` or ``-``; starts with a letter).
        modality, task, overview: model card fields.
        accuracy: what was measured for this expert (e.g. its Dice on the demo test split); never a copied number.
        valid_arguments: the arguments it accepts; empty = it takes none (card: "Valid args are: None").
        default_argument: what ``<NAME>`` / ``<NAME()>`` means (one of ``valid_arguments``, or None when empty).

    Raises:
        ValueError: a bad name, a default that is not a valid argument, or duplicate arguments.
    """

    def __init__(self, name: str, *, modality: str, task: str, overview: str, accuracy: str,
                 valid_arguments: Sequence[str] = (), default_argument: str | None = None) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"expert name {name!r} must be an identifier such as 'CTSEG' (letters, digits, _ or -)")
        arguments = [str(a) for a in valid_arguments]
        if len(set(arguments)) != len(arguments):
            raise ValueError(f"{name}: valid_arguments lists an argument twice: {arguments}")
        if arguments and default_argument not in arguments:
            raise ValueError(f"{name}: default_argument {default_argument!r} must be one of {arguments}")
        if not arguments and default_argument is not None:
            raise ValueError(f"{name}: an expert without valid_arguments has no default_argument")
        self.name = name
        self.modality, self.task, self.overview, self.accuracy = modality, task, overview, accuracy
        self.valid_arguments: tuple[str, ...] = tuple(arguments)
        self.default_argument = default_argument

    @abstractmethod
    def run(self, volume: Volume, argument: str | None, output_dir: Path) -> ExpertResult:
        """Run on the whole volume (HU, its affine; no ``meta``) with a validated argument; may write an overlay
        PNG into ``output_dir``."""
