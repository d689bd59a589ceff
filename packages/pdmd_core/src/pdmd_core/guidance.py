"""Classifier-free guidance conventions, made explicit because codebases silently differ by one unit.

`standard`: v_u + w (v_c − v_u)   (DMD2, FastGen, LightX2V, rCM; WanPipeline's `guidance_scale`)
`offset`:   v_c + w (v_c − v_u)   (Self-Forcing; equals `standard` at scale w + 1)
`true_cfg`: `standard`, then every latent token's vector scaled to the conditional prediction's norm
            (QwenImagePipeline's `true_cfg_scale`). A token is a patch of the latents (`token_patch` over the
            dims after the channel dim, e.g. 2×2 for Qwen-Image's packed latents); its norm runs over the
            channels and the patch, as the pipeline's `torch.norm(..., dim=-1)` over a packed token does.
An optional norm rescale (phi in [0, 1], `standard`/`offset` only) pulls the guided prediction's per-sample std
back towards the conditional one, blending by phi.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor

from pdmd_core.protocols import Conditioning, VelocityModel


class CFGForm(str, Enum):
    STANDARD = "standard"
    OFFSET = "offset"
    TRUE_CFG = "true_cfg"


def token_norms(v: Tensor, token_patch: Sequence[int]) -> tuple[Tensor, list[int]]:
    """(norm of every token, the token-split shape of `v`): `v` is (B, C, *S); a token is C × a `token_patch`
    block of S. The norms broadcast against `v.reshape(split_shape)`."""
    spatial = list(v.shape[2:])
    patch = list(token_patch) if token_patch else [1] * len(spatial)
    if len(patch) != len(spatial) or any(s % p for s, p in zip(spatial, patch, strict=True)):
        raise ValueError(f"token_patch {tuple(patch)} does not tile the latent dims {tuple(spatial)}")
    split = [v.shape[0], v.shape[1]]
    for s, p in zip(spatial, patch, strict=True):
        split += [s // p, p]
    dims = [1] + [3 + 2 * i for i in range(len(spatial))]
    return v.reshape(split).pow(2).sum(dim=dims, keepdim=True).sqrt(), split


def combine(v_cond: Tensor, v_uncond: Tensor, scale: float, form: CFGForm | str = CFGForm.STANDARD,
            rescale: float = 0.0, token_patch: Sequence[int] = ()) -> Tensor:
    form = CFGForm(form)
    delta = v_cond - v_uncond
    guided = (v_cond if form is CFGForm.OFFSET else v_uncond) + scale * delta
    if form is CFGForm.TRUE_CFG:
        cond_norm, split = token_norms(v_cond, token_patch)
        guided_norm, _ = token_norms(guided, token_patch)
        return (guided.reshape(split) * (cond_norm / guided_norm.clamp_min(1e-12))).reshape(guided.shape)
    if rescale > 0:
        dims = tuple(range(1, guided.ndim))
        ratio = v_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-8)
        guided = rescale * guided * ratio + (1 - rescale) * guided
    return guided


def needs_uncond(scale: float, form: CFGForm | str) -> bool:
    """Whether the unconditional branch changes the result (not for standard / true_cfg w = 1 or offset w = 0)."""
    form = CFGForm(form)
    return not ((form in (CFGForm.STANDARD, CFGForm.TRUE_CFG) and scale == 1.0)
                or (form is CFGForm.OFFSET and scale == 0.0))


def guided_velocity(model: VelocityModel, x_t: Tensor, t: Tensor, cond: Conditioning | None,
                    null_cond: Conditioning | None, scale: float,
                    form: CFGForm | str = CFGForm.STANDARD, rescale: float = 0.0,
                    token_patch: Sequence[int] = ()) -> Tensor:
    """CFG velocity with the conditional and unconditional branches batched into one model call."""
    if cond is None or null_cond is None or not needs_uncond(scale, form):
        return model(x_t, t, cond)
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), Conditioning.cat([cond, null_cond]))
    v_cond, v_uncond = both.chunk(2)
    return combine(v_cond, v_uncond, scale, form, rescale, token_patch)
