"""Segmentation metrics on numpy arrays, folder evaluation and statistics.

Metric functions take boolean masks (2D or 3D, equal shape) and, where distances matter, an
explicit ``spacing`` in array-axis order. Every metric returns a defined, finite number when a
mask is empty; the cases are flagged by :func:`empty_status` (and the ``status`` field of the
result objects). Definitions: ``docs/metrics.md``.
"""
from ._common import BOTH_EMPTY, OK, PRED_EMPTY, REF_EMPTY, empty_status
from .case import DEFAULT_METRICS, METRICS, case_metrics
from .challenges import (
    CHALLENGE_METRICS, CHALLENGES, brats_lesion_wise, monusac_pq, panoptic_quality,
    vesuvius_leaderboard_score,
)
from .compare import compare_results, read_metrics_csv, write_comparison
from .folder import evaluate_folders, write_topology_summary
from .overlap import (
    confusion_counts, dice_score, foreground_fraction, iou_score, overlap_metrics,
    precision_score, recall_score,
)
from .skeleton import (
    SKELETON_METHODS, CLDiceResult, cldice, cldice_score, skeletonize_mask, skeletonize_masks,
    start_skeletons,
)
from .reference import PreparedReference, prepare_reference
from .stats import bootstrap_ci, paired_bootstrap, summarize
from .surface import (
    SurfaceMetrics, assd, border_mask, boundary_iou, hausdorff_distance, hd95, masd, max_distance,
    normalized_surface_dice, surface_distances, surface_metrics,
)
from .topology import betti_errors, betti_numbers, euler_characteristic
from .vesuvius import betti_agreement, vesuvius_score
from .voi import variation_of_information

__all__ = [
    "OK", "BOTH_EMPTY", "PRED_EMPTY", "REF_EMPTY", "empty_status",
    "METRICS", "DEFAULT_METRICS", "case_metrics", "PreparedReference", "prepare_reference",
    "CHALLENGES", "CHALLENGE_METRICS", "vesuvius_leaderboard_score", "brats_lesion_wise",
    "monusac_pq", "panoptic_quality",
    "evaluate_folders", "write_topology_summary",
    "compare_results", "read_metrics_csv", "write_comparison",
    "confusion_counts", "dice_score", "iou_score", "precision_score", "recall_score",
    "foreground_fraction", "overlap_metrics",
    "SKELETON_METHODS", "CLDiceResult", "cldice", "cldice_score", "skeletonize_mask",
    "skeletonize_masks", "start_skeletons",
    "bootstrap_ci", "summarize", "paired_bootstrap",
    "SurfaceMetrics", "surface_metrics", "surface_distances", "border_mask", "max_distance",
    "hausdorff_distance", "hd95", "assd", "masd", "normalized_surface_dice", "boundary_iou",
    "euler_characteristic", "betti_numbers", "betti_errors",
    "betti_agreement", "vesuvius_score",
    "variation_of_information",
]
