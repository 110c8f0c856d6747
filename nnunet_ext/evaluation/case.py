"""The full metric set for one mask pair, computing shared intermediates only once."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from ._common import OK, check_pair, check_spacing, empty_status
from .overlap import overlap_metrics
from .skeleton import cldice, start_skeletons
from .surface import surface_metrics
from .topology import betti_numbers
from .vesuvius import vesuvius_score
from .voi import variation_of_information

#: metric name -> True if higher is better
METRICS: Dict[str, bool] = {
    "dice": True, "iou": True, "precision": True, "recall": True,
    "fg_fraction_pred": True, "fg_fraction_ref": True, "volume_pred": True, "volume_ref": True,
    "cldice": True,
    "assd": False, "masd": False, "hd": False, "hd95": False, "nsd": True,
    "betti_0_error": False, "betti_1_error": False, "betti_2_error": False,
    "voi": False,
    "vesuvius_score": True,
}
#: metrics computed when none are requested (the Vesuvius score only on request)
DEFAULT_METRICS = tuple(m for m in METRICS if m != "vesuvius_score")

_OVERLAP = {"dice", "iou", "precision", "recall", "fg_fraction_pred", "fg_fraction_ref"}
_SURFACE = {"assd", "masd", "hd", "hd95", "nsd"}
_BETTI = {"betti_0_error", "betti_1_error", "betti_2_error"}


def check_metric_names(metrics: Optional[Iterable[str]]) -> tuple:
    """Validate requested metric names (``None`` → :data:`DEFAULT_METRICS`)."""
    if metrics is None:
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(metrics))
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    if not names:
        raise ValueError("no metric requested")
    return names


def case_metrics(
    pred,
    ref,
    spacing: Optional[Sequence[float]] = None,
    metrics: Optional[Iterable[str]] = None,
    tolerance: float = 1.0,
    percentile: float = 95.0,
    empty_distance: Optional[float] = None,
    connectivity: Optional[int] = None,
    workers: int = 1,
) -> Dict[str, object]:
    """Compute the requested metrics for one pair of masks.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)
    spacing : sequence of float, optional
        Voxel size in array-axis order.
    metrics : iterable of str, optional
        Names from :data:`METRICS`; default :data:`DEFAULT_METRICS`.
    tolerance : float
        NSD tolerance τ (units of ``spacing``); the Vesuvius score uses its own τ = 2.
    percentile : float
        Percentile of the robust Hausdorff distance reported as ``hd95``.
    empty_distance : float, optional
        Distance value when exactly one mask is empty (default: the array diagonal).
    connectivity : int, optional
        Foreground connectivity for Betti numbers and VOI (26 / 8 by default).
    workers : int
        Threads for the surface-distance queries and processes for the skeleton thinning
        (thinning stays in this process inside a pool worker). Results do not depend on it.

    Returns
    -------
    dict
        ``status`` (``ok`` / ``both_empty`` / ``pred_empty`` / ``ref_empty``) and one finite
        float per requested metric. 2D masks have no ``betti_2_error`` (reported as 0).

    Examples
    --------
    >>> m = np.zeros((8, 8), bool); m[2:6, 3] = True
    >>> r = case_metrics(m, m, metrics=["dice", "hd95"])
    >>> r["status"], r["dice"], r["hd95"]
    ('ok', 1.0, 0.0)
    """
    p, r = check_pair(pred, ref)
    sp = check_spacing(spacing, p.ndim)
    names = check_metric_names(metrics)
    want = set(names)
    out: Dict[str, object] = {"status": empty_status(p, r)}
    values: Dict[str, float] = {}
    if want & _OVERLAP:
        values.update(overlap_metrics(p, r))
    voxel_volume = float(np.prod(sp))
    values["volume_pred"] = float(np.count_nonzero(p)) * voxel_volume if "volume_pred" in want else 0.0
    values["volume_ref"] = float(np.count_nonzero(r)) * voxel_volume if "volume_ref" in want else 0.0
    skeletons = None
    if "cldice" in want and out["status"] == OK:
        # with workers > 1 the thinning runs in other processes while the metrics below are
        # computed here
        skeletons = start_skeletons([p, r], workers=workers)
    try:
        if want & _SURFACE:
            values.update({k: v for k, v in surface_metrics(
                p, r, sp, tolerance=tolerance, percentile=percentile,
                empty_distance=empty_distance, workers=workers).as_dict().items() if k != "status"})
        if want & _BETTI:
            bp = betti_numbers(p, connectivity)
            br = betti_numbers(r, connectivity)
            for k in range(3):
                values[f"betti_{k}_error"] = float(abs(bp[k] - br[k])) if k < len(bp) else 0.0
        if "voi" in want:
            values["voi"] = variation_of_information(p, r, connectivity)["voi"]
        if "vesuvius_score" in want:
            values["vesuvius_score"] = vesuvius_score(p, r, sp, connectivity=connectivity)["vesuvius_score"]
        if "cldice" in want:
            sk = skeletons() if skeletons is not None else (None, None)
            values["cldice"] = cldice(p, r, pred_skeleton=sk[0], ref_skeleton=sk[1]).value
    except BaseException:
        if skeletons is not None:
            skeletons(cancel=True)
        raise
    for name in names:
        out[name] = float(values[name])
    return out
