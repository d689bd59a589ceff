"""The container every CPU-tier data generator returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Split:
    """x: (N, *sample_shape) model-space samples; labels: (N,) prompt ids; extras: per-sample tensors."""

    x: Tensor
    labels: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class LabelledData:
    """A benchmark's data: splits, prompt strings (index = prompt id), the sample-set kind and free-form meta.

    `to_unit` maps model space to the sample-set value range (images/videos in [0, 1], points unchanged).
    """

    name: str
    kind: str  # "points" | "image" | "video"
    prompts: list[str]
    train: Split
    val: Split
    test: Split
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def to_unit(self, x: Tensor) -> Tensor:
        return x if self.kind == "points" else ((x + 1) / 2).clamp(0, 1)

    def from_unit(self, x: Tensor) -> Tensor:
        return x if self.kind == "points" else x * 2 - 1


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded permutation cut into train/val/test index sets."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]
