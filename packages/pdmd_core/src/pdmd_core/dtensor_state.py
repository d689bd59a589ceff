"""State of (possibly) sharded tensors: DTensor ↔ full tensors / this rank's shard. A leaf module (torch only),
used by the roles, the trainer and the role-sharding glue alike.

Checkpoints of sharded roles do not go through here: they are torch.distributed.checkpoint folders in which every
rank writes only its shards (pdmd_core.distributed_checkpoint). What is here:
- `gather_for_checkpoint`: full copies of DTensors (collective), e.g. to compare runs or to record a state.
- Loading a full tensor (a single-file checkpoint of one process) into sharded roles (`as_shard_of`, `copy_into`,
  `shard_state_like`, `shard_optimizer_state`): each rank takes its rows without communication.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, distribute_tensor


def gather_for_checkpoint(state: Any, keep_full: bool | None = None) -> Any:
    """Copy of `state` (nested dicts / lists / tuples) with every DTensor replaced by a CPU tensor: the full
    tensor where `keep_full` (default: on rank 0), else this rank's shard. Collective: all ranks call it."""
    if keep_full is None:
        keep_full = not dist.is_initialized() or dist.get_rank() == 0
    if isinstance(state, DTensor):
        full = state.full_tensor().detach()  # the all-gather runs on every rank
        return full.cpu() if keep_full else state.to_local().detach().cpu().clone()
    if isinstance(state, dict):
        return {k: gather_for_checkpoint(v, keep_full) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(gather_for_checkpoint(v, keep_full) for v in state)
    return state


def as_shard_of(value: Tensor, template: Tensor) -> Tensor:
    """`value` (the full tensor, or this rank's shard) as a DTensor laid out like `template`; unchanged when
    `template` is not a DTensor. No communication."""
    if not isinstance(template, DTensor) or isinstance(value, DTensor):
        return value
    value = value.detach().to(device=template.device, dtype=template.dtype)
    if value.shape == template.shape:
        return distribute_tensor(value, template.device_mesh, template.placements, src_data_rank=None)
    local_shape = template.to_local().shape
    if value.shape == local_shape:
        return DTensor.from_local(value, template.device_mesh, template.placements, shape=template.shape,
                                  stride=template.stride())
    raise ValueError(f"checkpoint tensor of shape {tuple(value.shape)} fits neither the parameter's shape "
                     f"{tuple(template.shape)} nor this rank's shard {tuple(local_shape)}")


@torch.no_grad()
def copy_into(target: Tensor, value: Tensor) -> None:
    """target.copy_(value) where target may be a DTensor and value a full tensor or this rank's shard."""
    target.copy_(as_shard_of(value, target))


def shard_state_like(state: dict[str, Tensor], template: dict[str, Tensor]) -> dict[str, Tensor]:
    """A module state dict whose tensors are laid out like the module's own (sharded) state dict."""
    return {k: as_shard_of(v, template[k]) if k in template else v for k, v in state.items()}


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict` of a single-file checkpoint: per-parameter moments back to DTensors."""
    for param, slots in optimizer.state.items():
        if not isinstance(param, DTensor):
            continue
        for key, value in slots.items():
            if isinstance(value, Tensor) and not isinstance(value, DTensor) and value.dim() > 0:
                slots[key] = as_shard_of(value, param)
