"""Summary statistics over cases: bootstrap confidence intervals of the mean and paired tests.

Cases are the resampling unit: when several classes or metrics are summarised for the same
cases, pass the same ``seed`` and they share the resampled case indices.

The default interval is the *expanded* percentile bootstrap (Hesterberg, "What teachers should
know about the bootstrap", The American Statistician 69(4), 2015): the plain percentile interval
is too narrow for small n (the bootstrap distribution of the mean has the spread of the sample,
``sqrt((n - 1) / n)`` of the population's, and ignores the t-distribution's heavier tails;
measured coverage of a nominal 95 % interval: 0.74 at n = 3, 0.84 at n = 5). The expanded
interval takes the percentiles at ``α' / 2 = Φ(−sqrt(n / (n − 1)) · t_{n−1, 1−α/2})`` instead of
``α / 2``, which turns into the plain percentile interval as n grows; where the bootstrap
distribution of very few cases is too coarse to reach those tails (3 cases have 10 distinct
resampled means, so no percentile interval covers better than 0.75), the interval is widened to
Student's t interval of the mean, ``mean ± t_{n−1, 1−α/2} · s / sqrt(n)``. ``method="percentile"``
keeps the plain percentile interval. With one case there is no interval: both ends are the value (and a
warning says so).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence

import numpy as np

#: interval methods of :func:`bootstrap_ci` (``expanded``: default)
CI_METHODS = ("expanded", "percentile")
#: the default method as summaries name it
BOOTSTRAP_METHOD = "expanded percentile (Hesterberg 2015), at least Student's t"


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


def check_ci_method(method: str) -> str:
    if method not in CI_METHODS:
        raise ValueError(f"CI method must be one of {CI_METHODS}, got {method!r}")
    return method


def _tail(n: int, confidence: float, method: str) -> float:
    """Lower tail probability at which the bootstrap distribution is cut (upper: 1 − it)."""
    a = (1 - confidence) / 2
    if method == "percentile" or n < 2:
        return a
    from scipy.stats import norm, t

    return float(norm.cdf(-np.sqrt(n / (n - 1)) * t.ppf(1 - a, n - 1)))


def _interval(means: np.ndarray, v: np.ndarray, confidence: float, method: str) -> tuple:
    n = v.size
    if n < 2:
        warnings.warn("a confidence interval from one case is meaningless: both ends are its "
                      "value", stacklevel=3)
    tail = _tail(n, confidence, method)
    lo, hi = np.percentile(means, [100 * tail, 100 * (1 - tail)])
    if method == "expanded" and n >= 2:
        # the bootstrap distribution of very few cases is too coarse to reach the tails that the
        # expansion asks for (3 cases: 10 distinct means): never narrower than Student's t
        from scipy.stats import t

        half = t.ppf(1 - (1 - confidence) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
        lo, hi = min(lo, v.mean() - half), max(hi, v.mean() + half)
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
                 seed: Optional[int] = 0, method: str = "expanded") -> tuple:
    """Bootstrap confidence interval of the mean (cases resampled with replacement).

    Parameters
    ----------
    method : {"expanded", "percentile"}
        ``expanded`` (default): percentiles at the tail probability that makes the interval
        hold at small n (module docstring); ``percentile``: the plain percentile interval,
        which under-covers below n ≈ 20.

    Examples
    --------
    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    check_ci_method(method)
    v = _as_values(values)
    means = _resampled_means(v, n_resamples, seed)
    return _interval(means, v, confidence, method)


def summarize(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
              seed: Optional[int] = 0, method: str = "expanded") -> Dict[str, float]:
    """Mean, standard deviation (ddof=1; 0 for one case), median, bootstrap CI (``method`` as
    in :func:`bootstrap_ci`), n.

    Examples
    --------
    >>> s = summarize([0.5, 0.7, 0.9], n_resamples=200)
    >>> round(s["mean"], 6), s["n"]
    (0.7, 3)
    """
    v = _as_values(values)
    lo, hi = bootstrap_ci(v, confidence, n_resamples, seed, method)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "median": float(np.median(v)), "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                     n_resamples: int = 10000, seed: Optional[int] = 0,
                     method: str = "expanded") -> Dict[str, float]:
    """Paired bootstrap of the mean difference ``a − b`` over the same cases.

    The same resampled case indices are applied to both methods (resampling the per-case
    differences); the CI of the mean difference uses ``method`` as :func:`bootstrap_ci`.
    ``p_value`` is the two-sided bootstrap p-value: twice the smaller fraction of
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
    check_ci_method(method)
    d = va - vb
    means = _resampled_means(d, n_resamples, seed)
    lo, hi = _interval(means, d, confidence, method)
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(p), "n": int(d.size)}
