"""Schedules, phase partitions and config validation: property tests (hypothesis) and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdmd_core.config import ConfigError, config_from_dict, load_config
from pdmd_core.flow import shift_time, unshift_time
from pdmd_core.schedules import (
    partition_steps,
    phase_of_step,
    renoise_interval,
    sample_renoise_time,
    uniform_timesteps,
    validate_timesteps,
)

shifts = st.floats(min_value=0.1, max_value=20.0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), shift=shifts)
def test_uniform_schedule_is_valid(n: int, shift: float) -> None:
    ts = uniform_timesteps(n, shift)
    validate_timesteps(ts)
    assert len(ts) == n + 1


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0.0, 1.0), shift=shifts)
def test_shift_roundtrip_and_monotone(t: float, shift: float) -> None:
    assert float(unshift_time(shift_time(t, shift), shift)) == pytest.approx(t, abs=1e-9)
    assert 0.0 <= float(shift_time(t, shift)) <= 1.0 + 1e-12


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 32), k=st.integers(1, 32))
def test_equal_partitions(n: int, k: int) -> None:
    if k > n or n % k:
        with pytest.raises(ValueError, match=f"phases={k}" if k <= n else "phases must be in"):
            partition_steps(n, k)
        return
    bounds = partition_steps(n, k)
    assert bounds[0] == 0 and bounds[-1] == n and len(bounds) == k + 1
    assert len({b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)}) == 1
    assert [phase_of_step(bounds, i) for i in range(n)] == sorted(phase_of_step(bounds, i) for i in range(n))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 16), cuts=st.lists(st.integers(0, 16), max_size=6))
def test_explicit_boundaries(n: int, cuts: list[int]) -> None:
    bounds = [0, *cuts, n]
    valid = all(b > a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    if valid:
        assert partition_steps(n, bounds) == bounds
    else:
        with pytest.raises(ValueError, match="strictly increasing"):
            partition_steps(n, bounds)


@settings(max_examples=60, deadline=None)
@given(ts=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=6))
def test_validate_timesteps_rejects_non_decreasing(ts: list[float]) -> None:
    full = [1.0, *ts, 0.0]
    ok = all(b < a for a, b in zip(full[:-1], full[1:], strict=True))
    if ok:
        validate_timesteps(full)
    else:
        with pytest.raises(ValueError, match="strictly decreasing"):
            validate_timesteps(full)


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(0.0, 0.95), width=st.floats(0.01, 1.0), shift=shifts)
def test_renoise_time_stays_in_interval(lo: float, width: float, shift: float) -> None:
    hi = min(1.0, lo + width)
    t = sample_renoise_time(256, lo, hi, shift, (0.02, 0.98), torch.Generator().manual_seed(0))
    assert bool((t > lo).all()) and bool((t <= hi).all())
    if max(lo, 0.02) < min(hi, 0.98):  # the range bounds t itself whenever it leaves part of the interval
        assert bool((t >= 0.02).all()) and bool((t <= 0.98).all()), (float(t.min()), float(t.max()))


def _unshift(t: float, shift: float) -> float:
    return t / (shift - (shift - 1.0) * t)  # the inverse of shift·u / (1 + (shift − 1)·u), in closed form


@pytest.mark.parametrize(("lo", "a", "b"), [(0.8333333333333334, 0.8333333333333334, 0.98), (0.0, 0.02, 0.98)],
                         ids=["first-phase", "last-phase"])
def test_renoise_t_range_bounds_t_after_the_shift(lo: float, a: float, b: float) -> None:
    """4 steps at shift 5 (t = 1, .9375, .8333, .625, 0), 2 phases, nested: phase 1 re-noises on (.8333, 1], phase 2
    on (0, 1]. DMD2's 0.02/0.98 bound the model's timestep t (not the raw u: shift(0.98) = 0.996 and shift(0.02) =
    0.093 would cut off t in (0.02, 0.093] and let t reach 0.996), so phase 1 draws t in (.8333, .98] and phase 2 in
    (.02, .98], t = shift(u) with u uniform between unshift of those ends."""
    shift, n = 5.0, 100_000
    t = sample_renoise_time(n, lo, 1.0, shift, (0.02, 0.98), torch.Generator().manual_seed(0)).double()
    assert float(t.min()) >= a and float(t.max()) <= b
    # the ends are reached: P(no draw within 0.005 of an end) = (1 - F-mass there)^n < e^-100 for these intervals
    assert float(t.min()) < a + 0.005 and float(t.max()) > b - 0.005
    # empirical CDF vs the analytic one, F(t) = (unshift(t) - unshift(a)) / (unshift(b) - unshift(a)): by the DKW
    # inequality P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2), so eps = sqrt(ln(2 / 1e-9) / (2 n)) fails 1 in 1e9
    u_a, u_b = _unshift(a, shift), _unshift(b, shift)
    ordered = t.sort().values
    analytic = ((ordered / (shift - (shift - 1.0) * ordered)) - u_a) / (u_b - u_a)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    gap = float(torch.maximum(upper - analytic, analytic - (upper - 1.0 / n)).max())
    assert gap <= math.sqrt(math.log(2 / 1e-9) / (2 * n)), gap


def test_renoise_time_is_uniform_before_shift() -> None:
    t = sample_renoise_time(200_000, 0.8333333, 1.0, 5.0, (0.0, 1.0), torch.Generator().manual_seed(0))
    u = unshift_time(t, 5.0)  # phase 1 of 4-step/2-phase: u ~ U(0.5, 1) (spec §1, Fig. 9)
    assert float(u.min()) >= 0.5 - 1e-5 and float(u.max()) <= 1.0
    assert float(u.mean()) == pytest.approx(0.75, abs=3e-3)
    assert float(u.var()) == pytest.approx(0.25**2 / 3, abs=1e-3)


def test_renoise_time_bounds_intersect_the_phase_interval_with_the_t_range() -> None:
    from pdmd_core.schedules import renoise_time_bounds

    assert renoise_time_bounds(0.8333, 1.0, (0.02, 0.98)) == (0.8333, 0.98)
    assert renoise_time_bounds(0.0, 1.0, (0.02, 0.98)) == (0.02, 0.98)
    assert renoise_time_bounds(0.0, 0.625, (0.02, 0.98)) == (0.02, 0.625)  # a disjoint last phase
    assert renoise_time_bounds(0.99, 1.0, (0.02, 0.98)) == (0.99, 1.0)  # nothing left: the phase's own interval


def test_renoise_intervals() -> None:
    assert renoise_interval(0.9375, 0.8333, nested=True) == (0.8333, 1.0)
    assert renoise_interval(0.9375, 0.8333, nested=False) == (0.8333, 0.9375)
    assert renoise_interval(1.0, 0.8333, moe_boundary=0.875, clamp_to_boundary=True) == (0.875, 1.0)
    assert renoise_interval(0.8333, 0.0, moe_boundary=0.875, clamp_to_boundary=True) == (0.0, 1.0)


# ---------------------------------------------------------------- config
def test_defaults_name_the_five_decisions() -> None:
    cfg = config_from_dict({})
    assert cfg.teacher_cfg.form.value == "standard" and cfg.fake_target == "subinterval"
    assert cfg.generator_gradient == "dmd_weight" and cfg.ttur_ratio == 5 and cfg.transport == "euler"
    assert cfg.loss_clamp == 10.0 and cfg.optim.betas == (0.0, 0.999) and cfg.renoise_interval == "nested"


@pytest.mark.parametrize(("data", "needle"), [
    ({"methd": "dmd"}, "unknown key 'methd'"),
    ({"optim": {"lr": 1.0}}, "unknown key 'optim.lr'"),
    ({"method": "dmd3"}, "method = 'dmd3'"),
    ({"teacher_cfg": {"form": "weird"}}, "teacher_cfg.form = 'weird'"),
    ({"shift": 0.0}, "shift = 0.0"),
    ({"method": "phased", "phases": 3}, "phases=3 does not divide num_steps=4"),
    ({"method": "phased", "phase_boundaries": [0, 3, 2, 4]}, "[0, 3, 2, 4]"),
    ({"timesteps": [1.0, 0.5, 0.7, 0.2, 0.0]}, "strictly decreasing"),
    ({"timesteps": [1.0, 0.5, 0.0]}, "num_steps=4 needs 5"),
    ({"method": "dmd", "num_steps": 4}, "num_steps must be 1"),
    ({"method": "sgts", "phases": 2}, "only for method 'phased'"),
    ({"method": "phased", "phases": 2, "iterations": [1, 2, 3]}, "iterations lists 3 values"),
    ({"fixed_dmd_t": 1.5}, "fixed_dmd_t = 1.5"),
])
def test_invalid_configs_name_the_field(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert needle in str(err.value)


def test_load_yaml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("method: phased\nphases: 2\nshift: 5\nmodel: {kind: mlp, dim: 8}\noptim: {lr_fake: 1.0e-5}\n")
    cfg = load_config(path, {"optim.lr_generator": 2e-5, "teacher_cfg": {"scale": 4.0, "form": "offset"}})
    assert cfg.phase_step_bounds() == [0, 2, 4] and cfg.optim.lr_fake == 1e-5 and cfg.optim.lr_generator == 2e-5
    assert cfg.teacher_cfg.scale == 4.0 and cfg.model is not None and cfg.model.params == {"dim": 8}
    assert cfg.timestep_schedule() == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0])
