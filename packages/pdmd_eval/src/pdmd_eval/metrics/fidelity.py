"""Fidelity metrics: Fréchet distance and k-NN precision/recall vs the teacher's samples or real data.

The extractor is ``EvalContext.fd_extractor`` (``feature_net`` by default; ``inception``/``clip``/``dino`` need
weights; ``raw`` = flattened samples, the natural choice for 2-D points). Points always use ``raw``.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.fidelity import frechet_distance, knn_precision_recall
from pdmd_eval.registry import DOWN, UP, MetricResult, metric

ALL = ("image", "video", "points")


def _extractor(ctx: EvalContext) -> str:
    return "raw" if ctx.samples.kind == "points" else ctx.fd_extractor


def _other(ctx: EvalContext, which: str, name: str) -> None:
    if which == "reference":
        ctx.require_reference(name)
    else:
        ctx.require_real(name)


def _fd(ctx: EvalContext, which: str, name: str) -> MetricResult:
    _other(ctx, which, name)
    ext = _extractor(ctx)
    value = frechet_distance(ctx.features("samples", ext), ctx.features(which, ext))
    return MetricResult.scalar(name, DOWN, value, extractor=ext)


@metric("fd_teacher", DOWN, "set", ALL, ("reference",), uses_fd_extractor=True)
def fd_teacher(ctx: EvalContext) -> MetricResult:
    """Fréchet distance to the teacher's samples (teacher = 0, as in the paper's FID-to-base)."""
    return _fd(ctx, "reference", "fd_teacher")


@metric("fd_real", DOWN, "set", ALL, ("real",), uses_fd_extractor=True)
def fd_real(ctx: EvalContext) -> MetricResult:
    """Fréchet distance to real data."""
    return _fd(ctx, "real", "fd_real")


def _fvd(ctx: EvalContext, which: str, name: str) -> MetricResult:
    _other(ctx, which, name)
    value = frechet_distance(ctx.video_features("samples"), ctx.video_features(which))
    return MetricResult.scalar(name, DOWN, value, extractor=ctx.fd_extractor)


@metric("fvd_teacher", DOWN, "set", ("video",), ("reference",), uses_fd_extractor=True)
def fvd_teacher(ctx: EvalContext) -> MetricResult:
    """FVD-like Fréchet distance of video features to the teacher's videos."""
    return _fvd(ctx, "reference", "fvd_teacher")


@metric("fvd_real", DOWN, "set", ("video",), ("real",), uses_fd_extractor=True)
def fvd_real(ctx: EvalContext) -> MetricResult:
    """FVD-like Fréchet distance of video features to real videos."""
    return _fvd(ctx, "real", "fvd_real")


def _pr(ctx: EvalContext, which: str) -> tuple[np.ndarray, np.ndarray]:
    ext = _extractor(ctx)
    return ctx.cached(
        ("pr", which, ext, ctx.knn_k),
        lambda: knn_precision_recall(ctx.features(which, ext), ctx.features("samples", ext), ctx.knn_k),
    )


def _precision(ctx: EvalContext, which: str, name: str) -> MetricResult:
    _other(ctx, which, name)
    hits = _pr(ctx, which)[0]
    keys = [r.key for r in ctx.samples.records]
    return MetricResult.from_values(name, UP, "sample", keys, hits, ctx.confidence)


def _recall(ctx: EvalContext, which: str, name: str) -> MetricResult:
    _other(ctx, which, name)
    hits = _pr(ctx, which)[1]
    keys: list[Hashable]
    if which == "reference":
        keys = [r.key for r in ctx.require_reference(name).records]
    else:
        keys = list(range(len(hits)))
    return MetricResult.from_values(name, UP, "sample", keys, hits, ctx.confidence)


@metric("precision_teacher", UP, "sample", ALL, ("reference",), uses_fd_extractor=True)
def precision_teacher(ctx: EvalContext) -> MetricResult:
    """k-NN precision: fraction of samples inside the teacher samples' k-NN manifold."""
    return _precision(ctx, "reference", "precision_teacher")


@metric("recall_teacher", UP, "sample", ALL, ("reference",), uses_fd_extractor=True)
def recall_teacher(ctx: EvalContext) -> MetricResult:
    """k-NN recall: fraction of teacher samples inside the samples' k-NN manifold."""
    return _recall(ctx, "reference", "recall_teacher")


@metric("precision_real", UP, "sample", ALL, ("real",), uses_fd_extractor=True)
def precision_real(ctx: EvalContext) -> MetricResult:
    """k-NN precision against real data."""
    return _precision(ctx, "real", "precision_real")


@metric("recall_real", UP, "sample", ALL, ("real",), uses_fd_extractor=True)
def recall_real(ctx: EvalContext) -> MetricResult:
    """k-NN recall against real data."""
    return _recall(ctx, "real", "recall_real")
