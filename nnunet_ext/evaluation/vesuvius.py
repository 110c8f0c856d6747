"""Vesuvius Challenge (surface detection) score, with Betti-number agreement as topology term.

``score = w_topo · TopoScore + w_sd · SurfaceDice@τ + w_voi · VOI_score`` with defaults
``w = (0.30, 0.35, 0.35)``, ``τ = 2`` voxels, ``VOI_score = 1 / (1 + α · VOI)``, ``α = 0.3``.

**Deviation from the competition:** the competition's TopoScore uses Betti *matching* (persistent
homology matching of features). Here it is replaced by per-dimension Betti-*number* agreement:
``topo_k = 2 min(βk(P), βk(R)) / (βk(P) + βk(R))`` (an F1 that assumes every feature of the
smaller set is matched), dimensions where both Betti numbers are 0 are left out and the weights
``(0.34, 0.33, 0.33)`` of the remaining ones renormalised; TopoScore = 1 if all are left out.
This is an upper bound of the matching-based term, so scores are comparable between our runs but
not equal to the leaderboard's.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from ._common import check_pair
from .surface import surface_metrics
from .topology import betti_numbers
from .voi import variation_of_information


def betti_agreement(pred_betti: Sequence[int], ref_betti: Sequence[int],
                    weights: Sequence[float] = (0.34, 0.33, 0.33)) -> float:
    """Weighted per-dimension Betti-number agreement in [0, 1] (see module docstring).

    Examples
    --------
    >>> betti_agreement((2, 0, 0), (1, 0, 0))
    0.6666666666666666
    """
    if not (len(pred_betti) == len(ref_betti) <= len(weights)):
        raise ValueError("Betti tuples must have equal length, at most len(weights)")
    total, wsum = 0.0, 0.0
    for bp, br, w in zip(pred_betti, ref_betti, weights):
        if bp == 0 and br == 0:
            continue
        total += w * 2.0 * min(bp, br) / (bp + br)
        wsum += w
    return 1.0 if wsum == 0 else total / wsum


def vesuvius_score(
    pred,
    ref,
    spacing: Optional[Sequence[float]] = None,
    tolerance: float = 2.0,
    alpha: float = 0.3,
    weights: Sequence[float] = (0.30, 0.35, 0.35),
    betti_weights: Sequence[float] = (0.34, 0.33, 0.33),
    connectivity: Optional[int] = None,
) -> Dict[str, float]:
    """Vesuvius surface-detection score of one volume (higher is better, in [0, 1]).

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape
        Masks with the competition's ignore label already removed from both.
    spacing : sequence of float, optional
        Voxel size (array-axis order); ``tolerance`` is in the same units.
    tolerance, alpha, weights, betti_weights, connectivity
        See the module docstring; connectivity as in :func:`betti_numbers`.

    Returns
    -------
    dict with ``vesuvius_score``, ``topo_score``, ``surface_dice``, ``voi_score`` and ``voi``.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((6, 6, 6), bool); m[1:5, 1:5, 2] = True
    >>> round(vesuvius_score(m, m)["vesuvius_score"], 12)
    1.0
    """
    p, r = check_pair(pred, ref)
    return vesuvius_from_parts(
        betti_numbers(p, connectivity), betti_numbers(r, connectivity),
        surface_metrics(p, r, spacing=spacing, tolerance=tolerance).nsd,
        variation_of_information(p, r, connectivity)["voi"],
        alpha=alpha, weights=weights, betti_weights=betti_weights)


def vesuvius_from_parts(
    pred_betti: Sequence[int],
    ref_betti: Sequence[int],
    surface_dice: float,
    voi: float,
    alpha: float = 0.3,
    weights: Sequence[float] = (0.30, 0.35, 0.35),
    betti_weights: Sequence[float] = (0.34, 0.33, 0.33),
) -> Dict[str, float]:
    """:func:`vesuvius_score` from its ingredients: the Betti numbers of both masks, the NSD at
    the score's tolerance and the VOI (as :func:`nnunet_ext.evaluation.case_metrics` has them)."""
    topo = betti_agreement(pred_betti, ref_betti, betti_weights)
    voi_score = 1.0 / (1.0 + alpha * voi)
    score = weights[0] * topo + weights[1] * surface_dice + weights[2] * voi_score
    return {"vesuvius_score": float(score), "topo_score": topo, "surface_dice": surface_dice,
            "voi_score": voi_score, "voi": voi}
