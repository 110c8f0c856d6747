"""Connected-component and hole operations on one boolean mask (2D or 3D).

Every function is pure (the input is never modified) and takes the mask in array-axis order;
where physical sizes matter, ``spacing`` is given explicitly in the same order. Connectivity is
the foreground connectivity: 26 (default), 18 or 6 in 3D; 8 (default) or 4 in 2D. The default
is the full neighbourhood, the one nnU-Net's own ``remove_all_but_largest_component`` uses.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.evaluation._common import label_components as _cc3d_labels

#: allowed foreground connectivities per number of array axes (first = default)
CONNECTIVITIES = {3: (26, 18, 6), 2: (8, 4)}
# background connectivity complementary to a foreground connectivity (well-defined digital
# topology: a hole must not leak through a diagonal the foreground counts as connected)
_BACKGROUND = {26: 6, 18: 6, 6: 26, 8: 4, 4: 8}


def as_mask(mask, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a boolean 2D or 3D array (non-zero = foreground) or raise ``ValueError``."""
    arr = np.asarray(mask)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D array, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr != 0


def check_connectivity(ndim: int, connectivity: Optional[int]) -> int:
    """Foreground connectivity for an ``ndim``-D mask; ``None`` → the full neighbourhood.

    Parameters
    ----------
    ndim : int
        2 or 3.
    connectivity : int or None
        One of :data:`CONNECTIVITIES` ``[ndim]``.
    """
    allowed = CONNECTIVITIES[ndim]
    if connectivity is None:
        return allowed[0]
    if int(connectivity) not in allowed:
        raise ValueError(f"connectivity {connectivity} is not valid for {ndim}D masks; "
                         f"allowed: {list(allowed)}")
    return int(connectivity)


def voxel_volume(spacing: Optional[Sequence[float]], ndim: int) -> float:
    """Volume (area in 2D) of one voxel: the product of ``spacing`` (array-axis order).

    Parameters
    ----------
    spacing : sequence of float or None
        ``ndim`` positive voxel sizes; ``None`` means 1 per axis.
    ndim : int
        Number of array axes.
    """
    if spacing is None:
        return 1.0
    sp = [float(s) for s in spacing]
    if len(sp) != ndim:
        raise ValueError(f"spacing {tuple(sp)} must have one entry per array axis ({ndim})")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing entries must be positive and finite, got {tuple(sp)}")
    return float(np.prod(sp))


def _bbox(mask: np.ndarray) -> Optional[Tuple[slice, ...]]:
    # component work is done on the foreground's bounding box: predictions are mostly background
    box = []
    for ax in range(mask.ndim):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if nz.size == 0:
            return None
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def label_components(mask, connectivity: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Label the connected components of a mask.

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
        Non-zero = foreground.
    connectivity : int, optional
        Foreground connectivity (default: full).

    Returns
    -------
    labels : ndarray of int, same shape
        0 for background, components numbered 1..N.
    sizes : ndarray of int64, shape (N,)
        ``sizes[i]`` is the voxel count of component ``i + 1``.
    """
    m = as_mask(mask)
    conn = check_connectivity(m.ndim, connectivity)
    labels = np.zeros(m.shape, dtype=np.uint32)
    box = _bbox(m)
    if box is None:
        return labels, np.zeros(0, dtype=np.int64)
    # one layer of background around the crop: cc3d (4.1) fails on arrays with an axis of
    # length 1 under 26-connectivity, and the padding does not change the labelling
    padded = np.pad(m[box], 1, mode="constant", constant_values=False)
    crop, n = _cc3d_labels(padded, conn)
    crop = crop[(slice(1, -1),) * m.ndim]
    labels[box] = crop
    sizes = np.bincount(crop.ravel(), minlength=n + 1)[1:].astype(np.int64)
    return labels, sizes


def component_sizes(mask, connectivity: Optional[int] = None) -> np.ndarray:
    """Voxel counts of the connected components of ``mask``, shape (N,), in label order."""
    return label_components(mask, connectivity)[1]


def remove_small_components(
    mask,
    min_voxels: Optional[int] = None,
    min_volume: Optional[float] = None,
    spacing: Optional[Sequence[float]] = None,
    connectivity: Optional[int] = None,
) -> np.ndarray:
    """Remove the connected components smaller than a size.

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
    min_voxels : int, optional
        Components with fewer voxels than this are removed.
    min_volume : float, optional
        Components whose volume (voxel count × product of ``spacing``) is below this are
        removed. Exactly one of ``min_voxels`` / ``min_volume`` must be given.
    spacing : sequence of float, optional
        Voxel size in array-axis order (needed with ``min_volume``; default 1 per axis).
    connectivity : int, optional
        Foreground connectivity (default: full).

    Returns
    -------
    ndarray of bool, same shape: the kept components.

    Examples
    --------
    >>> m = np.zeros((1, 6), bool); m[0, :3] = m[0, 5] = True
    >>> remove_small_components(m, min_voxels=2).astype(int)
    array([[1, 1, 1, 0, 0, 0]])
    """
    if (min_voxels is None) == (min_volume is None):
        raise ValueError("give exactly one of min_voxels and min_volume")
    m = as_mask(mask)
    labels, sizes = label_components(m, connectivity)
    if min_voxels is not None:
        small = sizes < int(min_voxels)
    else:
        small = sizes * voxel_volume(spacing, m.ndim) < float(min_volume)
    if not small.any():
        return m.copy()
    keep = np.concatenate([[False], ~small])
    return keep[labels]


def keep_largest_components(mask, k: int = 1, connectivity: Optional[int] = None) -> np.ndarray:
    """Keep the ``k`` largest connected components.

    Ties at the k-th size are all kept (so more than ``k`` components can remain): with
    ``k = 1`` this equals nnU-Net's ``remove_all_but_largest_component``, which keeps every
    component of maximal size.

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
    k : int
        Number of components to keep (≥ 1).
    connectivity : int, optional
        Foreground connectivity (default: full).

    Returns
    -------
    ndarray of bool, same shape.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    m = as_mask(mask)
    labels, sizes = label_components(m, connectivity)
    if sizes.size <= k:
        return m.copy()
    kth = np.sort(sizes)[::-1][int(k) - 1]
    keep = np.concatenate([[False], sizes >= kth])
    return keep[labels]


def hole_mask(mask, connectivity: Optional[int] = None) -> np.ndarray:
    """The holes of a mask: background components that do not touch the array border.

    The background uses the connectivity complementary to the foreground one (6 for 26 or 18,
    26 for 6; 4 for 8, 8 for 4). In 3D a hole is an enclosed cavity; a ring that is open in
    3D (e.g. a tube) has no hole.

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
    connectivity : int, optional
        Foreground connectivity (default: full).

    Returns
    -------
    ndarray of bool, same shape: True on hole voxels.
    """
    m = as_mask(mask)
    conn = check_connectivity(m.ndim, connectivity)
    out = np.zeros(m.shape, dtype=bool)
    box = _bbox(m)
    if box is None:
        return out
    # background outside the bounding box is connected to the border anyway; one padding layer
    # makes everything that reaches the border one component (the one at the corner)
    crop = np.pad(~m[box], 1, mode="constant", constant_values=True)
    bg, _ = _cc3d_labels(crop, _BACKGROUND[conn])
    outside = bg[(0,) * m.ndim]
    holes = (bg != 0) & (bg != outside)
    out[box] = holes[(slice(1, -1),) * m.ndim]
    return out


def fill_holes(mask, connectivity: Optional[int] = None) -> np.ndarray:
    """Fill the holes of a mask (see :func:`hole_mask`).

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
    connectivity : int, optional
        Foreground connectivity (default: full).

    Returns
    -------
    ndarray of bool, same shape: ``mask | hole_mask(mask)``.

    Examples
    --------
    >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
    >>> int(fill_holes(ring).sum())
    9
    """
    m = as_mask(mask)
    return m | hole_mask(m, connectivity)


def threshold_probability(probability, threshold: float) -> np.ndarray:
    """``probability > threshold`` (strict, as nnU-Net's 0.5 rule for regions).

    Parameters
    ----------
    probability : ndarray of float, shape (Z, Y, X) or (Y, X)
    threshold : float
        In [0, 1].
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return np.asarray(probability) > float(threshold)
