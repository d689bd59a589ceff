"""Test group 1: Eq. 11's subinterval target is conditionally unbiased for Gaussian data; the naive one is not.

For x_0 ~ N(mu, diag var) every quantity is jointly Gaussian, so E[target | x_t] is affine in x_t. Unbiasedness
E[target | x_t] = v*(x_t) is therefore equivalent to the residual target − v*(x_t) having zero mean and zero
covariance with x_t; we check both by Monte Carlo and compare the naive target's bias with its closed form.
"""

from __future__ import annotations

import math

import torch
from core_toy_nets import gaussian_velocity

from pdmd_core.flow import (
    naive_subinterval_target,
    subinterval_velocity_target,
    subinterval_x0_target,
    transition,
    transition_coefficients,
)

MU = torch.tensor([0.7, -1.2], dtype=torch.float64)
VAR = torch.tensor([0.25, 2.25], dtype=torch.float64)
N = 400_000


def _draw(s: float, t: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = MU + VAR.sqrt() * torch.randn(N, 2, generator=g, dtype=torch.float64)
    x_s = (1 - s) * x0 + s * torch.randn(N, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(N, 2, generator=g, dtype=torch.float64)
    return x0, x_s, noise, transition(x_s, s, t, noise)


def _affine_fit(y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-dim least squares y ≈ c0 + c1 x (the exact form of E[y | x] for jointly Gaussian y, x).

    Returns (c0, c1, se1) with se1 the standard error of the slope.
    """
    xc, yc = x - x.mean(0), y - y.mean(0)
    c1 = (xc * yc).mean(0) / (xc * xc).mean(0)
    resid = yc - c1 * xc
    se1 = resid.std(0) / (xc.std(0) * math.sqrt(x.shape[0]))
    return y.mean(0) - c1 * x.mean(0), c1, se1


def test_subinterval_target_is_conditionally_unbiased() -> None:
    s, t = 0.5, 0.8
    _, x_s, noise, x_t = _draw(s, t)
    resid = subinterval_velocity_target(x_s, noise, s, t) - gaussian_velocity(x_t, t, MU, VAR)
    c0, c1, se1 = _affine_fit(resid, x_t)
    # E[resid | x_t] = c0 + c1 x_t must vanish: both coefficients 0 within Monte Carlo error
    assert torch.all(c1.abs() < 5 * se1), (c1, se1)
    assert torch.all(se1 < 0.005), se1
    assert c0.abs().max() < 0.015, c0


def _naive_bias_closed_form(s: float, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E[noise − x_s | x_t] − v*(x_t) = b0 + b1 x_t, from the joint Gaussian of (x_s, noise, x_t)."""
    a_ts, s_ts = transition_coefficients(s, t)
    m_s, v_s = (1 - s) * MU, (1 - s) ** 2 * VAR + s * s
    m_t, v_t = a_ts * m_s, a_ts**2 * v_s + s_ts**2
    # naive = noise − x_s: Cov(naive, x_t) = sigma_{t|s} − alpha_{t|s} Var(x_s); mean −m_s
    slope_naive = (s_ts - a_ts * v_s) / v_t
    icpt_naive = -m_s - slope_naive * m_t
    # v*(x_t) is affine too: read its coefficients off the closed form
    v0 = gaussian_velocity(torch.zeros(2), t, MU, VAR)
    v1 = gaussian_velocity(torch.ones(2), t, MU, VAR) - v0
    return icpt_naive - v0, slope_naive - v1


def test_naive_target_bias_matches_closed_form_and_is_large() -> None:
    s, t = 0.5, 0.8
    _, x_s, noise, x_t = _draw(s, t, seed=1)
    resid = naive_subinterval_target(x_s, noise) - gaussian_velocity(x_t, t, MU, VAR)
    c0, c1, _ = _affine_fit(resid, x_t)
    b0, b1 = _naive_bias_closed_form(s, t)
    torch.testing.assert_close(c0, b0, atol=0.01, rtol=0)
    torch.testing.assert_close(c1, b1, atol=0.01, rtol=0)
    # RMS bias over the x_t marginal, per dim: sqrt(E[(b0 + b1 x_t)^2]), Monte Carlo vs closed form
    rms_mc = ((c0 + c1 * x_t) ** 2).mean(0).sqrt()
    a_ts, s_ts = transition_coefficients(s, t)
    m_t = a_ts * (1 - s) * MU
    v_t = a_ts**2 * ((1 - s) ** 2 * VAR + s * s) + s_ts**2
    rms_exact = ((b0 + b1 * m_t) ** 2 + b1**2 * v_t).sqrt()
    torch.testing.assert_close(rms_mc, rms_exact, atol=0.01, rtol=0)
    # closed form for MU=(0.7, −1.2), VAR=(0.25, 2.25), s=0.5, t=0.8: RMS bias (0.372, 0.611)
    torch.testing.assert_close(rms_exact, torch.tensor([0.3715, 0.6112], dtype=torch.float64), atol=1e-3, rtol=0)


def test_x0_target_unbiased_for_the_posterior_mean() -> None:
    s, t = 0.3, 0.9
    x0, x_s, noise, x_t = _draw(s, t, seed=2)
    a = 1 - t
    e_x0 = MU + a * VAR / (a * a * VAR + t * t) * (x_t - a * MU)
    c0, c1, se1 = _affine_fit(subinterval_x0_target(x_s, noise, s, t) - e_x0, x_t)
    assert torch.all(c1.abs() < 5 * se1) and c0.abs().max() < 0.015, (c0, c1, se1)


def test_s_zero_reduces_to_standard_targets() -> None:
    x0, _, noise, _ = _draw(0.0, 0.6, seed=3)
    t = torch.rand(N, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.98 + 0.01
    torch.testing.assert_close(subinterval_velocity_target(x0, noise, 0.0, t), noise - x0)
    torch.testing.assert_close(naive_subinterval_target(x0, noise), noise - x0)
    torch.testing.assert_close(subinterval_x0_target(x0, noise, 0.0, t), x0)
    torch.testing.assert_close(transition(x0, 0.0, t, noise), (1 - t) * x0 + t * noise)
