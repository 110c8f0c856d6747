"""Variation of information (VOI) between the connected-component labelings of two masks."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._common import check_pair, full_connectivity
from ._prepared import PreparedMask, components, prepare_mask


def _entropy(counts: np.ndarray, n: int) -> float:
    q = counts[counts > 0] / n
    return float(-(q * np.log2(q)).sum())


def variation_of_information(pred, ref, connectivity: Optional[int] = None) -> Dict[str, float]:
    """VOI of the component labelings of two masks, in bits (base-2 logarithm, as scikit-image).

    Each mask is turned into a labeling (background 0, each connected component its own label,
    ``connectivity`` 26 in 3D / 8 in 2D by default). With ``H`` the entropy of a labeling over all
    voxels of the array and ``I`` the mutual information of the two labelings,
    ``VOI = H(P|R) + H(R|P) = H(P) + H(R) − 2 I(P;R)``. 0 means identical partitions (in particular
    when both masks are empty); the value is always finite.

    Returns
    -------
    dict with ``voi``, ``voi_split`` = H(P|R) (over-segmentation) and ``voi_merge`` = H(R|P).

    Examples
    --------
    >>> a = np.zeros((1, 4), bool); a[0, :2] = True
    >>> round(variation_of_information(a, a)["voi"], 12)
    0.0
    """
    p, r = check_pair(pred, ref)
    return voi_prepared(prepare_mask(p, labels=False), prepare_mask(r, labels=False), connectivity)


def _pair_counts(a: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
    """Counts of the distinct label pairs ``(a_i, b_i)`` (pairs that do not occur left out)."""
    codes = a.astype(np.int64) * nb + b
    if (int(a.max()) + 1) * nb <= 4 * len(codes) + (1 << 20):
        counts = np.bincount(codes)
        return counts[counts > 0]
    return np.unique(codes, return_counts=True)[1]


def _overlap_boxes(pp: PreparedMask, pr: PreparedMask):
    """Slices into both crops selecting their common part, or None if they do not overlap."""
    sp, sr = [], []
    for op, orr, np_, nr in zip(pp.origin, pr.origin, pp.crop.shape, pr.crop.shape):
        lo, hi = max(op, orr), min(op + np_, orr + nr)
        if lo >= hi:
            return None
        sp.append(slice(lo - op, hi - op))
        sr.append(slice(lo - orr, hi - orr))
    return tuple(sp), tuple(sr)


def voi_prepared(pp: PreparedMask, pr: PreparedMask,
                 connectivity: Optional[int] = None,
                 ref_components: Optional[Tuple[np.ndarray, int]] = None) -> Dict[str, float]:
    """:func:`variation_of_information` of two prepared masks (reusing their component labels
    when ``connectivity`` is the full one; ``ref_components``: the reference's
    :func:`components` at ``connectivity``, if computed).

    Only foreground voxels are counted: the label pairs of the voxels in both masks directly,
    the voxels in one mask only from the component sizes, the voxels outside both masks as one
    cell.
    """
    if connectivity is None:
        connectivity = full_connectivity(pp.ndim)
    n = int(np.prod(pp.shape))
    lp, n_p = components(pp, connectivity)
    lr, n_r = components(pr, connectivity) if ref_components is None else ref_components
    size_p = np.bincount(lp[pp.crop], minlength=n_p + 1)[1:]
    size_r = np.bincount(lr[pr.crop], minlength=n_r + 1)[1:]
    boxes = _overlap_boxes(pp, pr)
    if boxes is not None:
        both = pp.crop[boxes[0]] & pr.crop[boxes[1]]
        a, b = lp[boxes[0]][both], lr[boxes[1]][both]
    else:
        a = b = np.zeros(0, np.int64)
    joint = _pair_counts(a, b, n_r + 1) if len(a) else np.zeros(0, np.int64)
    # voxels of one mask only, per component, and voxels outside both masks
    only_p = size_p - np.bincount(a, minlength=n_p + 1)[1:]
    only_r = size_r - np.bincount(b, minlength=n_r + 1)[1:]
    n_out = n - pp.n_voxels - int(only_r.sum())
    h_joint = _entropy(np.concatenate([joint, only_p, only_r, [n_out]]), n)
    h_p = _entropy(np.concatenate([size_p, [n - pp.n_voxels]]), n)
    h_r = _entropy(np.concatenate([size_r, [n - pr.n_voxels]]), n)
    split = max(h_joint - h_r, 0.0)
    merge = max(h_joint - h_p, 0.0)
    return {"voi": split + merge, "voi_split": split, "voi_merge": merge}
