"""A reference mask prepared once and scored against several predictions.

When N predictions (trainers, folds, post-processing variants) are scored against the same
reference, everything that depends on the reference alone is the same N times: its crop and
component labels, its skeleton (clDice), its border voxels and the k-d tree over them (surface
distances), its Betti numbers and its boundary band. :func:`prepare_reference` returns an
explicit object that computes each of these once, when a metric first needs it, and
:func:`nnunet_ext.evaluation.case_metrics` accepts it in place of the reference array::

    prepared = prepare_reference(ref, spacing)
    rows = [case_metrics(pred, prepared, spacing) for pred in predictions]

The results are bit-identical to ``case_metrics(pred, ref, spacing)``: the same functions run on
the same inputs, only once. Nothing is shared between objects (no global cache), the object keeps
its own read-only copy of the reference (changing the caller's array afterwards changes nothing),
and the quantities that depend on more than the mask are stored under everything they depend on
(skeleton definition, connectivity, band distance); the spacing is fixed at construction and
:func:`case_metrics` refuses another one.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ._common import as_mask, check_spacing, full_connectivity
from ._prepared import PreparedMask, components, prepare_mask


class PreparedReference:
    """A reference mask with its reference-only intermediates, each computed on first use.

    Build it with :func:`prepare_reference`. Attributes:

    mask : ndarray of bool, shape (*S), read-only
        A copy of the reference.
    spacing : tuple of float
        Voxel size in array-axis order the distance quantities are computed with.
    prepared : PreparedMask
        The padded crop and its components at full connectivity.
    """

    def __init__(self, mask: np.ndarray, spacing: Tuple[float, ...]):
        self.mask = mask
        self.spacing = spacing
        self.prepared: PreparedMask = prepare_mask(mask)
        self._memo: Dict[tuple, object] = {}

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.mask.shape

    def _get(self, key: tuple, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def skeleton_coordinates(self, method: str = "skimage", workers: int = 1) -> np.ndarray:
        """Array coordinates (n, ndim) of the reference's skeleton (``method`` as in
        :func:`nnunet_ext.evaluation.skeletonize_mask`)."""
        from .skeleton import check_skeleton_method, start_skeleton_coordinates

        check_skeleton_method(method)
        return self._get(("skeleton", method), lambda: start_skeleton_coordinates(
            [self.prepared], workers=workers, method=method)()[0])

    def border(self):
        """The reference's border voxels (:func:`nnunet_ext.evaluation.surface.border_mask`)."""
        from .surface import _border

        return self._get(("border",), lambda: _border(self.prepared))

    def border_tree(self):
        """k-d tree over the reference's border voxels at :attr:`spacing`."""
        from .surface import _border_tree

        return self._get(("border_tree", self.spacing),
                         lambda: _border_tree(self.border(), self.spacing))

    def components(self, connectivity: Optional[int] = None) -> Tuple[np.ndarray, int]:
        """Component labels of the reference's crop at ``connectivity`` and their number."""
        conn = full_connectivity(self.mask.ndim) if connectivity is None else int(connectivity)
        return self._get(("components", conn), lambda: components(self.prepared, conn))

    def betti_numbers(self, connectivity: Optional[int] = None) -> Tuple[int, ...]:
        """The reference's Betti numbers (:func:`nnunet_ext.evaluation.betti_numbers`)."""
        from .topology import betti_numbers_prepared

        return self._get(("betti", connectivity),
                         lambda: betti_numbers_prepared(self.prepared, connectivity))

    def boundary_band(self, distance: float = 1.0,
                      spacing: Optional[Sequence[float]] = None) -> np.ndarray:
        """Array coordinates of the reference's voxels closer than ``distance`` to its border
        (Boundary IoU)."""
        from .surface import boundary_band_coordinates

        sp = None if spacing is None else tuple(float(s) for s in spacing)
        return self._get(("band", float(distance), sp),
                         lambda: boundary_band_coordinates(self.prepared, distance, sp))

    def __repr__(self) -> str:
        return (f"PreparedReference(shape={self.mask.shape}, spacing={self.spacing}, "
                f"voxels={self.prepared.n_voxels}, cached={sorted(k[0] for k in self._memo)})")


def prepare_reference(ref, spacing: Optional[Sequence[float]] = None) -> PreparedReference:
    """Prepare a reference mask to be scored against several predictions.

    Parameters
    ----------
    ref : ndarray of bool (2D or 3D)
        The reference; it is copied, so later changes of ``ref`` do not reach the object.
    spacing : sequence of float, optional
        Voxel size in array-axis order (default 1 per axis); :func:`case_metrics` must be
        called with the same spacing.

    Returns
    -------
    PreparedReference
        Pass it as ``ref`` to :func:`nnunet_ext.evaluation.case_metrics`.

    Examples
    --------
    >>> from nnunet_ext.evaluation import case_metrics
    >>> r = np.zeros((8, 8), bool); r[2:6, 3] = True
    >>> prepared = prepare_reference(r)
    >>> [case_metrics(p, prepared, metrics=["dice"])["dice"] for p in (r, ~r)]
    [1.0, 0.0]
    """
    mask = np.array(as_mask(ref, "ref"), dtype=bool, copy=True)
    mask.setflags(write=False)
    return PreparedReference(mask, check_spacing(spacing, mask.ndim))
