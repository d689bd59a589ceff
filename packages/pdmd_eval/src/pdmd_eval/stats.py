"""Confidence intervals and paired tests.

- :func:`bootstrap_ci` is the one place that turns per-unit values (per seed, per prompt, per video) into
  ``(mean, low, high)``. It uses ``scipy.stats.bootstrap`` (BCa, 9999 resamples; percentile above 5000 values)
  with a fixed seed so tables are reproducible. Edge cases: ``n == 1`` or all values equal → ``(v, v, v)``
  (no spread to resample); NaN values are rejected (drop them explicitly upstream); an empty array is an error.
- :func:`paired_comparison` compares two arms on the same units (same prompts/seeds): Wilcoxon signed-rank and
  paired t-test p-values plus the mean difference with its bootstrap CI.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0
N_RESAMPLES = 9999
BCA_MAX_N = 5000  # above this, BCa's O(n²) jackknife is slow and its interval matches the percentile one
MAX_BATCH_ELEMENTS = 5_000_000  # resamples × n held at once (≈ 40 MB), so 10⁴-sample metrics stay small


def _batch(n: int) -> int:
    return max(1, MAX_BATCH_ELEMENTS // max(n, 1))


def _as_1d(values: object, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one value for a confidence interval")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN/Inf ({int((~np.isfinite(arr)).sum())} of {arr.size}); drop them first")
    return arr


def bootstrap_ci(values: object, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its bootstrap confidence interval ``(mean, low, high)``.

    BCa interval from ``scipy.stats.bootstrap`` with seed :data:`BOOTSTRAP_SEED`; falls back to the percentile
    interval when BCa is undefined (e.g. only two distinct values) and uses it directly above
    :data:`BCA_MAX_N` values. ``n == 1`` or constant values give a
    zero-width interval ``(v, v, v)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")
    arr = _as_1d(values)
    mean = float(arr.mean())
    if arr.size == 1 or np.ptp(arr) == 0.0:
        return mean, mean, mean
    low, high = np.nan, np.nan
    methods = ("BCa", "percentile") if arr.size <= BCA_MAX_N else ("percentile",)
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns on degenerate jackknife; we fall back instead
            res = stats.bootstrap(
                (arr,),
                np.mean,
                confidence_level=confidence,
                n_resamples=N_RESAMPLES,
                batch=_batch(arr.size),
                method=method,
                rng=np.random.default_rng(BOOTSTRAP_SEED),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return mean, low, high


def ratio_of_means_ci(
    numerator: object, denominator: object, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` for paired units with a paired percentile-bootstrap CI.

    Used for "motion relative to the teacher": a ratio of means is stable when single teacher videos are
    nearly static, unlike a mean of per-video ratios.
    """
    a, b = _as_1d(numerator, "numerator"), _as_1d(denominator, "denominator")
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.size} vs {b.size}")
    if b.mean() <= 0:
        raise ValueError(f"denominator mean is {b.mean():.3g}; a ratio needs a positive reference mean")
    ratio = float(a.mean() / b.mean())
    if a.size == 1:
        return ratio, ratio, ratio

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) / np.mean(y, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (a, b),
            statistic,
            paired=True,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=N_RESAMPLES,
            batch=_batch(a.size),
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class PairedComparison:
    """Arm A minus arm B on the same units."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    diff_low: float
    diff_high: float
    wilcoxon_p: float
    ttest_p: float


def paired_comparison(a: object, b: object, confidence: float = 0.95) -> PairedComparison:
    """Wilcoxon signed-rank and paired t-test (two-sided) of ``a`` vs ``b``, unit by unit.

    Identical arms (all differences zero) give p = 1 for both tests; ``n == 1`` gives p = NaN (no test possible).
    """
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
    diff = x - y
    mean_diff, low, high = bootstrap_ci(diff, confidence)
    if x.size < 2:
        w_p = t_p = float("nan")
    elif not np.any(diff):
        w_p = t_p = 1.0
    else:
        w_p = float(stats.wilcoxon(x, y).pvalue)
        t_p = float(stats.ttest_rel(x, y).pvalue) if np.ptp(diff) > 0 else 0.0
    return PairedComparison(x.size, float(x.mean()), float(y.mean()), mean_diff, low, high, w_p, t_p)
