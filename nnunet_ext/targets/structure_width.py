"""How thick the structures of a label map are, in the unit the soft skeleton works in (pure NumPy/SciPy).

The soft skeleton of clDice / cbDice (:func:`nnunet_ext.losses.soft_skeleton.soft_skeleton`) erodes with the
cross-shaped (4- / 6-neighbour) structuring element: ``k`` erosions remove every voxel whose city-block
(taxicab) distance to the background is at most ``k``. A structure is thinned to a centre line, and so seen
by the term, only when the iteration count reaches its depth along its medial ridge (tested: a tube whose
centre line has city-block depth ``D`` gets a non-empty soft skeleton from ``k = D - 1`` iterations on).
These functions measure that depth on ground-truth masks so that the iteration count can be chosen from
the data instead of being hard-coded.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ridge_depths", "ridge_depth_histogram", "iterations_from_histogram", "nearest_exact_downsample"]


def ridge_depths(mask: np.ndarray) -> np.ndarray:
    """City-block depth of every voxel on the medial ridge of ``mask``.

    ``depth(v)`` is the taxicab distance from foreground voxel v to the nearest background voxel (1 on
    the boundary; outside the array counts as background); the medial ridge is the set of foreground
    voxels whose depth is a maximum of their full 3×3(×3) neighbourhood — the centre line of a tube, the
    mid-surface of a sheet, the centre of a blob. Its depths are the structure's half-widths.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W) or (D, H, W)

    Returns
    -------
    ndarray of int
        One depth per ridge voxel (empty for an empty mask).

    Examples
    --------
    >>> bar = np.zeros((9, 12), bool); bar[2:7, 1:11] = True  # 5 voxels wide: depth 3 at its centre line
    >>> sorted(set(ridge_depths(bar).tolist()))
    [3]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    if not mask.any():
        return np.zeros(0, dtype=np.int64)
    # crop to the structure (plus one background voxel, so the array edge is background as documented)
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))
    crop = np.pad(mask[box], 1)
    depth = ndimage.distance_transform_cdt(crop, metric="taxicab")
    ridge = crop & (depth >= ndimage.maximum_filter(depth, size=3, mode="constant", cval=0))
    return depth[ridge].astype(np.int64)


def ridge_depth_histogram(masks: Iterable[np.ndarray]) -> np.ndarray:
    """Counts of ridge depths pooled over ``masks``: ``histogram[d]`` = ridge voxels of depth d."""
    counts = np.zeros(1, dtype=np.int64)
    for mask in masks:
        depths = ridge_depths(mask)
        if depths.size:
            here = np.bincount(depths)
            if here.size > counts.size:
                counts = np.pad(counts, (0, here.size - counts.size))
            counts[:here.size] += here
    return counts


def iterations_from_histogram(histogram: Sequence[int], percentile: float = 95.0, minimum: int = 1,
                              maximum: int = 25) -> int:
    """Soft-skeleton iterations that thin the ``percentile``-th percentile structure to its centre line.

    With ``D`` the ``percentile``-th percentile of the ridge depths (nearest-rank, so an integer depth that
    occurs), the result is ``clip(D, minimum, maximum)``: ``D - 1`` erosions thin a structure of ridge depth
    ``D``, and one more leaves room for a prediction one voxel thicker than the reference (the precision side
    of clDice skeletonises the prediction). ``minimum`` when the histogram is empty.

    Examples
    --------
    >>> iterations_from_histogram([0, 0, 90, 0, 0, 0, 10])  # 90 % of the ridge at depth 2, 10 % at depth 6
    6
    >>> iterations_from_histogram([0, 0, 90, 0, 0, 0, 10], percentile=80)
    2
    """
    counts = np.asarray(histogram, dtype=np.int64)
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    if not 0 <= minimum <= maximum:
        raise ValueError(f"need 0 <= minimum <= maximum, got {minimum}, {maximum}")
    total = int(counts.sum())
    if total == 0:
        return minimum
    rank = int(np.ceil(percentile / 100 * total))
    depth = int(np.searchsorted(np.cumsum(counts), rank))
    return int(min(max(depth, minimum), maximum))


def nearest_exact_downsample(labels: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """``labels`` resampled as nnU-Net's deep-supervision targets are: ``nearest-exact`` to
    ``round(size · scale)`` per axis (source index ``floor((i + 0.5) · size / new_size)``)."""
    labels = np.asarray(labels)
    if len(scale) != labels.ndim:
        raise ValueError(f"scale has {len(scale)} entries for a {labels.ndim}D array")
    index = []
    for size, s in zip(labels.shape, scale):
        new = max(int(round(size * s)), 1)
        index.append(np.minimum(np.floor((np.arange(new) + 0.5) * size / new).astype(np.int64), size - 1))
    return labels[np.ix_(*index)]
