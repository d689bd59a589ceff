"""Per-pass FLOP costs of a trainer's roles, counted with torch.utils.flop_counter on single calls.

`measure_pass_flops(trainer) -> IterationCosts` (pdmd_core.iteration_flops) runs, on the trainer's own role
modules (wrapping, activation checkpointing and autocast as in training) and on a batch of its training shape:
one student step of the current phase's expert forward + backward (input without and with a gradient), one
fake-score forward + backward, one guided teacher call. Inputs come from a private generator: the trainer's
random stream is untouched, and the gradients left behind are cleared (the optimisers zero theirs before every
backward anyway). Call it in a begun phase (e.g. from `on_phase_begin`).

Recomputation = FLOPs of module forwards that run inside a backward: activation checkpointing re-runs whole
modules (diffusers checkpoints each transformer block), and it may stop a block's recomputation early once the
tensors the backward needs are back, so it is counted, not assumed to be a full forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode

from pdmd_core.iteration_flops import BackwardFlops, IterationCosts, RoleCosts


class _RecomputeMeter:
    """FLOPs (read off `counter`) of the outermost module forwards that run while this meter is on; switched on
    around a backward, that is what activation checkpointing recomputes."""

    def __init__(self, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.flops = 0
        self._depth = 0
        self._start = 0

    def _pre(self, module: Any, args: Any) -> None:
        if self._depth == 0:
            self._start = self.counter.get_total_flops()
        self._depth += 1

    def _post(self, module: Any, args: Any, output: Any) -> None:
        self._depth -= 1  # also when checkpointing stops the recomputation by an exception (always_call)
        if self._depth == 0:
            self.flops += self.counter.get_total_flops() - self._start

    def __enter__(self) -> _RecomputeMeter:
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def count_forward_backward(forward: Any) -> tuple[int, BackwardFlops]:
    """(forward FLOPs, backward FLOPs split into model and recompute) of `forward()` and `forward().sum()`'s
    backward (a sum adds no counted FLOPs; the backward's matrix products do not depend on the incoming grad)."""
    with FlopCounterMode(display=False) as counter:
        out = forward()
    fwd = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, _RecomputeMeter(counter) as meter:
        out.float().sum().backward()
    total = counter.get_total_flops()
    return fwd, BackwardFlops(total - meter.flops, meter.flops)


def count_forward(forward: Any) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops()


def measure_pass_flops(trainer: Any, seed: int = 0) -> IterationCosts:
    """The trainer's per-pass costs in its current phase (see the module docstring)."""
    if not trainer.phase_started:
        raise ValueError("measure_pass_flops needs a begun phase (trainable expert and optimisers set); "
                         "call it from on_phase_begin or after trainer.begin_phase(k)")
    if trainer.shape_sampler is not None:
        raise ValueError("measure_pass_flops needs one sample shape; this bundle draws a shape per batch "
                         "(sample_shape_sampler), so an iteration's FLOPs depend on the draw")
    device = trainer.device
    g = torch.Generator(device=device).manual_seed(seed)
    batch = trainer.local_batch
    shape = (batch, *trainer.bundle.sample_shape)
    cond, null = trainer.bundle.prompt_source.sample(batch, g)
    step = trainer.bounds[trainer.phase]
    t = torch.full((batch,), float(trainer.timesteps[step]), device=device)

    def noise() -> Tensor:
        return torch.randn(shape, generator=g, device=device)

    def student_costs(input_grad: bool) -> tuple[int, BackwardFlops]:
        x = noise().requires_grad_(input_grad)
        return count_forward_backward(lambda: trainer.generator.step_velocity(step, x, t, cond))

    gen_forward, gen_backward = student_costs(input_grad=False)
    _, gen_backward_input_grad = student_costs(input_grad=True)
    x_t = noise()
    fake_forward, fake_backward = count_forward_backward(lambda: trainer.fake(x_t, t, cond))
    teacher = count_forward(lambda: trainer.teacher.velocity(x_t, t, cond, null))
    for p in [*trainer.gen_params, *trainer.fake_params]:
        p.grad = None
    return IterationCosts(generator=RoleCosts(gen_forward, gen_backward, gen_backward_input_grad),
                          fake=RoleCosts(fake_forward, fake_backward), teacher=teacher)  # x_t needs no gradient
