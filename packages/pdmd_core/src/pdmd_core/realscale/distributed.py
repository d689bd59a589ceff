"""Distributed training helpers: process groups from SLURM, DDP / FSDP2 wrapping, bf16 autocast,
activation checkpointing and gradient accumulation to a global batch.

- `init_distributed(backend=None)`: initialises `torch.distributed` (nccl on GPU, gloo on CPU) from the
  torchrun-style variables MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK (set by torchrun, or exported from
  SLURM's by the pipeline package's job wrapper); without them it
  returns a single-process context.
- `wrap_ddp(module, ctx)`, `shard_fsdp2(module, ctx, block_types)`: `fully_shard` on every transformer block
  and on the root, bf16 parameters with fp32 gradient reduction on GPU. `fsdp2_role_wrapper(ctx)`: the
  trainer's `wrap_module` hook (teacher, fake scores, generator experts / LoRA backbones sharded per block,
  activation checkpointing on the trainable ones).
- `average_gradients(params, ctx)`: all-reduce mean of `.grad` (DDP semantics for modules that cannot be
  wrapped, e.g. LoRA experts switched between calls) — the trainer's grad-sync hook.
- `any_rank(flag, ctx)`, `max_over_ranks(value, ctx)`: the same answer on every rank (an all-reduce; e.g. a stop
  signal that reached the ranks at slightly different times, so that all ranks stop at the same iteration).
- `accumulation_plan(global_batch, world_size, micro_batch)`: micro-steps per optimiser step.
- `autocast(device, dtype)`: bf16 autocast on CUDA, a no-op on CPU (CPU runs stay fp32 and bit-reproducible).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, device_type: str | None = None) -> DistContext:
    """Initialise torch.distributed from torchrun-style variables; single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return current_context(device_type)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if world == 1:
        return DistContext(device=torch.device(device_type))
    backend = backend or ("nccl" if device_type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return current_context(device_type)


def current_context(device_type: str | None = None) -> DistContext:
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=torch.device(device_type))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend())


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, ctx: DistContext) -> nn.Module:
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def shard_fsdp2(module: nn.Module, ctx: DistContext, block_types: Sequence[type[nn.Module]] = (),
                bf16: bool | None = None, reshard_after_forward: bool | None = None,
                cast_forward_inputs: bool = True) -> nn.Module:
    """FSDP2: `fully_shard` each block (e.g. WanTransformerBlock) and then the root module, in place.

    On GPU parameters are gathered in bf16 and gradients reduced in fp32 (master weights stay fp32).
    `reshard_after_forward=None` is FSDP2's default (the root stays gathered after forward); True frees every
    gathered parameter after each forward (the trainer's roles: many no-grad forwards of several models).
    `cast_forward_inputs=False` leaves the inputs' dtype to autocast (see `fsdp2_role_wrapper`).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    bf16 = ctx.device.type == "cuda" if bf16 is None else bf16
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                   cast_forward_inputs=cast_forward_inputs) if bf16
              else MixedPrecisionPolicy())
    for sub in module.modules():
        if block_types and isinstance(sub, tuple(block_types)):
            fully_shard(sub, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(module, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return module


def fsdp2_role_wrapper(ctx: DistContext, activation_checkpointing: bool = True,
                       autocast: bool = True) -> Callable[[str, nn.Module], nn.Module]:
    """The trainer's `wrap_module` for FSDP2: each role module (a WanVelocity / QwenImageVelocity, or a LoRA
    backbone) is sharded per transformer block and at its root; trainable roles (fake scores, generator
    experts) also get per-block activation checkpointing (the frozen teacher runs without grad).

    On GPU with `autocast` (the roles' forwards run under bf16 autocast) parameters are gathered in bf16 and
    FSDP2 does not cast the blocks' inputs: diffusers checkpoints each block from outside its FSDP unit, and
    FSDP2 releases before torch 2.14 skip that cast when the block is recomputed in backward, so the recompute
    saw fp32 inputs where the forward had bf16 ones (CheckpointError, seen on an H200 with torch 2.11); autocast
    casts identically in both passes. Without autocast the parameters are gathered in fp32."""

    def wrap(role: str, module: nn.Module) -> nn.Module:
        transformer = getattr(module, "transformer", None)
        if not isinstance(transformer, nn.Module):
            raise TypeError(f"role {role!r}: expected a velocity model with a `.transformer` (WanVelocity, "
                            f"QwenImageVelocity), got {type(module).__name__}")
        if activation_checkpointing and not role.startswith("teacher"):
            enable_activation_checkpointing(transformer)
        bf16 = ctx.device.type == "cuda" and autocast
        return shard_fsdp2(module, ctx, transformer_block_types(transformer), bf16=bf16, reshard_after_forward=True,
                           cast_forward_inputs=False)

    return wrap


def transformer_block_types(transformer: nn.Module) -> list[type[nn.Module]]:
    """The classes diffusers marks as unsplittable blocks (`_no_split_modules`) — the FSDP wrap unit."""
    names = set(getattr(transformer, "_no_split_modules", None) or [])
    return sorted({type(m) for m in transformer.modules() if type(m).__name__ in names}, key=lambda c: c.__name__)


def enable_activation_checkpointing(transformer: nn.Module) -> None:
    """diffusers' per-block gradient checkpointing (recompute each block in backward)."""
    if not getattr(transformer, "_supports_gradient_checkpointing", False):
        raise ValueError(f"{type(transformer).__name__} does not support gradient checkpointing")
    transformer.enable_gradient_checkpointing()  # type: ignore[operator]


@torch.no_grad()
def average_gradients(params: Iterable[nn.Parameter], ctx: DistContext | None = None) -> None:
    """Replace every `.grad` by its mean over ranks (what DDP does in backward)."""
    ctx = ctx or current_context()
    if not ctx.distributed:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world_size)


def max_over_ranks(value: int, ctx: DistContext | None = None) -> int:
    """The largest of every rank's `value` (collective: every rank must call it at the same point)."""
    ctx = ctx or current_context()
    if not ctx.distributed:
        return int(value)
    tensor = torch.tensor([int(value)], device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def any_rank(flag: bool, ctx: DistContext | None = None) -> bool:
    """Whether `flag` is set on at least one rank (collective: every rank must call it at the same point)."""
    return bool(max_over_ranks(int(bool(flag)), ctx))


def accumulation_plan(global_batch: int, world_size: int, micro_batch: int) -> int:
    """Micro-steps per optimiser step so that world_size x micro_batch x steps == global_batch."""
    if min(global_batch, world_size, micro_batch) < 1:
        raise ValueError(f"batch sizes and world size must be >= 1, got global={global_batch}, "
                         f"world={world_size}, micro={micro_batch}")
    per_step = world_size * micro_batch
    if global_batch % per_step:
        raise ValueError(f"global batch {global_batch} is not a multiple of world_size x micro_batch = "
                         f"{world_size} x {micro_batch}")
    return global_batch // per_step


def rank_slice(global_batch: int, ctx: DistContext, micro_batch: int, micro_step: int) -> slice:
    """Rows of the global batch that rank `ctx.rank` processes at accumulation micro-step `micro_step`."""
    start = (micro_step * ctx.world_size + ctx.rank) * micro_batch
    if start + micro_batch > global_batch:
        raise ValueError(f"micro-step {micro_step} of rank {ctx.rank} runs past the global batch {global_batch}")
    return slice(start, start + micro_batch)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None = torch.bfloat16) -> Iterator[None]:
    """bf16 autocast on CUDA; on CPU a no-op so CPU runs stay fp32 and reproducible."""
    if device.type == "cuda" and dtype is not None:
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        yield


@contextlib.contextmanager
def no_sync_unless(module: nn.Module, last_micro_step: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last accumulation micro-step."""
    if not last_micro_step and hasattr(module, "no_sync"):
        with module.no_sync():  # type: ignore[operator]
            yield
    else:
        yield
