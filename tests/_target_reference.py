"""The straightforward auxiliary targets: every distance transform and skeleton on the whole patch.

The reference the cropped package functions are tested against (tests) and timed against (benchmarks/
bench_targets.py loads this file).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_ext.targets import ground_truth


def whole_patch_signed_distance(labels, valid, spacing):
    out = np.zeros(labels.shape, np.float32)
    for c, foreground in enumerate(labels):
        background = valid & ~foreground
        if foreground.any() and background.any():
            outside = ndimage.distance_transform_edt(~foreground, sampling=spacing)
            inside = ndimage.distance_transform_edt(~background, sampling=spacing)
            out[c] = np.where(background, outside, 0) - np.where(foreground, inside, 0)
    return out


def whole_patch_centerline_radius(labels, valid, spacing):
    n, dims = len(labels), labels.ndim - 1
    out = np.zeros((2 * n,) + labels.shape[1:], np.float32)
    for c, foreground in enumerate(labels):
        if not foreground.any():
            continue
        background = valid & ~foreground
        inside = (np.where(foreground, ndimage.distance_transform_edt(~background, sampling=spacing), 0.0)
                  if background.any() else foreground.astype(float))
        skeleton = ground_truth._skeleton(foreground)
        nearest = ndimage.distance_transform_edt(~skeleton, sampling=spacing, return_distances=False,
                                                 return_indices=True)
        out[c] = np.where(foreground, np.minimum(inside / np.maximum(inside[tuple(nearest)], 1e-12), 1), 0)
        out[n + c][skeleton] = (inside[skeleton].max() / inside[skeleton]) ** (dims - 1)
    return out


def whole_patch_tube(labels, valid, spacing, tube_radius=2.0):
    """``valid`` is unused: the labels are expected masked already (the package masks them first)."""
    relative = tuple(s / min(spacing) for s in spacing)
    out = np.zeros(labels.shape, np.float32)
    for c, mask in enumerate(labels):
        if mask.any():
            skeleton = ground_truth._skeleton(mask)
            out[c] = (ndimage.distance_transform_edt(~skeleton, sampling=relative) <= tube_radius) & mask
    return out
