"""Which verdicts changed since a reference set of verdicts (reports/verdicts_before.json: the verdicts under the
per-unit rules, 3 seeds), and why: pure functions on the claims JSON that the report stage calls.

Reasons, per changed comparison (a, b, relation, metric matched between the two sets):
- `new`: the comparison did not exist before (e.g. a coverage twin).
- `artefact flag`: a held diversity win whose precision check flagged it.
- `seeds`: fewer than MIN_SEEDS shared training seeds.
- `estimate`: the point estimate moved across 0 or ±δ (new seeds, new data).
- `interval`: the estimate stayed on the same side; the seed-level interval decides differently from the
  per-unit one (usually wider: it describes run-to-run spread).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pdmd_pipeline import claims as C


def load_before(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _key(o: dict[str, Any]) -> tuple[str, str, str, str | None]:
    return (o["a"], o["b"], o["relation"], o.get("metric"))


def _zone(diff: float, margin: float) -> str:
    if not math.isfinite(diff):
        return "none"
    if diff > margin:
        return "above δ"
    if diff < -margin:
        return "below −δ"
    return "above 0 within δ" if diff > 0 else "below 0 within δ" if diff < 0 else "0"


def _ci(o: dict[str, Any]) -> str:
    return f"[{o['low']:.3g}, {o['high']:.3g}]" if "low" in o and o["low"] is not None else "–"


def reason(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Why one comparison's verdict differs from its old verdict (see the module docstring)."""
    head = f"{new['a']} vs {new['b']} on {new.get('metric')}"
    if old is None:
        return f"{head}: new ({new['verdict']})"
    change = f"{head}: {old['verdict']} → {new['verdict']}"
    if new["verdict"] == C.ARTEFACTS:
        check = new.get("precision_check") or {}
        return (f"{change} (artefact flag: precision vs teacher {check.get('diff', float('nan')):.3g}, beyond "
                f"−δ = −{check.get('margin', float('nan')):.3g})")
    if "diff" not in new or new.get("n", C.MIN_SEEDS) < C.MIN_SEEDS:
        return f"{change} (seeds: {new.get('n', 0)} shared, fewer than {C.MIN_SEEDS})"
    if "diff" not in old:
        return f"{change} (estimate: none before)"
    if _zone(old["diff"], old["margin"]) != _zone(new["diff"], new["margin"]):
        return (f"{change} (estimate: {old['diff']:.3g} → {new['diff']:.3g}, δ {old['margin']:.3g} → "
                f"{new['margin']:.3g})")
    return (f"{change} (interval: per-unit {_ci(old)} over {old.get('units', '?')} units → by seed {_ci(new)} over "
            f"{new['n']} seeds)")


def verdict_changes(before: dict[str, Any], after: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per (benchmark, claim) whose verdict differs from `before` (or that is new), with the reasons of
    its changed comparisons. `after` = benchmark → claim rows (runs/claims/<b>.json `claims`); a benchmark that
    `before` does not cover is skipped."""
    out = []
    for bench, rows in after.items():
        if bench not in before.get("benchmarks", {}):
            continue  # no previous verdicts on this benchmark: nothing to compare with
        old_claims = before["benchmarks"][bench]
        for row in rows:
            if row["verdict"] == C.NOT_RUN:
                continue
            old = old_claims.get(row["claim"])
            old_comps = {_key(o): o for o in (old or {}).get("comparisons", [])}
            reasons = []
            for o in row["comparisons"]:
                if o["verdict"] == C.NOT_RUN:
                    continue
                prev = old_comps.get(_key(o))
                if prev is None or prev["verdict"] != o["verdict"]:
                    reasons.append(reason(prev, o))
            before_verdict = old["verdict"] if old else None
            if before_verdict != row["verdict"]:
                out.append({"benchmark": bench, "claim": row["claim"], "title": row["title"],
                            "before": before_verdict, "after": row["verdict"], "reasons": reasons})
    return out
