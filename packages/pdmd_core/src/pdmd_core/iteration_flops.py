"""FLOPs of one generator iteration per phase, counted pass by pass as the trainer runs them; utilisation.

One generator iteration of phase k (`Trainer.train_iteration`) is
- `ttur_ratio` fake updates, each: a rollout without grad (every step up to its exit step), one fake-score
  forward with grad and its backward;
- one generator update: a rollout with grad as the method routes it (pdmd_core.rollout: earlier phases' steps
  without grad; the phase's steps with grad, or under SGTS the exit step alone, its input from no-grad steps), one
  guided teacher call (both CFG branches), one fake forward without grad, and the backward through the recorded
  steps (the chain's first step has an input that needs no gradient, later ones have one).
Model FLOPs count these passes. Hardware FLOPs add what activation checkpointing recomputes inside each backward.
Under SGTS (method `sgts`, or `in_phase: sgts`) every rollout draws its exit step j uniformly from the phase's
steps (`rollout.exit_step_draw`); the expected iteration is then Σ_j P(j) · flops(j) for each of its rollouts.

The per-pass costs (`IterationCosts`) are counted once per role (pdmd_core.pass_flops). Backward FLOPs are what
autograd runs, not the 2 × forward rule of thumb: a LoRA generator computes no weight gradients of its frozen
backbone (its backward is about one forward), and no pass computes the gradient of an input that needs none.
Everything here is exact rational arithmetic (Fraction), so expectations compare exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class BackwardFlops:
    model: int  # gradient FLOPs autograd runs
    recompute: int  # forward FLOPs recomputed inside it by activation checkpointing (0 without)


@dataclass(frozen=True)
class RoleCosts:
    """One call of a role's network on the training batch."""

    forward: int
    backward: BackwardFlops  # backward of a call whose input needs no gradient
    # backward of a call whose input needs one (later steps of a backprop chain); None for a role never run so
    backward_input_grad: BackwardFlops | None = None


@dataclass(frozen=True)
class IterationCosts:
    generator: RoleCosts  # one student step (any expert: they share the architecture)
    fake: RoleCosts  # the fake score (its input x_t never needs a gradient)
    teacher: int  # one guided teacher velocity, both CFG branches


@dataclass(frozen=True)
class Flops:
    model: Fraction
    hardware: Fraction  # model + recomputation

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.model + other.model, self.hardware + other.hardware)

    def scaled(self, factor: Fraction | int) -> Flops:
        return Flops(self.model * factor, self.hardware * factor)


ZERO = Flops(Fraction(0), Fraction(0))


@dataclass(frozen=True)
class Schedule:
    """What decides which passes an iteration runs: method, in-phase routing, step bounds of the phases, TTUR."""

    method: str
    in_phase: str
    bounds: tuple[int, ...]  # phase k spans steps [bounds[k], bounds[k+1])
    ttur_ratio: int

    @classmethod
    def of(cls, cfg: Any) -> Schedule:
        """From a DistillConfig."""
        return cls(cfg.method, cfg.in_phase, tuple(cfg.phase_step_bounds()), cfg.ttur_ratio)

    @property
    def truncated(self) -> bool:
        """Whether rollouts stop at a random exit step (as pdmd_core.rollout decides)."""
        return self.method == "sgts" or (self.method == "phased" and self.in_phase == "sgts")

    @property
    def num_phases(self) -> int:
        return len(self.bounds) - 1

    def steps(self, phase: int) -> tuple[int, int]:
        """(first step, end step) of the phase: its steps are first .. end - 1."""
        if isinstance(phase, bool) or not isinstance(phase, int) or not 0 <= phase < self.num_phases:
            raise ValueError(f"phase must be an int in [0, {self.num_phases}), got {phase!r}")
        return self.bounds[phase], self.bounds[phase + 1]


def exit_step_distribution(schedule: Schedule, phase: int) -> dict[int, Fraction]:
    """P(exit step = j) of one rollout in `phase`: uniform over the phase's steps under SGTS, else its last step."""
    first, end = schedule.steps(phase)
    if not schedule.truncated:
        return {end - 1: Fraction(1)}
    return {j: Fraction(1, end - first) for j in range(first, end)}


def rollout_forwards(schedule: Schedule, phase: int, exit_step: int, grad: bool) -> tuple[int, int]:
    """(forwards without grad, forwards recorded for backward) of one rollout ending at `exit_step`."""
    support = exit_step_distribution(schedule, phase)
    if exit_step not in support:
        raise ValueError(f"exit_step {exit_step!r} is not a possible exit step of phase {phase} "
                         f"(possible: {sorted(support)})")
    first, _ = schedule.steps(phase)
    executed = exit_step + 1  # earlier phases' steps, then the phase's steps up to the exit
    if not grad:
        return executed, 0
    recorded = 1 if schedule.truncated else exit_step + 1 - first
    return executed - recorded, recorded


def _flops(model: int, recompute: int = 0) -> Flops:
    return Flops(Fraction(model), Fraction(model + recompute))


def fake_update_flops(costs: IterationCosts, schedule: Schedule, phase: int, exit_step: int) -> Flops:
    """One critic update: a no-grad rollout to `exit_step`, the fake forward with grad and its backward."""
    forwards, _ = rollout_forwards(schedule, phase, exit_step, grad=False)
    fake = costs.fake
    return _flops(forwards * costs.generator.forward + fake.forward + fake.backward.model, fake.backward.recompute)


def generator_update_flops(costs: IterationCosts, schedule: Schedule, phase: int, exit_step: int) -> Flops:
    """The generator update: the rollout with grad, teacher and fake forwards (no grad), the backward through
    the recorded steps (the first with an input needing no gradient, the rest with one)."""
    no_grad, recorded = rollout_forwards(schedule, phase, exit_step, grad=True)
    gen = costs.generator
    forwards = _flops((no_grad + recorded) * gen.forward + costs.teacher + costs.fake.forward)
    if recorded > 1 and gen.backward_input_grad is None:
        raise ValueError(f"phase {phase} backpropagates through {recorded} steps: the generator's costs need "
                         "backward_input_grad")
    backwards = [gen.backward] + [gen.backward_input_grad] * (recorded - 1)
    return sum((_flops(b.model, b.recompute) for b in backwards if b is not None), forwards)


def iteration_flops(costs: IterationCosts, schedule: Schedule, phase: int, fake_exit_steps: Sequence[int],
                    generator_exit_step: int) -> Flops:
    """One generator iteration whose rollouts ended at the given exit steps (one per fake update, in order)."""
    if len(fake_exit_steps) != schedule.ttur_ratio:
        raise ValueError(f"fake_exit_steps has {len(fake_exit_steps)} entries; the iteration runs "
                         f"ttur_ratio={schedule.ttur_ratio} fake updates")
    total = generator_update_flops(costs, schedule, phase, generator_exit_step)
    for j in fake_exit_steps:
        total = total + fake_update_flops(costs, schedule, phase, j)
    return total


def expected_iteration_flops(costs: IterationCosts, schedule: Schedule, phase: int) -> Flops:
    """E[FLOPs of one iteration of `phase`] = Σ_j P(j) · (ttur · fake(j) + generator(j)): every rollout draws
    its own exit step from the same distribution, and the FLOPs are a sum over rollouts."""
    total = ZERO
    for j, p in exit_step_distribution(schedule, phase).items():
        per_exit = fake_update_flops(costs, schedule, phase, j).scaled(schedule.ttur_ratio)
        total = total + (per_exit + generator_update_flops(costs, schedule, phase, j)).scaled(p)
    return total


def utilisation(flops_per_iteration: float | Fraction, seconds_per_iteration: float, peak_flops: float) -> float:
    """Achieved FLOP/s over the device's peak: MFU with model FLOPs, HFU with hardware FLOPs."""
    if not seconds_per_iteration > 0:
        raise ValueError(f"seconds_per_iteration must be > 0, got {seconds_per_iteration!r}")
    if not peak_flops > 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops!r}")
    return float(flops_per_iteration) / seconds_per_iteration / peak_flops


def steady_seconds(seconds: Sequence[float], warmup: int) -> list[float]:
    """A phase's iteration times without its first `warmup` ones (kernel selection, optimiser state allocation)."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if len(seconds) <= warmup:
        raise ValueError(f"{len(seconds)} timed iterations leave none after {warmup} warm-up iteration(s)")
    return list(seconds[warmup:])
