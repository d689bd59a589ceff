"""Confidence intervals and paired tests.

- :func:`bootstrap_ci` is the one place that turns per-unit values (per seed, per prompt, per video) into
  ``(mean, low, high)``. It uses ``scipy.stats.bootstrap`` (BCa, 9999 resamples; percentile above 5000 values)
  with a fixed seed so tables are reproducible. Edge cases: ``n == 1`` or all values equal → ``(v, v, v)``
  (no spread to resample); NaN values are rejected (drop them explicitly upstream); an empty array is an error.
- :func:`paired_comparison` compares two arms on the same units (same prompts/seeds): Wilcoxon signed-rank and
  paired t-test p-values plus the mean difference with its bootstrap CI. Both treat every unit as independent.
- :func:`clustered_ci` and :func:`clustered_paired_comparison` are for units that are *not* independent: values
  laid out as clusters (rows = training seeds, columns = prompts), where every unit of a row shares one trained
  model. They infer from the cluster means, so the interval describes run-to-run spread (see their docstrings).
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


def _clusters(values: object, name: str = "values") -> list[np.ndarray]:
    """Rows of a 2-D array, or a sequence of 1-D sequences of unequal length, as finite 1-D float arrays."""
    if isinstance(values, np.ndarray) and values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows = clusters, e.g. training seeds), got shape {values.shape}")
    rows = list(values)  # type: ignore[call-overload]
    if not rows:
        raise ValueError(f"{name} has no clusters: need at least one row")
    out = []
    for i, row in enumerate(rows):
        arr = np.asarray(row, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{name}: cluster {i} must be 1-D (one value per unit), got shape {arr.shape}")
        out.append(_as_1d(arr, f"{name}[{i}]"))
    return out


def cluster_means(values: object) -> np.ndarray:
    """One mean per cluster (row); every cluster weighs the same, whatever its number of units."""
    return np.asarray([row.mean() for row in _clusters(values)])


def t_interval(means: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Student-t interval for the mean of independent values: ``mean ± t_{n-1} · sd / √n``."""
    mean = float(means.mean())
    if means.size < 2:
        return mean, float("nan"), float("nan")
    sd = float(means.std(ddof=1))
    if sd == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, means.size - 1)) * sd / np.sqrt(means.size)
    return mean, mean - half, mean + half


def clustered_ci(values: object, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and confidence interval ``(mean, low, high)`` for clustered units: rows = training seeds (the
    clusters), columns = prompts (a 2-D array, or one sequence per seed when seeds have different prompts).

    The estimate is the mean of the per-seed means and the interval is the Student-t interval on those G seed
    means (G − 1 degrees of freedom). Why this interval:

    - The seed means are independent and identically distributed (one trained model each), whatever the
      correlation between the prompts of one seed, and each averages P prompts, so they are close to normal.
      For normal seed means the t interval is exact for any G ≥ 2: it keeps 95 % coverage with 3 seeds, and
      it is the test a mixed model with a random seed intercept gives for a balanced design (the fixed effect is
      tested against the between-seed mean square, G − 1 degrees of freedom).
    - A per-unit bootstrap treats the G × P units as independent: its width shrinks with √(G·P) while the
      run-to-run spread only averages out with √G, so it under-covers whenever seeds differ more than prompts
      (tests/unit/eval/test_stats.py measures ≈ 40 % coverage for a nominal 95 % with 3 seeds).
    - A cluster bootstrap (resampling seeds) is correct only with many clusters: with G = 3 it amounts to a
      normal interval with the divisor G instead of G − 1, i.e. a multiplier 1.96·√(2/3) ≈ 1.6 where the t
      quantile is 4.30, and covers ≈ 75 % (also measured in the tests). The wild cluster bootstrap has only
      2^G distinct draws (8 with 3 seeds), and the small-sample cluster-robust correction (CR2 with
      Bell–McCaffrey degrees of freedom) reduces, for a mean over balanced clusters, to this t interval.

    Edge cases: one seed gives ``(mean, nan, nan)`` (no run-to-run spread can be estimated, so no interval);
    identical seed means give a zero-width interval; NaN values are rejected.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")
    return t_interval(cluster_means(values), confidence)


@dataclass(frozen=True)
class ClusteredComparison:
    """Arm A minus arm B on paired units, clustered by training seed (rows)."""

    n_clusters: int
    n_units: int
    mean_a: float
    mean_b: float
    mean_diff: float
    diff_low: float
    diff_high: float
    ttest_p: float      # one-sample t-test of the per-seed mean differences (the interval's own test)
    wilcoxon_p: float   # Wilcoxon signed-rank of the per-seed mean differences (exact; ≥ 2/2^G, see below)


def clustered_paired_comparison(a: object, b: object, confidence: float = 0.95) -> ClusteredComparison:
    """Paired comparison of ``a`` vs ``b`` (same layout: rows = training seeds, columns = prompts).

    The unit-level differences are averaged per seed; the mean difference gets the :func:`clustered_ci` interval
    and the two-sided t-test on those seed means (p < 1 − confidence exactly when the interval excludes 0). The
    exact Wilcoxon signed-rank p-value on the seed means is reported beside it: it cannot fall below 2/2^G, i.e.
    0.25 with 3 seeds and 0.0625 with 5, so with fewer than 6 seeds it can never reach 0.05.
    """
    rows_a, rows_b = _clusters(a, "a"), _clusters(b, "b")
    if [r.size for r in rows_a] != [r.size for r in rows_b]:
        raise ValueError(f"paired clusters differ in size: {[r.size for r in rows_a]} vs {[r.size for r in rows_b]}")
    diffs = np.asarray([(ra - rb).mean() for ra, rb in zip(rows_a, rows_b, strict=True)])
    mean_diff, low, high = clustered_ci([ra - rb for ra, rb in zip(rows_a, rows_b, strict=True)], confidence)
    if diffs.size < 2:
        t_p = w_p = float("nan")
    elif not np.any(diffs):
        t_p = w_p = 1.0
    else:
        t_p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if np.ptp(diffs) > 0 else 0.0
        w_p = float(stats.wilcoxon(diffs).pvalue)
    mean_a = float(np.mean([r.mean() for r in rows_a]))
    mean_b = float(np.mean([r.mean() for r in rows_b]))
    return ClusteredComparison(len(rows_a), int(sum(r.size for r in rows_a)), mean_a, mean_b, mean_diff, low, high,
                               t_p, w_p)
