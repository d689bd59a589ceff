"""Timestep schedules, phase partitions and re-noise time sampling (pure functions).

- `uniform_timesteps(N, shift)`: t_0 = 1 > ... > t_N = 0, uniform in raw time then shifted.
- `validate_timesteps(ts)`: strictly decreasing from exactly 1 to exactly 0, else ValueError naming the value.
- `partition_steps(N, K | boundaries)`: step indices [0, b_1, ..., N] of K phases; phase k runs steps
  b_{k-1} .. b_k − 1 and ends at time t_{b_k}.
- `renoise_interval(...)`: the (lo, hi] time interval phase k re-noises on (nested / disjoint / MoE clamp).
- `renoise_time_bounds(lo, hi, t_range)`: (lo, hi] narrowed to the re-noise t range (the model's timestep space).
- `sample_renoise_time(lo, hi, shift, ...)`: t drawn uniform in raw (unshifted) time between those bounds, then
  shifted (paper App. B).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pdmd_core.flow import shift_time, unshift_time


def uniform_timesteps(num_steps: int, shift: float = 1.0) -> list[float]:
    """t_0 = 1 > t_1 > ... > t_N = 0: uniform in raw time, then shifted (shift 5 → 1, .938, .833, .625, 0)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    raw = [1.0 - i / num_steps for i in range(1, num_steps)]
    # the endpoints are pinned: shift·1/(1 + (shift − 1)) can round to 1 + 2e-16
    return [1.0, *(float(shift_time(t, shift)) for t in raw), 0.0]


def validate_timesteps(timesteps: Sequence[float]) -> None:
    ts = list(timesteps)
    if len(ts) < 2:
        raise ValueError(f"timesteps need at least 2 values (1 ... 0), got {ts}")
    if ts[0] != 1.0 or ts[-1] != 0.0:
        raise ValueError(f"timesteps must start at 1 and end at 0, got {ts}")
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        if not b < a:
            raise ValueError(f"timesteps must be strictly decreasing, got {ts} ({a} followed by {b})")


def partition_steps(num_steps: int, phases: int | Sequence[int] | None) -> list[int]:
    """Step indices [0, b_1, ..., N] splitting N steps into K phases.

    `phases` is K (equal phases; N must be divisible by K), explicit boundaries [0, ..., N] strictly
    increasing, or None (one phase).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if phases is None:
        return [0, num_steps]
    if isinstance(phases, int):
        if not 1 <= phases <= num_steps:
            raise ValueError(f"phases must be in [1, num_steps={num_steps}], got {phases}")
        if num_steps % phases:
            raise ValueError(f"phases={phases} does not divide num_steps={num_steps}; "
                             f"give explicit phase_boundaries such as [0, ..., {num_steps}]")
        size = num_steps // phases
        return [k * size for k in range(phases + 1)]
    bounds = [int(b) for b in phases]
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != num_steps:
        raise ValueError(f"phase_boundaries must run from 0 to num_steps={num_steps}, got {bounds}")
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if not b > a:
            raise ValueError(f"phase_boundaries must be strictly increasing, got {bounds} ({a} then {b})")
    return bounds


def phase_of_step(bounds: Sequence[int], step: int) -> int:
    """Index k of the phase that runs sampling step `step` (0-based)."""
    for k in range(len(bounds) - 1):
        if bounds[k] <= step < bounds[k + 1]:
            return k
    raise ValueError(f"step {step} outside the partition {list(bounds)}")


def renoise_interval(phase_start_t: float, phase_end_t: float, nested: bool = True,
                     moe_boundary: float | None = None, clamp_to_boundary: bool = False) -> tuple[float, float]:
    """Times (lo, hi] that phase k re-noises on: (t_k, 1] nested or (t_k, t_{k−1}] disjoint.

    With `clamp_to_boundary`, a phase that starts above an MoE teacher's boundary (it lives in the high-noise
    expert's range) has lo raised to the boundary, as the paper does for Wan2.2's phase 1 (App. B).
    """
    lo, hi = float(phase_end_t), (1.0 if nested else float(phase_start_t))
    if clamp_to_boundary and moe_boundary is not None and phase_start_t > moe_boundary:
        lo = max(lo, float(moe_boundary))
    if not lo < hi:
        raise ValueError(f"empty re-noise interval ({lo}, {hi}]")
    return lo, hi


def renoise_time_bounds(lo: float, hi: float, t_range: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """(lo, hi] intersected with `t_range`, both in t (the shifted time the model is conditioned on, as DMD2 clamps its
    timestep to 0.02-0.98 of T and Self-Forcing clamps after its shift): a phase's interval loses only the ends the
    range excludes, e.g. (0, 1] -> (0.02, 0.98]. An intersection that would be empty leaves (lo, hi] as it is."""
    a, b = max(float(lo), float(t_range[0])), min(float(hi), float(t_range[1]))
    return (a, b) if a < b else (float(lo), float(hi))


def sample_renoise_time(batch: int, lo: float, hi: float, shift: float,
                        t_range: tuple[float, float] = (0.0, 1.0),
                        generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu") -> Tensor:
    """t in (a, b] = `renoise_time_bounds(lo, hi, t_range)`: u ~ U(unshift(a), unshift(b)), t = shift(u)."""
    a, b = renoise_time_bounds(lo, hi, t_range)
    u_lo, u_hi = float(unshift_time(a, shift)), float(unshift_time(b, shift))
    u = torch.rand(batch, generator=generator, device=device) * (u_hi - u_lo) + u_lo
    t = shift_time(u, shift)
    assert isinstance(t, Tensor)
    # keep t strictly above lo (sigma_{t|s} > 0) and inside (a, b] despite the rounding of unshift / shift
    return t.clamp(min=max(a, lo + 1e-6), max=b)
