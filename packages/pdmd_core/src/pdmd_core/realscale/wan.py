"""Wan2.1 / Wan2.2 transformers (diffusers' WanTransformer3DModel) as pdmd velocity models.

Latents are (B, C, F, H, W) as WanPipeline makes them (VAE-normalised). Wan predicts the flow velocity
eps - x_0 directly, so the adapter only converts the time and arranges the conditioning:
- `t2v`: text only (Wan2.1 T2V, Wan2.2 T2V-A14B, and T2I as 1-frame video).
- `i2v`: Wan2.2 I2V-A14B; `cond.extras["i2v_condition"]` (B, 4 + z_dim, F, H, W), the frame mask plus the
  VAE-encoded first frame exactly as WanImageToVideoPipeline builds it, is concatenated on channels.
- `ti2v`: Wan2.2 TI2V-5B image-to-video; `cond.extras["first_frame_latent"]` (B, z_dim, 1, H, W) replaces
  latent frame 0 and those tokens get timestep 0 (WanImageToVideoPipeline with `expand_timesteps=True`).
  Frame 0 is known, so its velocity is the exact flow velocity towards it, (x_t - first) / t, not the
  transformer's output there: any Euler schedule then ends on the conditioning frame (the pipeline pastes it
  back after its last step), x_0-predictions of frame 0 are the condition itself, and DMD / flow-matching
  losses on those tokens vanish instead of training the transformer on outputs the pipeline throws away.
First-frame conditions depend on the resolution. A resolution mixture caches one table per resolution
(`i2v_condition@FxHxW`, `vae.condition_key`) and the conditioning carries all of them; the adapter uses the one
whose latent frames/height/width match x_t and names the cached shapes when none does.
Prompt embeddings are zero-padded by the Wan text pipeline and the transformer attends to the padding, so
`cond.mask` is not used (keeping it would change the model's function).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.timesteps import as_time_vector, to_wan_timestep

WanMode = Literal["t2v", "i2v", "ti2v"]
WAN_MODES: tuple[str, ...] = ("t2v", "i2v", "ti2v")


class WanVelocity(nn.Module):
    """v = WanVelocity(transformer)(x_t, t, cond) for a diffusers WanTransformer3DModel."""

    transformer: Any  # a diffusers model (its attributes, e.g. .config / .dtype, are not nn.Module's)

    def __init__(self, transformer: nn.Module, mode: WanMode = "t2v") -> None:
        super().__init__()
        if mode not in WAN_MODES:
            raise ValueError(f"Wan mode must be one of {WAN_MODES}, got {mode!r}")
        self.transformer = transformer
        self.mode = mode

    @property
    def config(self):  # the diffusers config of the wrapped transformer
        return self.transformer.config

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        if cond is None:
            raise ValueError("Wan transformers need a text conditioning (pass the cached null prompt for uncond)")
        if x_t.ndim != 5:
            raise ValueError(f"Wan latents are (B, C, F, H, W), got shape {tuple(x_t.shape)}")
        batch = x_t.shape[0]
        t = as_time_vector(t, batch, x_t)
        dtype = self.transformer.dtype
        hidden = x_t
        timestep = to_wan_timestep(t)
        if self.mode == "i2v":
            hidden = torch.cat([x_t, first_frame_condition(cond, "i2v_condition", x_t).to(x_t.dtype)], dim=1)
        elif self.mode == "ti2v":
            first = first_frame_condition(cond, "first_frame_latent", x_t).to(x_t.dtype)
            hidden = torch.cat([first, x_t[:, :, 1:]], dim=2)
            timestep = ti2v_token_timesteps(timestep, x_t.shape, self.transformer.config.patch_size)
        out = self.transformer(
            hidden_states=hidden.to(dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds.to(dtype),
            return_dict=False,
        )[0].to(x_t.dtype)
        if self.mode == "ti2v":
            out = torch.cat([known_frame_velocity(x_t[:, :, :1], hidden[:, :, :1], t), out[:, :, 1:]], dim=2)
        return out


def known_frame_velocity(x_t: Tensor, clean: Tensor, t: Tensor) -> Tensor:
    """Rectified-flow velocity eps - x_0 of latents whose clean value is known: with x_t = (1 - t) x_0 + t eps,
    eps - x_0 = (x_t - x_0) / t. Zero where t = 0 (x_t is then the clean value itself)."""
    t = t.to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
    noisy = t > 0
    return torch.where(noisy, (x_t - clean) / torch.where(noisy, t, torch.ones_like(t)), torch.zeros_like(x_t))


def ti2v_token_timesteps(timestep: Tensor, latent_shape: torch.Size, patch_size: tuple[int, ...]) -> Tensor:
    """(B, tokens) timesteps, 0 on the first latent frame's tokens (which hold the clean conditioning image)."""
    _, _, frames, height, width = latent_shape
    p_t, p_h, p_w = patch_size
    per_frame = (height // p_h) * (width // p_w)
    frame_is_noisy = torch.ones(frames // p_t, device=timestep.device, dtype=timestep.dtype)
    frame_is_noisy[0] = 0.0
    token_scale = frame_is_noisy.repeat_interleave(per_frame)
    return timestep[:, None] * token_scale[None, :]


def condition_grid(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The latent grid a first-frame condition (B, C, F, H, W) fixes: (F, H, W) for `i2v_condition`, (H, W) for
    `first_frame_latent` (one frame); `shape` may be a condition's or the latents' (B, C, F, H, W)."""
    return tuple(shape[2:]) if key == "i2v_condition" else tuple(shape[3:])


def first_frame_condition(cond: Conditioning, key: str, x_t: Tensor) -> Tensor:
    """The conditioning's `key` table (plain or `key@FxHxW`) whose latent grid matches x_t's."""
    tables = {k: v for k, v in cond.extras.items() if k == key or k.startswith(key + "@")}
    if not tables:
        raise KeyError(f"this Wan mode needs cond.extras[{key!r}]; present: {sorted(cond.extras)}")
    want = condition_grid(key, tuple(x_t.shape))
    for name, value in tables.items():
        if condition_grid(key, tuple(value.shape)) == want:
            if value.shape[0] != x_t.shape[0]:
                raise ValueError(f"cond.extras[{name!r}] has batch {value.shape[0]}, latents have {x_t.shape[0]}")
            return value
    cached = {name: condition_grid(key, tuple(v.shape)) for name, v in tables.items()}
    raise ValueError(f"no {key} for latents {tuple(x_t.shape[1:])} (latent grid {want}); cached: {cached}. Cache the "
                     f"first frames at every training/sampling resolution (`pdmd embed-images --resolution F,H,W`, "
                     f"once per resolution)")
