import numpy as np
import pytest
from scipy import stats as sps

from pdmd_eval.stats import (
    bootstrap_ci,
    clustered_ci,
    clustered_paired_comparison,
    paired_comparison,
    ratio_of_means_ci,
)


def test_bootstrap_ci_brackets_the_mean_and_matches_t_interval_for_normal_data():
    x = np.random.default_rng(0).normal(5.0, 2.0, size=200)
    mean, low, high = bootstrap_ci(x)
    assert mean == pytest.approx(x.mean())
    assert low < mean < high
    t_low, t_high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert low == pytest.approx(t_low, abs=0.1) and high == pytest.approx(t_high, abs=0.1)


def test_bootstrap_ci_is_reproducible_and_narrows_with_lower_confidence():
    x = np.random.default_rng(1).exponential(size=40)
    assert bootstrap_ci(x) == bootstrap_ci(x)
    _, low90, high90 = bootstrap_ci(x, confidence=0.9)
    _, low95, high95 = bootstrap_ci(x, confidence=0.95)
    assert high90 - low90 < high95 - low95


def test_bootstrap_ci_single_value_and_constant_arrays_have_zero_width():
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci(np.full(10, 2.5)) == (2.5, 2.5, 2.5)


def test_bootstrap_ci_two_valued_data_falls_back_to_finite_interval():
    mean, low, high = bootstrap_ci([0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    assert np.isfinite(low) and np.isfinite(high) and low <= mean <= high


def test_bootstrap_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_paired_comparison_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(2)
    base = rng.normal(size=30)
    shifted = paired_comparison(base + 1.0 + 0.1 * rng.normal(size=30), base)
    assert shifted.mean_diff == pytest.approx(1.0, abs=0.05)
    assert shifted.wilcoxon_p < 1e-4 and shifted.ttest_p < 1e-4
    assert shifted.diff_low > 0
    same = paired_comparison(base, base)
    assert same.wilcoxon_p == 1.0 and same.ttest_p == 1.0 and same.mean_diff == 0.0


def test_paired_comparison_p_values_equal_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=20), rng.normal(0.3, 1.0, size=20)
    res = paired_comparison(a, b)
    assert res.wilcoxon_p == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert res.ttest_p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    with pytest.raises(ValueError, match="length"):
        paired_comparison(a, b[:5])


def test_ratio_of_means_ci():
    rng = np.random.default_rng(4)
    teacher = rng.uniform(1.0, 3.0, size=50)
    ratio, low, high = ratio_of_means_ci(0.5 * teacher, teacher)
    assert ratio == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)
    noisy = 0.5 * teacher + rng.normal(0, 0.2, size=50)
    ratio, low, high = ratio_of_means_ci(noisy, teacher)
    assert low < ratio < high and low < 0.5 < high


# ---------------------------------------------------------------------------------------------- clustered units
# Two-level data as the pipeline produces it: G training seeds (clusters) × P prompts, x[g, p] = μ + u_g + e_gp with
# a seed effect u_g ~ N(0, σ_u²) shared by all prompts of a seed and prompt noise e_gp ~ N(0, σ_e²). Seeds differ
# more than prompts (σ_u = 1 > σ_e = 0.5). Each test counts how often an interval covers the true μ = 0.
Z999 = 3.29  # two-sided 99.9 % normal quantile: a correct interval fails the check once in 1000 suite runs


def two_level(rng, reps, seeds, prompts, sigma_seed=1.0, sigma_prompt=0.5):
    return rng.normal(0, sigma_seed, (reps, seeds, 1)) + rng.normal(0, sigma_prompt, (reps, seeds, prompts))


def binomial_tolerance(p, reps):
    """Z999 standard errors of a Monte Carlo coverage estimate whose true value is p."""
    return Z999 * np.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize("seeds", [3, 5])
def test_clustered_ci_keeps_nominal_coverage_when_seeds_dominate(seeds):
    """The t interval on seed means is exact for normal seed means, so its coverage is 0.95 up to Monte Carlo
    error: 2000 replicates give a standard error of 0.0049 and a tolerance of ±0.016."""
    reps = 2000
    data = two_level(np.random.default_rng(10 + seeds), reps, seeds, prompts=10)
    covered = [low <= 0.0 <= high for _, low, high in (clustered_ci(x) for x in data)]
    coverage = float(np.mean(covered))
    print(f"clustered_ci coverage, {seeds} seeds × 10 prompts: {coverage:.3f} (nominal 0.95, {reps} replicates)")
    assert abs(coverage - 0.95) <= binomial_tolerance(0.95, reps), coverage


def test_per_unit_bootstrap_undercovers_on_the_same_data():
    """The per-unit bootstrap of the 3 × 10 units estimates the standard error as s/√30 with
    E[s²] = σ_e² + σ_u²·P(G−1)/(N−1) = 0.940, while the grand mean's true standard error is
    √(σ_u²/G + σ_e²/N) = 0.585. Plugging E[s²] in gives coverage 2Φ(1.96·√((N−1)/N)·√(0.940/30)/0.585) − 1 = 0.44;
    since coverage is concave and increasing in s, the actual coverage is at most that (Jensen)."""
    seeds, prompts, reps = 3, 10, 200
    n = seeds * prompts
    s2 = 0.5**2 + 1.0**2 * prompts * (seeds - 1) / (n - 1)
    true_se = np.sqrt(1.0**2 / seeds + 0.5**2 / n)
    plug_in = 2 * sps.norm.cdf(1.96 * np.sqrt((n - 1) / n) * np.sqrt(s2 / n) / true_se) - 1
    data = two_level(np.random.default_rng(3), reps, seeds, prompts)
    coverage = float(np.mean([low <= 0.0 <= high for _, low, high in (bootstrap_ci(x.ravel()) for x in data)]))
    print(f"per-unit bootstrap coverage, 3 seeds × 10 prompts: {coverage:.3f} (nominal 0.95, plug-in bound "
          f"{plug_in:.3f}, {reps} replicates)")
    assert plug_in == pytest.approx(0.44, abs=0.01)
    assert coverage <= plug_in + binomial_tolerance(plug_in, reps), coverage


def test_seed_level_bootstrap_undercovers_with_three_seeds():
    """Why clustered_ci is not a cluster bootstrap: resampling 3 seed means gives a percentile interval close to
    mean ± 1.96·√(2/3)·s/√3; it covers when |T| ≤ 1.6 for T ~ t(2), whose CDF is 1/2 + x/(2√(2 + x²)), i.e.
    coverage 0.75 (plus a little from the bootstrap distribution's 10-point discreteness)."""
    reps = 400
    x = 1.96 * np.sqrt(2 / 3)
    predicted = 2 * (x / (2 * np.sqrt(2 + x**2)))
    data = two_level(np.random.default_rng(4), reps, 3, 10).mean(axis=2)
    covered = []
    for i, means in enumerate(data):
        ci = sps.bootstrap((means,), np.mean, method="percentile", n_resamples=999,
                           rng=np.random.default_rng(i)).confidence_interval
        covered.append(ci.low <= 0.0 <= ci.high)
    coverage = float(np.mean(covered))
    print(f"seed-level percentile bootstrap coverage, 3 seeds: {coverage:.3f} (predicted {predicted:.3f})")
    assert predicted == pytest.approx(0.749, abs=0.001)
    assert coverage <= predicted + binomial_tolerance(predicted, reps), coverage


def test_clustered_ci_is_the_t_interval_on_seed_means():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(4, 7)) + rng.normal(size=(4, 1))
    means = values.mean(axis=1)
    t_low, t_high = sps.t.interval(0.95, 3, loc=means.mean(), scale=sps.sem(means))
    mean, low, high = clustered_ci(values)
    assert mean == pytest.approx(values.mean()) and low == pytest.approx(t_low) and high == pytest.approx(t_high)
    # ragged clusters: every seed weighs the same, whatever its number of prompts
    ragged = [[1.0, 2.0, 3.0], [4.0], [0.0, 2.0]]
    assert clustered_ci(ragged)[0] == pytest.approx((2.0 + 4.0 + 1.0) / 3)
    # the set-level case: one value per seed is a plain t interval over seeds
    per_seed = np.array([[1.0], [2.0], [4.0]])
    assert clustered_ci(per_seed)[1] == pytest.approx(sps.t.interval(0.95, 2, loc=7 / 3, scale=sps.sem([1, 2, 4]))[0])


def test_clustered_ci_edge_cases_and_bad_input():
    one_seed = clustered_ci([[1.0, 2.0, 3.0]])
    assert one_seed[0] == 2.0 and np.isnan(one_seed[1]) and np.isnan(one_seed[2])
    assert clustered_ci([[1.0, 3.0], [2.0, 2.0]]) == (2.0, 2.0, 2.0)  # identical seed means
    with pytest.raises(ValueError, match="2-D"):
        clustered_ci(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        clustered_ci([[1.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="no clusters"):
        clustered_ci([])
    with pytest.raises(ValueError, match="confidence"):
        clustered_ci([[1.0], [2.0]], confidence=95)


def test_clustered_paired_comparison_tests_seed_means():
    rng = np.random.default_rng(6)
    b = rng.normal(size=(5, 8))
    a = b + 0.5 + rng.normal(0, 0.3, size=(5, 1)) + rng.normal(0, 0.1, size=(5, 8))
    res = clustered_paired_comparison(a, b)
    diffs = (a - b).mean(axis=1)
    assert (res.n_clusters, res.n_units) == (5, 40)
    assert res.mean_diff == pytest.approx(diffs.mean())
    assert res.ttest_p == pytest.approx(sps.ttest_1samp(diffs, 0.0).pvalue)
    assert res.wilcoxon_p == pytest.approx(sps.wilcoxon(diffs).pvalue)
    assert res.wilcoxon_p >= 2 / 2**5  # the exact test's floor with 5 seeds
    # the interval excludes 0 exactly when the t-test rejects at 1 − confidence
    for shift in np.linspace(-0.2, 1.0, 13):
        r = clustered_paired_comparison(b + shift + rng.normal(0, 0.3, size=(5, 1)), b)
        assert (r.diff_low > 0 or r.diff_high < 0) == (r.ttest_p < 0.05)
    with pytest.raises(ValueError, match="differ in size"):
        clustered_paired_comparison(a, b[:, :3])
