"""Prompt-adherence metrics: classifier accuracy (feature net logits vs prompt_id) and CLIP score."""

from __future__ import annotations

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.features import map_batches
from pdmd_eval.functional.adherence import class_labels, classifier_hits, clip_scores
from pdmd_eval.registry import UP, MetricResult, metric


@metric("class_acc", UP, "sample", ("image", "video"), ("feature_net",))
def class_acc(ctx: EvalContext) -> MetricResult:
    """Fraction of samples the feature net classifies as their prompt_id (CPU tier: prompt_id = class)."""
    net = ctx.require_feature_net("class_acc")
    data = ctx.samples.samples
    if data.ndim == 5 and not net.video:
        raise ValueError(f"class_acc: {net.name} is an image classifier but the samples are videos")
    logits = ctx.cached(
        ("logits",), lambda: map_batches(net.logits, data, ctx.batch_size, "logits", ctx.progress)
    )
    labels = class_labels([r.prompt_id for r in ctx.samples.records])
    keys = [r.key for r in ctx.samples.records]
    return MetricResult.from_values("class_acc", UP, "sample", keys, classifier_hits(logits, labels), ctx.confidence)


@metric("clip_score", UP, "sample", ("image", "video"), ("clip",))
def clip_score(ctx: EvalContext) -> MetricResult:
    """CLIP score 100·max(cos(image, prompt text), 0) per sample (videos: frame-mean image embedding)."""
    clip = ctx.model("clip")
    image_emb = ctx.features("samples", "clip")
    texts = [r.prompt for r in ctx.samples.records]
    text_emb = np.asarray(clip.embed_texts(texts).numpy())
    keys = [r.key for r in ctx.samples.records]
    return MetricResult.from_values("clip_score", UP, "sample", keys, clip_scores(image_emb, text_emb), ctx.confidence)
