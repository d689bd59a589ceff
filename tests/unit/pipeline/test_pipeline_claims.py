"""The pre-registered verdict rules, the pairing of units by training seed, the coverage twins and the artefact
flag, on constructed data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from pdmd_pipeline import claims as C
from pdmd_pipeline.units import unit_values


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
    assert C.verdict(relation, low, high, p, margin=0.01, n=5) == expected


def test_fewer_than_three_seeds_is_inconclusive():
    assert C.MIN_SEEDS == 3
    assert C.verdict("better", 1.0, 2.0, 1e-6, margin=0.01, n=2) == C.INCONCLUSIVE
    assert C.verdict("better", 1.0, 2.0, 1e-6, margin=0.01, n=3) == C.HELD


def test_combine_orders_not_held_inconclusive_artefacts_held():
    assert C.combine([C.HELD, C.HELD, C.NOT_RUN]) == C.HELD
    assert C.combine([C.HELD, C.NOT_HELD, C.ARTEFACTS]) == C.NOT_HELD
    assert C.combine([C.HELD, C.INCONCLUSIVE, C.ARTEFACTS]) == C.INCONCLUSIVE
    assert C.combine([C.HELD, C.ARTEFACTS]) == C.ARTEFACTS
    assert C.combine([C.NOT_RUN]) == C.NOT_RUN


def test_compare_is_the_t_interval_on_seed_means_of_oriented_differences():
    """Seeds differ (a shared seed effect per row) more than prompts: the interval comes from the 4 seed means."""
    rng = np.random.default_rng(0)
    b = rng.uniform(1.0, 2.0, (4, 10))
    a = b - 0.3 + rng.normal(0, 0.05, (4, 1)) + rng.normal(0, 0.01, (4, 10))  # lower on a ↓ metric: a is better
    comp = C.Comparison("fidelity", "a", "b", "better")
    out = C.compare("x", comp, "fd", "↓", a, b)
    seed_diffs = (b - a).mean(axis=1)
    low, high = sps.t.interval(0.95, 3, loc=seed_diffs.mean(), scale=sps.sem(seed_diffs))
    assert (out.n, out.units) == (4, 40)
    assert out.diff == pytest.approx(seed_diffs.mean()) and out.low == pytest.approx(low)
    assert out.high == pytest.approx(high) and out.p_value == pytest.approx(sps.ttest_1samp(seed_diffs, 0).pvalue)
    assert out.mean_a == pytest.approx(a.mean()) and out.mean_b == pytest.approx(b.mean())
    assert out.margin == pytest.approx(0.05 * b.mean()) and out.verdict == C.HELD
    up = C.compare("x", comp, "div", "↑", a, b)
    assert up.diff == pytest.approx(-seed_diffs.mean()) and up.verdict == C.NOT_HELD
    with pytest.raises(ValueError, match="direction"):
        C.compare("x", comp, "div", "higher", a, b)


def test_a_seed_level_difference_is_not_mistaken_for_a_win():
    """Three seeds whose models differ: every unit favours a, by 0.3 in one model and by 0.02–0.05 in the other two.
    The per-unit rule (30 units as if independent) called that a win; the seed-level interval does not."""
    from pdmd_eval.stats import paired_comparison

    rng = np.random.default_rng(1)
    b = rng.normal(1.0, 0.01, (3, 10))
    a = b + np.array([[0.3], [0.05], [0.02]]) + rng.normal(0, 0.005, (3, 10))
    per_unit = paired_comparison(a.ravel(), b.ravel())
    assert per_unit.diff_low > 0 and per_unit.wilcoxon_p < 1e-5  # the old rule: held
    out = C.compare("x", C.Comparison("diversity", "a", "b", "better"), "m", "↑", a, b)
    assert out.low < 0 < out.high and out.verdict == C.INCONCLUSIVE


def _units(arm, seed, values, metric="pairwise_distance", direction="↑"):
    return [{"arm": arm, "seed": seed, "metric": metric, "direction": direction, "unit": "prompt", "key": p,
             "value": float(v)} for p, v in enumerate(values)]


def test_pairing_by_seed_broadcasts_teacher_and_keeps_shared_seeds():
    units = (_units("teacher_40", -1, [1.0, 2.0]) + _units("x", 0, [1.5, 2.5]) + _units("x", 1, [0.5, 1.5])
             + _units("x", 3, [9.0, 9.0]) + _units("y", 0, [1.0, 1.0]) + _units("y", 1, [2.0, 2.0]))
    values = unit_values(units)["pairwise_distance"]
    assert C.paired_by_seed(values, "x", "teacher_40") == ([0, 1, 3], [[1.5, 2.5], [0.5, 1.5], [9.0, 9.0]],
                                                           [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    # seed 3 ran only for x (an extra seed of a headline arm): a comparison with y uses the shared seeds 0 and 1
    assert C.paired_by_seed(values, "y", "x") == ([0, 1], [[1.0, 1.0], [2.0, 2.0]], [[1.5, 2.5], [0.5, 1.5]])


def test_per_sample_values_are_averaged_within_a_prompt():
    units = [{"arm": "x", "seed": 0, "metric": "flow_mag", "direction": "↑", "unit": "sample", "key": [0, s],
              "value": float(s)} for s in range(4)]
    assert unit_values(units)["flow_mag"]["x"] == {(0, 0): 1.5}


def test_coverage_twins_mirror_every_diversity_claim():
    keys = [c.key for c in C.CLAIMS]
    for claim in C.CLAIMS:
        if any(comp.role == "diversity" for comp in claim.comparisons):
            twin = next(c for c in C.CLAIMS if c.checks == claim.key)
            assert keys.index(twin.key) == keys.index(claim.key) + 1  # reported beside it
            assert [(c.a, c.b, c.relation) for c in twin.comparisons] == [
                (c.a, c.b, c.relation) for c in claim.comparisons if c.role == "diversity"]
            assert {c.role for c in twin.comparisons} == {"coverage"}
    assert C.metrics_for("coverage", "points") == ("recall_teacher_prompt", "modes_covered", "mode_balance")
    assert C.metrics_for("coverage", "image") == ("recall_teacher_prompt",)
    assert C.metrics_for("motion", "points") == ()
    with pytest.raises(KeyError, match="role"):
        C.metrics_for("beauty", "image")


def _arm_units(arm, seeds, per_prompt, metric, direction, rng, noise=1e-4):
    return [u for s in seeds for u in _units(arm, s, per_prompt + rng.normal(0, noise, len(per_prompt)), metric,
                                             direction)]


def _benchmark(rng, precision_loss):
    """Points benchmark: phased much more diverse than SGTS (and SGTS ≈ dmd_full), 5 seeds; its precision against the
    teacher lower than SGTS's by `precision_loss`; its coverage equal to SGTS's."""
    seeds = range(5)
    base = rng.uniform(1.0, 1.2, 5)
    units = []
    for arm, div, prec in (("sgts", 0.0, 0.9), ("dmd_full", 1e-5, 0.9), ("phased_k2_sgts", 0.3, 0.9 - precision_loss)):
        units += _arm_units(arm, seeds, base + div, "pairwise_distance", "↑", rng)
        units += _arm_units(arm, seeds, np.full(5, prec), "precision_teacher_prompt", "↑", rng)
        units += _arm_units(arm, seeds, np.full(5, 0.8), "recall_teacher_prompt", "↑", rng)
    dirs = {"pairwise_distance": "↑", "precision_teacher_prompt": "↑", "recall_teacher_prompt": "↑"}
    return unit_values(units), dirs


def test_claims_on_constructed_units_with_coverage_and_artefact_check():
    values, dirs = _benchmark(np.random.default_rng(2), precision_loss=0.0)
    rows = {r["claim"]: r for r in C.evaluate_claims(values, dirs, "points", 0.95)}
    assert rows["diversity"]["verdict"] == C.HELD
    first = rows["diversity"]["comparisons"][0]
    assert first["n"] == 5 and first["units"] == 25 and first["diff"] == pytest.approx(0.3, abs=1e-3)
    assert first["precision_check"]["flagged"] is False
    assert rows["diversity"]["comparisons"][1]["precision_check"] is None  # equivalence is no win to check
    # coverage: recall equal → "better" not held (inside the margin); modes metrics absent → not run
    cov = rows["diversity_coverage"]
    assert [o["metric"] for o in cov["comparisons"]][:1] == ["recall_teacher_prompt"]
    assert cov["comparisons"][0]["verdict"] == C.NOT_HELD and cov["comparisons"][2]["verdict"] == C.NOT_RUN
    assert rows["motion"]["verdict"] == C.NOT_RUN and rows["intervals"]["verdict"] == C.NOT_RUN


@pytest.mark.parametrize(("loss", "expected"), [(0.04, C.HELD), (0.06, C.ARTEFACTS)])
def test_a_diversity_win_with_a_precision_loss_beyond_the_margin_is_flagged(loss, expected):
    """δp = 5 % of SGTS's precision 0.9 = 0.045: a loss of 0.04 keeps the win, 0.06 flags it."""
    values, dirs = _benchmark(np.random.default_rng(3), precision_loss=loss)
    row = next(r for r in C.evaluate_claims(values, dirs, "points", 0.95) if r["claim"] == "diversity")
    win = row["comparisons"][0]
    assert win["precision_check"]["margin"] == pytest.approx(0.045, abs=1e-4)
    assert win["precision_check"]["diff"] == pytest.approx(-loss, abs=1e-4)
    assert win["verdict"] == expected and row["verdict"] == expected


def test_evaluate_claims_accepts_another_studys_claims_and_roles():
    roles = {"diversity": {"video": ("dino_similarity",)}}
    claims = (C.Claim("d", "D", "paper", (C.Comparison("diversity", "p", "q", "better"),)),)
    rng = np.random.default_rng(4)
    units = (_arm_units("p", range(3), np.full(4, 0.5), "dino_similarity", "↓", rng)
             + _arm_units("q", range(3), np.full(4, 0.8), "dino_similarity", "↓", rng))
    rows = C.evaluate_claims(unit_values(units), {"dino_similarity": "↓"}, "video", 0.95, claims, roles)
    assert rows[0]["verdict"] == C.HELD and rows[0]["comparisons"][0]["precision_check"] is None


def test_budget_direction_and_plateau():
    assert [C.budget_direction(d, 0.1) for d in (0.2, -0.2, 0.05, float("nan"))] == ["a", "b", "≈", "–"]
    # arms spread 1.0 at the default budget 120: a change of 0.05 (5 % of the spread) is a plateau, 0.3 is not
    flat = {"x": {60: 0.5, 120: 1.0, 240: 1.05, 480: 1.02}, "y": {60: 1.5, 120: 2.0, 240: 2.0, 480: 1.96}}
    ok, changes = C.plateau(flat, 120)
    assert ok and changes["x"] == pytest.approx(0.05) and changes["y"] == pytest.approx(0.04)
    rising = {"x": {120: 1.0, 240: 1.3, 480: 1.2}, "y": {120: 2.0, 480: 2.0}}
    ok, changes = C.plateau(rising, 120)
    assert not ok and changes["x"] == pytest.approx(0.3)
