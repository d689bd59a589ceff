"""Qwen-Image (diffusers' QwenImageTransformer2DModel) as a pdmd velocity model.

pdmd keeps Qwen-Image latents unpacked, (B, C, H, W) with C = VAE z_dim (16 for Qwen-Image): that is the
layout every pdmd tool (noise, transitions, decoding) understands. The transformer works on 2x2-packed
tokens (B, H/2 * W/2, 4C) with RoPE positions from `img_shapes`; the adapter packs with the pipeline's own
`_pack_latents`, calls the transformer with the text mask, and unpacks the predicted velocity.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.timesteps import as_time_vector, to_qwen_timestep


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C), the token layout of QwenImagePipeline."""
    from diffusers import QwenImagePipeline

    batch, channels, height, width = latents.shape
    if height % 2 or width % 2:
        raise ValueError(f"Qwen-Image latent height and width must be even, got {height}x{width}")
    return QwenImagePipeline._pack_latents(latents, batch, channels, height, width)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H/2 * W/2, 4C) -> (B, C, H, W); inverse of `pack_latents` (latent, not pixel, height/width)."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline._unpack_latents(tokens, height, width, vae_scale_factor=1)[:, :, 0]


def image_shapes(batch: int, height: int, width: int) -> list[list[tuple[int, int, int]]]:
    """`img_shapes` for RoPE: one (frames, rows, cols) token grid per sample."""
    return [[(1, height // 2, width // 2)]] * batch


def text_mask_or_none(mask: Tensor | None) -> Tensor | None:
    """The pipeline drops an all-true mask; do the same so both paths run identical attention."""
    if mask is None or bool(mask.all()):
        return None
    return mask.bool()


class QwenImageVelocity(nn.Module):
    """v = QwenImageVelocity(transformer)(x_t, t, cond) with x_t unpacked (B, C, H, W)."""

    transformer: Any  # a diffusers model

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    @property
    def config(self):
        return self.transformer.config

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        if cond is None:
            raise ValueError("Qwen-Image needs a text conditioning (pass the cached null prompt for uncond)")
        if x_t.ndim != 4:
            raise ValueError(f"Qwen-Image latents are (B, C, H, W), got shape {tuple(x_t.shape)}")
        batch, _, height, width = x_t.shape
        t = as_time_vector(t, batch, x_t)
        dtype = self.transformer.dtype
        out = self.transformer(
            hidden_states=pack_latents(x_t).to(dtype),
            timestep=to_qwen_timestep(t).to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            encoder_hidden_states_mask=text_mask_or_none(cond.mask),
            img_shapes=image_shapes(batch, height, width),
            return_dict=False,
        )[0]
        return unpack_latents(out, height, width).to(x_t.dtype)
