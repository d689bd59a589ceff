"""A diffusers flow-match Euler scheduler that steps through a fixed, pre-shifted sigma schedule.

WanPipeline calls `scheduler.set_timesteps(num_inference_steps)` without custom sigmas, and the stock
FlowMatchEulerDiscreteScheduler then spaces raw sigmas as linspace(1, ~0, N) — for N = 4 that is not the
paper's [1, .75, .5, .25] before the shift. This subclass stores the distilled student's own step times in
its config (saved with the exported pipeline) and uses them whenever N matches; its `step` is the stock
Euler update x + (sigma_next - sigma) v, identical to pdmd's `euler_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.configuration_utils import register_to_config

from pdmd_core.realscale.timesteps import NUM_TRAIN_TIMESTEPS, scheduler_sigmas


class FixedScheduleEulerScheduler(FlowMatchEulerDiscreteScheduler):
    """Flow-match Euler over `step_sigmas` (already shifted; the base shift is fixed to 1)."""

    # the parent's config keys are saved alongside ours; declaring it compatible drops them on load
    _compatibles = ["FlowMatchEulerDiscreteScheduler"]

    @register_to_config
    def __init__(self, step_sigmas: Sequence[float] = (1.0, 0.9375, 0.8333333333, 0.625),
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, shift=1.0)
        scheduler_sigmas([*step_sigmas, 0.0])  # validates: decreasing, in (0, 1]

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None) -> None:
        config: Any = getattr(self, "config")  # noqa: B009 (ConfigMixin attribute mypy cannot see)
        fixed = [float(s) for s in config.step_sigmas]
        if sigmas is None and timesteps is None:
            if num_inference_steps not in (None, len(fixed)):
                raise ValueError(f"this scheduler holds the distilled {len(fixed)}-step schedule {fixed}; "
                                 f"num_inference_steps={num_inference_steps} is not supported")
            sigmas = fixed
        parent: Any = super()
        parent.set_timesteps(None, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)

    @classmethod
    def for_schedule(cls, timesteps: Sequence[float]) -> FixedScheduleEulerScheduler:
        """From a pdmd schedule t_0 = 1 > ... > t_N = 0."""
        return cls(step_sigmas=scheduler_sigmas(timesteps))
