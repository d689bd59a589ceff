"""A small conditional MLP velocity net and a random-prompt source; registered as model kind `mlp`.

Used by the engine's tests, `pdmd bench step` and `pdmd train --dry-run` smoke runs. It is randomly
initialised (no weights can be downloaded) — good for mechanics and cost measurements, not for quality.

Builder params (all optional): dim (16), hidden (256), depth (3), cond_dim (32), num_prompts (10),
seq_len (4), moe_boundary (None → one expert; a value → a two-expert MoE teacher), seed (0).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pdmd_core.models.moe import MoEVelocity
from pdmd_core.models.registry import ModelBundle, register_model
from pdmd_core.protocols import Conditioning


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000 like diffusion timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = (t * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(torch.nn.functional.silu(self.fc1(self.norm(h))))


class MLPVelocity(nn.Module):
    """v = net(x_t, t, cond) on flat samples (B, dim); cond embeds are mean-pooled over their valid tokens."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, cond_dim: int = 0, t_dim: int = 64) -> None:
        super().__init__()
        self.dim, self.cond_dim, self.t_dim = dim, cond_dim, t_dim
        self.inp = nn.Linear(dim + t_dim + cond_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        shape = x_t.shape
        parts = [x_t.reshape(shape[0], -1), time_embedding(t.to(x_t.dtype), self.t_dim)]
        if self.cond_dim:
            parts.append(pool_conditioning(cond, shape[0], self.cond_dim, x_t))
        h = self.inp(torch.cat(parts, dim=-1))
        for block in self.blocks:
            h = block(h)
        return self.out(torch.nn.functional.silu(h)).reshape(shape)


def pool_conditioning(cond: Conditioning | None, batch: int, cond_dim: int, like: Tensor) -> Tensor:
    if cond is None:
        return like.new_zeros(batch, cond_dim)
    emb = cond.embeds.to(like.dtype)
    if cond.mask is None:
        return emb.mean(dim=1)
    m = cond.mask.to(like.dtype)[..., None]
    return (emb * m).sum(1) / m.sum(1).clamp_min(1.0)


class RandomPromptSource:
    """`num_prompts` fixed random token-embedding sequences; the null prompt is all-zero with an empty mask."""

    def __init__(self, num_prompts: int, seq_len: int, cond_dim: int, device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(num_prompts, seq_len, cond_dim, generator=g).to(device)
        self.device = device

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning, Conditioning]:
        idx = torch.randint(0, self.table.shape[0], (batch_size,), generator=generator,
                            device=generator.device).to(self.device)
        embeds = self.table[idx]
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=self.device)
        null = Conditioning(torch.zeros_like(embeds), torch.zeros_like(mask))
        return Conditioning(embeds, mask), null


@register_model("mlp")
def build_mlp(params: dict[str, Any], device: torch.device) -> ModelBundle:
    allowed = {"dim", "hidden", "depth", "cond_dim", "num_prompts", "seq_len", "moe_boundary", "seed"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown params for model kind 'mlp': {sorted(unknown)}; allowed: {sorted(allowed)}")
    dim, hidden, depth = int(params.get("dim", 16)), int(params.get("hidden", 256)), int(params.get("depth", 3))
    cond_dim, seed = int(params.get("cond_dim", 32)), int(params.get("seed", 0))
    boundary = params.get("moe_boundary")
    torch.manual_seed(seed)
    n_experts = 1 if boundary is None else 2
    experts = [MLPVelocity(dim, hidden, depth, cond_dim).to(device) for _ in range(n_experts)]
    source = RandomPromptSource(int(params.get("num_prompts", 10)), int(params.get("seq_len", 4)), cond_dim,
                                device, seed)
    if boundary is None:
        return ModelBundle(experts[0], source, (dim,), lora_target_modules=["fc1", "fc2"], name="mlp")
    return ModelBundle(MoEVelocity(experts, float(boundary)), source, (dim,), moe_boundary=float(boundary),
                       teacher_experts=experts, lora_target_modules=["fc1", "fc2"], name="mlp-moe")
