"""Sharded roles (FSDP2) inside the trainer: wrapping the role modules and checkpointing DTensor state.

`Trainer(..., wrap_module=fn)` calls `fn(role, module) -> module` once per role module after all roles are
built (the fake scores and LoRA backbones are deep copies of the unwrapped teacher) and before any optimiser
exists. Role names: "teacher/<i>" (teacher expert i), "fake/<i>" (fake expert i), "generator/<k>" (full
generator expert k) or "generator_backbone/<i>" (the i-th frozen backbone that carries LoRA adapters). A typical
`fn` is `realscale.distributed.fsdp2_role_wrapper(ctx)` (`fully_shard` per transformer block and root).

What sharding needs from the loop, and how this module provides it:
- Collectives must match across ranks: every rank must call every sharded module the same number of times in
  the same order. Two-expert MoE roles (teacher, fake) route samples by t, which differs per rank, so their
  container becomes `RankSyncedMoE`: an all-reduce tells each rank which experts some rank uses, and a rank with
  no sample for such an expert calls it on one sample whose output enters the result multiplied by 0 (the
  forward all-gathers and the backward reduce-scatters then match). SGTS exit steps are drawn from a generator
  shared by all ranks (`shared_draw_seed`), so one exit step holds for the whole global batch (as it does for
  a single process's batch).
- Gradients: a parameter that no rank used in a backward (e.g. the generator expert an SGTS exit step did not
  call) gets no gradient and takes no optimiser step; one that another rank used gets a zero gradient here, so
  that all ranks reduce the same tensors (`used_on_some_rank`).
- Checkpoints of sharded roles are torch.distributed.checkpoint folders every rank writes its shards into
  (pdmd_core.distributed_checkpoint, pdmd_core.trainer_state); loading full tensors into DTensors is in the leaf
  module `pdmd_core.dtensor_state`, which the roles and the trainer use without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from pdmd_core.models.moe import MoEVelocity
from pdmd_core.protocols import Conditioning
from pdmd_core.roles import FakeScore, GeneratorExperts, Teacher

WrapModule = Callable[[str, nn.Module], nn.Module]


class RankSyncedMoE(MoEVelocity):
    """MoEVelocity whose experts are called in the same order on every rank (for sharded experts).

    The result on each rank equals MoEVelocity's for its own batch: a rank's extra call on an expert it does not
    route to adds `0 · (its output)` (its gradients are zeros, which the reduce-scatter averages in)."""

    def __init__(self, experts: list[nn.Module], boundary: float) -> None:
        super().__init__(experts, boundary)
        self.joined_calls = 0  # calls made only to take part in another rank's collectives (diagnostic)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        high = t >= self.boundary
        masks = (high, ~high)
        local = torch.tensor([int(bool(m.any())) for m in masks], device=t.device)
        used = local.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(used, op=dist.ReduceOp.MAX)
        out: Tensor | None = None
        mixed = bool(local.all())
        if mixed:
            out = torch.empty_like(x_t)
        extra = x_t.new_zeros(())
        for idx, mask in enumerate(masks):
            if not used[idx]:
                continue
            expert = self.experts[idx]
            if not local[idx]:  # another rank routes samples here: join its collectives with one sample
                self.joined_calls += 1
                one = None if cond is None else cond.index(torch.arange(1, device=x_t.device))
                extra = extra + expert(x_t[:1], t[:1], one).sum().nan_to_num() * 0.0
            elif not mixed:
                out = expert(x_t, t, cond)
            else:
                assert out is not None
                sel = mask.nonzero(as_tuple=True)[0]
                sub = None if cond is None else cond.index(sel)
                out[sel] = expert(x_t[sel], t[sel], sub).to(out.dtype)
        assert out is not None
        return out + extra if extra.requires_grad else out


def _synced(experts: list[nn.Module], boundary: float) -> nn.Module:
    return experts[0] if len(experts) == 1 else RankSyncedMoE(experts, boundary)


def wrap_roles(teacher: Teacher, fake: FakeScore, generator: GeneratorExperts, wrap: WrapModule) -> None:
    """Apply `wrap` to every role module and re-link the roles to the returned modules (see module doc)."""
    sources = fake._sources  # the teacher's experts (a one-element list for a single teacher)
    if len(sources) > 1 and not isinstance(teacher.module, MoEVelocity):
        raise ValueError(f"wrap_module needs a MoEVelocity teacher for an MoE bundle (its routing is re-synced "
                         f"across ranks), got {type(teacher.module).__name__}")
    wrapped_teacher = [wrap(f"teacher/{i}", m) for i, m in enumerate(sources)]
    teacher_boundary = getattr(teacher.module, "boundary", 0.0)
    teacher.module = _synced(wrapped_teacher, teacher_boundary).eval()
    fake._sources = wrapped_teacher
    fake.experts = [wrap(f"fake/{i}", m) for i, m in enumerate(fake.experts)]
    fake.module = _synced(fake.experts, fake.boundary if fake.boundary is not None else 0.0)
    if generator.kind == "full":
        generator.experts = [wrap(f"generator/{k}", m) for k, m in enumerate(generator.experts)]
        return
    relink = {}
    for i, backbone in enumerate(generator.backbones):
        relink[id(backbone)] = wrap(f"generator_backbone/{i}", backbone)
    generator.backbones = [relink[id(b)] for b in generator.backbones]
    for expert in generator.experts:
        expert.__dict__["backbone"] = relink[id(expert.backbone)]  # a shared, non-submodule reference
    generator.set_trainable(sorted(generator._trainable))


def materialize_modules(modules: list[nn.Module], materialize: Callable[[nn.Module, torch.device], None] | None,
                        device: torch.device) -> int:
    """Fill every module that still holds empty (meta) parameters with a bundle's `materialize`, once each.
    Without a `materialize` (a dry run's meta bundle) nothing is filled. Returns the modules filled."""
    if materialize is None:
        return 0
    filled: set[int] = set()
    for module in modules:
        if id(module) not in filled and any(p.is_meta for p in module.parameters()):
            materialize(module, device)
            filled.add(id(module))
    return len(filled)


def materialize_roles(fake: FakeScore, generator: GeneratorExperts,
                      materialize: Callable[[nn.Module, torch.device], None] | None, device: torch.device) -> int:
    """`materialize_modules` over every role module — after `wrap_roles`, so each rank allocates and reads only
    its own shards. The teacher's experts are the fake's sources."""
    return materialize_modules([*fake._sources, *fake.experts, *generator.modules()], materialize, device)


def has_sharded_parameters(modules: list[nn.Module]) -> bool:
    return any(isinstance(p, DTensor) for m in modules for p in m.parameters())


def used_on_some_rank(params: list[nn.Parameter], device: torch.device) -> list[bool]:
    """Per parameter: whether backward gave it a gradient on at least one rank (an all-reduce MAX over
    torch.distributed's default group when it is initialised; this rank's own answer otherwise). Collective:
    every rank calls it with the same parameter list. A parameter no rank used must not take an optimiser step
    (AdamW on a zero gradient still moves it: v decays, the step count grows, weight decay applies)."""
    local = [p.grad is not None for p in params]
    if not params or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    flags = torch.tensor([int(u) for u in local], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [bool(f) for f in flags.tolist()]


def shared_draw_seed(seed: int, global_step: int, draw: int) -> int:
    """Seed of the generator all ranks share for the `draw`-th shared draw of generator step `global_step`."""
    return (seed * 1_000_003 + global_step * 1009 + draw) % (2**63)
