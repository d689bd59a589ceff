"""Test group 3: with exact real and fake scores for 1-D Gaussians, the DMD gradient moves a mis-located
generator's mean and standard deviation to the data's — for one-step DMD (s = 0, both generator-gradient
forms) and for a phase ending at s = 0.5 (Eq. 10: the generator output x_s must match the data marginal at s).
"""

from __future__ import annotations

import math

import pytest
import torch
from core_toy_nets import gaussian_marginal, gaussian_velocity, velocity_from_marginal

from pdmd_core.dmd import dmd_gradient_normalized, dmd_gradient_weighted, surrogate_loss
from pdmd_core.flow import transition

MU_DATA, SD_DATA = 1.5, 0.7


def test_marginal_velocity_identity_matches_closed_form() -> None:
    x = torch.linspace(-3, 3, 13)
    for t in (0.1, 0.5, 0.9):
        m, v = gaussian_marginal(t, MU_DATA, SD_DATA**2)
        torch.testing.assert_close(velocity_from_marginal(x, t, m, v), gaussian_velocity(x, t, MU_DATA, SD_DATA**2))


def _distil(s: float, form: str, iters: int = 250, seed: int = 0) -> tuple[float, float, float]:
    """Fit x_s = mu + exp(log_sd)·z by DMD against the data marginal at time s; returns (mu, sd, first dmu)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.tensor(-1.0, requires_grad=True)
    log_sd = torch.tensor(math.log(2.0), requires_grad=True)
    opt = torch.optim.Adam([mu, log_sd], lr=0.05, betas=(0.0, 0.999))
    m_real, v_real = gaussian_marginal(s, MU_DATA, SD_DATA**2)
    first_dmu = float("nan")
    for it in range(iters):
        z = torch.randn(2048, generator=g)
        x_s = mu + log_sd.exp() * z
        t = s + 0.02 + (0.96 - s) * torch.rand(2048, generator=g)
        noise = torch.randn(2048, generator=g)
        with torch.no_grad():
            a_ts = (1 - t) / (1 - s)
            x_t = transition(x_s, s, t, noise)
            # exact marginals at t of the real and the current fake distribution, pushed from time s
            s_ts2 = t * t - a_ts**2 * s * s
            v_r = velocity_from_marginal(x_t, t, a_ts * m_real, a_ts**2 * v_real + s_ts2)
            sd = float(log_sd.exp())
            v_f = velocity_from_marginal(x_t, t, a_ts * float(mu), a_ts**2 * sd * sd + s_ts2)
            if form == "dmd_weight":
                grad = dmd_gradient_weighted(v_r, v_f, s, t)
            else:
                x0_gen = x_s if s == 0 else (x_s - s * noise) / (1 - s)  # any clean-scale proxy is fine here
                grad = dmd_gradient_normalized(x_t, v_r, v_f, t, s, x0_gen.detach())
        opt.zero_grad()
        surrogate_loss(x_s, grad).backward()
        if it == 0:
            first_dmu = float(mu.grad)
        opt.step()
    return float(mu.detach()), float(log_sd.detach().exp()), first_dmu


@pytest.mark.parametrize("form", ["dmd_weight", "normalizer"])
def test_one_step_dmd_moves_generator_to_data(form: str) -> None:
    mu, sd, first_dmu = _distil(0.0, form)
    assert first_dmu < 0  # generator mean −1 < data mean 1.5: descent must increase it
    assert abs(mu - MU_DATA) < 0.01, mu
    assert abs(sd - SD_DATA) < 0.01, sd


def test_phase_gradient_matches_data_marginal_at_s() -> None:
    s = 0.5
    mu, sd, first_dmu = _distil(s, "dmd_weight")
    m_real, v_real = gaussian_marginal(s, MU_DATA, SD_DATA**2)  # (0.75, 0.3725) -> sd 0.610
    assert first_dmu < 0
    assert abs(mu - m_real) < 0.01, mu
    assert abs(sd - math.sqrt(v_real)) < 0.01, sd
