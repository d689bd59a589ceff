"""Motion metrics for video sample sets (Farneback flow by default, RAFT when its weights are given)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.motion import farneback_flows, flow_magnitude_maps, is_dynamic, to_thwc
from pdmd_eval.reader import SampleReader
from pdmd_eval.registry import UP, MetricResult, metric
from pdmd_eval.samples import SampleSet, pair_indices
from pdmd_eval.stats import ratio_of_means_ci


def _per_video(
    ctx: EvalContext, sample_set: SampleSet | SampleReader, flow_fn: Callable[[np.ndarray], np.ndarray], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean magnitude, dynamic 0/1)`` per video, cached per set and flow method."""
    from tqdm.auto import tqdm

    def compute() -> tuple[np.ndarray, np.ndarray]:
        mags, dyn = [], []
        for video in tqdm(sample_set.samples, desc=f"flow {label}", disable=not ctx.progress, leave=False):
            maps = flow_magnitude_maps(flow_fn(to_thwc(video)))
            mags.append(float(maps.mean()))
            dyn.append(float(is_dynamic(maps)))
        return np.asarray(mags), np.asarray(dyn)

    return ctx.cached(("flow", id(sample_set), label), compute)


def _keys(sample_set: SampleSet | SampleReader) -> list:
    return [r.key for r in sample_set.records]


@metric("flow_mag", UP, "sample", ("video",))
def flow_mag(ctx: EvalContext) -> MetricResult:
    """Mean Farneback optical-flow magnitude per video, pixels/frame (higher = more motion)."""
    mags, _ = _per_video(ctx, ctx.samples, farneback_flows, "farneback")
    return MetricResult.from_values("flow_mag", UP, "sample", _keys(ctx.samples), mags, ctx.confidence)


@metric("flow_mag_raft", UP, "sample", ("video",), ("raft",))
def flow_mag_raft(ctx: EvalContext) -> MetricResult:
    """Mean RAFT optical-flow magnitude per video, pixels/frame (needs RAFT weights)."""
    mags, _ = _per_video(ctx, ctx.samples, ctx.model("raft"), "raft")
    return MetricResult.from_values("flow_mag_raft", UP, "sample", _keys(ctx.samples), mags, ctx.confidence)


@metric("dynamic_degree", UP, "sample", ("video",))
def dynamic_degree(ctx: EvalContext) -> MetricResult:
    """VBench-style dynamic degree: fraction of videos classified dynamic (Farneback flow)."""
    _, dyn = _per_video(ctx, ctx.samples, farneback_flows, "farneback")
    return MetricResult.from_values("dynamic_degree", UP, "sample", _keys(ctx.samples), dyn, ctx.confidence)


@metric("flow_ratio_teacher", UP, "pair", ("video",), ("reference",))
def flow_ratio_teacher(ctx: EvalContext) -> MetricResult:
    """Mean flow magnitude relative to the teacher on the same prompts/seeds: ratio of means (1 = teacher's
    motion; < 1 = slower). Values are the per-pair ratios; mean/CI are the ratio of means with a paired bootstrap."""
    ref = ctx.require_reference("flow_ratio_teacher")
    ia, ib = pair_indices(ctx.samples, ref)
    mine, _ = _per_video(ctx, ctx.samples, farneback_flows, "farneback")
    theirs, _ = _per_video(ctx, ref, farneback_flows, "farneback")
    a, b = mine[ia], theirs[ib]
    ratio, low, high = ratio_of_means_ci(a, b, ctx.confidence)
    per_pair = np.divide(a, b, out=np.full_like(a, np.nan), where=b > 0)
    keys: list[Hashable] = [ctx.samples.records[i].key for i in ia]
    return MetricResult("flow_ratio_teacher", UP, "pair", keys, per_pair, ratio, low, high, {"pairs": len(ia)})
