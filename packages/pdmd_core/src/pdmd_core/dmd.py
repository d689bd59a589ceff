"""DMD losses as pure functions (no module state): generator gradient, surrogate loss, fake-score loss.

- `dmd_gradient_weighted(v_real, v_fake, s, t)`: Eq. 10, g = w_{t|s} (T − F), the gradient of the reverse KL
  w.r.t. the generator output x_s (s = 0: Eq. 7).
- `dmd_gradient_normalized(x_t, v_real, v_fake, t, s, x0_gen)`: DMD's per-sample normaliser,
  g = (x̂_fake − x̂_real) / (α_s · mean|x̂_gen − x̂_real|), with x̂ = x_t − t·v the x_0 predictions. For s = 0 it
  is exactly DMD/DMD2's form; for s > 0 the 1/α_s = α_{t|s}/α_t keeps DMD's chain-rule convention and
  x̂_gen is the generator's own clean prediction at its last step (as LightX2V does). Our choice; paper silent.
- `surrogate_loss(x, g)`: 0.5·mean((x − sg(x − g))²), whose gradient w.r.t. x is g / x.numel()
  (DMD2's reduction).
- `fake_score_loss(pred_v, x_s, noise, s, t, target, clamp, weight_at_s0)`: Eq. 11 target with the Eq. 13
  weight min(1, clamp·σ²_{t|s}) (`subinterval`), or the biased noise − x_s (`naive`, unweighted).
Times `s` are python floats (one per phase); `t` are tensors of shape (B,).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pdmd_core.flow import (
    RECTIFIED_FLOW,
    dmd_weight,
    expand_like,
    naive_subinterval_target,
    subinterval_loss_weight,
    subinterval_velocity_target,
    velocity_to_x0,
)

NORMALIZER_FLOOR = 1e-4  # keeps 1/mean|.| finite when the generator already matches the teacher


def dmd_gradient_weighted(v_real: Tensor, v_fake: Tensor, s: float, t: Tensor) -> Tensor:
    w = expand_like(dmd_weight(t, s), v_real)
    return w * (v_real - v_fake)


def dmd_gradient_normalized(x_t: Tensor, v_real: Tensor, v_fake: Tensor, t: Tensor, s: float,
                            x0_gen: Tensor) -> Tensor:
    te = expand_like(t, x_t)
    x0_real = velocity_to_x0(x_t, v_real, te)
    x0_fake = velocity_to_x0(x_t, v_fake, te)
    dims = tuple(range(1, x_t.ndim))
    norm = (x0_gen - x0_real).abs().mean(dim=dims, keepdim=True).clamp_min(NORMALIZER_FLOOR)
    alpha_s = float(RECTIFIED_FLOW.alpha(s))
    return (x0_fake - x0_real) / (alpha_s * norm)


def surrogate_loss(x: Tensor, grad: Tensor) -> Tensor:
    target = (x - grad).detach()
    return 0.5 * torch.nn.functional.mse_loss(x, target, reduction="mean")


def fake_score_loss(pred_v: Tensor, x_s: Tensor, noise: Tensor, s: float, t: Tensor,
                    target: Literal["subinterval", "naive"] = "subinterval", clamp: float = 10.0,
                    weight_at_s0: bool = False) -> Tensor:
    te = expand_like(t, x_s)
    dims = tuple(range(1, x_s.ndim))
    if target == "naive":
        return ((pred_v - naive_subinterval_target(x_s, noise)) ** 2).mean(dim=dims).mean()
    tgt = subinterval_velocity_target(x_s, noise, s, te)
    per_sample = ((pred_v - tgt) ** 2).mean(dim=dims)
    if s > 0 or weight_at_s0:
        per_sample = per_sample * subinterval_loss_weight(s, t, clamp)
    return per_sample.mean()
