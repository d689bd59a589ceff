"""Fidelity metrics: Fréchet distance and k-NN precision/recall vs the teacher's samples or real data.

``precision_teacher``/``recall_teacher`` build the k-NN manifolds over the whole set (every prompt);
``precision_teacher_prompt``/``recall_teacher_prompt`` build them within each prompt (the student's samples of a
prompt against the teacher's samples of the same prompt), the coverage measure that matches within-prompt
diversity: a sample that is far from its own prompt's teacher samples counts as a miss even when it resembles
another prompt's.

The extractor is ``EvalContext.fd_extractor`` (``feature_net`` by default; ``inception``/``clip``/``dino`` need
weights; ``raw`` = flattened samples, the natural choice for 2-D points). Points always use ``raw``.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.fidelity import frechet_distance, knn_precision_recall
from pdmd_eval.registry import DOWN, UP, MetricResult, metric
from pdmd_eval.samples import group_by_prompt

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


def _per_prompt_pr(ctx: EvalContext, name: str) -> dict[Hashable, tuple[float, float]]:
    """prompt → (precision, recall) of the prompt's samples against the teacher's samples of that prompt."""
    reference = ctx.require_reference(name)
    ext = _extractor(ctx)

    def compute() -> dict[Hashable, tuple[float, float]]:
        feats, ref_feats = ctx.features("samples", ext), ctx.features("reference", ext)
        ref_groups = group_by_prompt(reference)
        out: dict[Hashable, tuple[float, float]] = {}
        for pid, idx in group_by_prompt(ctx.samples).items():
            ref_idx = ref_groups.get(pid)
            if ref_idx is None:
                continue
            if min(len(idx), len(ref_idx)) <= ctx.knn_k:
                raise ValueError(f"{name}: prompt {pid!r} has {len(idx)} samples and {len(ref_idx)} teacher samples; "
                                 f"per-prompt k-NN manifolds with k={ctx.knn_k} need more than k of each")
            precision, recall = knn_precision_recall(ref_feats[ref_idx], feats[idx], ctx.knn_k)
            out[pid] = (float(precision.mean()), float(recall.mean()))
        if not out:
            raise ValueError(f"{name}: the samples and the teacher's samples share no prompt")
        return out

    return ctx.cached(("pr_prompt", ext, ctx.knn_k), compute)


@metric("precision_teacher_prompt", UP, "prompt", ALL, ("reference",), uses_fd_extractor=True)
def precision_teacher_prompt(ctx: EvalContext) -> MetricResult:
    """k-NN precision within each prompt: fraction of its samples inside the k-NN manifold of the teacher's
    samples of the same prompt."""
    per = _per_prompt_pr(ctx, "precision_teacher_prompt")
    return MetricResult.from_values("precision_teacher_prompt", UP, "prompt", list(per),
                                    [v[0] for v in per.values()], ctx.confidence)


@metric("recall_teacher_prompt", UP, "prompt", ALL, ("reference",), uses_fd_extractor=True)
def recall_teacher_prompt(ctx: EvalContext) -> MetricResult:
    """k-NN recall within each prompt (coverage): fraction of the teacher's samples of a prompt inside the k-NN
    manifold of the samples of that prompt."""
    per = _per_prompt_pr(ctx, "recall_teacher_prompt")
    return MetricResult.from_values("recall_teacher_prompt", UP, "prompt", list(per),
                                    [v[1] for v in per.values()], ctx.confidence)
