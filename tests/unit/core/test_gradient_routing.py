"""Test group 4: gradient routing of SGTS, full backprop and Phased DMD; frozen roles stay bit-identical;
every phase's fake score starts equal to the teacher; LoRA experts leave the backbone untouched."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import torch

from pdmd_core.config import config_from_dict
from pdmd_core.models import build_model
from pdmd_core.models.moe import MoEVelocity
from pdmd_core.rollout import rollout
from pdmd_core.trainer import Trainer


def _trainer(method: str, moe: float | None = None, **cfg: Any) -> Trainer:
    torch.set_num_threads(1)
    base = {"method": method, "num_steps": 1 if method == "dmd" else 4, "shift": 3.0, "batch_size": 8,
            "ttur_ratio": 2, "iterations": 2}
    base.update(cfg)
    bundle = build_model("mlp", {"dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8, "moe_boundary": moe})
    return Trainer(config_from_dict(base), bundle, tempfile.mkdtemp(), progress=False)


def _grad_flags(tr: Trainer, phase: int, draws: int = 1) -> list[list[bool]]:
    """For each rollout(grad=True): whether autograd recorded each generator call, in call order."""
    flags: list[bool] = []
    handles = [m.register_forward_hook(lambda *_: flags.append(torch.is_grad_enabled()))
               for m in (tr.generator.backbones or tr.generator.experts)]
    out = []
    try:
        for _ in range(draws):
            flags.clear()
            z = torch.randn(4, 6)
            res = rollout(tr.generator, z, None, tr.cfg.method, phase, tr.cfg.in_phase, tr.cfg.transport,
                          tr.rng, grad=True)
            out.append((list(flags), res))
    finally:
        for h in handles:
            h.remove()
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("transport", ["euler", "renoise"])
def test_sgts_grad_only_through_exit_step(transport: str) -> None:
    tr = _trainer("sgts", transport=transport)
    tr.begin_phase(0)
    exits = set()
    for flags, res in _grad_flags(tr, 0, draws=40):  # type: ignore[misc]
        j = res.exit_step
        exits.add(j)
        assert flags == [False] * j + [True]  # steps before the exit: no graph; exit step: graph
        assert res.s == 0.0 and res.x_s.requires_grad
    assert exits == {0, 1, 2, 3}  # j ~ U{1..N}


def test_dmd_full_backprops_through_every_step() -> None:
    tr = _trainer("dmd_full")
    tr.begin_phase(0)
    [(flags, res)] = _grad_flags(tr, 0)  # type: ignore[misc]
    assert flags == [True] * 4 and res.s == 0.0


def test_phased_backprop_and_sgts_in_phase() -> None:
    tr = _trainer("phased", phases=2)
    tr.begin_phase(1)
    [(flags, res)] = _grad_flags(tr, 1)  # type: ignore[misc]
    assert flags == [False, False, True, True] and res.s == 0.0
    [(flags, res)] = _grad_flags(tr, 0)  # type: ignore[misc]
    assert flags == [True, True] and res.s == pytest.approx(tr.timesteps[2])
    tr = _trainer("phased", phases=2, in_phase="sgts")
    for flags, res in _grad_flags(tr, 0, draws=20):  # type: ignore[misc]
        # the exit step jumps (with grad) to the phase end t_2, not to 0
        assert flags == [False] * res.exit_step + [True] and res.s == pytest.approx(tr.timesteps[2])


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phased_trains_only_expert_k_and_resets_fake_to_teacher() -> None:
    tr = _trainer("phased", phases=2, teacher_cfg={"scale": 2.0})
    teacher0 = _snapshot(tr.teacher.module)
    start = [_snapshot(e) for e in tr.generator.experts]
    tr.begin_phase(0)
    for _ in range(2):
        tr.train_iteration()
    assert not _equal(_snapshot(tr.generator.experts[0]), start[0])  # expert 0 trained
    assert _equal(_snapshot(tr.generator.experts[1]), start[1])  # expert 1 untouched in phase 0
    assert not _equal(_snapshot(tr.fake.experts[0]), teacher0)  # the fake moved
    tr.end_phase()
    after0 = _snapshot(tr.generator.experts[0])
    tr.phase = 1
    tr.begin_phase(1)
    assert _equal(_snapshot(tr.fake.experts[0]), teacher0)  # fake of phase 2 starts equal to the teacher
    for _ in range(2):
        tr.fake_update()
        tr.generator_update()
        assert all(p.grad is None for p in tr.generator.experts[0].parameters())  # no grad to expert 0
    assert _equal(_snapshot(tr.generator.experts[0]), after0)  # frozen expert bit-identical
    assert not _equal(_snapshot(tr.generator.experts[1]), start[1])
    assert _equal(_snapshot(tr.teacher.module), teacher0)  # teacher never changes
    assert all(p.grad is None for p in tr.teacher.module.parameters())


def test_lora_experts_share_a_frozen_backbone() -> None:
    tr = _trainer("phased", phases=2, generator={"kind": "lora", "rank": 4, "alpha": 8},
                  teacher_cfg={"scale": 2.0})
    [backbone] = tr.generator.backbones
    base = {k: v for k, v in _snapshot(backbone).items() if "lora_" not in k}
    tr.begin_phase(0)
    for _ in range(2):
        tr.train_iteration()
    lora = _snapshot(backbone)
    tr.end_phase()
    tr.phase = 1
    tr.begin_phase(1)
    for _ in range(2):
        tr.train_iteration()
    now = _snapshot(backbone)
    for name, p in backbone.named_parameters():
        if "lora_" not in name:
            assert p.grad is None and torch.equal(now[name], base[name]), name  # base weights: no grads
        elif ".expert0." in name:
            assert torch.equal(now[name], lora[name]), name  # phase-1 adapter frozen in phase 2
    assert any(not torch.equal(now[k], lora[k]) for k in now if ".expert1." in k)
    assert {n for n, p in backbone.named_parameters() if p.requires_grad} == {
        n for n in dict(backbone.named_parameters()) if ".expert1." in n}


def test_moe_teacher_routing_and_one_fake_per_expert() -> None:
    tr = _trainer("phased", moe=0.875, phases=2, moe_boundary_clamp=True, teacher_cfg={"scale": 2.0})
    teacher = tr.teacher.module
    assert isinstance(teacher, MoEVelocity) and len(tr.fake.experts) == 2
    x, t = torch.randn(6, 6), torch.tensor([0.99, 0.9, 0.875, 0.87, 0.5, 0.1])
    out = teacher(x, t, None)
    torch.testing.assert_close(out[:3], teacher.experts[0](x[:3], t[:3], None))
    torch.testing.assert_close(out[3:], teacher.experts[1](x[3:], t[3:], None))
    # phase 1 starts above the boundary: re-noise clamped to (0.875, 1], so only the high-noise fake trains
    assert tr.phase_interval(0) == (0.875, 1.0)
    low0 = _snapshot(tr.fake.experts[1])
    tr.begin_phase(0)
    tr.train_iteration()
    assert _equal(_snapshot(tr.fake.experts[1]), low0)
    # generator experts start from the teacher expert serving their first step (t=1 high, t_2=0.6 low)
    assert tr.generator.source_of_expert == [0, 1]
    tr.end_phase()
    tr.phase = 1
    tr.begin_phase(1)  # phase 2 (ends at 0): both fakes train
    assert len(tr.fake_params) == sum(1 for e in tr.fake.experts for _ in e.parameters())
