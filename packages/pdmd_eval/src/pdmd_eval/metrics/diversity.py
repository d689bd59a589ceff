"""Within-prompt diversity metrics: one value per prompt (mean over its seed pairs), CI over prompts."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.diversity import mean_pairwise_cosine, mean_pairwise_distance, mean_pairwise_with, vendi_score
from pdmd_eval.registry import DOWN, UP, MetricResult, metric
from pdmd_eval.samples import group_by_prompt

VISUAL = ("image", "video")


def per_prompt(
    ctx: EvalContext, name: str, direction: str, value: Callable[[list[int]], float]
) -> MetricResult:
    """Apply ``value(indices)`` to every prompt with at least 2 seeds."""
    from tqdm.auto import tqdm

    keys: list[Hashable] = []
    values = []
    groups = group_by_prompt(ctx.samples)
    skipped = [pid for pid, idx in groups.items() if len(idx) < 2]
    usable = {pid: idx for pid, idx in groups.items() if len(idx) >= 2}
    if not usable:
        raise ValueError(f"{name}: every prompt has a single seed; within-prompt diversity needs ≥ 2 seeds")
    for pid, idx in tqdm(usable.items(), desc=name, disable=not ctx.progress, leave=False):
        keys.append(pid)
        values.append(value(idx))
    result = MetricResult.from_values(name, direction, "prompt", keys, values, ctx.confidence)
    result.extras["prompts_skipped_single_seed"] = len(skipped)
    return result


def _frames_pairwise(distance: Callable, a, b):  # type: ignore[no-untyped-def]
    """Per-pair distance of images, or of videos as the mean over aligned frames."""
    if a.ndim == 5:
        n, t = a.shape[:2]
        d = distance(a.reshape(n * t, *a.shape[2:]), b.reshape(n * t, *b.shape[2:]))
        return d.reshape(n, t).mean(dim=1)
    return distance(a, b)


@metric("div_lpips", UP, "prompt", VISUAL, ("lpips",))
def div_lpips(ctx: EvalContext) -> MetricResult:
    """Mean pairwise LPIPS distance between seeds of a prompt (higher = more diverse)."""
    lp = ctx.model("lpips")
    data = ctx.samples.samples
    return per_prompt(
        ctx, "div_lpips", UP, lambda idx: mean_pairwise_with(lambda a, b: _frames_pairwise(lp, a, b), data[idx])
    )


def _cosine_metric(ctx: EvalContext, name: str, extractor: str) -> MetricResult:
    feats = ctx.features("samples", extractor)
    return per_prompt(ctx, name, DOWN, lambda idx: mean_pairwise_cosine(feats[idx]))


@metric("div_clip", DOWN, "prompt", VISUAL, ("clip",))
def div_clip(ctx: EvalContext) -> MetricResult:
    """Mean pairwise CLIP image-embedding cosine similarity between seeds (lower = more diverse)."""
    return _cosine_metric(ctx, "div_clip", "clip")


@metric("div_dino", DOWN, "prompt", VISUAL, ("dino",))
def div_dino(ctx: EvalContext) -> MetricResult:
    """Mean pairwise DINO CLS cosine similarity between seeds (lower = more diverse; the paper's DINOv3 metric)."""
    return _cosine_metric(ctx, "div_dino", "dino")


@metric("featnet_similarity", DOWN, "prompt", VISUAL, ("feature_net",))
def featnet_similarity(ctx: EvalContext) -> MetricResult:
    """Mean pairwise cosine similarity between seeds of a prompt in the feature net's space (lower = more
    diverse)."""
    return _cosine_metric(ctx, "featnet_similarity", "feature_net")


@metric("vendi_feat", UP, "prompt", VISUAL, ("feature_net",))
def vendi_feat(ctx: EvalContext) -> MetricResult:
    """Vendi score (cosine kernel) of a prompt's seeds in the feature net's space (higher = more diverse)."""
    feats = ctx.features("samples", "feature_net")
    return per_prompt(ctx, "vendi_feat", UP, lambda idx: vendi_score(feats[idx]))


@metric("pairwise_distance", UP, "prompt", ("points",))
def pairwise_distance(ctx: EvalContext) -> MetricResult:
    """Mean pairwise Euclidean distance between a prompt's seeds in raw coordinates (higher = more diverse)."""
    pts = np.asarray(ctx.samples.samples, dtype=np.float64)
    return per_prompt(ctx, "pairwise_distance", UP, lambda idx: mean_pairwise_distance(pts[idx]))
