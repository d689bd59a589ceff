"""Mode statistics for 2-D mixture sample sets (see :mod:`pdmd_eval.functional.modes` for the meta keys)."""

from __future__ import annotations

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.modes import mixture_from_extras
from pdmd_eval.functional.modes import mode_adherence as _mode_adherence
from pdmd_eval.functional.modes import mode_balance as _mode_balance
from pdmd_eval.functional.modes import modes_covered as _modes_covered
from pdmd_eval.functional.modes import near_mode as _near_mode
from pdmd_eval.registry import UP, MetricResult, metric
from pdmd_eval.samples import group_by_prompt

POINTS = ("points",)


def _per_prompt(ctx: EvalContext, name: str, fn) -> MetricResult:  # type: ignore[no-untyped-def]
    mixture = mixture_from_extras(ctx.samples.extras)
    pts = ctx.samples.samples
    groups = group_by_prompt(ctx.samples)
    values = [fn(pts[idx], pid, mixture) for pid, idx in groups.items()]
    return MetricResult.from_values(name, UP, "prompt", list(groups), values, ctx.confidence)


@metric("modes_covered", UP, "prompt", POINTS)
def modes_covered(ctx: EvalContext) -> MetricResult:
    """Fraction of each prompt's mixture modes hit by at least one of its samples (within 3σ)."""
    return _per_prompt(ctx, "modes_covered", _modes_covered)


@metric("mode_balance", UP, "prompt", POINTS)
def mode_balance(ctx: EvalContext) -> MetricResult:
    """Normalised entropy of each prompt's samples over its own modes (1 = balanced)."""
    return _per_prompt(ctx, "mode_balance", _mode_balance)


@metric("near_mode", UP, "sample", POINTS)
def near_mode(ctx: EvalContext) -> MetricResult:
    """Fraction of samples within 3σ of some mode."""
    mixture = mixture_from_extras(ctx.samples.extras)
    keys = [r.key for r in ctx.samples.records]
    return MetricResult.from_values(
        "near_mode", UP, "sample", keys, _near_mode(ctx.samples.samples, mixture), ctx.confidence
    )


@metric("mode_adherence", UP, "sample", POINTS)
def mode_adherence(ctx: EvalContext) -> MetricResult:
    """Fraction of samples whose nearest mode belongs to their prompt."""
    mixture = mixture_from_extras(ctx.samples.extras)
    recs = ctx.samples.records
    hits = _mode_adherence(ctx.samples.samples, [r.prompt_id for r in recs], mixture)
    return MetricResult.from_values("mode_adherence", UP, "sample", [r.key for r in recs], hits, ctx.confidence)
