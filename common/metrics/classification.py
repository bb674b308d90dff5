"""Per-label AUROC for multi-label classification (e.g. CT findings), built on torchmetrics."""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

__all__ = ["multilabel_auroc"]


def _order_preserving_unit_scores(column: Tensor) -> Tensor:
    """Map scores to [0, 1] keeping their order and ties exactly (AUROC depends on the order only).

    torchmetrics applies a sigmoid to scores outside [0, 1]; in float32 the sigmoid of large logits
    saturates to 1.0 and turns distinct scores into ties, which changes the AUROC. Dense ranks do not.
    """
    _, dense_rank = torch.unique(column, sorted=True, return_inverse=True)  # (N,) in 0 .. U-1
    return dense_rank.double() / max(int(dense_rank.max()), 1)


def multilabel_auroc(scores: Tensor, targets: Tensor, names: list[str]) -> dict[str, float]:
    """AUROC of every label, plus their mean over the labels that have both classes.

        AUROC_k = P(score of a random positive > score of a random negative)
                  + 0.5 * P(the two scores tie)                (torchmetrics binary_auroc, per column k)
        auroc_mean = mean of AUROC_k over labels with at least one positive and one negative

    A label whose targets are all 0 or all 1 has no AUROC: its entry is NaN, it is left out of the mean and
    a warning names it (torchmetrics alone would silently return 0 for it). If no label has both classes,
    auroc_mean is NaN.

    Args:
        scores: any real-valued scores (probabilities or logits); higher means "more likely positive".
        targets: 0/1 (int, bool or float) ground truth.
        names: one unique name per label (column).

    Shapes:
        scores, targets: (N, K); names: K strings.

    Returns:
        {f"auroc_{name}": float for every name} | {"auroc_mean": float}

    Raises:
        ValueError: shapes differ or are not 2-D, N is 0, len(names) != K, duplicate names or a name "mean",
            non-finite scores, targets other than 0/1.
    """
    if not isinstance(scores, Tensor) or not isinstance(targets, Tensor):
        raise ValueError(
            f"scores and targets must be torch tensors, got {type(scores).__name__} and {type(targets).__name__}"
        )
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both have shape (N, K), got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    num_samples, num_labels = scores.shape
    if num_samples == 0:
        raise ValueError("scores and targets hold no samples (N = 0); AUROC is undefined")
    names = list(names)
    if len(names) != num_labels:
        raise ValueError(f"got {len(names)} names for {num_labels} label columns; give one name per column")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"label names must be unique, duplicated: {duplicates}")
    if "mean" in names:
        raise ValueError('a label may not be called "mean": its key would collide with "auroc_mean"')
    scores = scores.detach().cpu()
    targets = targets.detach().cpu()
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        raise ValueError(f"scores must be finite floating-point values (dtype {scores.dtype})")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError(f"targets must be 0 or 1, got values {torch.unique(targets).tolist()[:10]}")
    targets = targets.long()

    results: dict[str, float] = {}
    defined: list[float] = []
    one_class: list[str] = []
    for k, name in enumerate(names):
        positives = int(targets[:, k].sum())
        if positives in (0, num_samples):
            one_class.append(name)
            results[f"auroc_{name}"] = math.nan
            continue
        value = binary_auroc(_order_preserving_unit_scores(scores[:, k]), targets[:, k]).item()
        results[f"auroc_{name}"] = value
        defined.append(value)
    if one_class:
        warnings.warn(
            f"AUROC undefined (targets contain only one class) for {one_class}; "
            "reported as NaN and left out of auroc_mean",
            stacklevel=2,
        )
    results["auroc_mean"] = sum(defined) / len(defined) if defined else math.nan
    return results
