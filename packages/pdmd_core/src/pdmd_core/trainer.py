"""The distillation trainer: DMD, DMD-full, SGTS and Phased DMD behind one loop.

API:
    trainer = Trainer(cfg: DistillConfig, bundle: ModelBundle, run_dir, callbacks=[callback, ...],
                      progress=True, grad_sync=None, rank=0, wrap_module=None, world_size=None)
    trainer.fit()                   # all phases; resumes from run_dir/checkpoints if a checkpoint exists
    trainer.save()                  # also valid from a callback (a consistent point after an iteration;
                                    # collective when several ranks checkpoint together)
    student = trainer.student()     # or Student.from_checkpoint(path, bundle) (pdmd_core.student)
    x0 = student.sample(z, cond)    # N-step (MoE) student at CFG 1

Callbacks (`pdmd_core.callbacks.Callback`: phase begin/end, iteration end, before/after save, fit begin/end and
state kept in checkpoints) do what is not the loop: metrics files, tracking, pre-emption. `on_iteration_end(trainer,
step, phase, metrics)` runs after every generator iteration (step counts generator iterations over all phases,
from 1). Metrics: fake_loss, fake_grad_norm, generator_loss,
generator_grad_norm, dmd_grad_norm (mean per-sample L2 norm of the DMD gradient g), dmd_grad_norm/t<lo>-<hi>
per t-bin (bins present in the batch), x0_gap = mean|x̂_fake − x̂_real|, t_mean, exit_step, s.

One generator iteration of phase k = `ttur_ratio` fake updates (each on a fresh no-grad rollout) then one
generator update (rollout with grad as the method routes it; Eq. 10 gradient through a surrogate loss).
Phase start: fake ← teacher, new AdamW optimisers for expert k and the fake. Phase end: EMA weights (if any)
are copied into expert k, which is then frozen. Checkpoints (atomic, keep last K; `pdmd_core.trainer_state`) every
`checkpoint.every` iterations and at each phase end hold roles, optimisers, EMA, RNG states, phase, step and the
callbacks' states, so a resumed run equals an uninterrupted one (bit-identical on CPU). A non-finite loss or
gradient is handled by `pdmd_core.non_finite` (policy `stop`: NonFiniteError naming role, phase and step before any
optimiser step, checkpoints on disk kept; `skip`: the update is dropped, counted in the metric `non_finite_skipped`
and in checkpoints, up to `max_skipped`); a checkpoint is never written with non-finite weights. A role whose
updates were all dropped in an iteration reports NaN loss and gradient norm for it. With several ranks (grad_sync
or sharded roles) every rank drops the same update (see `_backward`).
Bad re-noise intervals or a `fixed_dmd_t` outside a phase's interval fail in the constructor, before any write.
Checkpoints: `run_dir/checkpoints/ckpt_<global step, 8 digits>.pt` (one process) or `.dcp/` folders written by
all ranks together and committed once every rank is done (pdmd_core.checkpoint, pdmd_core.distributed_checkpoint).

Data-parallel training (one Trainer per rank; the caller owns the process group):
- `grad_sync(params)` is called after every `backward()` and before gradient clipping and the optimiser step,
  for the fake score (its trainable parameters) and the generator (the current expert's), e.g. an all-reduce
  that averages `.grad` over ranks. It gets the parameters some rank used in that backward (the ranks agree
  through an all-reduce on torch.distributed's default group; also with sharded roles or `world_size`): one
  unused here but used on another rank gets a zero `.grad` first, so every rank reduces the same tensors (as
  DDP does); one no rank used keeps `.grad = None` and takes no optimiser step, as in one process (AdamW on a
  zero gradient would still move it). Such a parameter has no optimiser state until its first step; DCP
  checkpoints store the states that exist and restore exactly those.
- `world_size` W (what `pdmd_pipeline.realscale.launch` passes): `cfg.batch_size` is the global batch; every
  rank draws the global batch's prompts, noise and re-noise times from one shared stream seeded with `cfg.seed`
  and trains on its rows [r·B/W, (r+1)·B/W). The data a run sees is then the same on any number of ranks, so a
  run can resume on another rank count and continue the same trajectory (up to the summation order of the
  gradient average); W = 1 draws exactly what a single process does. Checkpoints are DCP folders in the shared
  `run_dir` (rank 0 alone should write other files there, e.g. metrics).
- without `world_size` (each rank its own stream): `rank` r seeds the trainer's generator (noise, prompts,
  re-noise t, exit steps) with `cfg.seed + 1000·r`; r = 0 is the single-process behaviour. `cfg.batch_size` is
  the batch of one Trainer, i.e. per rank. A rank resuming from a checkpoint written by another rank re-seeds
  its generator from (seed, rank, step) rather than adopting the writer's stream (distinct streams;
  bit-identical resume holds for the writing rank).
- Weights are initialised from the global seed `cfg.seed` on every rank (identical replicas).
- `wrap_module(role, module) -> module` (e.g. FSDP2 `fully_shard`, realscale.distributed.fsdp2_role_wrapper)
  is applied to every role module after the roles are built and before the optimisers; roles "teacher/<i>",
  "fake/<i>", "generator/<k>" (full experts) or "generator_backbone/<i>" (LoRA). With sharded (DTensor)
  parameters pass `grad_sync=None` (FSDP reduces gradients itself); MoE routing and SGTS exit steps are then
  kept identical across ranks, and every rank writes only its shards into the run's DCP checkpoints (all ranks
  must share `run_dir`); DCP reshards on load, so the run resumes on any number of ranks. Role modules that a
  bundle built empty (meta parameters; `ModelBundle.materialize`) are filled after wrapping, so each rank
  allocates only its shards; LoRA adapters then get a seeded init (`GeneratorExperts.initialise_adapters`).

Model bundle extras the trainer reads (all optional): `autocast_dtype` (CUDA autocast of every model forward,
see pdmd_core.roles), `sample_shape_sampler(generator) -> shape` (one sample shape per batch, drawn from the
trainer's generator before the batch's prompts and noise, e.g. a resolution mixture; default
`bundle.sample_shape`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdmd_core import trainer_state
from pdmd_core.callbacks import Callback, CallbackList
from pdmd_core.config import DistillConfig
from pdmd_core.dmd import dmd_gradient_normalized, dmd_gradient_weighted, fake_score_loss, surrogate_loss
from pdmd_core.flow import expand_like, transition, velocity_to_x0
from pdmd_core.models.registry import ModelBundle
from pdmd_core.non_finite import NonFiniteError, NonFiniteGuard
from pdmd_core.role_sharding import (
    WrapModule,
    has_sharded_parameters,
    materialize_roles,
    shared_draw_seed,
    used_on_some_rank,
    wrap_roles,
)
from pdmd_core.roles import EMA, FakeScore, GeneratorExperts, Teacher, boundary_of, count_parameters
from pdmd_core.rollout import rollout
from pdmd_core.schedules import renoise_interval, sample_renoise_time

GradSync = Callable[[list[nn.Parameter]], None]
RANK_SEED_STRIDE = 1000
resume_seed = trainer_state.resume_seed
__all__ = ["NonFiniteError", "Trainer", "dmd_norm_by_bin", "resume_seed"]


def _grad_norm(params: Sequence[nn.Parameter], clip: float | None) -> float:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if clip is None:
        return float(torch.nn.utils.get_total_norm([p.grad for p in grads if p.grad is not None]))
    return float(torch.nn.utils.clip_grad_norm_(grads, clip))


def _adamw(params: list[nn.Parameter], lr: float, cfg: DistillConfig) -> torch.optim.AdamW:
    o = cfg.optim
    # the fused kernel is ~5x cheaper than the per-tensor loop; plain CPU/CUDA tensors only (not DTensor)
    fused = bool(params) and all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                             fused=fused or None)


class Trainer:
    def __init__(self, cfg: DistillConfig, bundle: ModelBundle, run_dir: str | Path,
                 callbacks: Sequence[Callback] = (), progress: bool = True, grad_sync: GradSync | None = None,
                 rank: int = 0, wrap_module: WrapModule | None = None, world_size: int | None = None) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be an int >= 0, got {rank!r}")
        self.world_size = world_size
        self._rows = global_batch_rows(cfg.batch_size, rank, world_size)
        shape_sampler = bundle.extras.get("sample_shape_sampler")
        if shape_sampler is not None and not callable(shape_sampler):
            raise TypeError(f"bundle.extras['sample_shape_sampler'] must be callable fn(generator) -> shape, "
                            f"got {type(shape_sampler).__name__}")
        self.cfg, self.bundle = cfg, bundle
        self.run_dir = Path(run_dir)
        self.callbacks = CallbackList(callbacks)
        self.guard = NonFiniteGuard(cfg.non_finite)
        self.progress = progress
        self.grad_sync = grad_sync
        self.rank = rank
        self.shape_sampler: Callable[[torch.Generator], Sequence[int]] | None = shape_sampler
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)  # global stream (weight init, LoRA init): identical on every rank
        random.seed(cfg.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(self.rank_seed)
        self.teacher = Teacher(bundle, cfg)
        self.fake = FakeScore(bundle, cfg)
        self.generator = GeneratorExperts(bundle, cfg)
        if wrap_module is not None:  # e.g. FSDP2: after the deep copies, before any optimiser
            wrap_roles(self.teacher, self.fake, self.generator, wrap_module)
        # roles built empty (real-scale `weights: sharded`) get their weights only now, at their sharded size
        materialize_roles(self.fake, self.generator, bundle.materialize, self.device)
        self.generator.initialise_adapters(cfg.seed)
        self.sharded = has_sharded_parameters([*self.fake.experts, *self.generator.experts,
                                               *self.generator.backbones])
        self._shared_draws = (-1, 0)  # (global step, draws taken) of the rank-shared SGTS exit generator
        self.timesteps = self.generator.timesteps
        self.bounds = self.generator.bounds
        self.boundary = boundary_of(bundle, cfg)
        self.phase = 0
        self.iter_in_phase = 0
        self.global_step = 0
        self.phase_started = False
        self.opt_gen: torch.optim.AdamW | None = None
        self.opt_fake: torch.optim.AdamW | None = None
        self.ema: EMA | None = None
        self.resumed = False  # resume() ran (fit() then does not load the checkpoint again)
        # several ranks of one run (or sharded roles) checkpoint together through DCP; one process to one file
        self.distributed_checkpoints = world_size is not None or self.sharded
        self._checkpointer: Any = None
        for phase in range(cfg.num_phases):  # bad intervals / fixed_dmd_t fail here, before anything is written
            self.check_phase(phase)

    # ------------------------------------------------------------------ phases
    def phase_interval(self, phase: int) -> tuple[float, float]:
        """Re-noise interval (lo, hi] of this phase (nested / disjoint, optional MoE clamp)."""
        start_t, end_t = self.timesteps[self.bounds[phase]], self.timesteps[self.bounds[phase + 1]]
        return renoise_interval(start_t, end_t, self.cfg.renoise_interval == "nested", self.boundary,
                                self.cfg.moe_boundary_clamp)

    def check_phase(self, phase: int) -> tuple[float, float]:
        """The phase's re-noise interval; ValueError if it is empty or `fixed_dmd_t` lies outside it."""
        lo, hi = self.phase_interval(phase)
        fixed = self.cfg.fixed_dmd_t
        if fixed is not None and not lo < fixed <= hi:
            raise ValueError(f"fixed_dmd_t={fixed} lies outside phase {phase}'s re-noise interval ({lo}, {hi}]")
        return lo, hi

    def begin_phase(self, phase: int) -> None:
        self.phase = phase
        self.fake.reset_from_teacher()
        trained = self.generator.experts_for_phase(phase, self.cfg.method)
        self.generator.set_trainable(trained)
        lo, hi = self.check_phase(phase)
        self.fake_params = self.fake.parameters_for(lo, hi)
        self.gen_params = self.generator.trainable_parameters()
        self.opt_fake = _adamw(self.fake_params, self.cfg.optim.lr_fake, self.cfg)
        self.opt_gen = _adamw(self.gen_params, self.cfg.optim.lr_generator, self.cfg)
        decay = self.cfg.optim.ema_decay
        self.ema = EMA(self.generator.trainable_named_parameters(), decay) if decay else None
        self.phase_started = True

    def end_phase(self) -> None:
        if self.ema is not None:
            self.ema.copy_to_params()
        for p in [*self.gen_params, *self.fake_params]:  # frozen experts keep no stale gradients
            p.grad = None
        self.generator.set_trainable([])
        self.phase_started = False

    @property
    def shared_draws(self) -> bool:
        """Every rank draws the global batch from one shared stream and keeps its rows (`world_size` given)."""
        return self.world_size is not None

    @property
    def local_batch(self) -> int:
        return self.cfg.batch_size if self._rows is None else self._rows.stop - self._rows.start

    @property
    def rank_seed(self) -> int:
        """Seed of this rank's generator: cfg.seed + 1000·rank (rank 0: cfg.seed); cfg.seed on every rank when
        the ranks share the stream."""
        return self.cfg.seed + (0 if self.shared_draws else RANK_SEED_STRIDE * self.rank)

    # ------------------------------------------------------------------ one iteration
    def _noise(self, shape: Sequence[int]) -> Tensor:
        """Standard normal noise for this rank's batch (shape[0] = local batch): with shared draws the global
        batch's noise is drawn and this rank keeps its rows, so the stream advances alike on every rank."""
        if self._rows is None:
            return torch.randn(tuple(shape), generator=self.rng, device=self.device)
        world = self.world_size or 1
        full = torch.randn((shape[0] * world, *shape[1:]), generator=self.rng, device=self.device)
        return full[shape[0] * self.rank:shape[0] * (self.rank + 1)]

    def _prompts(self) -> tuple[Any, Any]:
        cond, null = self.bundle.prompt_source.sample(self.cfg.batch_size, self.rng)
        if self._rows is None:
            return cond, null
        return (None if cond is None else cond.index(self._rows)), (None if null is None else null.index(self._rows))

    def _sample_shape(self) -> tuple[int, ...]:
        """This batch's per-sample shape: the bundle's, or one draw of its sample_shape_sampler."""
        if self.shape_sampler is None:
            return tuple(self.bundle.sample_shape)
        shape = tuple(self.shape_sampler(self.rng))
        if not shape or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ValueError(f"sample_shape_sampler returned {shape!r}; expected a non-empty tuple of ints > 0")
        return tuple(int(d) for d in shape)

    def _rollout(self, grad: bool) -> tuple[Any, Any, Any]:
        shape = self._sample_shape()
        cond, null = self._prompts()
        z = self._noise((self.local_batch, *shape))
        res = rollout(self.generator, z, cond, self.cfg.method, self.phase, self.cfg.in_phase,
                      self.cfg.transport, self.rng, grad, exit_rng=self._shared_exit_rng(),
                      noise=self._noise if self.shared_draws else None)
        return res, cond, null

    def _shared_exit_rng(self) -> torch.Generator | None:
        """Sharded roles: SGTS exit steps from a generator all ranks share (every rank makes the same expert
        calls; one exit step per global batch). Seeded from (seed, step, draw): nothing to checkpoint. With shared
        draws the trainer's own stream is already the same on every rank."""
        if not self.sharded or self.shared_draws:
            return None
        step, draws = self._shared_draws
        draws = draws + 1 if step == self.global_step else 1
        self._shared_draws = (self.global_step, draws)
        return torch.Generator(device=self.device).manual_seed(shared_draw_seed(self.cfg.seed, self.global_step, draws))

    def _renoise_t(self, batch: int, fixed: float | None = None) -> Tensor:
        if fixed is not None:
            return torch.full((batch,), fixed, device=self.device)
        lo, hi = self.phase_interval(self.phase)
        world = 1 if self._rows is None else (self.world_size or 1)
        t = sample_renoise_time(batch * world, lo, hi, self.cfg.shift, self.cfg.renoise_t_range, self.rng,
                                self.device)
        return t if self._rows is None else t[batch * self.rank:batch * (self.rank + 1)]

    def _finite(self, value: float, role: str, quantity: str) -> bool:
        """The non-finite guard on this iteration's value (raises, or False when the update is to be dropped)."""
        return self.guard.check(value, role, quantity, self.phase, self.global_step + 1)

    def _backward(self, loss: Tensor, params: list[nn.Parameter], role: str) -> float | None:
        """backward, grad_sync and clipping with the non-finite guard; the gradient norm, or None if skipped.

        Multi-rank runs (a `grad_sync`, or sharded roles whose backward and norm are collectives): with policy
        skip a rank whose loss is non-finite still runs backward, on `loss · NaN`, so its gradients are NaN, the
        reduced gradients and norm are NaN on every rank, and all ranks drop the same update; no rank is left
        waiting in a collective alone."""
        value = float(loss.detach())
        collective = self.grad_sync is not None or self.sharded
        if not math.isfinite(value) and (not collective or self.cfg.non_finite.policy == "stop"):
            self._finite(value, role, "loss")  # raises, or counts the skip
            return None
        (loss if math.isfinite(value) else loss * float("nan")).backward()
        self._sync_grads(params)
        norm = _grad_norm(params, self.cfg.optim.grad_clip)
        if math.isfinite(value):
            return norm if self._finite(norm, role, "gradient norm") else None
        self._finite(value, role, "loss")
        return None

    def _sync_grads(self, params: list[nn.Parameter]) -> None:
        """Hand the role's gradients to `grad_sync` (after backward, before clipping and the step).

        Several ranks (a `grad_sync`, sharded roles, `world_size`) first agree on which parameters some rank
        used (`used_on_some_rank`). Those that only another rank used get a zero gradient here (their share of
        the rank average), so every rank reduces the same tensors; those no rank used keep no gradient, are not
        synced and take no optimiser step, as in one process (e.g. the generator expert an SGTS exit step did
        not call). One process without any of these returns at once: its update is untouched."""
        if self.grad_sync is None and not self.sharded and not self.shared_draws:
            return
        used = used_on_some_rank(params, self.device)
        for p, some_rank in zip(params, used, strict=True):
            if some_rank and p.grad is None:  # used on another rank only
                p.grad = torch.zeros_like(p)
        if self.grad_sync is not None:
            self.grad_sync([p for p, some_rank in zip(params, used, strict=True) if some_rank])

    def fake_update(self) -> tuple[float, float] | None:
        """One critic update; None when the `skip` policy dropped it (non-finite loss or gradient)."""
        assert self.opt_fake is not None
        with torch.no_grad():
            res, cond, _ = self._rollout(grad=False)
        b = res.x_s.shape[0]
        t = self._renoise_t(b)
        noise = self._noise(res.x_s.shape)
        x_t = transition(res.x_s, res.s, expand_like(t, res.x_s), noise)
        pred = self.fake(x_t, t, cond)
        loss = fake_score_loss(pred, res.x_s, noise, res.s, t, self.cfg.fake_target, self.cfg.loss_clamp,
                               self.cfg.clamp_last_phase)
        self.opt_fake.zero_grad(set_to_none=True)
        norm = self._backward(loss, self.fake_params, "fake")
        if norm is None:
            self.opt_fake.zero_grad(set_to_none=True)
            return None
        self.opt_fake.step()
        return float(loss.detach()), norm

    def generator_update(self) -> dict[str, float]:
        assert self.opt_gen is not None
        res, cond, null = self._rollout(grad=True)
        x_s, s = res.x_s, res.s
        b = x_s.shape[0]
        t = self._renoise_t(b, self.cfg.fixed_dmd_t)
        noise = self._noise(x_s.shape)
        with torch.no_grad():
            x_t = transition(x_s.detach(), s, expand_like(t, x_s), noise)
            v_real = self.teacher.velocity(x_t, t, cond, null)
            v_fake = self.fake(x_t, t, cond)
            if self.cfg.generator_gradient == "dmd_weight":
                g = dmd_gradient_weighted(v_real, v_fake, s, t)
            else:
                g = dmd_gradient_normalized(x_t, v_real, v_fake, t, s, res.x0_gen)
            te = expand_like(t, x_t)
            x0_gap = float((velocity_to_x0(x_t, v_fake, te) - velocity_to_x0(x_t, v_real, te)).abs().mean())
        loss = surrogate_loss(x_s, g)
        self.opt_gen.zero_grad(set_to_none=True)
        checked = self._backward(loss, self.gen_params, "generator")
        norm = float("nan") if checked is None else checked
        if checked is not None:
            self.opt_gen.step()
            if self.ema is not None:
                self.ema.update()
        else:  # skipped: no step, no EMA update, no stale gradients
            self.opt_gen.zero_grad(set_to_none=True)
        metrics = {"generator_loss": float(loss.detach()), "generator_grad_norm": norm, "x0_gap": x0_gap,
                   "t_mean": float(t.mean()), "exit_step": float(res.exit_step), "s": s}
        metrics.update(dmd_norm_by_bin(g, t, self.cfg.dmd_t_bins))
        return metrics

    def train_iteration(self) -> dict[str, float]:
        fake_losses, fake_norms = [], []
        for _ in range(self.cfg.ttur_ratio):
            done = self.fake_update()
            if done is not None:
                fake_losses.append(done[0])
                fake_norms.append(done[1])
        # averages over the updates taken; NaN when the skip policy dropped all of them
        metrics = {"fake_loss": sum(fake_losses) / len(fake_losses) if fake_losses else float("nan"),
                   "fake_grad_norm": sum(fake_norms) / len(fake_norms) if fake_norms else float("nan")}
        metrics.update(self.generator_update())
        if self.guard.skips:
            metrics["non_finite_skipped"] = float(self.guard.skipped)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        from tqdm.auto import tqdm

        if not self.resumed:
            self.resume()
        bar = tqdm(total=self.total_iterations, initial=self.global_step, disable=not self.progress, desc="distill",
                   dynamic_ncols=True)
        self.callbacks.fire("on_fit_begin", self)
        try:
            while self.phase < self.cfg.num_phases:
                if not self.phase_started:
                    self.begin_phase(self.phase)
                    self.callbacks.fire("on_phase_begin", self, self.phase)
                budget = self.cfg.iterations_for_phase(self.phase)
                while self.iter_in_phase < budget:
                    metrics = self.train_iteration()
                    self.iter_in_phase += 1
                    self.global_step += 1
                    self.callbacks.fire("on_iteration_end", self, self.global_step, self.phase, metrics)
                    bar.update(1)
                    bar.set_postfix(phase=self.phase, fake=f"{metrics['fake_loss']:.3g}",
                                    gen=f"{metrics['generator_loss']:.3g}")
                    if self.iter_in_phase % self.cfg.checkpoint.every == 0 and self.iter_in_phase < budget:
                        self.save(wait=not self.cfg.checkpoint.async_save)
                self.end_phase()
                self.callbacks.fire("on_phase_end", self, self.phase)
                self.phase += 1
                self.iter_in_phase = 0
                self.save()
        finally:
            bar.close()
        trainer_state.finish(self)
        self.callbacks.fire("on_fit_end", self)

    @property
    def total_iterations(self) -> int:
        """Generator iterations of the whole run (all phases): `global_step` after the last one."""
        return sum(self.cfg.iterations_for_phase(k) for k in range(self.cfg.num_phases))

    # ------------------------------------------------------------------ state
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return trainer_state.state_dict(self)

    def save(self, wait: bool = True) -> Path:
        """Write a checkpoint (pdmd_core.trainer_state) between the callbacks' before/after-save events; the
        after-save event fires once it is durable (`wait=False` with `checkpoint.async_save`: at its commit)."""
        self.callbacks.fire("on_before_save", self)
        return trainer_state.save(self, wait, lambda path: self.callbacks.fire("on_after_save", self, path))

    def checkpointer(self) -> Any:
        """The DCP writer of this run's distributed checkpoints (it keeps an asynchronous save until commit)."""
        if self._checkpointer is None:
            from pdmd_core.distributed_checkpoint import DistributedCheckpointer

            spec = self.cfg.checkpoint
            self._checkpointer = DistributedCheckpointer(self.checkpoint_dir, spec.keep_last, spec.async_save)
        return self._checkpointer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        trainer_state.load_state_dict(self, state)

    def resume(self) -> Path | None:
        """Load the latest checkpoint of run_dir if there is one; returns its path (writes nothing)."""
        path = trainer_state.resume(self)
        self.resumed = True
        return path

    # ------------------------------------------------------------------ outputs
    def student(self, use_ema: bool = True) -> Any:
        from pdmd_core.student import Student

        if use_ema and self.ema is not None and self.phase_started:
            return Student.from_generator(self.generator, self.cfg.transport, ema=self.ema)
        return Student.from_generator(self.generator, self.cfg.transport)

    def role_summary(self) -> dict[str, dict[str, int]]:
        """Parameter counts per role (for dry runs and memory plans)."""
        teacher = count_parameters(list(self.teacher.module.parameters()))
        fake = sum(count_parameters(list(m.parameters())) for m in self.fake.experts)
        self.generator.set_trainable(self.generator.experts_for_phase(0, self.cfg.method))
        trainable = count_parameters(self.generator.trainable_parameters())
        self.generator.set_trainable([])
        return {
            "teacher": {"params": teacher, "trainable": 0},
            "fake": {"params": fake, "trainable": fake, "experts": len(self.fake.experts)},
            "generator": {"params": self.generator.total_parameters(), "trainable": trainable,
                          "experts": len(self.generator.experts)},
        }


def global_batch_rows(global_batch: int, rank: int, world_size: int | None) -> slice | None:
    """Rows of the global batch that `rank` trains on (None: no shared draws, the whole own batch)."""
    if world_size is None:
        return None
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1 or rank >= world_size:
        raise ValueError(f"world_size must be an int > rank (= {rank}), got {world_size!r}")
    if global_batch % world_size:
        raise ValueError(f"batch_size {global_batch} (global) is not divisible by the {world_size} ranks")
    local = global_batch // world_size
    return slice(rank * local, (rank + 1) * local)


def dmd_norm_by_bin(g: Tensor, t: Tensor, bins: int) -> dict[str, float]:
    """Mean per-sample L2 norm of the DMD gradient, overall and per equal-width t-bin present in the batch."""
    norms = g.flatten(1).norm(dim=1)
    out = {"dmd_grad_norm": float(norms.mean())}
    idx = (t * bins).long().clamp(0, bins - 1)
    for k in range(bins):
        mask = idx == k
        if bool(mask.any()):
            out[f"dmd_grad_norm/t{k / bins:.2f}-{(k + 1) / bins:.2f}"] = float(norms[mask].mean())
    return out
