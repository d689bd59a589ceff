"""Pure flow-matching math: noise schedules, transitions, subinterval targets and DMD weights.

Conventions: t in [0, 1], t = 0 is data and t = 1 is noise; x_t = alpha_t x_0 + sigma_t eps. The default
schedule is rectified flow (alpha_t = 1 - t, sigma_t = t) as in the paper's experiments; every function
takes an optional `schedule` for a general alpha/sigma pair. `s`/`t` may be floats or tensors that
broadcast against the sample tensors (pass per-sample times shaped (B, 1, ...) or use `expand_like`).
Equation numbers refer to Phased DMD (arXiv 2510.27684).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Time = float | Tensor


@dataclass(frozen=True)
class NoiseSchedule:
    """x_t = alpha(t) x_0 + sigma(t) eps, with SNR alpha^2/sigma^2 strictly decreasing in t."""

    name: str
    alpha: Callable[[Time], Time]
    sigma: Callable[[Time], Time]


RECTIFIED_FLOW = NoiseSchedule("rectified_flow", lambda t: 1 - t, lambda t: t)


def _cos(t: Time) -> Time:
    return torch.cos(t * math.pi / 2) if isinstance(t, Tensor) else math.cos(t * math.pi / 2)


def _sin(t: Time) -> Time:
    return torch.sin(t * math.pi / 2) if isinstance(t, Tensor) else math.sin(t * math.pi / 2)


# A variance-preserving schedule, used to check that the math does not silently assume rectified flow.
COSINE_VP = NoiseSchedule("cosine_vp", _cos, _sin)


def expand_like(t: Time, x: Tensor) -> Time:
    """Reshape a per-sample time vector (B,) to (B, 1, ..., 1) so it broadcasts against x."""
    if isinstance(t, Tensor) and t.ndim == 1 and x.ndim > 1:
        return t.reshape(-1, *([1] * (x.ndim - 1)))
    return t


def shift_time(t: Time, shift: float) -> Time:
    """Timestep shift used by Wan / Self-Forcing: shift·t / (1 + (shift − 1)·t)."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t: Time, shift: float) -> Time:
    """Inverse of `shift_time`."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return t / (shift - (shift - 1) * t)


def snr(t: Time, schedule: NoiseSchedule = RECTIFIED_FLOW) -> Time:
    return schedule.alpha(t) ** 2 / schedule.sigma(t) ** 2


def transition_coefficients(s: Time, t: Time, schedule: NoiseSchedule = RECTIFIED_FLOW) -> tuple[Time, Time]:
    """(alpha_{t|s}, sigma_{t|s}) of p(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s < t."""
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    s_s, s_t = schedule.sigma(s), schedule.sigma(t)
    a_ts = a_t / a_s
    var = s_t**2 - a_ts**2 * s_s**2
    var = var.clamp_min(0.0) if isinstance(var, Tensor) else max(var, 0.0)
    return a_ts, var**0.5


def transition(x_s: Tensor, s: Time, t: Time, noise: Tensor,
               schedule: NoiseSchedule = RECTIFIED_FLOW) -> Tensor:
    """x_t = alpha_{t|s} x_s + sigma_{t|s} noise (s = 0 is the ordinary forward process)."""
    a_ts, s_ts = transition_coefficients(s, t, schedule)
    return a_ts * x_s + s_ts * noise


def subinterval_velocity_target(x_s: Tensor, noise: Tensor, s: Time, t: Time,
                                schedule: NoiseSchedule = RECTIFIED_FLOW) -> Tensor:
    """Eq. 11: the unbiased velocity target on (s, 1] given only x_s; equals noise − x_0 when s = 0."""
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    s_s, s_t = schedule.sigma(s), schedule.sigma(t)
    _, s_ts = transition_coefficients(s, t, schedule)
    coef_eps = (a_s**2 * s_t + a_t * s_s**2) / (a_s**2 * s_ts)
    return coef_eps * noise - x_s / a_s


def subinterval_x0_target(x_s: Tensor, noise: Tensor, s: Time, t: Time,
                          schedule: NoiseSchedule = RECTIFIED_FLOW) -> Tensor:
    """Eq. 12: the unbiased x-prediction target on (s, 1]; equals x_0 when s = 0."""
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    s_s = schedule.sigma(s)
    _, s_ts = transition_coefficients(s, t, schedule)
    return x_s / a_s - (a_t * s_s**2) / (a_s**2 * s_ts) * noise


def naive_subinterval_target(x_s: Tensor, noise: Tensor) -> Tensor:
    """The biased ablation target noise − x_s (violates the paper's assumption A2 for s > 0)."""
    return noise - x_s


def subinterval_loss_weight(s: Time, t: Time, clamp: float = 10.0,
                            schedule: NoiseSchedule = RECTIFIED_FLOW) -> Time:
    """Eq. 13's effective weight on ‖ψ − target_v‖²: clamp(1/σ²_{t|s}, 0, clamp)·σ²_{t|s} = min(1, clamp·σ²_{t|s})."""
    _, s_ts = transition_coefficients(s, t, schedule)
    var = s_ts**2
    return (clamp * var).clamp(max=1.0) if isinstance(var, Tensor) else min(1.0, clamp * var)


def dmd_weight(t: Time, s: Time = 0.0, schedule: NoiseSchedule = RECTIFIED_FLOW) -> Time:
    """Eq. 7/10: w_{t|s} = alpha_t alpha_{t|s} / (alpha_t sigma_t + sigma_t^2); RF: (1−t)^2 / ((1−s) t)."""
    a_t, s_t = schedule.alpha(t), schedule.sigma(t)
    a_ts, _ = transition_coefficients(s, t, schedule)
    return a_t * a_ts / (a_t * s_t + s_t**2)


def velocity_to_x0(x_t: Tensor, v: Tensor, t: Time) -> Tensor:
    """Rectified flow: x̂_0 = x_t − t·v (since v = eps − x_0 and x_t = (1 − t) x_0 + t eps)."""
    return x_t - t * v


def euler_step(x: Tensor, v: Tensor, t_from: Time, t_to: Time) -> Tensor:
    """One Euler step of dx/dt = v from t_from to t_to (t decreasing while sampling)."""
    return x + (t_to - t_from) * v


def renoise_step(x: Tensor, v: Tensor, t_from: Time, t_to: Time, noise: Tensor) -> Tensor:
    """DMD2-style transport: predict x̂_0 = x − t_from·v, then re-noise it to t_to with fresh noise."""
    x0 = velocity_to_x0(x, v, t_from)
    return (1 - t_to) * x0 + t_to * noise


def flow_matching_loss_terms(x_0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, target) of the standard flow-matching loss, Eq. 4 / 8 (rectified flow), t of shape (B,)."""
    te = expand_like(t, x_0)
    return (1 - te) * x_0 + te * noise, noise - x_0
