"""FLOP accounting of the GPU study's MFU / HFU (pdmd_core.iteration_flops, pdmd_core.pass_flops): the formula
per phase against torch's FLOP counter over real iterations of the rehearsal's tiny Wan2.1, and its pure parts
by hand."""

from __future__ import annotations

import itertools
from dataclasses import replace
from fractions import Fraction

import pytest
import torch

from pdmd_core.iteration_flops import (
    BackwardFlops,
    IterationCosts,
    RoleCosts,
    Schedule,
    exit_step_distribution,
    expected_iteration_flops,
    iteration_flops,
    rollout_forwards,
    steady_seconds,
    utilisation,
)
from pdmd_core.paths import project_root
from pdmd_core.rollout import exit_step_draw

SGTS4 = Schedule("sgts", "backprop", (0, 4), 2)
PHASED_K2_SGTS = Schedule("phased", "sgts", (0, 2, 4), 5)
PHASED_K2 = Schedule("phased", "backprop", (0, 2, 4), 5)
DMD_FULL = Schedule("dmd_full", "backprop", (0, 4), 5)
# small integers, so that sums can be done by hand
HAND = IterationCosts(generator=RoleCosts(10, BackwardFlops(20, 5), BackwardFlops(21, 5)),
                      fake=RoleCosts(3, BackwardFlops(6, 2)), teacher=7)


def test_exit_steps_follow_the_rollouts_draw():
    """The distribution the expectation uses is the one rollout.exit_step_draw samples from: 20,000 draws per
    phase, each frequency within 5 binomial standard deviations of its probability."""
    n = 20_000
    for schedule, phase in ((SGTS4, 0), (PHASED_K2_SGTS, 0), (PHASED_K2_SGTS, 1)):
        first, end = schedule.steps(phase)
        rng = torch.Generator().manual_seed(phase)
        draws = [exit_step_draw(first, end - 1, rng) for _ in range(n)]
        distribution = exit_step_distribution(schedule, phase)
        assert sum(distribution.values()) == 1 and set(draws) == set(distribution)
        for j, p in distribution.items():
            assert abs(draws.count(j) / n - float(p)) <= 5 * (float(p) * (1 - float(p)) / n) ** 0.5
    assert exit_step_distribution(PHASED_K2, 1) == {3: 1}  # no SGTS: always the phase's last step
    assert exit_step_distribution(DMD_FULL, 0) == {3: 1}


def test_rollout_forwards_follow_the_routing():
    # (forwards without grad, forwards with grad) of a rollout, as pdmd_core.rollout runs it
    assert rollout_forwards(SGTS4, 0, 2, grad=True) == (2, 1)  # steps 0, 1 no grad; exit step 2 with grad
    assert rollout_forwards(SGTS4, 0, 2, grad=False) == (3, 0)
    assert rollout_forwards(PHASED_K2_SGTS, 1, 2, grad=True) == (2, 1)  # phase 0's 2 steps, then exit at 2
    assert rollout_forwards(PHASED_K2_SGTS, 1, 3, grad=True) == (3, 1)
    assert rollout_forwards(PHASED_K2, 1, 3, grad=True) == (2, 2)  # both steps of phase 1 backpropagated
    assert rollout_forwards(DMD_FULL, 0, 3, grad=True) == (0, 4)


def test_expected_iteration_flops_by_hand():
    # SGTS, 4 steps, ttur 2: E[steps run] = 2.5 per rollout.
    # fake update (j): 10 (j+1) + 3 + 6 model, + 2 recompute; generator update (j): 10 (j+1) + 7 + 3 + 20, + 5.
    # E = 2 (25 + 9) + (25 + 30) = 123 model; + 2·2 + 5 = 132 hardware.
    expected = expected_iteration_flops(HAND, SGTS4, 0)
    assert (expected.model, expected.hardware) == (123, 132)
    # one iteration with exits (0, 3) for the fake updates and 1 for the generator
    one = iteration_flops(HAND, SGTS4, 0, [0, 3], 1)
    assert (one.model, one.hardware) == ((10 + 9) + (40 + 9) + (20 + 30), 118 + 2 * 2 + 5)
    # a backprop chain of 2 steps: the second one's backward has the input gradient (21, not 20)
    chain = iteration_flops(HAND, PHASED_K2, 1, [3] * 5, 3)
    assert chain.model == 5 * (40 + 9) + (40 + 7 + 3 + 20 + 21)
    assert chain.hardware == chain.model + 5 * 2 + 2 * 5


@pytest.mark.parametrize("schedule", [SGTS4, PHASED_K2_SGTS, replace(PHASED_K2_SGTS, ttur_ratio=2)])
def test_expectation_equals_the_average_over_every_exit_combination(schedule):
    """Σ_j P(j) flops(j) per rollout = the mean of iteration_flops over all (ttur + 1)-tuples of exit steps
    (uniform: every rollout draws independently)."""
    for phase in range(schedule.num_phases):
        support = list(exit_step_distribution(schedule, phase))
        combos = list(itertools.product(support, repeat=schedule.ttur_ratio + 1))
        mean_model = sum(iteration_flops(HAND, schedule, phase, c[:-1], c[-1]).model for c in combos) / len(combos)
        assert expected_iteration_flops(HAND, schedule, phase).model == mean_model


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="exit_step 1 is not a possible exit step of phase 1"):
        rollout_forwards(PHASED_K2_SGTS, 1, 1, grad=True)
    with pytest.raises(ValueError, match="fake_exit_steps has 1 entries; .* ttur_ratio=5"):
        iteration_flops(HAND, PHASED_K2, 0, [1], 1)
    with pytest.raises(ValueError, match=r"phase must be an int in \[0, 2\), got 2"):
        expected_iteration_flops(HAND, PHASED_K2, 2)
    with pytest.raises(ValueError, match="backpropagates through 2 steps"):
        iteration_flops(replace(HAND, generator=RoleCosts(10, BackwardFlops(20, 5))), PHASED_K2, 0, [1] * 5, 1)
    with pytest.raises(ValueError, match="3 timed iterations leave none after 3 warm-up"):
        steady_seconds([1.0, 2.0, 3.0], 3)
    with pytest.raises(ValueError, match="warmup must be an int >= 0, got -1"):
        steady_seconds([1.0], -1)
    with pytest.raises(ValueError, match="seconds_per_iteration must be > 0, got 0.0"):
        utilisation(1e12, 0.0, 1e15)
    assert steady_seconds([9.0, 1.0, 2.0], 1) == [1.0, 2.0]
    assert utilisation(Fraction(3, 2) * 1e12, 2.0, 1e12) == 0.75


def _study_arm(model: dict[str, object], arm: str, overrides: dict[str, object]):
    """A study arm on the rehearsal model, as pdmd_pipeline.study.gpu_check configures it (batch 1), with
    `overrides` on top."""
    from pdmd_core.config import config_from_dict
    from pdmd_pipeline.study.gpu_check import arm_config

    cfg = arm_config(project_root(), arm, model, 1, "cpu")
    return config_from_dict({**cfg.model_dump(mode="json"), **overrides}) if overrides else cfg


def _without_recompute(costs: IterationCosts) -> IterationCosts:
    def plain(backward: BackwardFlops | None) -> BackwardFlops | None:
        return None if backward is None else replace(backward, recompute=0)

    def role(r: RoleCosts) -> RoleCosts:
        return RoleCosts(r.forward, replace(r.backward, recompute=0), plain(r.backward_input_grad))

    return IterationCosts(role(costs.generator), role(costs.fake), costs.teacher)


def _covers_support(schedule: Schedule):
    """An `until` for count_iterations: every exit step of the phase seen in some rollout."""
    def until(done) -> bool:
        if not done:
            return False
        support = set(exit_step_distribution(schedule, done[0].phase))
        return {j for it in done for j in [*it.fake_exit_steps, it.generator_exit_step]} == support
    return until


@pytest.mark.slow
@pytest.mark.parametrize("arm,overrides", [("phased_k2_sgts", {}), ("sgts", {}),
                                           ("phased_k4", {"phases": 2, "iterations": 1})])  # 2 backprop steps / phase
def test_formula_equals_the_flop_counter_over_real_iterations(tiny_wan21_study_model, count_iterations, arm,
                                                              overrides):
    """Per phase, every real iteration's FLOPs (FlopCounterMode over Trainer.train_iteration) equal the formula
    at the exit steps its rollouts took: exactly (both sides are sums of the same integer per-op counts); model
    FLOPs from a run without activation checkpointing, hardware FLOPs from the same run with it (same seed, so the
    same exit steps). Under SGTS the run goes on until every exit step of the phase occurred, so the formula is
    checked at each j of the expectation Σ_j P(j) flops(j) (P: test_exit_steps_follow_the_rollouts_draw)."""
    cfg = _study_arm(tiny_wan21_study_model, arm, overrides)
    schedule = Schedule.of(cfg)
    until = _covers_support(schedule) if schedule.truncated else None
    with_ac = count_iterations(cfg, checkpointing=True, until=until, max_iterations=5 if until else 1)
    without = count_iterations(cfg, checkpointing=False, until=until, max_iterations=5 if until else 1)
    for phase in range(schedule.num_phases):
        # the counted pass costs split a backward into what autograd needs and what checkpointing recomputes
        costs = with_ac.costs[phase]
        assert costs.fake.backward.recompute > 0 and costs.generator.backward.recompute > 0
        assert without.costs[phase] == _without_recompute(costs)
    assert [(i.phase, i.fake_exit_steps, i.generator_exit_step) for i in with_ac.iterations] == \
        [(i.phase, i.fake_exit_steps, i.generator_exit_step) for i in without.iterations]
    for hw, model in zip(with_ac.iterations, without.iterations, strict=True):
        formula = iteration_flops(with_ac.costs[hw.phase], schedule, hw.phase, hw.fake_exit_steps,
                                  hw.generator_exit_step)
        assert (model.flops, hw.flops) == (formula.model, formula.hardware), (arm, hw.phase)
    if schedule.truncated:
        for phase in range(schedule.num_phases):
            seen = {j for i in with_ac.iterations if i.phase == phase for j in [*i.fake_exit_steps,
                                                                                 i.generator_exit_step]}
            assert seen == set(exit_step_distribution(schedule, phase)), (arm, phase)
