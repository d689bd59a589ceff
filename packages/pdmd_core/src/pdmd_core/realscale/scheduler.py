"""A diffusers flow-match Euler scheduler that steps through a fixed, pre-shifted sigma schedule.

WanPipeline calls `scheduler.set_timesteps(num_inference_steps)` without custom sigmas, and the stock
FlowMatchEulerDiscreteScheduler then spaces raw sigmas as linspace(1, ~0, N) — for N = 4 that is not the
paper's [1, .75, .5, .25] before the shift. This subclass stores the distilled student's own step times in
its config (saved with the exported pipeline) and uses them whenever N matches; its `step` is the stock
Euler update x + (sigma_next - sigma) v, identical to pdmd's `euler_step`.

A student trained with `transport: renoise` (DMD2 / SGTS backward simulation: x̂_0 = x - sigma v re-noised to
sigma_next with fresh noise) is exported with `stochastic_sampling=True`, diffusers' flag for that step. The stock
pipelines call `scheduler.step` without a generator, so the fresh noise comes from `noise_generator` (set per call
by `pipelines.StudentPipeline.generate`), drawn as pdmd's sampler draws it: one `randn` of the latents' shape per
step, in pdmd's latent layout — `latent_layout` = (unpacked shape, pack) for Qwen-Image, whose pipeline steps on
packed tokens, so the same seed gives the same noise value at the same latent position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput

from pdmd_core.realscale.timesteps import NUM_TRAIN_TIMESTEPS, scheduler_sigmas


class FixedScheduleEulerScheduler(FlowMatchEulerDiscreteScheduler):
    """Flow-match Euler (or x̂_0 + fresh noise) over `step_sigmas` (already shifted; the base shift is fixed to 1)."""

    # the parent's config keys are saved alongside ours; declaring it compatible drops them on load
    _compatibles = ["FlowMatchEulerDiscreteScheduler"]

    @register_to_config
    def __init__(self, step_sigmas: Sequence[float] = (1.0, 0.9375, 0.8333333333, 0.625),
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, stochastic_sampling: bool = False) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, shift=1.0, stochastic_sampling=stochastic_sampling)
        scheduler_sigmas([*step_sigmas, 0.0])  # validates: decreasing, in (0, 1]
        self.noise_generator: torch.Generator | None = None
        self.latent_layout: tuple[tuple[int, ...], Callable[[torch.Tensor], torch.Tensor]] | None = None

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

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | None = None, per_token_timesteps: torch.Tensor | None = None,
             return_dict: bool = True) -> Any:
        """Euler: the stock step. Re-noise: diffusers' `stochastic_sampling` update, (1 - sigma_next) x̂_0 +
        sigma_next noise with x̂_0 = x - sigma v (in fp32, as the stock step), its noise from `noise_generator`
        in pdmd's latent layout."""
        config: Any = getattr(self, "config")  # noqa: B009
        parent: Any = super()
        if not config.stochastic_sampling or per_token_timesteps is not None:
            return parent.step(model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise, generator,
                               per_token_timesteps, return_dict)
        me: Any = self  # the parent's attributes (step_index, sigmas), which mypy cannot see
        if me.step_index is None:
            me._init_step_index(timestep)
        sigma, sigma_next = me.sigmas[me.step_index], me.sigmas[me.step_index + 1]
        sample = sample.to(torch.float32)
        x0 = sample - sigma * model_output
        noise = self._noise(sample, generator if generator is not None else self.noise_generator)
        prev_sample = ((1.0 - sigma_next) * x0 + sigma_next * noise).to(model_output.dtype)
        me._step_index += 1
        if not return_dict:
            return (prev_sample,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev_sample)

    def _noise(self, sample: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        shape, pack = self.latent_layout if self.latent_layout is not None else (tuple(sample.shape), None)
        device = generator.device if generator is not None else sample.device
        noise = torch.randn(shape, generator=generator, device=device, dtype=sample.dtype).to(sample.device)
        return pack(noise) if pack is not None else noise

    @classmethod
    def for_schedule(cls, timesteps: Sequence[float], transport: str = "euler") -> FixedScheduleEulerScheduler:
        """From a pdmd schedule t_0 = 1 > ... > t_N = 0 and the student's transport (euler | renoise)."""
        if transport not in ("euler", "renoise"):
            raise ValueError(f"transport must be 'euler' or 'renoise', got {transport!r}")
        return cls(step_sigmas=scheduler_sigmas(timesteps), stochastic_sampling=transport == "renoise")
