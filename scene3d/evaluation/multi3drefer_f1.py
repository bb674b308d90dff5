"""Multi3DRefer F1@k: descriptions that refer to zero, one or several objects.

Definition (Multi3DRefer, Zhang et al. 2023, its `evaluate_one_query`): per description, the predicted boxes and
the ground-truth boxes are matched one-to-one by the Hungarian algorithm on their IoU matrix (maximising the
total IoU); a matched pair with IoU >= k is a true positive; F1 = 2 TP / (|predicted| + |ground truth|); a
description with no ground-truth box scores 1 when nothing is predicted and 0 otherwise. F1@k is the mean over
descriptions. The matching uses scipy's `linear_sum_assignment` (maintained; no hand-written Hungarian).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from scene3d.evaluation.box_iou import box_iou_matrix

__all__ = ["multi3drefer_f1", "query_f1"]


def query_f1(pred_centers: np.ndarray, pred_sizes: np.ndarray, gt_centers: np.ndarray, gt_sizes: np.ndarray,
             threshold: float) -> float:
    """F1 of one description (module docstring).

    Shapes:
        pred_centers, pred_sizes: (P, 3); gt_centers, gt_sizes: (G, 3); P or G may be 0.
    """
    pred_centers, gt_centers = np.asarray(pred_centers).reshape(-1, 3), np.asarray(gt_centers).reshape(-1, 3)
    pred_sizes, gt_sizes = np.asarray(pred_sizes).reshape(-1, 3), np.asarray(gt_sizes).reshape(-1, 3)
    num_pred, num_gt = len(pred_centers), len(gt_centers)
    if num_pred == 0 and num_gt == 0:
        return 1.0
    if num_pred == 0 or num_gt == 0:
        return 0.0
    iou = box_iou_matrix(pred_centers, pred_sizes, gt_centers, gt_sizes)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    true_positives = int((iou[rows, cols] >= threshold).sum())
    return 2.0 * true_positives / (num_pred + num_gt)


def multi3drefer_f1(predictions: Sequence[tuple[np.ndarray, np.ndarray]],
                    ground_truths: Sequence[tuple[np.ndarray, np.ndarray]],
                    thresholds: Sequence[float] = (0.25, 0.5)) -> dict[str, float]:
    """Mean F1@k over descriptions.

    Args:
        predictions: per description, (centers (P, 3), sizes (P, 3)) of the predicted boxes.
        ground_truths: per description, (centers (G, 3), sizes (G, 3)) of the target boxes.

    Returns:
        {"f1@0.25": ..., "f1@0.5": ..., "n": ...}.
    """
    if len(predictions) != len(ground_truths) or not predictions:
        raise ValueError(f"one prediction per description and at least one, got {len(predictions)} predictions "
                         f"for {len(ground_truths)} descriptions")
    out = {}
    for k in thresholds:
        scores = [query_f1(p[0], p[1], g[0], g[1], k) for p, g in zip(predictions, ground_truths)]
        out[f"f1@{k:g}"] = float(np.mean(scores))
    out["n"] = float(len(predictions))
    return out
