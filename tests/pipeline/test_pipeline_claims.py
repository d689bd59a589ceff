"""The pre-registered verdict rules and the pairing of units, on constructed data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pdmd_pipeline import claims as C
from pdmd_pipeline.report import evaluate_claims, paired, unit_values


@pytest.mark.parametrize(
    ("relation", "low", "high", "p", "expected"),
    [
        ("better", 0.01, 0.05, 0.001, C.HELD),
        ("better", 0.01, 0.05, 0.2, C.INCONCLUSIVE),          # CI clear of 0 but test not significant
        ("better", -0.05, -0.01, 0.001, C.NOT_HELD),          # b is better
        ("better", -0.001, 0.001, 0.5, C.NOT_HELD),           # practically equal (inside ±0.01)
        ("better", -0.02, 0.05, 0.3, C.INCONCLUSIVE),
        ("equivalent", -0.005, 0.009, 0.01, C.HELD),
        ("equivalent", 0.02, 0.05, 0.001, C.NOT_HELD),
        ("equivalent", -0.005, 0.02, 0.4, C.INCONCLUSIVE),
        ("not_worse", -0.009, 0.3, 0.5, C.HELD),
        ("not_worse", -0.05, -0.02, 0.001, C.NOT_HELD),
        ("not_worse", -0.02, 0.01, 0.5, C.INCONCLUSIVE),
    ],
)
def test_verdict_rules(relation, low, high, p, expected):
    assert C.verdict(relation, low, high, p, margin=0.01, n=20) == expected


def test_too_few_units_is_inconclusive():
    assert C.verdict("better", 1.0, 2.0, 1e-6, margin=0.01, n=C.MIN_UNITS - 1) == C.INCONCLUSIVE


def test_combine():
    assert C.combine([C.HELD, C.HELD, C.NOT_RUN]) == C.HELD
    assert C.combine([C.HELD, C.NOT_HELD]) == C.NOT_HELD
    assert C.combine([C.HELD, C.INCONCLUSIVE]) == C.INCONCLUSIVE
    assert C.combine([C.NOT_RUN]) == C.NOT_RUN


def test_compare_orients_lower_is_better_metrics():
    rng = np.random.default_rng(0)
    b = rng.uniform(1.0, 2.0, 30)
    a = b - 0.3 + rng.normal(0, 0.01, 30)  # a is lower on a ↓ metric: a is better by 0.3
    comp = C.Comparison("fidelity", "a", "b", "better")
    out = C.compare("x", comp, "fd", "↓", a, b)
    assert out.diff == pytest.approx(0.3, abs=0.01)
    assert out.low > 0 and out.verdict == C.HELD
    up = C.compare("x", comp, "div", "↑", a, b)
    assert up.diff == pytest.approx(-0.3, abs=0.01) and up.verdict == C.NOT_HELD


def _units(arm, seed, values, metric="pairwise_distance", direction="↑"):
    return [{"arm": arm, "seed": seed, "metric": metric, "direction": direction, "unit": "prompt", "key": p,
             "value": v} for p, v in enumerate(values)]


def test_pairing_broadcasts_teacher_reference_over_seeds():
    units = _units("teacher_40", -1, [1.0, 2.0]) + _units("x", 0, [1.5, 2.5]) + _units("x", 1, [0.5, 1.5])
    values = unit_values(units)["pairwise_distance"]
    xa, xb = paired(values, "x", "teacher_40")
    assert sorted(zip(xa, xb, strict=True)) == [(0.5, 1.0), (1.5, 1.0), (1.5, 2.0), (2.5, 2.0)]


def test_per_sample_values_are_averaged_within_a_prompt():
    units = [{"arm": "x", "seed": 0, "metric": "flow_mag", "direction": "↑", "unit": "sample", "key": [0, s],
              "value": float(s)} for s in range(4)]
    assert unit_values(units)["flow_mag"]["x"] == {(0, 0): 1.5}


def test_claims_on_constructed_units():
    """Phased much more diverse than SGTS, SGTS equal to dmd_full: the diversity claim holds; arms that are
    absent make their claims 'not run'."""
    rng = np.random.default_rng(1)
    base = rng.uniform(1.0, 1.2, 10)
    units = []
    for seed in range(3):
        noise = rng.normal(0, 1e-4, 10)
        units += _units("sgts", seed, base + noise)
        units += _units("dmd_full", seed, base + noise + 1e-5)
        units += _units("phased_k2_sgts", seed, base + 0.3 + noise)
    rows = {r["claim"]: r for r in evaluate_claims(unit_values(units), {"pairwise_distance": "↑"}, "points", 0.95)}
    assert rows["diversity"]["verdict"] == C.HELD
    assert rows["motion"]["verdict"] == C.NOT_RUN
    assert rows["intervals"]["verdict"] == C.NOT_RUN
    first = rows["diversity"]["comparisons"][0]
    assert first["n"] == 30 and first["diff"] == pytest.approx(0.3, abs=1e-3)
