import numpy as np
import pytest
from scipy import linalg

from pdmd_eval.functional.fidelity import (
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    knn_precision_recall,
)


def test_frechet_distance_of_a_set_to_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_two_diagonal_gaussians_equals_closed_form():
    # commuting covariances: FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 over std devs
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    s_a, s_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((s_a - s_b) ** 2)
    got = frechet_distance_from_stats(mu_a, np.diag(s_a**2), mu_b, np.diag(s_b**2))
    assert got == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(15.0)  # (1 + 0 + 9) + (4 + 1 + 0)


def test_frechet_distance_of_general_gaussians_matches_sqrtm_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu_a, mu_b = rng.normal(size=4), rng.normal(size=4)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean)
    assert frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_from_samples_approaches_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(20000, 2))
    b = rng.normal([3.0, 0.0], [2.0, 1.0], size=(20000, 2))
    assert frechet_distance(a, b) == pytest.approx(9.0 + 1.0, rel=0.03)


def test_frechet_distance_is_finite_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(3)
    value = frechet_distance(rng.normal(size=(5, 32)), rng.normal(size=(6, 32)))
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("n_a,n_b", [(5, 7), (40, 30)])
def test_sample_space_and_covariance_forms_agree(n_a, n_b):
    from pdmd_eval.functional.fidelity import _frechet_distance_sample_space

    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(n_a, 20)), rng.normal(0.5, 2.0, size=(n_b, 20))
    expected = frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))
    assert _frechet_distance_sample_space(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_errors_name_the_problem():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="N×D"):
        gaussian_stats(np.zeros(5))


def test_knn_precision_recall_identical_and_disjoint_sets():
    x = np.random.default_rng(4).normal(size=(50, 3))
    p, r = knn_precision_recall(x, x, k=3)
    assert p.mean() == 1.0 and r.mean() == 1.0
    p, r = knn_precision_recall(x, x + 100.0, k=3)
    assert p.mean() == 0.0 and r.mean() == 0.0


def test_knn_recall_drops_when_fake_collapses_to_one_mode():
    rng = np.random.default_rng(5)
    real = np.concatenate([rng.normal(-5, 0.3, size=(50, 2)), rng.normal(5, 0.3, size=(50, 2))])
    fake = rng.normal(-5, 0.3, size=(100, 2))
    p, r = knn_precision_recall(real, fake, k=3)
    assert p.mean() > 0.9
    assert r.mean() == pytest.approx(0.5, abs=0.06)


def test_knn_radii_chunking_matches_full_matrix(monkeypatch):
    from scipy.spatial.distance import cdist

    from pdmd_eval.functional import fidelity

    x = np.random.default_rng(7).normal(size=(30, 4))
    full = np.sort(cdist(x, x), axis=1)[:, 2]
    monkeypatch.setattr(fidelity, "CHUNK_ROWS", 7)
    np.testing.assert_allclose(fidelity.knn_radii(x, 2), full)
    p_small, r_small = fidelity.knn_precision_recall(x, x[:20] + 0.1, k=2)
    monkeypatch.setattr(fidelity, "CHUNK_ROWS", 1024)
    p_full, r_full = fidelity.knn_precision_recall(x, x[:20] + 0.1, k=2)
    np.testing.assert_array_equal(p_small, p_full)
    np.testing.assert_array_equal(r_small, r_full)
