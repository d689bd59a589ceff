"""CPU-tier data generators: shapes, determinism from a seed, and ground truth that matches the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdmd_core.cpu_tier.config import DigitsData, Mog2dData, MovingDigitsData, Toy1dData
from pdmd_core.cpu_tier.data import benchmark_prompts, build_dataset
from pdmd_core.cpu_tier.data.mog2d import mode_centres
from pdmd_core.cpu_tier.data.moving_digits import render_clip

SMALL_MOVING = MovingDigitsData(num_clips=300)


def test_toy1d_points_lie_on_the_atoms_evenly():
    data = build_dataset(Toy1dData(num_points=8000), seed=0)
    values, counts = torch.unique(data.train.x, return_counts=True)
    assert data.sample_shape == (1,) and data.prompts == [""]
    assert values.tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert (counts.float() / 8000 - 0.25).abs().max() < 0.02


def test_mog2d_rows_are_prompts_and_points_sit_on_their_modes():
    cfg = Mog2dData(num_points=5000, std=0.05)
    data = build_dataset(cfg, seed=3)
    assert data.sample_shape == (2,) and len(data.prompts) == 5
    centres = mode_centres(5, 1.0)
    assert centres.shape == (25, 2) and torch.allclose(centres[7], torch.tensor([0.0, -1.0]))
    modes = data.train.extras["mode"]
    assert torch.equal(modes // 5, data.train.labels)  # a mode's row is its prompt id
    residual = data.train.x - centres[modes]
    assert abs(float(residual.std()) - 0.05) < 0.003
    assert data.meta["mode_prompt"][7] == 1 and len(data.meta["mode_centers"]) == 25


def test_digits_split_is_fixed_disjoint_and_in_model_range():
    a, b = build_dataset(DigitsData(), seed=0), build_dataset(DigitsData(), seed=0)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.labels, b.test.labels)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.sample_shape == (1, 8, 8)
    assert float(a.train.x.min()) == -1.0 and float(a.train.x.max()) == 1.0
    assert a.prompts[3] == "a handwritten 3"
    flat = {tuple(x.flatten().tolist()) for x in a.test.x}
    assert not any(tuple(x.flatten().tolist()) in flat for x in a.train.x[:300])
    c = build_dataset(DigitsData(), seed=1)
    assert not torch.equal(a.test.x, c.test.x)


def test_moving_digits_shapes_determinism_and_speed_mix():
    a = build_dataset(SMALL_MOVING, seed=5)
    b = build_dataset(SMALL_MOVING, seed=5)
    assert a.sample_shape == (8, 1, 16, 16) and a.kind == "video"
    assert torch.equal(a.train.x, b.train.x)
    assert torch.equal(a.train.extras["velocity"], b.train.extras["velocity"])
    speed = a.train.extras["speed"]
    fast = speed >= SMALL_MOVING.fast_speed[0]
    assert 0.35 < float(fast.float().mean()) < 0.65  # half the clips are fast
    assert float(speed.max()) <= SMALL_MOVING.fast_speed[1] + 1e-6
    assert not torch.equal(a.train.x, build_dataset(SMALL_MOVING, seed=6).train.x)


def test_moving_digits_centroids_move_by_the_ground_truth_velocity():
    data = build_dataset(SMALL_MOVING, seed=0)
    clips = (data.train.x[:, :, 0] + 1) / 2  # N×T×H×W in [0, 1]
    grid = torch.arange(16, dtype=torch.float32)
    mass = clips.sum(dim=(2, 3))
    cx = (clips * grid).sum(dim=(2, 3)) / mass
    cy = (clips * grid[:, None]).sum(dim=(2, 3)) / mass
    measured = torch.stack([cx.diff(dim=1), cy.diff(dim=1)], dim=-1)  # N×(T−1)×2
    truth = data.train.extras["velocity"][:, None, :].expand_as(measured)
    assert torch.allclose(measured, truth, atol=1e-4)


def test_render_clip_keeps_the_digit_inside_the_frame():
    digit = np.ones((8, 8), dtype=np.float32)
    clip = render_clip(digit, np.array([0.0, 8.0]), np.array([8 / 7, -8 / 7]), 16, 8)
    assert clip.shape == (8, 16, 16)
    assert np.allclose(clip.sum(axis=(1, 2)), 64.0, atol=1e-4)  # no mass lost at the borders


def test_too_fast_speeds_are_rejected():
    with pytest.raises(ValueError, match="do not fit"):
        build_dataset(MovingDigitsData(num_clips=10, fast_speed=(1.0, 1.5)), seed=0)


@pytest.mark.parametrize("cfg", [Toy1dData(num_points=40), Mog2dData(num_points=50), DigitsData()])
def test_benchmark_prompts_match_the_generated_data(cfg):
    assert benchmark_prompts(cfg) == build_dataset(cfg, seed=0).prompts
