"""Prompt adherence: classifier accuracy (CPU tier: prompt_id = class index) and CLIP score."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def class_labels(prompt_ids: Sequence[Hashable]) -> np.ndarray:
    """Integer class labels from manifest prompt ids; a non-integer id is an error naming it."""
    labels = []
    for pid in prompt_ids:
        try:
            labels.append(int(pid))  # type: ignore[call-overload]
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"prompt_id {pid!r} is not a class index; classifier accuracy needs integer prompt ids"
            ) from err
    return np.asarray(labels, dtype=np.int64)


def classifier_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample 0/1: ``argmax(logits) == label``."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits must be N×K with N={len(labels)}, got shape {logits.shape}")
    if labels.max(initial=0) >= logits.shape[1] or labels.min(initial=0) < 0:
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}] but the classifier has {logits.shape[1]} classes"
        )
    return (logits.argmax(axis=1) == labels).astype(np.float64)


def clip_scores(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Per-sample CLIP score ``100 × max(cos(image, text), 0)`` (Hessel et al. 2021, w = 1 scaled by 100)."""
    a = np.asarray(image_emb, dtype=np.float64)
    b = np.asarray(text_emb, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 100.0 * np.clip(np.einsum("nd,nd->n", a, b), 0.0, None)
