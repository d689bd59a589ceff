"""Two-expert velocity model selected per sample by t against a boundary (Wan2.2 convention).

`MoEVelocity([high, low], boundary)(x_t, t, cond)`: samples with t >= boundary go to expert 0 (high noise),
the others to expert 1. Used for MoE teachers, their per-expert fake scores and MoE generators.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pdmd_core.protocols import Conditioning


def expert_index(t: float, boundary: float) -> int:
    """0 (high-noise expert) when t >= boundary, else 1."""
    return 0 if t >= boundary else 1


class MoEVelocity(nn.Module):
    def __init__(self, experts: Sequence[nn.Module], boundary: float) -> None:
        super().__init__()
        if len(experts) != 2:
            raise ValueError(f"MoEVelocity needs 2 experts, got {len(experts)}")
        self.experts = nn.ModuleList(experts)
        self.boundary = float(boundary)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        high = t >= self.boundary
        if bool(high.all()):
            return self.experts[0](x_t, t, cond)
        if not bool(high.any()):
            return self.experts[1](x_t, t, cond)
        out = torch.empty_like(x_t)
        for idx, mask in ((0, high), (1, ~high)):
            sel = mask.nonzero(as_tuple=True)[0]
            sub = None if cond is None else cond.index(sel)
            out[sel] = self.experts[idx](x_t[sel], t[sel], sub).to(out.dtype)
        return out
