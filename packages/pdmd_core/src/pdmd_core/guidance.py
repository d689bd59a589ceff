"""Classifier-free guidance conventions, made explicit because codebases silently differ by one unit.

`standard`: v_u + w (v_c − v_u)   (DMD2, FastGen, LightX2V, rCM)
`offset`:   v_c + w (v_c − v_u)   (Self-Forcing; equals `standard` at scale w + 1)
An optional norm rescale (phi in [0, 1]) pulls the guided prediction's per-sample std back towards the
conditional one, blending by phi.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

from pdmd_core.protocols import Conditioning, VelocityModel


class CFGForm(str, Enum):
    STANDARD = "standard"
    OFFSET = "offset"


def combine(v_cond: Tensor, v_uncond: Tensor, scale: float, form: CFGForm | str = CFGForm.STANDARD,
            rescale: float = 0.0) -> Tensor:
    form = CFGForm(form)
    delta = v_cond - v_uncond
    guided = (v_uncond if form is CFGForm.STANDARD else v_cond) + scale * delta
    if rescale > 0:
        dims = tuple(range(1, guided.ndim))
        ratio = v_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-8)
        guided = rescale * guided * ratio + (1 - rescale) * guided
    return guided


def needs_uncond(scale: float, form: CFGForm | str) -> bool:
    """Whether the unconditional branch changes the result (not for standard w = 1 or offset w = 0)."""
    form = CFGForm(form)
    return not ((form is CFGForm.STANDARD and scale == 1.0) or (form is CFGForm.OFFSET and scale == 0.0))


def guided_velocity(model: VelocityModel, x_t: Tensor, t: Tensor, cond: Conditioning | None,
                    null_cond: Conditioning | None, scale: float,
                    form: CFGForm | str = CFGForm.STANDARD, rescale: float = 0.0) -> Tensor:
    """CFG velocity with the conditional and unconditional branches batched into one model call."""
    if cond is None or null_cond is None or not needs_uncond(scale, form):
        return model(x_t, t, cond)
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), Conditioning.cat([cond, null_cond]))
    v_cond, v_uncond = both.chunk(2)
    return combine(v_cond, v_uncond, scale, form, rescale)
