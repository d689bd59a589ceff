"""Trainer extension points for real-scale runs: the `grad_sync` hook (after backward, before clipping and the
optimiser step, with the role's trainable parameters), per-rank seeding, CUDA autocast of model forwards
(fp32 outputs; a no-op on CPU) and per-batch sample shapes from `extras["sample_shape_sampler"]`."""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import pytest
import torch
from core_toy_nets import ElementwiseVelocity, NoPrompts

from pdmd_core import roles
from pdmd_core.callbacks import OnIteration
from pdmd_core.config import config_from_dict
from pdmd_core.models import ModelBundle, build_model
from pdmd_core.roles import autocast_context, autocast_dtype_of, autocast_forward
from pdmd_core.trainer import Trainer, resume_seed

MLP = {"dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}


def _cfg(**over: Any):
    base = {"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
            "iterations": 2, "teacher_cfg": {"scale": 2.0}}
    return config_from_dict(base | over)


def _trainer(cfg=None, bundle: ModelBundle | None = None, **kw: Any) -> Trainer:
    torch.set_num_threads(1)
    return Trainer(cfg or _cfg(), bundle or build_model("mlp", MLP), tempfile.mkdtemp(), progress=False, **kw)


# ------------------------------------------------------------------ grad_sync
def test_grad_sync_gets_each_roles_trainable_params_after_backward_before_the_step() -> None:
    events: list[tuple[str, ...]] = []

    def sync(params: list[torch.nn.Parameter]) -> None:
        assert all(p.grad is not None for p in params)
        events.append(("sync", *sorted(str(id(p)) for p in params)))

    tr = _trainer(grad_sync=sync)
    for phase in (0, 1):
        events.clear()
        tr.begin_phase(phase)
        assert tr.opt_fake is not None and tr.opt_gen is not None
        tr.opt_fake.register_step_pre_hook(lambda *_: events.append(("step", "fake")))
        tr.opt_gen.register_step_pre_hook(lambda *_: events.append(("step", "generator")))
        tr.train_iteration()
        fake_ids = ("sync", *sorted(str(id(p)) for p in tr.fake_params))
        # phase k syncs exactly expert k's parameters (frozen experts and the teacher never)
        gen_ids = ("sync", *sorted(str(id(p)) for _, p in tr.generator._owned(phase)))
        assert events == [fake_ids, ("step", "fake")] * 2 + [gen_ids, ("step", "generator")]  # ttur_ratio 2
        tr.end_phase()


def test_grad_sync_runs_before_clipping_and_identity_sync_changes_nothing() -> None:
    cfg = _cfg(optim={"grad_clip": None})
    plain = _trainer(cfg)
    identity = _trainer(cfg, grad_sync=lambda params: None)
    doubled = _trainer(cfg, grad_sync=lambda params: [p.grad.mul_(2.0) for p in params])  # type: ignore[union-attr]
    for tr in (plain, identity, doubled):
        tr.begin_phase(0)
    m_plain, m_identity, m_doubled = (tr.train_iteration() for tr in (plain, identity, doubled))
    assert m_identity == m_plain
    # norms are measured (and clipping applied) on the synced gradient: twice the local one. Adam's steps are
    # invariant to the gradient's scale (up to eps), so later updates stay on the same trajectory.
    for key in ("fake_grad_norm", "generator_grad_norm"):
        assert m_doubled[key] == pytest.approx(2.0 * m_plain[key], rel=1e-4)


def test_grad_sync_gets_only_used_parameters_and_an_unused_expert_takes_no_step() -> None:
    # SGTS with a two-expert MoE: an exit at step 0 or 1 never calls generator expert 1. In one process (no
    # process group) no other rank used it either: it keeps no gradient, is not synced and does not move.
    synced: list[set[int]] = []
    cfg = _cfg(method="sgts", phases=None, ttur_ratio=1, iterations=12)
    tr = _trainer(cfg, build_model("mlp", MLP | {"moe_boundary": 0.8}),
                  grad_sync=lambda params: synced.append({id(p) for p in params}))
    tr.begin_phase(0)
    assert tr.opt_gen is not None
    unused = [p for _, p in tr.generator._owned(1)]
    exits = []
    for _ in range(12):
        synced.clear()
        before = [p.detach().clone() for p in unused]
        exits.append(int(tr.train_iteration()["exit_step"]))
        if tr.generator.expert_of_step[exits[-1]] == 0:
            assert all(p.grad is None for p in unused)
            assert not {id(p) for p in unused} & synced[-1]  # the generator's sync is the iteration's last
            assert all(torch.equal(p, b) for p, b in zip(unused, before, strict=True))
        assert all(p.grad is not None for p in tr.gen_params if id(p) in synced[-1])
    steps = int(tr.opt_gen.state[unused[0]]["step"]) if unused[0] in tr.opt_gen.state else 0
    assert steps == sum(1 for j in exits if tr.generator.expert_of_step[j] == 1) < len(exits)  # the draw covers it


# ------------------------------------------------------------------ rank seeding
def test_rank_seeds_the_trainer_generator_and_keeps_weights_identical() -> None:
    cfg = _cfg(generator={"kind": "lora", "rank": 2}, seed=7)
    default, rank0, rank3 = _trainer(cfg), _trainer(cfg, rank=0), _trainer(cfg, rank=3)
    assert torch.equal(rank0.rng.get_state(), default.rng.get_state())
    assert torch.equal(rank3.rng.get_state(), torch.Generator().manual_seed(7 + 3000).get_state())
    assert rank3.rank_seed == 3007
    for e in range(2):  # LoRA init comes from the global seed: every rank holds the same replica
        a, b = rank0.generator.expert_state(e), rank3.generator.expert_state(e)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for tr in (default, rank0, rank3):
        tr.begin_phase(0)
    m_default, m0, m3 = (tr.train_iteration() for tr in (default, rank0, rank3))
    assert m0 == m_default and m3["fake_loss"] != m0["fake_loss"]  # own batch of prompts and noise


@pytest.mark.parametrize("rank", [-1, 1.0, True])
def test_bad_rank_is_rejected(rank: Any) -> None:
    with pytest.raises(ValueError, match="rank must be an int >= 0"):
        _trainer(rank=rank)


def test_rank_resuming_another_ranks_checkpoint_takes_its_own_stream(tmp_path) -> None:
    cfg = _cfg(iterations=[2, 2], checkpoint={"every": 1})

    def stop(step: int, phase: int, metrics: dict[str, float]) -> None:
        raise KeyboardInterrupt  # pre-emption at step 1

    writer = Trainer(cfg, build_model("mlp", MLP), tmp_path, callbacks=[OnIteration(stop)], progress=False)
    with pytest.raises(KeyboardInterrupt):
        writer.fit()
    writer.save()  # the state after step 1
    own = Trainer(cfg, build_model("mlp", MLP), tmp_path, progress=False)
    other = Trainer(cfg, build_model("mlp", MLP), tmp_path, progress=False, rank=1)
    own.resume()
    other.resume()
    assert own.global_step == other.global_step == 1
    assert torch.equal(own.rng.get_state(), writer.rng.get_state())  # the writer continues bit-identically
    expected = torch.Generator().manual_seed(resume_seed(cfg.seed + 1000, 1)).get_state()
    assert torch.equal(other.rng.get_state(), expected)
    assert not torch.equal(other.rng.get_state(), writer.rng.get_state())


# ------------------------------------------------------------------ autocast
def test_autocast_dtype_of_accepts_dtypes_and_names_and_rejects_others() -> None:
    def bundle(value: Any) -> ModelBundle:
        return ModelBundle(ElementwiseVelocity(), NoPrompts(), (3,), extras={"autocast_dtype": value})

    assert autocast_dtype_of(bundle(None)) is None
    assert autocast_dtype_of(bundle(torch.bfloat16)) is torch.bfloat16
    assert autocast_dtype_of(bundle("float16")) is torch.float16
    with pytest.raises(ValueError, match="autocast_dtype.*float32"):
        autocast_dtype_of(bundle(torch.float32))


def test_autocast_context_is_cuda_only() -> None:
    assert type(autocast_context(torch.device("cpu"), torch.bfloat16)).__name__ == "nullcontext"
    assert type(autocast_context(torch.device("cuda"), None)).__name__ == "nullcontext"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on this machine: only the request is checked
        ctx = autocast_context(torch.device("cuda", 0), torch.bfloat16)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_autocast_forward_returns_the_inputs_dtype() -> None:
    def half_model(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        return (2 * x).to(torch.bfloat16)  # what a model under bf16 autocast returns

    x = torch.tensor([[1.5, -3.0]])
    out = autocast_forward(half_model, torch.bfloat16)(x, torch.ones(1), None)
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([[3.0, -6.0]]))
    assert autocast_forward(half_model, None) is half_model  # unset: the module itself, untouched


def test_every_model_forward_goes_through_autocast_and_cpu_runs_are_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(ttur_ratio=1)
    plain = _trainer(cfg)
    bundle = build_model("mlp", MLP)
    bundle.extras["autocast_dtype"] = torch.bfloat16
    mixed = _trainer(cfg, bundle)
    for tr in (plain, mixed):
        tr.begin_phase(0)
    assert mixed.train_iteration() == plain.train_iteration()  # CPU: autocast is a no-op, bit-identical
    calls: list[tuple[str, torch.dtype | None]] = []
    real = roles.autocast_context
    monkeypatch.setattr(roles, "autocast_context",
                        lambda device, dtype: calls.append((device.type, dtype)) or real(device, dtype))
    mixed.train_iteration()
    # fake update: 2 generator steps (phase 0 of 4 steps / 2 phases) + 1 fake call;
    # generator update: 2 generator steps + 1 teacher call (cond and uncond batched) + 1 fake call
    assert calls == [("cpu", torch.bfloat16)] * 7


# ------------------------------------------------------------------ resolution mixtures
def _mixture_bundle(draws: list[tuple[int, ...]]) -> ModelBundle:
    shapes = [(4,), (2, 3)]

    def sampler(gen: torch.Generator) -> tuple[int, ...]:
        shape = shapes[int(torch.randint(0, 2, (1,), generator=gen))]
        draws.append(shape)
        return shape

    return ModelBundle(ElementwiseVelocity(), NoPrompts(), (4,), extras={"sample_shape_sampler": sampler})


def test_sample_shape_sampler_draws_one_shape_per_batch_from_the_trainer_generator() -> None:
    cfg = _cfg(ttur_ratio=3, teacher_cfg={"scale": 1.0})
    runs = []
    for _ in range(2):
        draws: list[tuple[int, ...]] = []
        bundle = _mixture_bundle(draws)
        tr = _trainer(cfg, bundle)
        teacher = bundle.teacher
        assert isinstance(teacher, ElementwiseVelocity)
        tr.begin_phase(0)
        for _ in range(4):
            tr.train_iteration()
        assert len(draws) == 4 * (3 + 1)  # one per rollout: 3 fake updates + 1 generator update per iteration
        assert set(draws) == {(4,), (2, 3)}
        assert teacher.seen_shapes == draws[3::4]  # the teacher only sees the generator update's batches
        # the fake is called once in every fake update and once in the generator update: every batch's shape
        assert tr.fake.experts[0].seen_shapes == draws  # type: ignore[attr-defined]
        runs.append(draws)
    assert runs[0] == runs[1]  # drawn from the seeded trainer generator


def test_bad_sample_shape_sampler_output_names_the_value() -> None:
    bundle = ModelBundle(ElementwiseVelocity(), NoPrompts(), (4,), extras={"sample_shape_sampler": lambda g: (4, 0)})
    tr = _trainer(_cfg(), bundle)
    tr.begin_phase(0)
    with pytest.raises(ValueError, match=r"returned \(4, 0\)"):
        tr.train_iteration()
    with pytest.raises(TypeError, match="sample_shape_sampler"):
        _trainer(_cfg(), ModelBundle(ElementwiseVelocity(), NoPrompts(), (4,),
                                     extras={"sample_shape_sampler": (4,)}))
