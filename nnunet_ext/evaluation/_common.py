"""Input checks and small array helpers shared by the metric modules."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

# Status flags that accompany every metric value computed on a pair of masks.
OK = "ok"
BOTH_EMPTY = "both_empty"
PRED_EMPTY = "pred_empty"
REF_EMPTY = "ref_empty"
STATUSES = (OK, BOTH_EMPTY, PRED_EMPTY, REF_EMPTY)


def as_mask(array, name: str = "mask") -> np.ndarray:
    """Return ``array`` as a boolean 2D or 3D numpy array, or raise a clear error."""
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D array, got {arr.ndim}D with shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be boolean or numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr != 0


def check_pair(pred, ref) -> Tuple[np.ndarray, np.ndarray]:
    """Validate a (prediction, reference) pair of masks and return them as boolean arrays."""
    p = as_mask(pred, "pred")
    r = as_mask(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    return p, r


def check_spacing(spacing: Optional[Sequence[float]], ndim: int) -> Tuple[float, ...]:
    """Return the voxel spacing as a tuple of ``ndim`` positive floats (array-axis order)."""
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(sp) != ndim:
        raise ValueError(
            f"spacing must have one entry per array axis ({ndim}), got {len(sp)}: {sp}"
        )
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing entries must be positive and finite, got {sp}")
    return sp


def empty_status(pred: np.ndarray, ref: np.ndarray) -> str:
    """Return which of the two masks is empty: one of ``ok``, ``both_empty``, ``pred_empty``, ``ref_empty``."""
    p_any, r_any = bool(pred.any()), bool(ref.any())
    if p_any and r_any:
        return OK
    if not p_any and not r_any:
        return BOTH_EMPTY
    return PRED_EMPTY if not p_any else REF_EMPTY


def bounding_box(*masks: np.ndarray, pad: int = 0) -> Optional[Tuple[slice, ...]]:
    """Smallest box (as slices) containing the foreground of all ``masks``, grown by ``pad``
    voxels and clipped to the array; ``None`` if all masks are empty."""
    shape = masks[0].shape
    lo = [None] * len(shape)
    hi = [None] * len(shape)
    for m in masks:
        for ax in range(m.ndim):
            other = tuple(a for a in range(m.ndim) if a != ax)
            nz = np.flatnonzero(m.any(axis=other))
            if nz.size == 0:
                break
            lo[ax] = nz[0] if lo[ax] is None else min(lo[ax], nz[0])
            hi[ax] = nz[-1] if hi[ax] is None else max(hi[ax], nz[-1])
    if lo[0] is None:
        return None
    return tuple(
        slice(max(int(l) - pad, 0), min(int(h) + 1 + pad, n)) for l, h, n in zip(lo, hi, shape)
    )


def crop_padded(mask: np.ndarray, box: Tuple[slice, ...]) -> np.ndarray:
    """Crop ``mask`` to ``box`` and surround the crop with one layer of background."""
    return np.pad(mask[box], 1, mode="constant", constant_values=False)


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two non-negative numbers, defined as 0 when both are 0."""
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)
