"""The convergence stage's results for the tables stage: the budget-stability summary (directions of every claim
sub-comparison at each budget, the plateau rule) and its figure. Apart from the stage (pdmd_pipeline.convergence)
so that the tables stage's code deps hold none of the training code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pdmd_pipeline import claims as C
from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams
from pdmd_pipeline.units import axis_label, directions, read_units, unit_values


def _outcome_at_default(claim_rows: list[dict[str, Any]], claim: str, comp: C.Comparison, metric: str) -> str:
    row = next((r for r in claim_rows if r["claim"] == claim), None)
    for o in (row or {}).get("comparisons", []):
        if (o["a"], o["b"], o["relation"], o["metric"]) == (comp.a, comp.b, comp.relation, metric):
            return str(o["verdict"])
    return C.NOT_RUN


def summarize(params: PipelineParams, benchmark: str, layout: Layout, kind: str,
              claim_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The budget-stability summary of a benchmark (None when its convergence stage has not run): curves (metric →
    arm → {budget: mean over prompts}), teacher references, each claim sub-comparison's direction per budget
    beside its verdict at the default budget (all seeds), and the plateau rule per metric."""
    import numpy as np


    folder = layout.convergence(benchmark)
    if not (folder / "units.jsonl").is_file():
        return None
    meta = json.loads((folder / "convergence.json").read_text())
    units = read_units(folder / "units.jsonl")
    dirs = directions(units)
    # the budget plays the training seed's part: one row per budget (teacher references: −1, paired with each)
    values = unit_values([{**u, "seed": -1 if u["budget"] is None else int(u["budget"])} for u in units])
    curves: dict[str, dict[str, dict[int, float]]] = {}
    references: dict[str, dict[str, float]] = {}
    for metric, per_arm in values.items():
        for arm, vals in per_arm.items():
            by_budget: dict[int, list[float]] = {}
            for (budget, _), v in vals.items():
                by_budget.setdefault(budget, []).append(v)
            if arm.startswith(TEACHER_REFERENCE_PREFIX):
                references.setdefault(metric, {})[arm] = float(np.mean(by_budget[-1]))
            else:
                curves.setdefault(metric, {})[arm] = {b: float(np.mean(v)) for b, v in sorted(by_budget.items())}
    rows = []
    for claim in C.CLAIMS:
        for comp in claim.comparisons:
            for metric in C.metrics_for(comp.role, kind):
                per_arm = values.get(metric, {})
                if comp.a not in per_arm or comp.b not in per_arm:
                    continue
                sign = 1.0 if dirs[metric] == "↑" else -1.0
                budgets, xa, xb = C.paired_by_seed(per_arm, comp.a, comp.b)
                at = {}
                for budget, ra, rb in zip(budgets, xa, xb, strict=True):
                    diff = sign * float(np.mean(np.asarray(ra) - np.asarray(rb)))
                    at[str(budget)] = C.budget_direction(diff, C.MARGIN * abs(float(np.mean(rb))))
                rows.append({"claim": claim.key, "a": comp.a, "b": comp.b, "relation": comp.relation,
                             "metric": metric, "directions": at,
                             "verdict_at_default": _outcome_at_default(claim_rows, claim.key, comp, metric)})
    default = int(meta["default_budget"])
    per_metric = {}
    for metric in C.claim_metrics(kind):
        if metric in curves:
            ok, changes = C.plateau(curves[metric], default)
            per_metric[metric] = {"on_plateau": ok, "changes": changes}
    as_json = {m: {a: {str(b): v for b, v in c.items()} for a, c in arms.items()} for m, arms in curves.items()}
    return {"default_budget": default, "budgets": meta["budgets"], "seed": meta["seed"], "directions": dirs,
            "curves": as_json,
            "references": references, "rows": rows,
            "plateau": {"on_plateau": bool(per_metric) and all(v["on_plateau"] for v in per_metric.values()),
                        "metrics": per_metric}}


def draw(summary: dict[str, Any], kind: str, path: Path, title: str = "") -> Path:
    """reports/figures/<b>/convergence.png: one panel per claim metric, one line per arm, teacher reference lines."""
    from pdmd_eval.figures import convergence_curves

    panels, refs = {}, {}
    for metric in C.claim_metrics(kind):
        if metric not in summary["curves"]:
            continue
        label = axis_label(metric, summary["directions"][metric], kind)
        panels[label] = {arm: {int(b): v for b, v in curve.items()} for arm, curve in summary["curves"][metric].items()}
        refs[label] = summary["references"].get(metric, {})
    return convergence_curves(panels, path, refs, summary["default_budget"],
                              title=f"{title}: one training seed per budget; dotted line = default budget "
                                    f"({summary['default_budget']} iterations)")
