"""The report stage: which verdicts changed since the previous ones and why, the summary marks them, the budget
section and the toy section, on constructed claim files."""

from __future__ import annotations

import json
from pathlib import Path

from pdmd_pipeline import claims as C
from pdmd_pipeline.changes import reason, verdict_changes
from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import load_params
from pdmd_pipeline.report import stage_report

ROOT = Path(__file__).resolve().parents[3]


def _comp(a="phased_k2_sgts", b="sgts", metric="pairwise_distance", verdict=C.HELD, diff=0.3, low=0.2, high=0.4,
          margin=0.05, n=5, **extra):
    return {"role": "diversity", "metric": metric, "a": a, "b": b, "relation": "better", "n": n, "units": 25,
            "mean_a": 1.3, "mean_b": 1.0, "diff": diff, "low": low, "high": high, "margin": margin, "p_value": 0.01,
            "verdict": verdict, **extra}


def _old(verdict, diff, low, high, margin=0.05):
    return {"role": "diversity", "metric": "pairwise_distance", "a": "phased_k2_sgts", "b": "sgts",
            "relation": "better", "units": 15, "diff": diff, "low": low, "high": high, "margin": margin,
            "verdict": verdict}


def test_reasons_name_what_changed():
    # same side of 0 and δ, the seed-level interval now crosses 0
    r = reason(_old(C.HELD, 0.3, 0.2, 0.4), _comp(verdict=C.INCONCLUSIVE, low=-0.1))
    assert r.endswith("(interval: per-unit [0.2, 0.4] over 15 units → by seed [-0.1, 0.4] over 5 seeds)")
    # the estimate moved below −δ
    r = reason(_old(C.HELD, 0.3, 0.2, 0.4), _comp(verdict=C.NOT_HELD, diff=-0.2, low=-0.3, high=-0.1))
    assert "(estimate: 0.3 → -0.2" in r
    flagged = _comp(verdict=C.ARTEFACTS, precision_check={"diff": -0.1, "margin": 0.045, "flagged": True})
    assert "artefact flag: precision vs teacher -0.1, beyond −δ = −0.045" in reason(_old(C.HELD, 0.3, 0.2, 0.4),
                                                                                  flagged)
    assert reason(None, _comp()).endswith(": new (held)")
    few = {"role": "diversity", "metric": "m", "a": "x", "b": "y", "relation": "better", "n": 2,
           "verdict": C.INCONCLUSIVE}
    assert "(seeds: 2 shared, fewer than 3)" in reason(_old(C.HELD, 0.3, 0.2, 0.4), few)


def test_verdict_changes_lists_changed_and_new_claims_only():
    before = {"benchmarks": {"mog2d": {
        "diversity": {"verdict": C.HELD, "comparisons": [_old(C.HELD, 0.3, 0.2, 0.4)]},
        "fidelity": {"verdict": C.HELD, "comparisons": [dict(_old(C.HELD, 0.3, 0.2, 0.4), role="fidelity",
                                                             metric="fd_teacher_prompt")]}}}}
    after = {"mog2d": [
        {"claim": "diversity", "title": "Diversity", "verdict": C.INCONCLUSIVE,
         "comparisons": [_comp(verdict=C.INCONCLUSIVE, low=-0.1)]},
        {"claim": "fidelity", "title": "Fidelity", "verdict": C.HELD,
         "comparisons": [_comp(metric="fd_teacher_prompt", role="fidelity")]},
        {"claim": "diversity_coverage", "title": "Coverage", "verdict": C.NOT_HELD,
         "comparisons": [_comp(metric="recall_teacher_prompt", verdict=C.NOT_HELD)]},
        {"claim": "motion", "title": "Motion", "verdict": C.NOT_RUN, "comparisons": []},
    ]}
    changes = verdict_changes(before, after)
    assert [(c["claim"], c["before"], c["after"]) for c in changes] == [
        ("diversity", C.HELD, C.INCONCLUSIVE), ("diversity_coverage", None, C.NOT_HELD)]
    assert len(changes[0]["reasons"]) == 1 and "interval" in changes[0]["reasons"][0]


def _claims_file(kind: str) -> dict:
    rows = []
    for claim in C.CLAIMS:
        comps = [_comp(comp.a, comp.b, (C.metrics_for(comp.role, kind) or ("none",))[0], verdict=C.HELD)
                 | {"role": comp.role, "relation": comp.relation} for comp in claim.comparisons
                 if C.metrics_for(comp.role, kind)]
        rows.append({"claim": claim.key, "title": claim.title, "paper": claim.paper, "checks": claim.checks,
                     "verdict": C.combine([c["verdict"] for c in comps]) if comps else C.NOT_RUN,
                     "comparisons": comps})
    budget = {"default_budget": 8, "budgets": [4, 8, 16], "seed": 0, "directions": {}, "curves": {},
              "references": {},
              "rows": [{"claim": "diversity", "a": "phased_k2_sgts", "b": "sgts", "relation": "better",
                        "metric": "pairwise_distance", "directions": {"4": "b", "8": "a", "16": "a"},
                        "verdict_at_default": C.HELD}],
              "plateau": {"on_plateau": False, "metrics": {"pairwise_distance": {
                  "on_plateau": False, "changes": {"sgts": 0.4, "phased_k2_sgts": 0.05}}}}}
    return {"benchmark": "x", "kind": kind, "claims": rows, "convergence": budget,
            "facts": {"teacher_passed": True, "runs": 12, "executor": "local", "distill_seconds": 3.0,
                      "iterations": 8, "seeds": {"sgts": [0, 1, 2], "dmd": [0, 1]},
                      "convergence": {"runs": 13, "train_seconds": 5.0, "budgets": [4, 8, 16], "seed": 0}}}


def test_report_marks_changes_and_states_budget_stability(tmp_path):
    params = load_params(ROOT / "experiments" / "presets" / "smoke.yaml")
    layout = Layout(tmp_path)
    (tmp_path / "runs" / "claims").mkdir(parents=True)
    for bench, kind in (("mog2d", "points"), ("moving_digits", "video")):
        (tmp_path / "runs" / "claims" / f"{bench}.json").write_text(json.dumps(_claims_file(kind)))
    before = {"description": "old rules", "benchmarks": {"mog2d": {"diversity": {
        "verdict": C.NOT_HELD, "comparisons": [_old(C.NOT_HELD, -0.3, -0.4, -0.2)]}}}}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "verdicts_before.json").write_text(json.dumps(before))
    (tmp_path / "reports" / "toy1d").mkdir()
    (tmp_path / "reports" / "toy1d" / "subinterval.json").write_text(json.dumps({
        "s": 0.5, "euler_steps": 10, "w1_samples": 500, "w1_standard_to_true_x_s": 0.01,
        "w1_eq13_to_true_x_s": 0.02, "w1_naive_to_true_x_s": 0.11, "field_mae_eq13": 0.1, "field_mae_naive": 0.4}))
    text = stage_report(params, layout)
    assert (tmp_path / "reports" / "README.md").read_text() == text
    assert "| Diversity: Phased > SGTS ≈ vanilla 4-step DMD | held (was not held) | held |" in text
    assert "| ↳ Coverage of the teacher, beside “Diversity: Phased > SGTS ≈ vanilla 4-step DMD” |" in text
    assert "- **mog2d** · Diversity: Phased > SGTS ≈ vanilla 4-step DMD: not held → **held**" in text
    assert "(estimate: -0.3 → 0.3" in text
    assert "Training seeds [0, 1] for every arm, plus [2] for sgts, phased_k2_sgts" in text
    assert "**mog2d**: the default budget (8 generator iterations) does not sit on a plateau: the largest change " \
           "above it is sgts's pairwise_distance, 40% of the range between arms" in text
    assert "| diversity | phased_k2_sgts > sgts on pairwise_distance | b | a | a | held |" in text
    assert "| naive target ε − x_s on (s, 1] | 0.110 | 0.400 |" in text
    assert "3 seeds (0–2): sgts; 2 seeds (0, 1): dmd" in text
    assert "- Diversity with artefacts: a held diversity sub-claim" in text
