import numpy as np
import pytest
from scipy import stats as sps

from pdmd_eval.stats import bootstrap_ci, paired_comparison, ratio_of_means_ci


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
