"""The interfaces every model in pdmd speaks: velocity models and prompt encoders.

A velocity model predicts v = eps - x_0 for rectified flow (x_t = (1 - t) x_0 + t eps) given the noisy
sample, the time t in [0, 1] (one value per sample) and a conditioning. The engine never imports diffusers:
real-scale adapters (Wan, Qwen-Image) and the CPU tier's small nets both implement this protocol, so the
trainer and sampler run the same code path on either tier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Conditioning:
    """A batch of prompt conditionings, shaped like a text encoder's output.

    embeds: (B, L, D) token embeddings; mask: (B, L) bool, True where a token is real;
    extras: model-specific tensors (e.g. the I2V first-frame latent), each with batch first.
    """

    embeds: Tensor
    mask: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    def to(self, device: torch.device | str) -> Conditioning:
        return Conditioning(
            self.embeds.to(device),
            None if self.mask is None else self.mask.to(device),
            {k: v.to(device) for k, v in self.extras.items()},
        )

    def index(self, idx: Tensor | slice) -> Conditioning:
        return Conditioning(
            self.embeds[idx],
            None if self.mask is None else self.mask[idx],
            {k: v[idx] for k, v in self.extras.items()},
        )

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        masks = [c.mask for c in items]
        mask = None if any(m is None for m in masks) else torch.cat(masks)  # type: ignore[arg-type]
        keys = items[0].extras.keys()
        return Conditioning(
            torch.cat([c.embeds for c in items]),
            mask,
            {k: torch.cat([c.extras[k] for c in items]) for k in keys},
        )


@runtime_checkable
class VelocityModel(Protocol):
    """v = model(x_t, t, cond); t has shape (B,) with values in [0, 1]."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor: ...


@runtime_checkable
class PromptEncoder(Protocol):
    """Maps prompt strings to conditionings; `null` gives the unconditional (empty-prompt) one for CFG."""

    def encode(self, prompts: list[str]) -> Conditioning: ...

    def null(self, batch_size: int) -> Conditioning: ...
