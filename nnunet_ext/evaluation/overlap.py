"""Voxel-overlap metrics: Dice, IoU, precision, recall, foreground fractions.

Empty-mask conventions (also in docs/metrics.md): when both masks are empty every overlap metric
is 1.0 (perfect agreement on "nothing there"); when exactly one is empty Dice and IoU are 0.0,
precision is 0.0 if the prediction is the non-empty one and 1.0 otherwise (nothing predicted,
nothing wrong), and recall is 0.0 either way (an empty reference with a non-empty prediction
recalls nothing; a non-empty reference with an empty prediction misses everything). Use
:func:`nnunet_ext.evaluation.empty_status` to flag such cases.

>>> import numpy as np
>>> one, none = np.array([[1, 0]], bool), np.zeros((1, 2), bool)
>>> [recall_score(p, r) for p, r in ((one, none), (none, one), (none, none))]
[0.0, 0.0, 1.0]
>>> [precision_score(p, r) for p, r in ((one, none), (none, one), (none, none))]
[0.0, 1.0, 1.0]
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ._common import as_mask, check_pair


def confusion_counts(pred, ref) -> Dict[str, int]:
    """Voxel counts of true positives, false positives, false negatives and true negatives.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape (2D or 3D)

    Returns
    -------
    dict with integer keys ``tp``, ``fp``, ``fn``, ``tn``.

    Examples
    --------
    >>> confusion_counts(np.array([[1, 1, 0]]), np.array([[0, 1, 1]]))
    {'tp': 1, 'fp': 1, 'fn': 1, 'tn': 0}
    """
    p, r = check_pair(pred, ref)
    n_p = int(np.count_nonzero(p))
    n_r = int(np.count_nonzero(r))
    tp = int(np.count_nonzero(p & r))
    return {"tp": tp, "fp": n_p - tp, "fn": n_r - tp, "tn": p.size - n_p - n_r + tp}


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient ``2|P∩R| / (|P| + |R|)``.

    Both masks empty → 1.0; exactly one empty → 0.0. Never NaN.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)

    Examples
    --------
    >>> dice_score(np.array([[1, 1, 0]], bool), np.array([[0, 1, 1]], bool))
    0.5
    """
    c = confusion_counts(pred, ref)
    denom = 2 * c["tp"] + c["fp"] + c["fn"]
    return 1.0 if denom == 0 else 2.0 * c["tp"] / denom


def iou_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard index) ``|P∩R| / |P∪R|``; both empty → 1.0.

    Examples
    --------
    >>> iou_score(np.array([[1, 1, 0]], bool), np.array([[0, 1, 1]], bool))
    0.3333333333333333
    """
    c = confusion_counts(pred, ref)
    denom = c["tp"] + c["fp"] + c["fn"]
    return 1.0 if denom == 0 else c["tp"] / denom


def precision_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Precision ``|P∩R| / |P|``; empty prediction → 1.0 (no false positives).

    Examples
    --------
    >>> precision_score(np.array([[1, 1, 0]], bool), np.array([[0, 1, 1]], bool))
    0.5
    """
    c = confusion_counts(pred, ref)
    denom = c["tp"] + c["fp"]
    return 1.0 if denom == 0 else c["tp"] / denom


def recall_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Recall (sensitivity) ``|P∩R| / |R|``; empty reference → 1.0 if the prediction is
    empty too, else 0.0 (a prediction where nothing should be is not "recalled").

    Examples
    --------
    >>> recall_score(np.array([[1, 0, 0]], bool), np.array([[1, 1, 0]], bool))
    0.5
    """
    c = confusion_counts(pred, ref)
    denom = c["tp"] + c["fn"]
    if denom == 0:
        return 1.0 if c["fp"] == 0 else 0.0
    return c["tp"] / denom


def foreground_fraction(mask: np.ndarray) -> float:
    """Fraction of the array's voxels that are foreground (0.0 for an empty mask).

    Examples
    --------
    >>> foreground_fraction(np.array([[1, 0, 0, 0]], bool))
    0.25
    """
    m = as_mask(mask)
    return float(np.count_nonzero(m)) / m.size


def overlap_metrics(pred, ref) -> Dict[str, float]:
    """All overlap metrics at once (one pass over the arrays).

    Returns
    -------
    dict with keys ``dice``, ``iou``, ``precision``, ``recall``, ``fg_fraction_pred``,
    ``fg_fraction_ref`` (conventions as in the single-metric functions).
    """
    c = confusion_counts(pred, ref)
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    n = tp + fp + fn + c["tn"]
    return {
        "dice": 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
        "precision": 1.0 if tp + fp == 0 else tp / (tp + fp),
        "recall": (1.0 if fp == 0 else 0.0) if tp + fn == 0 else tp / (tp + fn),
        "fg_fraction_pred": (tp + fp) / n,
        "fg_fraction_ref": (tp + fn) / n,
    }
