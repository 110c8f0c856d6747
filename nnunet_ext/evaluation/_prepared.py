"""A mask's padded bounding-box crop and its connected components, computed once per mask.

:func:`nnunet_ext.evaluation.case_metrics` prepares both masks of a pair once and hands the
result to the surface, topology, VOI and skeleton code, so no metric crops or labels a mask again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._common import full_connectivity, label_components, padded_crop


@dataclass(frozen=True)
class PreparedMask:
    """One mask, cropped and labelled.

    Attributes
    ----------
    shape : tuple of int
        Shape (*S) of the whole array.
    crop : ndarray of bool, shape (*B + 2)
        The mask's bounding box padded by one background voxel (:func:`padded_crop`).
    origin : tuple of int
        Array coordinates of ``crop[0, ..., 0]``.
    n_voxels : int
        Foreground voxels.
    labels : ndarray of uint32, shape (*B + 2), or None
        Connected components of ``crop`` at full connectivity (26 in 3D, 8 in 2D), 1..n.
    n_components : int
        Number of those components (0 when ``labels`` was not computed).
    """

    shape: Tuple[int, ...]
    crop: np.ndarray
    origin: Tuple[int, ...]
    n_voxels: int
    labels: Optional[np.ndarray]
    n_components: int

    @property
    def ndim(self) -> int:
        return len(self.shape)


def prepare_mask(mask: np.ndarray, labels: bool = True) -> PreparedMask:
    """Crop a boolean mask (2D or 3D) to its padded bounding box and, if ``labels``, label its
    components at full connectivity."""
    crop, origin = padded_crop(mask)
    n_vox = int(np.count_nonzero(crop))
    lab, n = (None, 0)
    if labels and n_vox:
        lab, n = label_components(crop, full_connectivity(mask.ndim))
    elif labels:
        lab = np.zeros(crop.shape, dtype=np.uint32)
    return PreparedMask(tuple(mask.shape), crop, origin, n_vox, lab, n)


def components(prep: PreparedMask, connectivity: int) -> Tuple[np.ndarray, int]:
    """Component labels of ``prep.crop`` at ``connectivity`` (the stored ones when it is the full
    connectivity) and their number."""
    if connectivity == full_connectivity(prep.ndim) and prep.labels is not None:
        return prep.labels, prep.n_components
    if prep.n_voxels == 0:
        return np.zeros(prep.crop.shape, dtype=np.uint32), 0
    return label_components(prep.crop, connectivity)
