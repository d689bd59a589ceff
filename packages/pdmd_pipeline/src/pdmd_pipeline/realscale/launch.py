"""Data-parallel distillation across the tasks of a SLURM job (one Trainer per rank).

`train_rank(config, run_dir)` is what every task runs: it initialises torch.distributed from the SLURM
environment, splits the config's global `batch_size` over the ranks, builds the model on the rank's device
and runs the trainer, each rank drawing its own noise and prompts (trainer seed + 1000 x rank). With
several ranks and a real-scale model whose params say `fsdp: true` (the default) every role is sharded with
FSDP2 (`distributed.fsdp2_role_wrapper`, activation checkpointing per `activation_checkpointing`), which
reduces gradients itself; otherwise (`fsdp: false`, or a model kind without these params) each rank holds
full replicas and gradients are averaged over ranks after every backward (`grad_sync`). Rank 0 writes
`run_dir` (checkpoints, metrics.jsonl); rank r > 0 keeps its own resumable checkpoints in `run_dir/ranks/<r>`
(under FSDP2 every rank's hold its shards of the fake scores and optimiser state; rank 0's also hold the full
generator experts, which export reads). Under FSDP2 the transformers are built empty and each rank reads only
its shards from the safetensors (model param `weights`, realscale.sharded_weights). A requeued job reruns the same
function and every rank resumes from its latest checkpoint (same number of ranks). `submit_training` sends
it to SLURM with a distributed profile (`slurm/profiles/realscale_*.yaml`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch


def rank_run_dir(run_dir: Path, rank: int) -> Path:
    return run_dir if rank == 0 else run_dir / "ranks" / str(rank)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ValueError(f"batch_size {global_batch} (global) is not divisible by the {world_size} ranks")
    return global_batch // world_size


def train_rank(config: str | Path, run_dir: str | Path, overrides: dict[str, Any] | None = None,
               backend: str | None = None) -> dict[str, Any]:
    """Run this task's rank of a data-parallel distillation; returns the rank's final trainable state."""
    from pdmd_core.callbacks import MetricsJsonl
    from pdmd_core.config import load_config
    from pdmd_core.dtensor_state import gather_for_checkpoint
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import (
        average_gradients,
        fsdp2_role_wrapper,
        init_distributed,
        shutdown_distributed,
    )
    from pdmd_core.roles import autocast_dtype_of
    from pdmd_core.trainer import Trainer

    cfg = load_config(config, overrides)
    if cfg.model is None:
        raise ValueError(f"{config} has no `model` section")
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    ctx = init_distributed(backend, device_type)
    try:
        cfg = cfg.model_copy(update={"batch_size": per_rank_batch(cfg.batch_size, ctx.world_size),
                                     "device": str(ctx.device)})
        bundle = build_model(cfg.model.kind, cfg.model.params, ctx.device)  # type: ignore[union-attr]
        folder = rank_run_dir(Path(run_dir), ctx.rank)
        folder.mkdir(parents=True, exist_ok=True)
        callbacks = [MetricsJsonl(folder / "metrics.jsonl")] if ctx.is_main else []
        plan = bundle.extras.get("params")
        fsdp = ctx.distributed and bool(getattr(plan, "fsdp", False))
        if fsdp:
            sharding: dict[str, Any] = {"wrap_module": fsdp2_role_wrapper(
                ctx, bool(getattr(plan, "activation_checkpointing", True)),
                autocast=autocast_dtype_of(bundle) is not None)}
        else:
            sharding = {"grad_sync": functools.partial(average_gradients, ctx=ctx)}
        trainer = Trainer(cfg, bundle, folder, callbacks=callbacks, progress=ctx.is_main, rank=ctx.rank, **sharding)
        trainer.fit()
        state = {"generator": [trainer.generator.expert_state(e) for e in range(len(trainer.generator.experts))],
                 "fake": trainer.fake.state_dict()}
        state = gather_for_checkpoint(state, keep_full=True)  # full tensors on every rank (collective)
        return {"rank": ctx.rank, "world_size": ctx.world_size, "sharding": "fsdp2" if fsdp else "replicated",
                **state}
    finally:
        shutdown_distributed()
        torch.set_grad_enabled(True)


def submit_training(config: str | Path, run_dir: str | Path, profile_path: str | Path,
                    overrides: dict[str, Any] | None = None) -> Any:
    """Submit `train_rank` as one SLURM job of nodes x tasks_per_node ranks; returns the submitit job."""
    from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile, submit_ranks

    profile = load_distributed_profile(profile_path)
    executor = distributed_executor(profile, Path(run_dir) / "slurm", name=f"pdmd-{Path(config).stem}")
    return submit_ranks(executor, train_rank, str(Path(config).resolve()), str(Path(run_dir).resolve()), overrides)
