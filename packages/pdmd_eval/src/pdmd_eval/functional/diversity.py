"""Within-prompt diversity statistics (the Phased DMD protocol: mean over prompts of the mean over seed pairs).

Pure functions on feature arrays / distance callables; the metric registry feeds them per-prompt groups.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs ``i < j`` of ``n`` items."""
    if n < 2:
        raise ValueError(f"diversity needs at least 2 samples per prompt, got {n}")
    pairs = np.array(list(combinations(range(n), 2)))
    return pairs[:, 0], pairs[:, 1]


def mean_pairwise_cosine(features: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of rows (rows are L2-normalised here)."""
    feats = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a feature vector is all zeros; cosine similarity is undefined")
    unit = feats / norms
    i, j = pair_index(len(unit))
    return float(np.einsum("nd,nd->n", unit[i], unit[j]).mean())


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows (e.g. 2-D points)."""
    feats = np.asarray(features, dtype=np.float64)
    i, j = pair_index(len(feats))
    return float(np.linalg.norm(feats[i] - feats[j], axis=1).mean())


def mean_pairwise_with(distance: Callable[[Any, Any], Any], items: np.ndarray, batch_size: int = 64) -> float:
    """Mean of a batched pair function (e.g. LPIPS) over all pairs of ``items`` (numpy, first axis = sample)."""
    import torch

    i, j = pair_index(len(items))
    values = []
    for start in range(0, len(i), batch_size):
        a = torch.from_numpy(np.ascontiguousarray(items[i[start : start + batch_size]]))
        b = torch.from_numpy(np.ascontiguousarray(items[j[start : start + batch_size]]))
        values.append(np.asarray(distance(a, b), dtype=np.float64).reshape(-1))
    return float(np.concatenate(values).mean())


def vendi_score(features: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel: exp of the entropy of ``eig(K/n)``.

    Ranges from 1 (all samples identical) to n (all orthogonal): an "effective number of distinct samples".
    """
    feats = np.asarray(features, dtype=np.float64)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(unit @ unit.T / len(unit))
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))
