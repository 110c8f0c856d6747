"""The full metric set for one mask pair, computing shared intermediates only once."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from ._common import BOTH_EMPTY, OK, check_pair, check_spacing, empty_status
from ._prepared import prepare_mask
from .overlap import overlap_metrics
from .reference import PreparedReference
from .skeleton import (
    check_skeleton_method, cldice, cldice_from_skeletons, start_skeleton_coordinates,
)
from .surface import boundary_iou_prepared, metrics_from_distances, surface_metrics_prepared
from .topology import betti_numbers_prepared
from .vesuvius import vesuvius_from_parts
from .voi import voi_prepared

#: NSD tolerance of the Vesuvius score (units of the spacing)
VESUVIUS_TOLERANCE = 2.0

#: metric name -> True if higher is better
METRICS: Dict[str, bool] = {
    "dice": True, "iou": True, "precision": True, "recall": True,
    "fg_fraction_pred": True, "fg_fraction_ref": True, "volume_pred": True, "volume_ref": True,
    "cldice": True,
    "assd": False, "masd": False, "hd": False, "hd95": False, "nsd": True,
    "betti_0_error": False, "betti_1_error": False, "betti_2_error": False,
    "voi": False,
    "vesuvius_score": True,
    "boundary_iou": True,
}
#: metrics computed when none are requested (the Vesuvius stand-in and Boundary IoU only on
#: request)
DEFAULT_METRICS = tuple(m for m in METRICS if m not in ("vesuvius_score", "boundary_iou"))

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
    skeleton: str = "skimage",
) -> Dict[str, object]:
    """Compute the requested metrics for one pair of masks.

    Each mask is cropped to its bounding box and labelled once; the surface metrics share one
    pair of border-distance arrays, Betti numbers, VOI and the skeleton jobs share the component
    labels.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)
        ``ref`` may also be a :class:`~nnunet_ext.evaluation.PreparedReference`
        (:func:`~nnunet_ext.evaluation.prepare_reference`) to score several predictions against
        one reference: its skeleton, border k-d tree, components and Betti numbers are then
        computed once; the results are identical.
    spacing : sequence of float, optional
        Voxel size in array-axis order (with a prepared reference: the spacing it was prepared
        with, otherwise a ``ValueError``).
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
        Processes for the skeleton thinning (``workers - 1`` forked ones start at once, this
        one joins in after the other metrics; inside a pool worker all runs here) and threads
        for the surface-distance queries. Results do not depend on it.
    skeleton : {"skimage", "robust"}
        Skeleton of clDice: scikit-image's (MetricsReloaded's, default) or with the deepest
        voxels of every component whose skeleton vanished (``docs/metrics.md``).

    Returns
    -------
    dict
        ``status`` (``ok`` / ``both_empty`` / ``pred_empty`` / ``ref_empty``), one finite float
        per requested metric and, with ``cldice``, ``skeleton_status`` (``ok`` /
        ``pred_skeleton_empty`` / ``ref_skeleton_empty`` / ``both_skeletons_empty``). 2D masks
        have no ``betti_2_error`` (reported as 0).

    Examples
    --------
    >>> m = np.zeros((8, 8), bool); m[2:6, 3] = True
    >>> r = case_metrics(m, m, metrics=["dice", "hd95"])
    >>> r["status"], r["dice"], r["hd95"]
    ('ok', 1.0, 0.0)
    """
    cache = ref if isinstance(ref, PreparedReference) else None
    p, r = check_pair(pred, ref if cache is None else cache.mask)
    sp = check_spacing(spacing, p.ndim)
    if cache is not None and sp != cache.spacing:
        raise ValueError(f"the reference was prepared with spacing {cache.spacing}, "
                         f"case_metrics was called with {sp}: prepare it again for this spacing")
    names = check_metric_names(metrics)
    check_skeleton_method(skeleton)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    want = set(names)
    out: Dict[str, object] = {"status": empty_status(p, r)}
    values: Dict[str, object] = {}
    if want & _OVERLAP:
        values.update(overlap_metrics(p, r))
    voxel_volume = float(np.prod(sp))
    values["volume_pred"] = float(np.count_nonzero(p)) * voxel_volume if "volume_pred" in want else 0.0
    values["volume_ref"] = float(np.count_nonzero(r)) * voxel_volume if "volume_ref" in want else 0.0
    if not want & (_SURFACE | _BETTI | {"voi", "cldice", "vesuvius_score", "boundary_iou"}):
        return _finish(out, names, values)
    labels = bool(want & (_BETTI | {"voi", "cldice", "vesuvius_score"}))
    pp = prepare_mask(p, labels)
    pr = prepare_mask(r, labels) if cache is None else cache.prepared
    skeletons = None
    if "cldice" in want and out["status"] == OK:
        # with workers > 1 the thinning starts in other processes while the metrics below are
        # computed here
        if cache is None:
            skeletons = start_skeleton_coordinates([pp, pr], workers=workers, method=skeleton)
        else:
            pred_skeleton = start_skeleton_coordinates([pp], workers=workers, method=skeleton)

            def skeletons(cancel: bool = False):
                if cancel:
                    return pred_skeleton(cancel=True)
                # the reference's (thinned here on first use, while the prediction's jobs run
                # in the other processes), then the prediction's
                ref_skeleton = cache.skeleton_coordinates(skeleton)
                return pred_skeleton()[0], ref_skeleton
    try:
        distances = None
        if want & (_SURFACE | {"vesuvius_score"}):
            ref_side = {} if cache is None or not cache.prepared.n_voxels else {
                "ref_border": cache.border(), "ref_tree": cache.border_tree()}
            sm, distances = surface_metrics_prepared(
                pp, pr, sp, tolerance=tolerance, percentile=percentile,
                empty_distance=empty_distance, workers=workers, **ref_side)
            values.update({k: v for k, v in sm.as_dict().items() if k != "status"})
        if want & (_BETTI | {"vesuvius_score"}):
            bp = betti_numbers_prepared(pp, connectivity)
            br = (betti_numbers_prepared(pr, connectivity) if cache is None
                  else cache.betti_numbers(connectivity))
            for k in range(3):
                values[f"betti_{k}_error"] = float(abs(bp[k] - br[k])) if k < len(bp) else 0.0
        if "boundary_iou" in want:
            # MetricsReloaded's default: the border voxels themselves (distance 1 voxel)
            values["boundary_iou"] = boundary_iou_prepared(
                pp, pr, ref_band=None if cache is None else cache.boundary_band())
        if want & {"voi", "vesuvius_score"}:
            values["voi"] = voi_prepared(
                pp, pr, connectivity,
                ref_components=None if cache is None else cache.components(connectivity))["voi"]
        if "vesuvius_score" in want:
            values["vesuvius_score"] = vesuvius_from_parts(
                bp, br, _nsd_at(out["status"], distances, VESUVIUS_TOLERANCE),
                values["voi"])["vesuvius_score"]
        if "cldice" in want:
            if skeletons is None:
                res = cldice(p, r)  # an empty mask: the convention's value, no thinning
            else:
                res = cldice_from_skeletons(pp, pr, *skeletons())
                skeletons = None
            values["cldice"] = res.value
            out["skeleton_status"] = res.skeleton_status
    except BaseException:
        if skeletons is not None:
            skeletons(cancel=True)
        raise
    return _finish(out, names, values)


def _nsd_at(status: str, distances, tolerance: float) -> float:
    """NSD at another tolerance from the directed distances of :func:`surface_metrics_prepared`."""
    if status != OK:
        return 1.0 if status == BOTH_EMPTY else 0.0
    return metrics_from_distances(*distances, tolerance=tolerance).nsd


def _finish(out: Dict[str, object], names, values: Dict[str, object]) -> Dict[str, object]:
    for name in names:
        out[name] = float(values[name])
    return out
