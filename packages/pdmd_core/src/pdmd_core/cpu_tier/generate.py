"""Sampling a CPU-tier teacher for given prompt ids with the engine's Euler sampler and CFG."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pdmd_core.protocols import PromptEncoder
from pdmd_core.sampling import euler_sample, uniform_timesteps


@torch.no_grad()
def sample_prompts(model: nn.Module, encoder: PromptEncoder, prompts: list[str], labels: Tensor,
                   sample_shape: tuple[int, ...], steps: int, cfg_scale: float, seed: int,
                   batch_size: int = 1000, progress: bool = False) -> Tensor:
    """(N, *sample_shape) model-space samples, one per entry of `labels` (prompt ids), noise seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), *sample_shape, generator=gen)
    table = encoder.encode(prompts)
    timesteps = uniform_timesteps(steps)
    out = []
    starts = range(0, len(labels), batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress):
        ids = labels[start:start + batch_size]
        cond = table.index(ids)
        null = encoder.null(len(ids))
        out.append(euler_sample(model, noise[start:start + batch_size], timesteps, cond, null, cfg_scale))
    return torch.cat(out)
