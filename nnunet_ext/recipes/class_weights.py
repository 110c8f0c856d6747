"""Class weights from label frequencies, and a plain-words account of which class they favour.

``auto`` class weights are a clipped inverse frequency:

    w_c = min(max, (f_max / f_c) ** power)

with f_c the fraction of labelled voxels of class c (softmax labels: background included, ignored voxels
and voxels outside nnU-Net's crop excluded) or the fraction of labelled voxels inside region c (sigmoid
regions), and f_max the largest of them. The most frequent class gets weight 1, rarer ones more, never
above ``max`` (default 10); a class that never occurs gets ``max``. ``power`` 0.5 gives the milder
square-root inverse frequency.

Examples
--------
>>> auto_class_weights([0.98, 0.02], power=1.0, max_weight=10.0)
[1.0, 10.0]
>>> auto_class_weights([0.6, 0.3, 0.1], power=1.0, max_weight=10.0)
[1.0, 2.0, 6.0]
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = ["label_fractions", "auto_class_weights", "describe_class_weights"]


def label_fractions(segmentations: Iterable[np.ndarray], classes: Sequence[int | Sequence[int]], regions: bool,
                    ignore_label: int | None = None) -> list[float]:
    """Fraction of labelled voxels per class (softmax) or inside each region (sigmoid).

    Parameters
    ----------
    segmentations : iterable of int arrays
        Label maps of any shape (nnU-Net's preprocessed ``seg``: -1 outside the crop, counted as unlabelled).
    classes : sequence
        softmax: every label value, background first (e.g. ``[0, 1, 2]``); sigmoid: one tuple of labels
        per region.
    regions : bool
        Whether ``classes`` are regions.
    ignore_label : int, optional
        Voxels with this label are not counted.

    Returns
    -------
    list of float
        One fraction per entry of ``classes``; zeros if nothing is labelled.
    """
    counts = np.zeros(len(classes), dtype=np.float64)
    total = 0
    for seg in segmentations:
        seg = np.asarray(seg)
        valid = seg >= 0
        if ignore_label is not None:
            valid &= seg != ignore_label
        values, numbers = np.unique(seg[valid], return_counts=True)
        histogram = dict(zip(values.tolist(), numbers.tolist()))
        total += int(numbers.sum())
        for i, c in enumerate(classes):
            members = c if regions else (c,)
            counts[i] += sum(histogram.get(int(v), 0) for v in np.atleast_1d(members))
    return (counts / total).tolist() if total else [0.0] * len(classes)


def auto_class_weights(fractions: Sequence[float], power: float = 1.0, max_weight: float = 10.0) -> list[float]:
    """Clipped inverse frequency ``min(max_weight, (f_max / f_c) ** power)`` (see the module docstring)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.size == 0 or f.max() <= 0:
        return [1.0] * int(f.size)
    with np.errstate(divide="ignore"):
        weights = np.where(f > 0, (f.max() / np.where(f > 0, f, 1.0)) ** power, np.inf)
    return [round(float(w), 6) for w in np.minimum(weights, max_weight)]


def describe_class_weights(weights: Sequence[float], names: Sequence[str], fractions: Sequence[float] | None,
                           origin: str, regions: bool) -> list[str]:
    """Log lines: every class with its weight (and frequency), then which class is up-weighted in plain
    words, and a warning when the most frequent class gets the largest weight (a reversed list)."""
    kind = "region" if regions else "class"
    parts = []
    for i, (name, w) in enumerate(zip(names, weights)):
        share = f" ({100 * fractions[i]:.3g} % of labelled voxels)" if fractions is not None else ""
        parts.append(f"{name} {w:.4g}{share}")
    lines = [f"{kind} weights ({origin}): " + ", ".join(parts)]
    w = np.asarray(weights, dtype=np.float64)
    if w.size < 2 or np.allclose(w, w[0]):
        lines.append(f"every {kind} has the same weight: no {kind} is up-weighted")
        return lines
    top, bottom = int(w.argmax()), int(w.argmin())
    ratio = w[top] / w[bottom] if w[bottom] > 0 else float("inf")
    lines.append(f"'{names[top]}' is up-weighted: an error on a '{names[top]}' voxel counts {ratio:.3g}× an error "
                 f"on a '{names[bottom]}' voxel")
    if fractions is not None and len(fractions) == w.size and max(fractions) > 0:
        frequent = int(np.argmax(fractions))
        if frequent == top:
            lines.append(f"WARNING: '{names[top]}' is the most frequent {kind} and gets the largest weight; class "
                         f"weights usually favour rare {kind}s. Check the order (softmax: background first)")
    return lines
