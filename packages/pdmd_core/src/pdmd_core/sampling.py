"""N-step Euler samplers for teachers (with CFG) and for multi-expert students."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pdmd_core.flow import euler_step
from pdmd_core.guidance import CFGForm, guided_velocity
from pdmd_core.protocols import Conditioning, VelocityModel
from pdmd_core.schedules import uniform_timesteps

__all__ = ["euler_sample", "uniform_timesteps"]


@torch.no_grad()
def euler_sample(model: VelocityModel, z: Tensor, timesteps: Sequence[float],
                 cond: Conditioning | None = None, null_cond: Conditioning | None = None,
                 cfg_scale: float = 1.0, cfg_form: CFGForm | str = CFGForm.STANDARD,
                 cfg_rescale: float = 0.0) -> Tensor:
    """Integrate dx/dt = v from timesteps[0] (noise) down to timesteps[-1] with Euler steps."""
    x = z
    batch = z.shape[0]
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:], strict=True):
        t = torch.full((batch,), float(t_from), device=z.device, dtype=z.dtype)
        v = guided_velocity(model, x, t, cond, null_cond, cfg_scale, cfg_form, cfg_rescale)
        x = euler_step(x, v, t_from, t_to)
    return x
