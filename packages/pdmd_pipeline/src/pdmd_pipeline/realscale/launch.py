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

`tracking` (a `pdmd_pipeline.jobs.TrackingTarget`): rank 0 logs the run to MLflow through the spooled tracker as
the CPU tier's jobs do — the run with its tags (and SLURM ids), the resolved config as params, every generator
iteration's metrics once (steps already in the spool are skipped after a resume), the end of the run.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import torch

from pdmd_core.config import DistillConfig
from pdmd_pipeline.jobs import TrackingTarget


def rank_run_dir(run_dir: Path, rank: int) -> Path:
    return run_dir if rank == 0 else run_dir / "ranks" / str(rank)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ValueError(f"batch_size {global_batch} (global) is not divisible by the {world_size} ranks")
    return global_batch // world_size


def resolve_config(config: str | Path | DistillConfig, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """A run config from a YAML path or an already validated DistillConfig, with `overrides` applied."""
    from pdmd_core.config import config_from_dict, load_config

    if isinstance(config, DistillConfig):
        return config_from_dict(config.model_dump(mode="json"), overrides) if overrides else config
    return load_config(config, overrides)


def _rank0_tracker(target: TrackingTarget, cfg: DistillConfig, world_size: int) -> tuple[Any, set[int]]:
    from pdmd_pipeline.jobs import SLURM_ENV, flatten, logged_steps, make_tracker

    tracker = make_tracker(target)
    slurm = {k: os.environ[v] for k, v in SLURM_ENV.items() if v in os.environ}
    tracker.start(target.experiment, target.run_name, {**target.tags, **slurm, "world_size": str(world_size)},
                  target.parent_key)
    already = logged_steps(tracker)
    if not already:
        tracker.log_params(flatten(cfg.model_dump(mode="json")))
    return tracker, already


def train_rank(config: str | Path | DistillConfig, run_dir: str | Path, overrides: dict[str, Any] | None = None,
               backend: str | None = None, tracking: TrackingTarget | None = None) -> dict[str, Any]:
    """Run this task's rank of a data-parallel distillation; returns the rank's final trainable state."""
    from pdmd_core.callbacks import MetricsJsonl
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

    cfg = resolve_config(config, overrides)
    if cfg.model is None:
        raise ValueError(f"{config} has no `model` section")
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    ctx = init_distributed(backend, device_type)
    tracker = None
    try:
        if tracking is not None and ctx.is_main:
            tracker, already = _rank0_tracker(tracking, cfg, ctx.world_size)
        cfg = cfg.model_copy(update={"batch_size": per_rank_batch(cfg.batch_size, ctx.world_size),
                                     "device": str(ctx.device)})
        bundle = build_model(cfg.model.kind, cfg.model.params, ctx.device)  # type: ignore[union-attr]
        folder = rank_run_dir(Path(run_dir), ctx.rank)
        folder.mkdir(parents=True, exist_ok=True)
        callbacks: list[Any] = [MetricsJsonl(folder / "metrics.jsonl")] if ctx.is_main else []
        if tracker is not None:
            from pdmd_pipeline.jobs import TrackingCallback

            callbacks.append(TrackingCallback(tracker, already))
        plan = bundle.extras.get("params")
        fsdp = ctx.distributed and bool(getattr(plan, "fsdp", False))
        if fsdp:
            sharding: dict[str, Any] = {"wrap_module": fsdp2_role_wrapper(
                ctx, bool(getattr(plan, "activation_checkpointing", True)),
                autocast=autocast_dtype_of(bundle) is not None)}
        else:
            sharding = {"grad_sync": functools.partial(average_gradients, ctx=ctx)}
        trainer = Trainer(cfg, bundle, folder, callbacks=callbacks, progress=ctx.is_main, rank=ctx.rank, **sharding)
        start = time.perf_counter()
        trainer.fit()
        if tracker is not None:
            tracker.log_metrics({"train_seconds": time.perf_counter() - start}, trainer.global_step)
        state = {"generator": [trainer.generator.expert_state(e) for e in range(len(trainer.generator.experts))],
                 "fake": trainer.fake.state_dict()}
        state = gather_for_checkpoint(state, keep_full=True)  # full tensors on every rank (collective)
        if tracker is not None:
            tracker.end("FINISHED")
            tracker = None
        return {"rank": ctx.rank, "world_size": ctx.world_size, "sharding": "fsdp2" if fsdp else "replicated",
                **state}
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    finally:
        shutdown_distributed()
        torch.set_grad_enabled(True)


def submit_training(config: str | Path | DistillConfig, run_dir: str | Path, profile_path: str | Path,
                    overrides: dict[str, Any] | None = None, tracking: TrackingTarget | None = None) -> Any:
    """Submit `train_rank` as one SLURM job of nodes x tasks_per_node ranks; returns the submitit job."""
    from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile, submit_ranks

    profile = load_distributed_profile(profile_path)
    spec: str | DistillConfig
    if isinstance(config, DistillConfig):
        name, spec = f"pdmd-{Path(run_dir).parent.name}-{Path(run_dir).name}", config
    else:
        name, spec = f"pdmd-{Path(config).stem}", str(Path(config).resolve())
    executor = distributed_executor(profile, Path(run_dir) / "slurm", name=name)
    return submit_ranks(executor, train_rank, spec, str(Path(run_dir).resolve()), overrides, tracking=tracking)
