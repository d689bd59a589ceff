"""End to end through the Trainer: DMD and Phased DMD distil a Gaussian teacher into a few-step student.

The teacher is the exact velocity of N(mu, diag var) inside a family that also contains every Gaussian
generator and fake score (core_toy_nets.GaussianFamilyVelocity), so the only error left is optimisation.
The one-step student starts as the teacher's copy, whose output z − v(z, 1) = mu has zero spread; the run
must move mean and spread to the data's. Measured (300 iterations/phase, batch 512): dmd std
(0.700, 1.426), phased K=2 std (0.706, 1.497) for data std (0.7, 1.5).
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import torch
from core_toy_nets import GaussianFamilyVelocity, NoPrompts

from pdmd_core.config import config_from_dict
from pdmd_core.models.registry import ModelBundle
from pdmd_core.trainer import Trainer

MU, VAR = [1.0, -0.5], [0.49, 2.25]


@pytest.mark.parametrize("over", [
    {"method": "dmd", "num_steps": 1, "iterations": 300},
    {"method": "phased", "num_steps": 2, "phases": 2, "iterations": [300, 300]},
], ids=["dmd", "phased-k2"])
def test_student_matches_gaussian_data(over: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    bundle = ModelBundle(GaussianFamilyVelocity(MU, VAR), NoPrompts(), (2,))
    cfg = config_from_dict({"batch_size": 512, "ttur_ratio": 3,
                            "optim": {"lr_generator": 2e-2, "lr_fake": 5e-2}, **over})
    trainer = Trainer(cfg, bundle, tempfile.mkdtemp(), progress=False)
    z = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
    before = trainer.student().sample(z)
    trainer.fit()
    x = trainer.student().sample(z)
    sd = torch.tensor(VAR).sqrt()
    assert float((x.mean(0) - torch.tensor(MU)).abs().max()) < 0.1, x.mean(0)
    assert float((x.std(0) - sd).abs().max()) < 0.1, x.std(0)
    assert float((before.std(0) - sd).abs().max()) > 0.3  # the initial student was clearly off
