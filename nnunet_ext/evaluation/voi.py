"""Variation of information (VOI) between the connected-component labelings of two masks."""
from __future__ import annotations

from typing import Dict, Optional

import cc3d
import numpy as np

from ._common import check_pair


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
    if connectivity is None:
        connectivity = 26 if p.ndim == 3 else 8
    lp = cc3d.connected_components(p, connectivity=connectivity)
    lr = cc3d.connected_components(r, connectivity=connectivity)
    n = p.size
    union = p | r
    # pairs (0, 0) are all voxels outside both masks; only the union needs counting
    a = lp[union].astype(np.int64)
    b = lr[union].astype(np.int64)
    n_out = n - a.size
    nb = int(b.max()) + 1 if b.size else 1
    joint = np.bincount(a * nb + b) if a.size else np.zeros(1, np.int64)
    joint = np.concatenate([joint, [n_out]])  # the (0, 0) cell, counted separately
    h_joint = _entropy(joint, n)
    count_p = np.bincount(a, minlength=1)
    count_p[0] += n_out
    count_r = np.bincount(b, minlength=1)
    count_r[0] += n_out
    h_p, h_r = _entropy(count_p, n), _entropy(count_r, n)
    split = max(h_joint - h_r, 0.0)
    merge = max(h_joint - h_p, 0.0)
    return {"voi": split + merge, "voi_split": split, "voi_merge": merge}
