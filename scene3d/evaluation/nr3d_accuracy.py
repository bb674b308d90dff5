"""ReferIt3D (Nr3D / Sr3D) accuracy: overall / easy / hard / view-dependent / view-independent.

Definitions (ReferIt3D, Achlioptas et al. 2020; `referit3d/analysis/deepnet_predictions.py` and
`analysis/utterances.py`): the listener picks one of the scene's (ground-truth) objects; it is correct when that
is the target. "easy" = the stimulus has at most 2 objects of the target's fine-grained class (`n_objects` of the
stimulus id, target included, <= 2, i.e. at most one same-class distractor); "hard" = more than 2 (two or more
distractors; the paper's text words this as "more than two distractors", the released code and every later paper
use `n_objects > 2`, which is what is used here). "view-dependent" = the lower-cased utterance tokens contain
one of `VIEW_DEPENDENT_WORDS` (whole tokens, not substrings).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["VIEW_DEPENDENT_WORDS", "is_view_dependent", "nr3d_accuracy"]

VIEW_DEPENDENT_WORDS = frozenset({"front", "behind", "back", "right", "left", "facing", "leftmost", "rightmost",
                                  "looking", "across"})
_TOKEN = re.compile(r"[a-z0-9]+")


def is_view_dependent(utterance: str | Sequence[str]) -> bool:
    """ReferIt3D's `is_explicitly_view_dependent`: a token of the utterance is in `VIEW_DEPENDENT_WORDS`.

    Args:
        utterance: the text (lower-cased and split into alphanumeric tokens here) or its token list.
    """
    tokens = _TOKEN.findall(utterance.lower()) if isinstance(utterance, str) else [t.lower() for t in utterance]
    return bool(VIEW_DEPENDENT_WORDS.intersection(tokens))


def nr3d_accuracy(correct: Iterable[bool], n_objects: Iterable[int],
                  view_dependent: Iterable[bool]) -> dict[str, float]:
    """Accuracy overall and per ReferIt3D subset (module docstring).

    Args:
        correct: per utterance, the chosen object is the target.
        n_objects: per utterance, objects of the target's class in the stimulus (target included).
        view_dependent: per utterance, `is_view_dependent(utterance)`.

    Returns:
        {"acc", "acc/easy", "acc/hard", "acc/view_dep", "acc/view_indep"} (NaN for an empty subset) and "n".
    """
    correct = np.asarray(list(correct), dtype=bool)
    n_objects = np.asarray(list(n_objects), dtype=np.int64)
    view = np.asarray(list(view_dependent), dtype=bool)
    if not (correct.shape == n_objects.shape == view.shape) or correct.size == 0:
        raise ValueError(f"one value of each per utterance and at least one utterance, got {correct.shape}, "
                         f"{n_objects.shape}, {view.shape}")
    if (n_objects < 1).any():
        raise ValueError("n_objects counts the target too, so it must be >= 1")
    easy = n_objects <= 2
    subsets = {"acc": np.ones_like(correct), "acc/easy": easy, "acc/hard": ~easy, "acc/view_dep": view,
               "acc/view_indep": ~view}
    out = {name: float(correct[mask].mean()) if mask.any() else float("nan") for name, mask in subsets.items()}
    out["n"] = float(correct.size)
    return out
