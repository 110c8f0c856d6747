"""Skeletons and centreline Dice (clDice).

The skeleton is scikit-image's :func:`skimage.morphology.skeletonize` on the voxel grid (Lee's
thinning in 3D, Zhang's in 2D). Thinning is local, so two components that do not touch (26- resp.
8-connectivity) never influence each other: each component is thinned alone inside its own
bounding box padded by one voxel, which gives the identical skeleton while skipping the empty
space of the volume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import cc3d
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from ._common import BOTH_EMPTY, OK, as_mask, check_pair, empty_status, harmonic_mean


def skeletonize_mask(mask: np.ndarray) -> np.ndarray:
    """Topological skeleton of a 2D or 3D mask (Lee in 3D, Zhang in 2D), computed component by
    component inside padded bounding boxes.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[2:5, 1:8] = True
    >>> int(skeletonize_mask(m).sum())
    6
    """
    m = as_mask(mask)
    out = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return out
    labels = cc3d.connected_components(m, connectivity=26 if m.ndim == 3 else 8)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        comp = np.pad(labels[box] == k, 1, mode="constant", constant_values=False)
        inner = tuple(slice(1, -1) for _ in range(comp.ndim))
        out[box] |= skeletonize(comp)[inner].astype(bool)
    return out


@dataclass(frozen=True)
class CLDiceResult:
    """clDice of one mask pair.

    Attributes
    ----------
    value : harmonic mean of ``tprec`` and ``tsens`` (0 when both are 0)
    tprec : fraction of the prediction's skeleton inside the reference mask
    tsens : fraction of the reference's skeleton inside the predicted mask
    status : ``ok``, ``both_empty``, ``pred_empty`` or ``ref_empty``
    """

    value: float
    tprec: float
    tsens: float
    status: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _fraction_inside(skel: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> float:
    # a non-empty mask whose skeleton vanished (Zhang thinning can erase a 2x2 block) is
    # represented by its own voxels
    if not skel.any():
        skel = fallback
    return float(np.count_nonzero(skel & mask)) / float(np.count_nonzero(skel))


def cldice(
    pred,
    ref,
    pred_skeleton: Optional[np.ndarray] = None,
    ref_skeleton: Optional[np.ndarray] = None,
) -> CLDiceResult:
    """Centreline Dice (Shit et al., CVPR 2021) with its two components and an empty flag.

    ``tprec = |S(P) ∩ R| / |S(P)|``, ``tsens = |S(R) ∩ P| / |S(R)|``,
    ``clDice = 2 tprec tsens / (tprec + tsens)``.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)
    pred_skeleton, ref_skeleton : ndarray of bool, optional
        Precomputed skeletons (:func:`skeletonize_mask`), to reuse them across metrics.

    Returns
    -------
    CLDiceResult
        Both empty → value 1 (status ``both_empty``); one empty → 0 (``pred_empty`` /
        ``ref_empty``); non-overlapping non-empty masks → 0. Never NaN.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[3, 1:8] = True
    >>> cldice(m, m).value
    1.0
    """
    p, r = check_pair(pred, ref)
    status = empty_status(p, r)
    if status == BOTH_EMPTY:
        return CLDiceResult(1.0, 1.0, 1.0, status)
    if status != OK:
        return CLDiceResult(0.0, 0.0, 0.0, status)
    sp = skeletonize_mask(p) if pred_skeleton is None else as_mask(pred_skeleton, "pred_skeleton")
    sr = skeletonize_mask(r) if ref_skeleton is None else as_mask(ref_skeleton, "ref_skeleton")
    tprec = _fraction_inside(sp, r, p)
    tsens = _fraction_inside(sr, p, r)
    return CLDiceResult(harmonic_mean(tprec, tsens), tprec, tsens, status)


def cldice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """clDice as a float: both masks empty → 1.0, exactly one empty → 0.0, never NaN.

    Examples
    --------
    >>> a = np.zeros((5, 9), bool); a[2, 1:8] = True
    >>> b = np.zeros((5, 9), bool); b[2, 1:4] = True
    >>> round(cldice_score(a, b), 4)   # tprec = 3/7, tsens = 1
    0.6
    """
    return cldice(pred, ref).value
