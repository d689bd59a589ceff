"""The distillation trainer: DMD, DMD-full, SGTS and Phased DMD behind one loop.

API:
    trainer = Trainer(cfg: DistillConfig, bundle: ModelBundle, run_dir, hooks=[hook, ...],
                      progress=True, grad_sync=None, rank=0)
    trainer.fit()                   # all phases; resumes from run_dir/checkpoints if a checkpoint exists
    trainer.save()                  # also valid from inside a hook (a consistent point after an iteration)
    student = trainer.student()     # or Student.from_checkpoint(path, bundle) (pdmd_core.student)
    x0 = student.sample(z, cond)    # N-step (MoE) student at CFG 1

`hook(step: int, phase: int, metrics: dict[str, float])` is called after every generator iteration (step
counts generator iterations over all phases, from 1). Metrics: fake_loss, fake_grad_norm, generator_loss,
generator_grad_norm, dmd_grad_norm (mean per-sample L2 norm of the DMD gradient g), dmd_grad_norm/t<lo>-<hi>
per t-bin (bins present in the batch), x0_gap = mean|x̂_fake − x̂_real|, t_mean, exit_step, s.

One generator iteration of phase k = `ttur_ratio` fake updates (each on a fresh no-grad rollout) then one
generator update (rollout with grad as the method routes it; Eq. 10 gradient through a surrogate loss).
Phase start: fake ← teacher, new AdamW optimisers for expert k and the fake. Phase end: EMA weights (if any)
are copied into expert k, which is then frozen. Checkpoints (atomic, keep last K) every `checkpoint.every`
iterations and at each phase end hold roles, optimisers, EMA, RNG states, phase and step, so a resumed run
equals an uninterrupted one (bit-identical on CPU). A non-finite loss or gradient raises NonFiniteError naming
the role, phase and step before any optimiser step; checkpoints already on disk are kept, and a checkpoint is
never written with non-finite weights. With `non_finite.policy: skip` (off by default) such an update is dropped
instead (no optimiser or EMA step), counted in the metric `non_finite_skipped` and in checkpoints, and the run
still stops with NonFiniteError once more than `non_finite.max_skipped` updates were dropped; a role whose
updates were all dropped in an iteration reports NaN loss and gradient norm for it. With several ranks (grad_sync
or sharded roles) every rank drops the same update (see `_backward`).
Bad re-noise intervals or a `fixed_dmd_t` outside a phase's interval fail in the constructor, before any write.
Checkpoint files: `run_dir/checkpoints/ckpt_<global step, 8 digits>.pt` (pdmd_core.checkpoint).

Data-parallel training (one Trainer per rank; the caller owns the process group):
- `grad_sync(params)` is called after every `backward()` and before gradient clipping and the optimiser step,
  for the fake score (its trainable parameters) and the generator (the current expert's), e.g. an all-reduce
  that averages `.grad` over ranks. Parameters without a gradient get a zero `.grad` first, so every rank
  reduces the same tensors (as DDP does for unused parameters).
- `rank` r seeds the trainer's generator (noise, prompts, re-noise t, exit steps) with `cfg.seed + 1000·r`;
  r = 0 is the single-process behaviour. `cfg.batch_size` is the batch of one Trainer, i.e. per rank.
  Weights are initialised from the global seed `cfg.seed` on every rank (identical replicas). A rank resuming
  from a checkpoint written by another rank re-seeds its generator from (seed, rank, step) rather than
  adopting the writer's stream (distinct streams; bit-identical resume holds for the writing rank).
- `wrap_module(role, module) -> module` (e.g. FSDP2 `fully_shard`, realscale.distributed.fsdp2_role_wrapper)
  is applied to every role module after the roles are built and before the optimisers; roles "teacher/<i>",
  "fake/<i>", "generator/<k>" (full experts) or "generator_backbone/<i>" (LoRA). With sharded (DTensor)
  parameters pass `grad_sync=None` (FSDP reduces gradients itself); MoE routing and SGTS exit steps are then
  kept identical across ranks, and checkpoints hold each rank's own shards plus, on rank 0, the full generator
  experts (pdmd_core.role_sharding); a sharded run resumes with the same number of ranks. Role modules that a
  bundle built empty (meta parameters; `ModelBundle.materialize`) are filled after wrapping, so each rank
  allocates only its shards; LoRA adapters then get a seeded init (`GeneratorExperts.initialise_adapters`).

Model bundle extras the trainer reads (all optional): `autocast_dtype` (CUDA autocast of every model forward,
see pdmd_core.roles), `sample_shape_sampler(generator) -> shape` (one sample shape per batch, drawn from the
trainer's generator before the batch's prompts and noise, e.g. a resolution mixture; default
`bundle.sample_shape`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint, remove_stale_temporaries, save_checkpoint
from pdmd_core.config import DistillConfig
from pdmd_core.dmd import dmd_gradient_normalized, dmd_gradient_weighted, fake_score_loss, surrogate_loss
from pdmd_core.flow import expand_like, transition, velocity_to_x0
from pdmd_core.models.registry import ModelBundle
from pdmd_core.role_sharding import (
    WrapModule,
    gather_for_checkpoint,
    has_sharded_parameters,
    local_shards,
    materialize_roles,
    shard_optimizer_state,
    shared_draw_seed,
    wrap_roles,
)
from pdmd_core.roles import EMA, FakeScore, GeneratorExperts, Teacher, boundary_of, count_parameters
from pdmd_core.rollout import rollout
from pdmd_core.schedules import renoise_interval, sample_renoise_time

MetricHook = Callable[[int, int, dict[str, float]], None]
GradSync = Callable[[list[nn.Parameter]], None]
RANK_SEED_STRIDE = 1000
CHECKPOINT_FORMAT = 1
_log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    def __init__(self, role: str, quantity: str, phase: int, step: int, value: float,
                 skipped: int | None = None, max_skipped: int | None = None) -> None:
        budget = "" if skipped is None else f" after skipping {skipped} non-finite updates (max_skipped={max_skipped})"
        super().__init__(f"non-finite {quantity} ({value}) for role '{role}' in phase {phase} at generator "
                         f"step {step}{budget}; stopping (last good checkpoint kept)")
        self.role, self.quantity, self.phase, self.step = role, quantity, phase, step
        self.skipped = skipped


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
                 hooks: Sequence[MetricHook] = (), progress: bool = True, grad_sync: GradSync | None = None,
                 rank: int = 0, wrap_module: WrapModule | None = None) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be an int >= 0, got {rank!r}")
        shape_sampler = bundle.extras.get("sample_shape_sampler")
        if shape_sampler is not None and not callable(shape_sampler):
            raise TypeError(f"bundle.extras['sample_shape_sampler'] must be callable fn(generator) -> shape, "
                            f"got {type(shape_sampler).__name__}")
        self.cfg, self.bundle = cfg, bundle
        self.run_dir = Path(run_dir)
        self.hooks = list(hooks)
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
        self.non_finite_skipped = 0  # updates dropped by the `skip` policy over the whole run (checkpointed)
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
    def rank_seed(self) -> int:
        """Seed of this rank's generator: cfg.seed + 1000·rank (rank 0: cfg.seed)."""
        return self.cfg.seed + RANK_SEED_STRIDE * self.rank

    # ------------------------------------------------------------------ one iteration
    def _noise(self, shape: Sequence[int]) -> Tensor:
        return torch.randn(tuple(shape), generator=self.rng, device=self.device)

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
        cond, null = self.bundle.prompt_source.sample(self.cfg.batch_size, self.rng)
        z = self._noise((self.cfg.batch_size, *shape))
        res = rollout(self.generator, z, cond, self.cfg.method, self.phase, self.cfg.in_phase,
                      self.cfg.transport, self.rng, grad, exit_rng=self._shared_exit_rng())
        return res, cond, null

    def _shared_exit_rng(self) -> torch.Generator | None:
        """Sharded roles: SGTS exit steps from a generator all ranks share (every rank makes the same expert
        calls; one exit step per global batch). Seeded from (seed, step, draw): nothing to checkpoint."""
        if not self.sharded:
            return None
        step, draws = self._shared_draws
        draws = draws + 1 if step == self.global_step else 1
        self._shared_draws = (self.global_step, draws)
        return torch.Generator(device=self.device).manual_seed(shared_draw_seed(self.cfg.seed, self.global_step, draws))

    def _renoise_t(self, batch: int, fixed: float | None = None) -> Tensor:
        if fixed is not None:
            return torch.full((batch,), fixed, device=self.device)
        lo, hi = self.phase_interval(self.phase)
        return sample_renoise_time(batch, lo, hi, self.cfg.shift, self.cfg.renoise_t_range, self.rng,
                                   self.device)

    def _finite(self, value: float, role: str, quantity: str) -> bool:
        """True if finite. Otherwise policy `stop` raises; `skip` counts the dropped update (raising past
        `max_skipped`) and returns False so the caller drops its gradients without an optimiser step."""
        if math.isfinite(value):
            return True
        guard = self.cfg.non_finite
        step = self.global_step + 1
        if guard.policy == "stop":
            raise NonFiniteError(role, quantity, self.phase, step, value)
        if self.non_finite_skipped >= guard.max_skipped:
            raise NonFiniteError(role, quantity, self.phase, step, value, self.non_finite_skipped, guard.max_skipped)
        self.non_finite_skipped += 1
        _log.warning("skipped a non-finite %s (%s) of role '%s' in phase %d at generator step %d (%d/%d skipped)",
                     quantity, value, role, self.phase, step, self.non_finite_skipped, guard.max_skipped)
        return False

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
        """Hand the role's gradients to `grad_sync` (after backward, before clipping and the step). Sharded
        roles (FSDP reduced them in backward) get the same zero gradients, so both train alike."""
        if self.grad_sync is None and not self.sharded:
            return
        for p in params:
            if p.grad is None:  # unused this batch here, maybe used on another rank
                p.grad = torch.zeros_like(p)
        if self.grad_sync is not None:
            self.grad_sync(params)

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
        if self.cfg.non_finite.policy == "skip":
            metrics["non_finite_skipped"] = float(self.non_finite_skipped)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        from tqdm.auto import tqdm

        if not self.resumed:
            self.resume()
        total = sum(self.cfg.iterations_for_phase(k) for k in range(self.cfg.num_phases))
        bar = tqdm(total=total, initial=self.global_step, disable=not self.progress, desc="distill",
                   dynamic_ncols=True)
        try:
            while self.phase < self.cfg.num_phases:
                if not self.phase_started:
                    self.begin_phase(self.phase)
                budget = self.cfg.iterations_for_phase(self.phase)
                while self.iter_in_phase < budget:
                    metrics = self.train_iteration()
                    self.iter_in_phase += 1
                    self.global_step += 1
                    for hook in self.hooks:
                        hook(self.global_step, self.phase, metrics)
                    bar.update(1)
                    bar.set_postfix(phase=self.phase, fake=f"{metrics['fake_loss']:.3g}",
                                    gen=f"{metrics['generator_loss']:.3g}")
                    if self.iter_in_phase % self.cfg.checkpoint.every == 0 and self.iter_in_phase < budget:
                        self.save()
                self.end_phase()
                self.phase += 1
                self.iter_in_phase = 0
                self.save()
        finally:
            bar.close()

    # ------------------------------------------------------------------ state
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.model_dump(mode="json"),
            "phase": self.phase,
            "iter_in_phase": self.iter_in_phase,
            "global_step": self.global_step,
            "phase_started": self.phase_started,
            "rank": self.rank,
            "non_finite_skipped": self.non_finite_skipped,
            "generator": [self.generator.expert_state(e) for e in range(len(self.generator.experts))],
            "fake": self.fake.state_dict() if self.phase_started else None,
            "opt_generator": self.opt_gen.state_dict() if self.phase_started and self.opt_gen else None,
            "opt_fake": self.opt_fake.state_dict() if self.phase_started and self.opt_fake else None,
            "ema": self.ema.state_dict() if self.phase_started and self.ema else None,
            "rng": {"trainer": self.rng.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "python": random.getstate()},
        }

    def _check_weights(self) -> None:
        """Never write a checkpoint with non-finite trainable weights (the last good one must stay last)."""
        for role, params in (("generator", self.generator.trainable_parameters()),
                             ("fake", [p for m in self.fake.experts for p in m.parameters()])):
            if not all(bool(torch.isfinite(p).all()) for p in params):
                raise NonFiniteError(role, "weights", self.phase, self.global_step, float("nan"))

    def save(self) -> Path:
        self._check_weights()
        remove_stale_temporaries(self.checkpoint_dir)  # a killed earlier write left only a temp file
        state = self.state_dict()
        if self.sharded:  # generator + EMA full on rank 0 (export), the rest sharded (pdmd_core.role_sharding)
            full = gather_for_checkpoint({key: state.pop(key) for key in ("generator", "ema")})
            state = local_shards(state) | full
        return save_checkpoint(self.checkpoint_dir, self.global_step, state, self.cfg.checkpoint.keep_last)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        saved = DistillConfig.model_validate(state["config"])
        mismatch = _training_mismatch(saved, self.cfg)
        if mismatch:
            raise ValueError(f"checkpoint was written with a different config: {mismatch}")
        for e, sd in enumerate(state["generator"]):
            self.generator.load_expert_state(e, sd)
        self.phase = int(state["phase"])
        self.global_step = int(state["global_step"])
        self.non_finite_skipped = int(state.get("non_finite_skipped", 0))
        if state["phase_started"]:
            self.begin_phase(self.phase)
            self.fake.load_state_dict(state["fake"])
            assert self.opt_gen is not None and self.opt_fake is not None
            self.opt_gen.load_state_dict(state["opt_generator"])
            self.opt_fake.load_state_dict(state["opt_fake"])
            shard_optimizer_state(self.opt_gen)  # no-op for unsharded parameters
            shard_optimizer_state(self.opt_fake)
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        else:
            self.phase_started = False
        self.iter_in_phase = int(state["iter_in_phase"])
        rng = state["rng"]  # RNG states are CPU byte tensors whatever map_location did
        if int(state.get("rank", 0)) == self.rank:
            self.rng.set_state(rng["trainer"].cpu())
        else:  # another rank's stream: continue with a distinct, reproducible one of our own
            self.rng.manual_seed(resume_seed(self.rank_seed, self.global_step))
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        random.setstate(rng["python"])

    def resume(self) -> Path | None:
        """Load the latest checkpoint of run_dir if there is one; returns its path. Writes nothing: temp files
        of a checkpoint write that was killed are never read (and are removed by the next save)."""
        path = latest_checkpoint(self.checkpoint_dir)
        if path is not None:
            self.load_state_dict(load_checkpoint(path, self.device))
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


_RESUME_INSENSITIVE = {"checkpoint", "device", "model", "non_finite"}


def _training_mismatch(saved: DistillConfig, current: DistillConfig) -> str:
    a, b = saved.model_dump(mode="json"), current.model_dump(mode="json")
    diffs = [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if k not in _RESUME_INSENSITIVE and a[k] != b.get(k)]
    # extending the budget of the last phase is fine; everything else must match
    diffs = [d for d in diffs if not d.startswith("iterations:")]
    return "; ".join(diffs)


def resume_seed(rank_seed: int, global_step: int) -> int:
    """Generator seed of a rank resuming from another rank's checkpoint at `global_step` (distinct per rank)."""
    return (rank_seed * 1_000_003 + global_step) % (2**63)


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
