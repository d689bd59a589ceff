"""Fidelity: Fréchet distance between feature sets and k-NN precision/recall.

The feature space is whatever extractor the caller used (Inception, CLIP, DINO, a CPU-tier ``.pt2`` net, raw
coordinates for 2-D points, a video net for an FVD-like distance); these functions only see ``N×D`` arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist


def _features(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an N×D array, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} has {arr.shape[0]} rows; a covariance needs at least 2 samples")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN/Inf")
    return arr


def gaussian_stats(feats: object) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``N-1``) covariance of an ``N×D`` feature array."""
    arr = _features(feats, "feats")
    return arr.mean(axis=0), np.atleast_2d(np.cov(arr, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; tiny negative eigenvalues from round-off are clipped to 0."""
    vals, vecs = linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """``|mu_a - mu_b|² + tr(Σa + Σb - 2 (Σa^½ Σb Σa^½)^½)`` between two Gaussians.

    The symmetric form ``Σa^½ Σb Σa^½`` is PSD, so its square-root trace is a sum of square roots of
    non-negative eigenvalues: no complex parts and no ill-conditioned ``sqrtm(Σa Σb)`` for rank-deficient
    covariances (fewer samples than dimensions).
    """
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
    root_a = _psd_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    eig = linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean)
    return max(value, 0.0)  # round-off can give -1e-12 for identical sets


def _frechet_distance_sample_space(a: np.ndarray, b: np.ndarray) -> float:
    """Same value as the covariance form, computed from centred samples when ``N < D`` (e.g. 2048-d Inception
    features of a few hundred samples): with ``Σ = XᵀX / (n-1)``, the eigenvalues of ``Σa Σb`` are the squared
    singular values of ``Xa Xbᵀ`` over ``(na-1)(nb-1)``, so ``tr (Σa^½ Σb Σa^½)^½`` is their sum of singular
    values. Costs ``na·nb·D`` instead of ``D³``."""
    xa, xb = a - a.mean(axis=0), b - b.mean(axis=0)
    na, nb = len(a) - 1, len(b) - 1
    tr_covmean = float(linalg.svdvals(xa @ xb.T).sum()) / np.sqrt(na * nb)
    diff = a.mean(axis=0) - b.mean(axis=0)
    value = float(diff @ diff + (xa * xa).sum() / na + (xb * xb).sum() / nb - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance(feats_a: object, feats_b: object) -> float:
    """Fréchet distance between Gaussians fitted to two ``N×D`` feature arrays (FID/FVD formula).

    Uses the sample-space form when both sets have fewer samples than dimensions, else the covariance form.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if max(len(a), len(b)) < a.shape[1]:
        return _frechet_distance_sample_space(a, b)
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


CHUNK_ROWS = 1024  # distance rows held at once: memory CHUNK_ROWS × N instead of N × N


def knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the k-NN manifold radius)."""
    if not 1 <= k < feats.shape[0]:
        raise ValueError(f"k={k} must be in [1, {feats.shape[0] - 1}] for {feats.shape[0]} samples")
    radii = []
    for start in range(0, len(feats), CHUNK_ROWS):
        dist = cdist(feats[start : start + CHUNK_ROWS], feats)
        radii.append(np.partition(dist, k, axis=1)[:, k])  # index 0 is the point itself (distance 0)
    return np.concatenate(radii)


def _inside_manifold(queries: np.ndarray, support: np.ndarray, k: int) -> np.ndarray:
    radii = knn_radii(support, k)
    hits = [
        (cdist(queries[start : start + CHUNK_ROWS], support) <= radii[None, :]).any(axis=1)
        for start in range(0, len(queries), CHUNK_ROWS)
    ]
    return np.concatenate(hits)


def knn_precision_recall(real: object, fake: object, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) as per-sample indicators.

    Returns ``(precision_hits, recall_hits)``: for each fake sample, 1 if it lies inside the real k-NN
    manifold; for each real sample, 1 if it lies inside the fake manifold. Their means are precision and recall.
    """
    r, f = _features(real, "real"), _features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    precision = _inside_manifold(f, r, k).astype(np.float64)
    recall = _inside_manifold(r, f, k).astype(np.float64)
    return precision, recall
