"""Summary statistics over cases: percentile bootstrap confidence intervals and paired tests.

Cases are the resampling unit: when several classes or metrics are summarised for the same
cases, pass the same ``seed`` and they share the resampled case indices.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def _as_values(values, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"{name} is empty: nothing to summarise")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values; metrics here never produce "
                         "them, so they came from elsewhere")
    return v


def _resampled_means(v: np.ndarray, n_resamples: int, seed: Optional[int],
                     chunk: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = v.size
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = v[idx].mean(axis=1)
    return out


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
                 seed: Optional[int] = 0) -> tuple:
    """Percentile bootstrap confidence interval of the mean (cases resampled with replacement).

    Examples
    --------
    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = _as_values(values)
    means = _resampled_means(v, n_resamples, seed)
    a = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def summarize(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
              seed: Optional[int] = 0) -> Dict[str, float]:
    """Mean, standard deviation (ddof=1; 0 for one case), median, percentile-bootstrap CI, n.

    Examples
    --------
    >>> s = summarize([0.5, 0.7, 0.9], n_resamples=200)
    >>> round(s["mean"], 6), s["n"]
    (0.7, 3)
    """
    v = _as_values(values)
    lo, hi = bootstrap_ci(v, confidence, n_resamples, seed)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "median": float(np.median(v)), "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                     n_resamples: int = 10000, seed: Optional[int] = 0) -> Dict[str, float]:
    """Paired bootstrap of the mean difference ``a − b`` over the same cases.

    The same resampled case indices are applied to both methods (resampling the per-case
    differences). ``p_value`` is the two-sided bootstrap p-value: twice the smaller fraction of
    resampled mean differences on either side of 0, capped at 1.

    Examples
    --------
    >>> r = paired_bootstrap([0.9, 0.8, 0.85], [0.7, 0.6, 0.65], n_resamples=500)
    >>> round(r["mean_diff"], 6), r["ci_low"] > 0
    (0.2, True)
    """
    va, vb = _as_values(a, "a"), _as_values(b, "b")
    if va.size != vb.size:
        raise ValueError(f"paired values need the same number of cases, got {va.size} and {vb.size}")
    d = va - vb
    means = _resampled_means(d, n_resamples, seed)
    al = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * al, 100 * (1 - al)])
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(p), "n": int(d.size)}
