"""Per-unit metric records (`units.jsonl` of the evaluate and convergence stages): reading them, averaging them per
(seed, prompt), their directions, and the axis labels that name each metric's role. Shared by the tables stage
(report), its budget-stability summary (convergence_summary) and the real-scale study's tables."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline import claims as C

UnitKey = C.UnitKey


def read_units(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def unit_values(units: list[dict[str, Any]]) -> dict[str, dict[str, dict[UnitKey, float]]]:
    """metric → arm → {(seed, prompt or 'all'): value}; per-sample/pair values averaged within a prompt."""
    acc: dict[str, dict[str, dict[UnitKey, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for u in units:
        key = u["key"]
        prompt = key[0] if isinstance(key, list) else key
        acc[u["metric"]][u["arm"]][(int(u["seed"]), prompt)].append(float(u["value"]))
    return {m: {a: {k: float(np.mean(v)) for k, v in per.items()} for a, per in arms.items()}
            for m, arms in acc.items()}


def directions(units: list[dict[str, Any]]) -> dict[str, str]:
    return {u["metric"]: u["direction"] for u in units}


MEANING = {"diversity": "more diverse", "coverage": "more of the teacher's samples covered",
           "fidelity": "closer to the teacher", "motion": "more motion",
           "precision": "more samples on the teacher's manifold"}


def role_of(metric: str, kind: str, roles: C.Roles = C.CPU_TIER_ROLES) -> str | None:
    return next((role for role in roles if metric in C.metrics_for(role, kind, roles)), None)


def axis_label(metric: str, direction: str, kind: str) -> str:
    """'diversity: featnet_similarity ↓ (lower = more diverse)': the role, the name and which way is better."""
    role = role_of(metric, kind)
    if role is None:
        return f"{metric} {direction}"
    return f"{role}: {metric} {direction} ({'lower' if direction == '↓' else 'higher'} = {MEANING[role]})"
