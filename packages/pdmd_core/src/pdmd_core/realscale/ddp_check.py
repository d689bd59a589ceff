"""A distributed-training check for a cluster: the same fake-score training under 1 process, DDP or FSDP2.

`train_fake_score_steps(mode, ...)` trains a tiny Wan fake score with the Phased DMD critic loss (Eq. 11
target, Eq. 13 weight) for a few AdamW steps on a fixed synthetic global batch. In "ddp"/"fsdp2" each rank
processes its rows of the global batch with gradient accumulation; since the loss is a mean, the averaged
gradient equals the single-process gradient of the whole global batch, so the final parameters must agree
(up to float summation order). Run it as a multi-task SLURM job (`pdmd realscale check-distributed`) to
validate a cluster's process-group setup before a long run.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from pdmd_core.flow import expand_like, subinterval_loss_weight, subinterval_velocity_target, transition
from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.distributed import (
    DistContext,
    accumulation_plan,
    init_distributed,
    no_sync_unless,
    rank_slice,
    shard_fsdp2,
    shutdown_distributed,
    transformer_block_types,
    wrap_ddp,
)

Mode = Literal["single", "ddp", "fsdp2"]


def synthetic_batch(global_batch: int, seed: int, s: float = 0.5) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(global_batch, 4, 1, 8, 8, generator=g)
    noise = torch.randn(global_batch, 4, 1, 8, 8, generator=g)
    t = s + (1 - s) * torch.rand(global_batch, generator=g).clamp(0.05, 0.95)
    embeds = torch.randn(global_batch, 6, 32, generator=g)
    return {"x_s": x_s, "noise": noise, "t": t, "embeds": embeds, "s": torch.tensor(s)}


def critic_loss(model: torch.nn.Module, batch: dict[str, Tensor], rows: slice) -> Tensor:
    s = float(batch["s"])
    x_s, noise, t = batch["x_s"][rows], batch["noise"][rows], batch["t"][rows]
    x_t = transition(x_s, s, expand_like(t, x_s), noise)
    target = subinterval_velocity_target(x_s, noise, s, expand_like(t, x_s))
    weight = expand_like(subinterval_loss_weight(s, t), x_s)
    v = model(x_t, t, Conditioning(batch["embeds"][rows]))
    return (weight * (v - target) ** 2).mean()


def train_fake_score_steps(mode: Mode = "single", global_batch: int = 4, micro_batch: int = 4, steps: int = 3,
                           seed: int = 0, lr: float = 1e-3) -> dict[str, Tensor] | None:
    """Final parameters (full, on CPU) on rank 0; None on other ranks."""
    from pdmd_core.realscale.tiny import tiny_wan_transformer
    from pdmd_core.realscale.wan import WanVelocity

    torch.set_num_threads(1)
    ctx = init_distributed(device_type="cpu") if mode != "single" else DistContext()
    try:
        model: torch.nn.Module = WanVelocity(tiny_wan_transformer(seed)).train()
        if mode == "ddp":
            model = wrap_ddp(model, ctx)
        elif mode == "fsdp2":
            model = shard_fsdp2(model, ctx, transformer_block_types(model.transformer))  # type: ignore[arg-type]
        accumulate = accumulation_plan(global_batch, ctx.world_size, micro_batch)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.0, 0.999))
        for step in range(steps):
            batch = synthetic_batch(global_batch, seed + step)
            optimiser.zero_grad(set_to_none=True)
            for micro in range(accumulate):
                with no_sync_unless(model, micro == accumulate - 1):
                    loss = critic_loss(model, batch, rank_slice(global_batch, ctx, micro_batch, micro))
                    (loss / accumulate).backward()
            optimiser.step()
        if ctx.is_main:
            return _full_state(model, mode)
        if mode == "fsdp2":  # gathering a sharded state is collective: every rank takes part
            _full_state(model, mode)
        return None
    finally:
        if mode != "single":
            shutdown_distributed()


def _full_state(model: torch.nn.Module, mode: Mode) -> dict[str, Tensor]:
    if mode == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state: Any = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        inner = getattr(model, "module", model)
        state = inner.state_dict()
    return {k.removeprefix("module."): torch.as_tensor(v).detach().clone() for k, v in state.items()}



def compare_states(distributed: dict[str, Tensor] | None, single: dict[str, Tensor] | None,
                   initial: dict[str, Tensor] | None, rel_tol: float = 0.01, abs_tol: float = 1e-6) -> dict[str, Any]:
    """Whether the distributed run trained like the single process: per tensor, the norm of the difference is at
    most `rel_tol` of the norm of that tensor's training update (+ abs_tol).

    Float summation order differs between process counts, so exact equality is not expected. The verdict is on
    norms, not on the worst element: AdamW divides each element's averaged gradient by its own RMS, so an element
    whose gradients change sign between steps (m ≈ 0) turns a rounding-level gradient difference into a
    difference that is a large share of its own small update (measured: one element of a tiny Wan cross-attention
    key projection at 1.04 % of the tensor's largest update, the tensor's norm ratio 0.034 %). A semantic
    difference (a missing gradient share, an extra optimiser step, another batch) moves whole tensors and shows in
    the norm. The worst element is still reported (`max_abs_diff`, `worst_element_over_update`)."""
    if distributed is None or single is None or initial is None:
        raise ValueError("compare_states needs the rank-0 state of each run")
    if distributed.keys() != single.keys():
        raise ValueError("the distributed and single-process models have different parameters")
    worst_key, worst_ratio, max_diff, worst_element = "", 0.0, 0.0, 0.0
    for key in single:
        update = single[key] - initial[key]
        diff = distributed[key] - single[key]
        max_diff = max(max_diff, float(diff.abs().max()))
        worst_element = max(worst_element, float(diff.abs().max()) / (float(update.abs().max()) + abs_tol / rel_tol))
        ratio = float(diff.norm()) / (float(update.norm()) + abs_tol / rel_tol)
        if ratio > worst_ratio:
            worst_key, worst_ratio = key, ratio
    max_update = max(float((single[k] - initial[k]).abs().max()) for k in single)
    return {"same_training": worst_ratio <= rel_tol, "max_abs_diff": max_diff, "max_update": max_update,
            "worst_tensor": worst_key, "worst_diff_over_update": worst_ratio,
            "worst_element_over_update": worst_element}
