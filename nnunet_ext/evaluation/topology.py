"""Betti numbers, Euler characteristic and Betti-number errors of binary masks.

Connectivity is stated explicitly: the foreground uses ``connectivity`` (26 or 6 in 3D, 8 or 4
in 2D; default 26 / 8) and the background the complementary one (6 / 26, 4 / 8), the pairing
under which the digital topology is well defined.

* β0: foreground components;
* 3D: β2: cavities = background components after padding the array with one layer of
  background, minus one (the outside); β1 = β0 + β2 − χ (Euler–Poincaré);
* 2D: β1: holes = background components after padding, minus one.

χ is computed exactly by counting the cells of the cubical complex that represents the mask
under the chosen connectivity (closed unit cubes for 26/8, the dual complex on voxel centres
for 6/4).
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, Optional, Tuple

import numpy as np

from ._common import as_mask, check_pair, label_components, padded_crop
from ._prepared import PreparedMask, components, prepare_mask

_ALLOWED = {3: (26, 6), 2: (8, 4)}


def _check_connectivity(ndim: int, connectivity: Optional[int]) -> int:
    if connectivity is None:
        return _ALLOWED[ndim][0]
    if connectivity not in _ALLOWED[ndim]:
        raise ValueError(
            f"connectivity for {ndim}D masks must be one of {_ALLOWED[ndim]}, got {connectivity}"
        )
    return int(connectivity)


def _complement(ndim: int, connectivity: int) -> int:
    a, b = _ALLOWED[ndim]
    return b if connectivity == a else a


def _window(p: np.ndarray, axes, op) -> np.ndarray:
    """Combine ``p`` with its copies shifted by one along every subset of ``axes`` (a 2-wide
    window along each of them) using ``op`` (``np.logical_or`` or ``np.logical_and``)."""
    out = p
    for ax in axes:
        lo = [slice(None)] * p.ndim
        hi = [slice(None)] * p.ndim
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        out = op(out[tuple(lo)], out[tuple(hi)])
    return out


def euler_characteristic(mask, connectivity: Optional[int] = None) -> int:
    """Euler characteristic χ of a 2D or 3D mask under the given foreground connectivity.

    Parameters
    ----------
    mask : ndarray of bool (2D or 3D)
    connectivity : int, optional
        26 (default) or 6 in 3D, 8 (default) or 4 in 2D.

    Examples
    --------
    >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
    >>> euler_characteristic(ring)   # one component, one hole
    0
    """
    m = as_mask(mask)
    conn = _check_connectivity(m.ndim, connectivity)
    return _euler_of_padded(padded_crop(m)[0], conn)


def _euler_of_padded(p: np.ndarray, conn: int) -> int:
    """χ of a crop surrounded by background (every cell of the mask's complex lies inside)."""
    # closed-cell complex (26/8): a cell is present if any voxel touching it is foreground;
    # dual complex (6/4): a cell spanned by voxel centres is present if all its voxels are
    op = np.logical_or if conn == _ALLOWED[p.ndim][0] else np.logical_and
    chi = 0
    for k in range(p.ndim + 1):  # k = number of axes the window spans
        count = sum(int(np.count_nonzero(_window(p, axes, op))) for axes in combinations(range(p.ndim), k))
        # for the closed complex, spanning k axes gives cells of dimension ndim - k
        dim = (p.ndim - k) if op is np.logical_or else k
        chi += (-1) ** dim * count
    return int(chi)


def betti_numbers(mask, connectivity: Optional[int] = None) -> Tuple[int, ...]:
    """Betti numbers of a mask: ``(β0, β1, β2)`` in 3D, ``(β0, β1)`` in 2D.

    Parameters
    ----------
    mask : ndarray of bool (2D or 3D)
    connectivity : int, optional
        Foreground connectivity, 26 (default) or 6 in 3D, 8 (default) or 4 in 2D; the
        background uses the complementary one.

    Examples
    --------
    >>> shell = np.ones((3, 3, 3), bool); shell[1, 1, 1] = False
    >>> betti_numbers(shell)   # one component, no tunnel, one cavity
    (1, 0, 1)
    """
    m = as_mask(mask)
    return betti_numbers_prepared(prepare_mask(m, labels=False), connectivity)


def betti_numbers_prepared(prep: PreparedMask, connectivity: Optional[int] = None) -> Tuple[int, ...]:
    """:func:`betti_numbers` of a prepared mask (reusing its component labels when
    ``connectivity`` is the full one)."""
    conn = _check_connectivity(prep.ndim, connectivity)
    if prep.n_voxels == 0:
        return (0,) * prep.ndim
    p = prep.crop
    b0 = components(prep, conn)[1]
    top = label_components(~p, _complement(prep.ndim, conn))[1] - 1
    if prep.ndim == 2:
        return (b0, top)
    chi = _euler_of_padded(p, conn)
    return (b0, b0 + top - chi, top)


def betti_errors(pred, ref, connectivity: Optional[int] = None) -> Dict[str, int]:
    """Absolute Betti-number differences per dimension, ``|βk(pred) − βk(ref)|``.

    Returns
    -------
    dict with keys ``betti_0_error``, ``betti_1_error`` (and ``betti_2_error`` in 3D). Empty
    masks have all Betti numbers 0, so the errors are always defined.

    Examples
    --------
    >>> a = np.zeros((5, 7), bool); a[2, 1] = a[2, 5] = True
    >>> betti_errors(a, np.zeros_like(a))
    {'betti_0_error': 2, 'betti_1_error': 0}
    """
    p, r = check_pair(pred, ref)
    bp, br = betti_numbers(p, connectivity), betti_numbers(r, connectivity)
    return {f"betti_{k}_error": abs(a - b) for k, (a, b) in enumerate(zip(bp, br))}
