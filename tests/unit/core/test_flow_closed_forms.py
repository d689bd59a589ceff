"""Closed-form values of the pure flow math (paper §1, §3.3–3.4) and general-schedule consistency."""

from __future__ import annotations

import math

import pytest
import torch

from pdmd_core.flow import (
    COSINE_VP,
    dmd_weight,
    renoise_step,
    shift_time,
    snr,
    subinterval_loss_weight,
    subinterval_velocity_target,
    transition,
    transition_coefficients,
    unshift_time,
)
from pdmd_core.schedules import uniform_timesteps


def test_shifted_schedules_match_paper() -> None:
    assert uniform_timesteps(4, 5.0) == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0])
    assert uniform_timesteps(4, 3.0) == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0])
    assert float(shift_time(0.5, 5.0)) == pytest.approx(0.8333333)
    assert float(unshift_time(shift_time(0.3, 5.0), 5.0)) == pytest.approx(0.3)


def test_rf_closed_forms() -> None:
    s, t = 0.5, 0.8
    a_ts, s_ts = transition_coefficients(s, t)
    assert a_ts == pytest.approx(0.4) and s_ts == pytest.approx(math.sqrt(0.64 - 0.04))
    assert dmd_weight(t, s) == pytest.approx((1 - t) ** 2 / ((1 - s) * t))
    assert dmd_weight(t) == pytest.approx((1 - t) ** 2 / t)  # Eq. 7
    assert snr(t) == pytest.approx(0.04 / 0.64)
    # Eq. 13 example from the spec: s = .833, t = .84 → σ² ≈ .068, weight ≈ .68
    assert subinterval_loss_weight(0.833, 0.84) == pytest.approx(0.68, abs=0.01)
    assert subinterval_loss_weight(0.2, 0.9) == 1.0
    x_s, noise = torch.tensor([0.3]), torch.tensor([-1.1])
    coef = ((1 - s) ** 2 * t + (1 - t) * s**2) / ((1 - s) ** 2 * s_ts)  # RF closed form of Eq. 11
    torch.testing.assert_close(subinterval_velocity_target(x_s, noise, s, t), coef * noise - x_s / (1 - s))


def test_transition_composes_with_the_forward_process() -> None:
    """x_t from x_s has the marginal of the forward process at t, for RF and a VP schedule."""
    for sched in (None, COSINE_VP):
        kw = {} if sched is None else {"schedule": sched}
        s, t = 0.3, 0.7
        a_ts, s_ts = transition_coefficients(s, t, **kw)
        alpha = (lambda u: 1 - u) if sched is None else sched.alpha
        sigma = (lambda u: u) if sched is None else sched.sigma
        # Var(x_t | x_0) = α_{t|s}² σ_s² + σ_{t|s}² must equal σ_t²; mean factor α_{t|s} α_s = α_t
        assert a_ts**2 * sigma(s) ** 2 + s_ts**2 == pytest.approx(sigma(t) ** 2)
        assert a_ts * alpha(s) == pytest.approx(alpha(t))
    torch.testing.assert_close(transition(torch.ones(2), 0.0, 0.25, torch.zeros(2)), torch.full((2,), 0.75))


def test_renoise_step_returns_x0_at_zero_and_noised_x0_otherwise() -> None:
    x, v, noise = torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([2.0])
    x0 = x - 0.8 * v
    torch.testing.assert_close(renoise_step(x, v, 0.8, 0.0, noise), x0)
    torch.testing.assert_close(renoise_step(x, v, 0.8, 0.5, noise), 0.5 * x0 + 0.5 * noise)
