"""VAE helpers: first-frame conditions for image-to-video, and latents -> [0, 1] pixels for evaluation.

Latents in pdmd are the pipelines' normalised latents ((z - latents_mean) / latents_std per channel).
The I2V conditions are built by the diffusers I2V pipeline's own `prepare_latents`, so training sees exactly
the tensor the pipeline would feed its transformer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _stats(vae: Any, like: Tensor) -> tuple[Tensor, Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def denormalize(vae: Any, latents: Tensor) -> Tensor:
    """Pipeline latents (B, C, F, H, W) -> raw VAE latents."""
    mean, std = _stats(vae, latents)
    return latents * std + mean


@torch.no_grad()
def decode_to_unit(vae: Any, latents: Tensor) -> Tensor:
    """Decode pipeline latents to pixels in [0, 1]: Wan (B, C, F, H, W) -> videos (B, T, 3, H', W');
    Qwen-Image (B, C, H, W) -> images (B, 3, H', W')."""
    image = latents.ndim == 4
    z = latents[:, :, None] if image else latents
    z = denormalize(vae, z.to(vae.dtype))
    pixels = vae.decode(z, return_dict=False)[0].float()  # (B, 3, T, H, W) in [-1, 1]
    unit = ((pixels + 1) / 2).clamp(0, 1)
    return unit[:, :, 0] if image else unit.permute(0, 2, 1, 3, 4)


def one_frame_as_image(pixels: Tensor) -> Tensor:
    """Decoded pixels of one-frame Wan samples, (B, 1, 3, H, W), as images (B, 3, H, W): a T2I sample set holds
    images whichever family made it (Wan's T2I columns sample the T2V models at 1 frame). Others unchanged."""
    return pixels[:, 0] if pixels.ndim == 5 and pixels.shape[1] == 1 else pixels


@torch.no_grad()
def i2v_conditions(vae: Any, images: Tensor, num_frames: int, mode: str) -> dict[str, Tensor]:
    """Per-sample first-frame conditions for Wan2.2 I2V (`i2v_condition`) or TI2V (`first_frame_latent`).

    images: (B, 3, H, W) in [-1, 1] at the training resolution.
    """
    from diffusers import WanImageToVideoPipeline

    if mode not in ("i2v", "ti2v"):
        raise ValueError(f"first-frame conditions exist for modes 'i2v' and 'ti2v', got {mode!r}")
    pipe: Any = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=None,  # type: ignore[arg-type]
                                   transformer=None, expand_timesteps=(mode == "ti2v"))
    _, _, height, width = images.shape
    conditions = []
    for image in images.to(vae.dtype):  # the pipeline encodes one image and repeats it over its batch
        noise = torch.zeros(1, vae.config.z_dim, 1, 1, 1)  # placeholder: only the condition is kept
        out = pipe.prepare_latents(image[None], 1, vae.config.z_dim, height, width, num_frames,
                                   torch.float32, images.device, None, noise)
        conditions.append(out[1])
    condition = torch.cat(conditions)
    if mode == "ti2v":
        return {"first_frame_latent": condition[:, :, :1]}
    return {"i2v_condition": condition}


def load_rgb(path: str, height: int, width: int) -> Any:
    """An image file as an RGB PIL image resized to (height, width) (bicubic). Training conditions and
    `pdmd sample` both start from it, so the I2V pipeline's own resize is the identity."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


def load_image(path: str, height: int, width: int) -> Tensor:
    """An image file resized to (height, width) as a (3, H, W) tensor in [-1, 1], as the I2V pipeline feeds it."""
    import numpy as np

    array = torch.from_numpy(np.asarray(load_rgb(path, height, width), dtype=np.float32) / 127.5 - 1.0)
    return array.permute(2, 0, 1)


def read_image_pairs(pairs: str | Path) -> dict[str, str]:
    """prompt -> image path from a JSONL of {"prompt": ..., "image": PATH} (relative paths: from its folder)."""
    pairs = Path(pairs)
    images = {}
    for number, line in enumerate(pairs.read_text().splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if "prompt" not in row or "image" not in row:
                raise ValueError(f"{pairs}:{number} needs keys 'prompt' and 'image', got {sorted(row)}")
            image = Path(row["image"])
            images[row["prompt"]] = str(image if image.is_absolute() else pairs.parent / image)
    return images


def condition_key(name: str, resolution: tuple[int, int, int]) -> str:
    """The cache key of one resolution's first-frame conditions, e.g. `i2v_condition@81x480x832`."""
    frames, height, width = resolution
    return f"{name}@{frames}x{height}x{width}"


def save_i2v_cache(vae: Any, prompts: list[str], images: dict[str, str],
                   resolutions: list[tuple[int, int, int]], mode: str, out: str) -> dict[str, Tensor]:
    """First-frame conditions for every prompt of a prompt cache (rows aligned with it), one table per training
    resolution (`condition_key`: a resolution mixture trains on each of its entries), saved to `out`."""
    from safetensors.torch import save_file

    missing = [p for p in prompts if p not in images]
    if missing:
        raise KeyError(f"{len(missing)} prompt(s) of the cache have no image, e.g. {missing[0]!r}")
    if not resolutions:
        raise ValueError("give at least one training resolution (frames, height, width)")
    tables: dict[str, Tensor] = {}
    for frames, height, width in dict.fromkeys(tuple(r) for r in resolutions):
        pixels = torch.stack([load_image(images[p], height, width) for p in prompts])
        for name, table in i2v_conditions(vae, pixels, frames, mode).items():
            tables[condition_key(name, (frames, height, width))] = table.contiguous()
    save_file(tables, out)
    return tables
