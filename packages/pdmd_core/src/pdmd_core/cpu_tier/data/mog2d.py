"""A grid×grid mixture of isotropic Gaussians in 2-D; each grid row is one prompt ("a point in row r")."""

from __future__ import annotations

import torch

from pdmd_core.cpu_tier.data.base import LabelledData, Split


def mode_centres(grid: int, spacing: float) -> torch.Tensor:
    """(grid², 2) centres, row-major: mode r*grid + c sits at (x = c, y = r) on a grid centred on 0."""
    offsets = (torch.arange(grid, dtype=torch.float32) - (grid - 1) / 2) * spacing
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def row_prompt(row: int) -> str:
    return f"a point in row {row}"


def sample_mog2d(grid: int, spacing: float, std: float, n: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(points (n, 2), row labels (n,), mode ids (n,)): rows uniform, columns uniform within a row."""
    centres = mode_centres(grid, spacing)
    rows = torch.randint(grid, (n,), generator=generator)
    cols = torch.randint(grid, (n,), generator=generator)
    modes = rows * grid + cols
    points = centres[modes] + std * torch.randn(n, 2, generator=generator)
    return points, rows, modes


def make_mog2d(grid: int, spacing: float, std: float, num_points: int, seed: int) -> LabelledData:
    gen = torch.Generator().manual_seed(seed)
    splits = []
    for n in (num_points, num_points // 5, num_points // 5):
        points, rows, modes = sample_mog2d(grid, spacing, std, n, gen)
        splits.append(Split(points, rows, {"mode": modes}))
    centres = mode_centres(grid, spacing)
    # Keys as the evaluation package's mode statistics read them from a sample set's meta extras.
    meta = {
        "mode_centers": centres.tolist(),
        "mode_prompt": [m // grid for m in range(grid * grid)],  # prompt id (row) of each mode
        "mode_std": std,
        "grid": grid,
        "spacing": spacing,
    }
    return LabelledData("mog2d", "points", [row_prompt(r) for r in range(grid)], train=splits[0], val=splits[1],
                        test=splits[2], meta=meta)
