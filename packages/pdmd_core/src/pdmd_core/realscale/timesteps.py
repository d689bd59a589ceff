"""The one place where pdmd time t in [0, 1] meets diffusers' timestep conventions.

pdmd: x_t = (1 - t) x_0 + t eps, t = 1 is noise. diffusers' flow-matching schedulers call the same number
"sigma" and hand transformers `timestep = sigma * num_train_timesteps` (Wan: 0..1000); QwenImagePipeline
divides by 1000 again before the transformer, whose time embedding multiplies by 1000 internally.
Shifted schedules (t' = shift t / (1 + (shift - 1) t)) are applied by pdmd before any conversion, so every
sigma handed to diffusers here is already shifted and the schedulers are configured with shift = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000


def to_wan_timestep(t: Tensor) -> Tensor:
    """pdmd t in [0, 1] -> the `timestep` WanTransformer3DModel expects (0..1000, float)."""
    return t * NUM_TRAIN_TIMESTEPS


def to_qwen_timestep(t: Tensor) -> Tensor:
    """pdmd t in [0, 1] -> the `timestep` QwenImageTransformer2DModel expects (the sigma itself)."""
    return t


def from_diffusers_timestep(timestep: Tensor | float) -> Tensor | float:
    """diffusers' 0..1000 scheduler timestep -> pdmd t in [0, 1]."""
    return timestep / NUM_TRAIN_TIMESTEPS


def scheduler_sigmas(timesteps: Sequence[float]) -> list[float]:
    """The sigmas a diffusers flow-matching scheduler must step through to reproduce pdmd's N-step schedule.

    pdmd schedules include the final 0 (t_0 = 1 > ... > t_N = 0); diffusers appends its own terminal 0.
    """
    values = [float(t) for t in timesteps]
    if len(values) < 2 or values[-1] != 0.0:
        raise ValueError(f"a sampling schedule runs from noise to t = 0 with >= 1 step, got {values}")
    if any(a <= b for a, b in zip(values[:-1], values[1:], strict=False)):
        raise ValueError(f"a sampling schedule must be strictly decreasing, got {values}")
    if not 0.0 < values[0] <= 1.0:
        raise ValueError(f"a sampling schedule starts in (0, 1], got {values[0]}")
    return values[:-1]


def expert_boundary_ratio(timesteps: Sequence[float], first_low_step: int) -> float:
    """A `boundary_ratio` for WanPipeline that hands steps >= first_low_step to `transformer_2`.

    WanPipeline runs `transformer` while timestep >= boundary_ratio * 1000. The phase edge t_k itself is the
    first step of the low-noise expert, so the boundary must lie strictly between t_k and the preceding step
    time; we take their midpoint, which stays robust to float32 rounding of the scheduler's timesteps.
    """
    values = [float(t) for t in timesteps]
    if not 1 <= first_low_step < len(values) - 1:
        raise ValueError(f"first_low_step must be in [1, {len(values) - 2}] for {values}, got {first_low_step}")
    return 0.5 * (values[first_low_step] + values[first_low_step - 1])


def expert_index_for_time(t: Tensor, boundary: float) -> Tensor:
    """0 for the high-noise expert (t >= boundary, as diffusers' Wan2.2 pipelines decide), 1 otherwise."""
    return (t < boundary).long()


def as_time_vector(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A (B,) float time vector on `like`'s device, from a scalar or a (B,) tensor."""
    if not isinstance(t, Tensor):
        return torch.full((batch,), float(t), device=like.device, dtype=torch.float32)
    if t.ndim == 0:
        return t.expand(batch).to(like.device)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or shaped ({batch},), got {tuple(t.shape)}")
    return t.to(like.device)
