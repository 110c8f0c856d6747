"""Straightforward whole-volume implementations of the evaluation definitions.

They follow docs/metrics.md literally (scipy distance transforms over the whole array,
scikit-image skeletons of the whole array) and serve as the reference in the tests and the
benchmark.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import euler_number
from skimage.morphology import skeletonize


def random_blobs(rng, shape, fraction=0.3, sigma=1.5):
    """Smooth random blobs covering ``fraction`` of the array (Gaussian-filtered noise, thresholded)."""
    noise = ndimage.gaussian_filter(rng.random(shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def border(mask):
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def directed_distances(a, b, spacing):
    """Distances from every border voxel of ``a`` to the nearest border voxel of ``b``."""
    dt = ndimage.distance_transform_edt(~border(b), sampling=spacing)
    return dt[border(a)]


def surface(pred, ref, spacing, tolerance=1.0, percentile=95.0):
    dp = directed_distances(pred, ref, spacing)
    dr = directed_distances(ref, pred, spacing)
    both = np.concatenate([dp, dr])
    return {
        "assd": both.mean(),
        "masd": (dp.mean() + dr.mean()) / 2,
        "hd": max(dp.max(), dr.max()),
        "hd95": max(np.percentile(dp, percentile), np.percentile(dr, percentile)),
        "nsd": np.mean(both <= tolerance),
    }


def cldice(pred, ref, robust=False):
    """clDice with whole-volume skeletons; ``robust``: the training targets' skeleton (the deepest
    voxels of every component whose scikit-image skeleton vanished)."""
    if robust:
        from nnunet_ext.targets.ground_truth import _skeleton as skel
    else:
        def skel(m):
            return skeletonize(m).astype(bool)
    sp, sr = skel(pred), skel(ref)
    tprec = (sp & ref).sum() / sp.sum()
    tsens = (sr & pred).sum() / sr.sum()
    return 0.0 if tprec + tsens == 0 else 2 * tprec * tsens / (tprec + tsens)


def betti(mask):
    """(β0, β1, β2) at 26-connectivity (3D) or (β0, β1) at 8-connectivity (2D)."""
    full = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    face = ndimage.generate_binary_structure(mask.ndim, 1)
    b0 = ndimage.label(mask, structure=full)[1]
    top = ndimage.label(~np.pad(mask, 1), structure=face)[1] - 1
    if mask.ndim == 2:
        return (b0, top)
    chi = euler_number(mask, connectivity=3)
    return (b0, b0 + top - chi, top)


def dice(pred, ref):
    return 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
