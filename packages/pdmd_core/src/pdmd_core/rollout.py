"""Backward simulation of the student for one training sample batch (method-specific gradient routing).

`rollout(gen, z, cond, method, phase, in_phase, transport, rng, grad, exit_rng=None, noise=None) ->
RolloutResult(x_s, s, x0_gen, exit)` (SGTS exit steps come from `exit_rng` when given, else from `rng`; the
re-noise transport's fresh noise from `noise(shape)` when given, else from `rng`):
- dmd / dmd_full: all N steps (with grad when `grad`), output x_0 (s = 0).
- sgts: exit step j ~ U{1..N}; steps before j without grad; step j (with grad) jumps to t = 0 → x̂_0.
- phased: steps of earlier phases without grad (frozen experts); the steps of phase k with grad
  (`in_phase="backprop"`), or SGTS inside the phase (`in_phase="sgts"`: exit step jumps to the phase end t_k).
  Output x_{t_k}, s = t_k.
Between steps `transport` is Euler (x + (t' − t)·v) or DMD2's re-noise (x̂_0 + fresh noise at t').
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pdmd_core.flow import euler_step, renoise_step, velocity_to_x0
from pdmd_core.protocols import Conditioning
from pdmd_core.roles import GeneratorExperts


@dataclass
class RolloutResult:
    x_s: Tensor  # generator output at time s (with grad for the generator update)
    s: float  # the time it lives at (0 for a clean sample)
    x0_gen: Tensor  # detached clean prediction of the last executed step (DMD normaliser)
    exit_step: int  # index of the last executed step (0-based)


NoiseSource = Callable[[Sequence[int]], Tensor]


def transport_step(x: Tensor, v: Tensor, t_from: float, t_to: float, transport: str,
                   rng: torch.Generator | None, noise_source: NoiseSource | None = None) -> Tensor:
    """One step from t_from to t_to: Euler, or re-noise with fresh noise from `noise_source` or else `rng` (one of
    them is required for a re-noise step that does not end at t = 0)."""
    if transport == "euler" or t_to == 0.0:
        return euler_step(x, v, t_from, t_to)
    if noise_source is None:
        if rng is None:
            raise ValueError("a re-noise step needs its fresh noise: a generator or a noise source")
        noise = torch.randn(x.shape, generator=rng, device=rng.device, dtype=x.dtype).to(x.device)
    else:
        noise = noise_source(x.shape).to(device=x.device, dtype=x.dtype)
    return renoise_step(x, v, t_from, t_to, noise)


def _step(gen: GeneratorExperts, i: int, x: Tensor, t_to: float, cond: Conditioning | None, transport: str,
          rng: torch.Generator, noise: NoiseSource | None) -> tuple[Tensor, Tensor]:
    t_from = gen.timesteps[i]
    t = torch.full((x.shape[0],), t_from, device=x.device, dtype=x.dtype)
    v = gen.step_velocity(i, x, t, cond)
    return transport_step(x, v, t_from, t_to, transport, rng, noise), velocity_to_x0(x, v, t_from)


def exit_step_draw(first: int, last: int, rng: torch.Generator) -> int:
    """Uniform step index in [first, last] (inclusive), from the trainer's generator."""
    return first + int(torch.randint(0, last - first + 1, (1,), generator=rng, device=rng.device).item())


def rollout(gen: GeneratorExperts, z: Tensor, cond: Conditioning | None, method: str, phase: int,
            in_phase: str, transport: str, rng: torch.Generator, grad: bool,
            exit_rng: torch.Generator | None = None, noise: NoiseSource | None = None) -> RolloutResult:
    ts, bounds = gen.timesteps, gen.bounds
    first, end = bounds[phase], bounds[phase + 1]
    s = float(ts[end])
    x = z
    with torch.no_grad():  # earlier phases: frozen experts, no graph
        for i in range(first):
            x, _ = _step(gen, i, x, ts[i + 1], cond, transport, rng, noise)
    truncated = method == "sgts" or (method == "phased" and in_phase == "sgts")
    # exit_rng: a generator shared by all ranks when the experts are sharded (same calls on every rank)
    exit_step = exit_step_draw(first, end - 1, rng if exit_rng is None else exit_rng) if truncated else end - 1
    x0 = x
    for i in range(first, exit_step + 1):
        is_exit = i == exit_step
        t_to = s if is_exit else ts[i + 1]
        with torch.set_grad_enabled(grad and (is_exit or not truncated)):
            x, x0 = _step(gen, i, x, t_to, cond, transport, rng, noise)
    return RolloutResult(x, s, x0.detach(), exit_step)
