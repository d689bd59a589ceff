"""Test group 5b: resume-from-checkpoint equals an uninterrupted run (bit-identical on CPU); non-finite
losses stop the run naming role, phase and step while keeping the last good checkpoint; the student sampler
runs the trained experts in step order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pdmd_core.callbacks import OnIteration
from pdmd_core.checkpoint import list_checkpoints
from pdmd_core.config import config_from_dict
from pdmd_core.models import build_model
from pdmd_core.student import Student
from pdmd_core.trainer import NonFiniteError, Trainer

MODEL = {"kind": "mlp", "dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}


class _Stop(Exception):
    pass


def _cfg(**over: Any):
    base = {"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
            "iterations": [3, 3], "teacher_cfg": {"scale": 2.0}, "checkpoint": {"every": 2, "keep_last": 2},
            "model": MODEL}
    base.update(over)
    return config_from_dict(base)


def _run(cfg, run_dir: Path, stop_at: int | None = None) -> list[tuple[int, int, dict[str, float]]]:
    torch.set_num_threads(1)
    log: list[tuple[int, int, dict[str, float]]] = []

    def hook(step: int, phase: int, metrics: dict[str, float]) -> None:
        log.append((step, phase, metrics))
        if stop_at is not None and step == stop_at:
            raise _Stop

    assert cfg.model is not None
    bundle = build_model(cfg.model.kind, cfg.model.params)
    tr = Trainer(cfg, bundle, run_dir, callbacks=[OnIteration(hook)], progress=False)
    try:
        tr.fit()
    except _Stop:
        pass
    return log


def _final_state(run_dir: Path) -> dict[str, Any]:
    return torch.load(list_checkpoints(run_dir / "checkpoints")[-1], weights_only=False)


@pytest.mark.parametrize("over", [
    {"optim": {"ema_decay": 0.9}, "in_phase": "sgts", "transport": "renoise"},
    {"method": "sgts", "phases": None, "iterations": 5},
    {"generator": {"kind": "lora", "rank": 4}, "generator_gradient": "normalizer"},
], ids=["phased-ema-sgts-renoise", "sgts", "phased-lora-normalizer"])
def test_resume_equals_uninterrupted(tmp_path: Path, over: dict[str, Any]) -> None:
    cfg = _cfg(**over)
    full = _run(cfg, tmp_path / "full")
    # stop at step 3 (phase 0's checkpoint is at its step 2) and at step 5 (mid phase 1), resume each time
    part = _run(cfg, tmp_path / "cut", stop_at=3)
    part += _run(cfg, tmp_path / "cut", stop_at=5)
    part += _run(cfg, tmp_path / "cut")
    resumed = {step: m for step, _, m in part}  # later runs overwrite the replayed steps
    assert [s for s, _, _ in full] == sorted(resumed)
    for step, phase, metrics in full:
        assert resumed[step] == metrics, f"step {step} (phase {phase}) differs after resume"
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "cut")
    assert a["global_step"] == b["global_step"] == len(full)
    for ea, eb in zip(a["generator"], b["generator"], strict=True):
        assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert len(list_checkpoints(tmp_path / "cut" / "checkpoints")) <= 2  # keep_last


@pytest.mark.parametrize("stop_at", [3, 4], ids=["last-step-of-phase-0", "mid-phase-1"])
def test_save_from_a_hook_then_raise_resumes_like_an_uninterrupted_run(tmp_path: Path, stop_at: int) -> None:
    """SLURM pre-emption as the pipeline does it: `trainer.save()` inside a metric hook, then raise out of fit()."""
    cfg = _cfg(checkpoint={"every": 100, "keep_last": 2}, optim={"ema_decay": 0.9})  # no periodic checkpoints
    full = _run(cfg, tmp_path / "full")
    torch.set_num_threads(1)
    bundle = build_model(cfg.model.kind, cfg.model.params)  # type: ignore[union-attr]
    log: list[tuple[int, int, dict[str, float]]] = []

    def save_and_stop(step: int, phase: int, metrics: dict[str, float]) -> None:
        log.append((step, phase, metrics))
        if step == stop_at:
            tr.save()
            raise _Stop

    tr = Trainer(cfg, bundle, tmp_path / "cut", callbacks=[OnIteration(save_and_stop)], progress=False)
    with pytest.raises(_Stop):
        tr.fit()
    assert list_checkpoints(tmp_path / "cut" / "checkpoints")[-1].name == f"ckpt_{stop_at:08d}.pt"
    log += _run(cfg, tmp_path / "cut")
    assert [s for s, _, _ in log] == [s for s, _, _ in full]  # nothing replayed, nothing skipped
    assert log == full


@pytest.mark.parametrize("role", ["generator", "fake"])
def test_non_finite_stops_with_role_phase_step_and_keeps_checkpoint(tmp_path: Path, role: str) -> None:
    cfg = _cfg(checkpoint={"every": 1, "keep_last": 5})
    bundle = build_model("mlp", {k: v for k, v in MODEL.items() if k != "kind"})

    def poison(step: int, phase: int, metrics: dict[str, float]) -> None:
        if step == 2:  # a NaN teacher poisons the next generator loss; a NaN fake is caught before saving
            target = tr.teacher.module if role == "generator" else tr.fake.experts[0]
            with torch.no_grad():
                next(iter(target.parameters())).fill_(float("nan"))

    tr = Trainer(cfg, bundle, tmp_path, callbacks=[OnIteration(poison)], progress=False)
    with pytest.raises(NonFiniteError) as err:
        tr.fit()
    step = 3 if role == "generator" else 2
    assert (err.value.role, err.value.phase, err.value.step) == (role, 0, step)
    assert f"role '{role}'" in str(err.value) and "phase 0" in str(err.value) and f"step {step}" in str(err.value)
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert ckpts[-1].name == ("ckpt_00000002.pt" if role == "generator" else "ckpt_00000001.pt")
    state = torch.load(ckpts[-1], weights_only=False)
    assert all(torch.isfinite(v).all() for sd in state["fake"] for v in sd.values())
    assert all(torch.isfinite(v).all() for sd in state["generator"] for v in sd.values())


def test_student_runs_experts_in_step_order(tmp_path: Path) -> None:
    cfg = _cfg(iterations=[1, 1])
    _run(cfg, tmp_path)
    ckpt = list_checkpoints(tmp_path / "checkpoints")[-1]
    student = Student.from_checkpoint(ckpt)
    assert student.expert_of_step == [0, 0, 1, 1]
    assert student.timesteps == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0])
    z = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    x = student.sample(z)
    # manual Euler with the experts, step by step
    ref = z
    for i, e in enumerate(student.expert_of_step):
        t0, t1 = student.timesteps[i], student.timesteps[i + 1]
        with torch.no_grad():
            ref = ref + (t1 - t0) * student.generator.experts[e](ref, torch.full((5,), t0), None)
    torch.testing.assert_close(x, ref)


def test_student_uses_ema_weights_mid_phase(tmp_path: Path) -> None:
    cfg = _cfg(iterations=[2, 2], generator={"kind": "lora", "rank": 2}, optim={"ema_decay": 0.5})
    bundle = build_model("mlp", {k: v for k, v in MODEL.items() if k != "kind"})
    tr = Trainer(cfg, bundle, tmp_path, progress=False)
    tr.begin_phase(0)
    tr.train_iteration()
    tr.train_iteration()
    assert tr.ema is not None
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    live, ema = tr.student(use_ema=False).sample(z), tr.student(use_ema=True).sample(z)
    assert not torch.equal(live, ema)
    # sampling with EMA weights must not disturb training: the live weights are unchanged
    torch.testing.assert_close(tr.student(use_ema=False).sample(z), live)
    # the checkpoint sampler reproduces the in-memory EMA student
    path = tr.save()
    torch.testing.assert_close(Student.from_checkpoint(path, bundle=bundle).sample(z), ema)
