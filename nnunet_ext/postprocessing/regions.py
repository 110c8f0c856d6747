"""Nested regions (BraTS: ET ⊂ TC ⊂ WT): the hierarchy, its violations and their repair.

A region is a set of label values (nnU-Net's ``dataset.json`` regions). Region A is *nested*
in region B when A's label set is a strict subset of B's; then every voxel of A must be a voxel
of B. Masks derived from a label map always satisfy this; masks thresholded from per-region
(sigmoid) probabilities, or edited one region at a time, need not.

Repair rules (:func:`enforce_nesting`):

* ``intersect`` (default): a voxel stays in a region only if it is in every region that
  contains it — ``A ← A ∩ ⋂{B : A ⊂ B}``. Nothing is added anywhere.
* ``union``: a voxel of a region is added to every region containing it —
  ``B ← B ∪ ⋃{A : A ⊂ B}``. This is what nnU-Net's conversion of region probabilities to a
  label map (painting the regions in ``regions_class_order``) implies. Nothing is removed.

Both use the masks as they were before the repair (the subset relation is transitive, so one
pass suffices), both are idempotent and both leave already nested masks unchanged.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

RULES = ("intersect", "union")


def region_ancestors(regions: Sequence[Sequence[int]]) -> Tuple[Tuple[int, ...], ...]:
    """For every region the indices of the regions that strictly contain it.

    Parameters
    ----------
    regions : sequence of sequences of int
        Label values of each region, e.g. ``[(1, 2, 3), (2, 3), (3,)]``.

    Returns
    -------
    tuple of tuples of int: ``ancestors[i]`` are the indices ``j`` with
    ``set(regions[i]) < set(regions[j])``.

    Examples
    --------
    >>> region_ancestors([(1, 2, 3), (2, 3), (3,)])
    ((), (0,), (0, 1))
    """
    sets = [frozenset(int(v) for v in r) for r in regions]
    return tuple(tuple(j for j, b in enumerate(sets) if a < b) for a in sets)


def region_descendants(ancestors: Sequence[Sequence[int]]) -> Tuple[Tuple[int, ...], ...]:
    """Invert :func:`region_ancestors`: ``descendants[j]`` = regions strictly inside region ``j``."""
    out = [[] for _ in ancestors]
    for i, anc in enumerate(ancestors):
        for j in anc:
            out[j].append(i)
    return tuple(tuple(d) for d in out)


def _check(masks, ancestors) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim not in (3, 4):
        raise ValueError(f"region masks must have shape (R, Y, X) or (R, Z, Y, X), got {m.shape}")
    if m.shape[0] != len(ancestors):
        raise ValueError(f"{m.shape[0]} region masks but a hierarchy of {len(ancestors)} regions")
    return m if m.dtype == bool else m != 0


def nesting_violations(masks, ancestors: Sequence[Sequence[int]]) -> Dict[Tuple[int, int], int]:
    """Voxels of a region outside a region that should contain it.

    Parameters
    ----------
    masks : ndarray of bool, shape (R, Z, Y, X) or (R, Y, X)
        One mask per region.
    ancestors : sequence of sequences of int
        From :func:`region_ancestors`.

    Returns
    -------
    dict ``(inner, outer) -> voxel count`` for every violated pair (empty when nested).
    """
    m = _check(masks, ancestors)
    out = {}
    for i, anc in enumerate(ancestors):
        for j in anc:
            n = int(np.count_nonzero(m[i] & ~m[j]))
            if n:
                out[(i, j)] = n
    return out


def enforce_nesting(masks, ancestors: Sequence[Sequence[int]], rule: str = "intersect") -> np.ndarray:
    """Repair region masks so that every region lies inside the regions containing it.

    Parameters
    ----------
    masks : ndarray of bool, shape (R, Z, Y, X) or (R, Y, X)
        One mask per region; not modified.
    ancestors : sequence of sequences of int
        From :func:`region_ancestors`.
    rule : {"intersect", "union"}
        See the module docstring.

    Returns
    -------
    ndarray of bool, same shape, satisfying the nesting.

    Examples
    --------
    >>> m = np.zeros((2, 1, 3), bool); m[0, 0, 0] = True; m[1, 0, :2] = True  # inner sticks out
    >>> anc = ((), (0,))
    >>> enforce_nesting(m, anc, "intersect")[1].astype(int).tolist()
    [[1, 0, 0]]
    >>> enforce_nesting(m, anc, "union")[0].astype(int).tolist()
    [[1, 1, 0]]
    """
    if rule not in RULES:
        raise ValueError(f"unknown nesting rule {rule!r}; known: {list(RULES)}")
    m = _check(masks, ancestors)
    out = m.copy()
    if rule == "intersect":
        for i, anc in enumerate(ancestors):
            for j in anc:
                out[i] &= m[j]
    else:
        for i, anc in enumerate(ancestors):
            for j in anc:
                out[j] |= m[i]
    return out


def propagate_change(masks: np.ndarray, targets: Sequence[int], removed: np.ndarray,
                     added: np.ndarray, ancestors: Sequence[Sequence[int]]) -> None:
    """Apply an edit of some regions *in place*, keeping the nesting.

    Removed voxels leave the target regions and every region inside them; added voxels join
    the target regions and every region containing them. Regions that are neither inside nor
    around a target are untouched, so nested masks stay nested.

    Parameters
    ----------
    masks : ndarray of bool, shape (R, Z, Y, X) or (R, Y, X)
        Modified in place.
    targets : sequence of int
        Indices of the edited regions.
    removed, added : ndarray of bool, spatial shape
        Voxels to take out of / put into the targets.
    ancestors : sequence of sequences of int
        From :func:`region_ancestors`.
    """
    desc = region_descendants(ancestors)
    down = set(targets).union(*(desc[t] for t in targets))
    up = set(targets).union(*(ancestors[t] for t in targets))
    if removed.any():
        for i in sorted(down):
            masks[i] &= ~removed
    if added.any():
        for i in sorted(up):
            masks[i] |= added
