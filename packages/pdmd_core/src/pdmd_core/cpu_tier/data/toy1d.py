"""The paper's Fig. 2 toy: unconditional 1-D data spread evenly over a few atoms ({−1, 0, 1, 2})."""

from __future__ import annotations

import torch

from pdmd_core.cpu_tier.data.base import LabelledData, Split


def sample_atoms(atoms: list[float], n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1) points drawn uniformly from the atoms."""
    values = torch.tensor(atoms, dtype=torch.float32)
    return values[torch.randint(len(atoms), (n,), generator=generator)].unsqueeze(1)


def make_toy1d(atoms: list[float], num_points: int, seed: int) -> LabelledData:
    if not atoms:
        raise ValueError("toy1d needs at least one atom")
    gen = torch.Generator().manual_seed(seed)
    splits = [sample_atoms(atoms, n, gen) for n in (num_points, num_points // 4, num_points // 4)]
    # Unconditional: the only prompt is the empty one, which the prompt encoder maps to the null conditioning.
    train, val, test = (Split(x, torch.zeros(len(x), dtype=torch.long)) for x in splits)
    return LabelledData("toy1d", "points", [""], train, val, test, meta={"atoms": list(atoms)})
