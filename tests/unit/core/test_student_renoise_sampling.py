"""A re-noise (DMD2) student samples with each sample's own re-noise stream: it refuses to sample without one (no
silent shared default stream); with one, each step is x̂_0 re-noised with exactly the stream's draw; the CPU tier's
sample stage gives each grid row its sample seed's stream (`pdmd_core.sample_noise`), independent of the row's
starting noise and the same for every prompt and arm, as the starting noise is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdmd_core.config import config_from_dict
from pdmd_core.flow import velocity_to_x0
from pdmd_core.models import build_model
from pdmd_core.sample_noise import initial_noise, renoise_generator
from pdmd_core.trainer import Trainer
from pdmd_pipeline.stages.sample import renoise_source

MODEL = {"dim": 6, "hidden": 16, "depth": 1}


def _student(tmp_path: Path, transport: str):
    cfg = config_from_dict({"method": "sgts", "num_steps": 4, "shift": 3.0, "batch_size": 4, "iterations": 1,
                            "transport": transport, "model": {"kind": "mlp", **MODEL}})
    return Trainer(cfg, build_model("mlp", MODEL), tmp_path, progress=False).student()


def test_a_renoise_student_without_a_stream_refuses_and_an_euler_student_needs_none(tmp_path):
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="re-noise stream"):
        _student(tmp_path / "r", "renoise").sample(z)
    assert _student(tmp_path / "e", "euler").sample(z).shape == z.shape


def test_each_renoise_step_uses_the_streams_draw(tmp_path):
    student = _student(tmp_path, "renoise")
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    draws: list[torch.Tensor] = []

    def source(shape):
        draws.append(torch.randn(tuple(shape), generator=torch.Generator().manual_seed(100 + len(draws))))
        return draws[-1]

    x = student.sample(z, noise_source=source)
    ts = student.timesteps
    assert len(draws) == len(ts) - 2  # no draw for the last step (it lands on t = 0)
    ref = z
    with torch.no_grad():
        for i in range(len(ts) - 1):
            v = student.generator.step_velocity(i, ref, torch.full((2,), ts[i]), None)
            x0 = velocity_to_x0(ref, v, ts[i])
            ref = x0 if ts[i + 1] == 0.0 else (1 - ts[i + 1]) * x0 + ts[i + 1] * draws[i]
    torch.testing.assert_close(x, ref)
    assert not torch.equal(x, student.sample(z, noise_source=renoise_source([3, 5])))  # the stream matters


def test_grid_rows_draw_their_sample_seeds_own_stream():
    """Rows in the sample stage's order (prompt-major): seeds [3, 5] for two prompts."""
    source = renoise_source([3, 5, 3, 5])
    first, second = source((4, 6)), source((4, 6))
    stream3 = renoise_generator(3)
    expected3 = [torch.randn(6, generator=stream3), torch.randn(6, generator=stream3)]
    assert torch.equal(first[0], expected3[0]) and torch.equal(second[0], expected3[1])  # seed 3's stream, in order
    assert torch.equal(first[0], first[2]) and torch.equal(first[1], first[3])  # the same seed on both prompts
    assert not torch.equal(first[0], first[1])  # another seed, another stream
    # never the row's starting noise (with the starting noise as re-noise, a step from t = 1 is an Euler step)
    assert (first[0] - initial_noise((6,), 3)[0]).abs().max() > 0.1
