"""Data-parallel distillation across the tasks of a SLURM job (one Trainer per rank), requeued on time-out.

`train_rank(config, run_dir, overrides, backend, tracking)` is what every task runs: it initialises
torch.distributed from the SLURM environment, builds the model on the rank's device and runs the trainer with
`world_size` set: the config's `batch_size` is the global batch, every rank draws it from one shared stream and
trains on its rows, so the run is the same run on any number of ranks (pdmd_core.trainer). With several ranks
and a real-scale model whose params say `fsdp: true` (the default) every role is sharded with FSDP2
(`distributed.fsdp2_role_wrapper`, activation checkpointing per `activation_checkpointing`), which reduces
gradients itself; otherwise (`fsdp: false`, or a model kind without these params) each rank holds full replicas
and gradients are averaged over ranks after every backward (`grad_sync`). Under FSDP2 the transformers are
built empty and each rank reads only its shards from the safetensors (model param `weights`).

All ranks share `run_dir`: checkpoints are torch.distributed.checkpoint folders `checkpoints/ckpt_<step>.dcp`
that every rank writes its shards into and rank 0 commits once all are done (pdmd_core.distributed_checkpoint);
a job resumes from the newest committed one, on any number of ranks. Rank 0 alone writes `config.yaml`,
`metrics.jsonl`, `result.json` and, with a `tracking` target, logs to MLflow through the spool: params once,
each step's metrics once over all requeues, tags with the SLURM job ids, and the run's end.

`submit_training(config, run_dir, profile_path, overrides, tracking)` submits `CheckpointableTraining` as one
job of nodes x tasks_per_node tasks. On USR2 (SLURM's pre-emption signal, or `--signal=USR2@N` before the time
limit; the profile's `signal_delay_s`) or TERM, the signal reaches the tasks at slightly different times, so
each rank only notes it and all ranks agree at every iteration boundary (`agree_on_stop`, an all-reduce) to stop
after the same iteration, all adopting USR2 if any rank got it (a requeue wins over a stop): they write a
committed checkpoint together, then submitit requeues the job (up to the profile's `max_num_timeout` time-outs)
and the requeued job resumes from that checkpoint. A signal during the run's last iteration, or after it, is not
acted on: the run finishes and the job exits 0 (`pdmd_pipeline.jobs.StopOnSignal`).
"""

from __future__ import annotations

import functools
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pdmd_core.config import DistillConfig
from pdmd_pipeline.jobs import StopFlag, StopOnSignal, TrackingTarget

RESULT_FILE = "result.json"


def resolve_config(config: str | Path | DistillConfig, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """A validated config from a YAML path or a DistillConfig, with `overrides` deep-merged."""
    from pdmd_core.config import config_from_dict, load_config

    if isinstance(config, DistillConfig):
        return config_from_dict(config.model_dump(mode="json"), overrides) if overrides else config
    return load_config(config, overrides)


def train_rank(config: str | Path | DistillConfig, run_dir: str | Path, overrides: dict | None = None,
               backend: str | None = None, tracking: TrackingTarget | None = None) -> dict[str, Any]:
    """Run this task's rank of a data-parallel distillation (resuming from the run's newest committed
    checkpoint); returns a summary (rank, world size, sharding, steps, final checkpoint)."""
    return run_training(config, run_dir, overrides, backend, tracking)


def run_training(config: str | Path | DistillConfig, run_dir: str | Path, overrides: dict | None = None,
                 backend: str | None = None, tracking: TrackingTarget | None = None,
                 stop_requested: StopFlag | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """`train_rank`, stopping with a committed checkpoint (raising `Preempted`) at the first iteration boundary
    after `stop_requested()` turned true on any rank; `callbacks` are added on every rank."""
    import yaml

    from pdmd_core.callbacks import Callback, MetricsJsonl
    from pdmd_core.checkpoint import latest_checkpoint
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import (
        average_gradients,
        fsdp2_role_wrapper,
        init_distributed,
        shutdown_distributed,
    )
    from pdmd_core.roles import autocast_dtype_of
    from pdmd_core.trainer import Trainer, global_batch_rows
    from pdmd_pipeline.jobs import Preempted, PreemptionCallback, TrackingCallback, slurm_tags, start_tracking

    cfg = resolve_config(config, overrides)
    if cfg.model is None:
        raise ValueError(f"{config} has no `model` section")
    run_dir = Path(run_dir)
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    ctx = init_distributed(backend, device_type)
    tracker = None
    try:
        cfg = cfg.model_copy(update={"device": str(ctx.device)})
        global_batch_rows(cfg.batch_size, ctx.rank, ctx.world_size)  # a bad split fails before any write
        bundle = build_model(cfg.model.kind, cfg.model.params, ctx.device)  # type: ignore[union-attr]
        plan = bundle.extras.get("params")
        fsdp = ctx.distributed and bool(getattr(plan, "fsdp", False))
        if fsdp:
            sharding: dict[str, Any] = {"wrap_module": fsdp2_role_wrapper(
                ctx, bool(getattr(plan, "activation_checkpointing", True)),
                autocast=autocast_dtype_of(bundle) is not None)}
        else:
            sharding = {"grad_sync": functools.partial(average_gradients, ctx=ctx)} if ctx.distributed else {}
        own: list[Callback] = [MetricsJsonl(run_dir / "metrics.jsonl")] if ctx.is_main else []
        trainer = Trainer(cfg, bundle, run_dir, callbacks=[*own, *callbacks], progress=ctx.is_main, rank=ctx.rank,
                          world_size=ctx.world_size, **sharding)
        resumed_from = trainer.resume()  # a checkpoint of another config fails here, before anything is written
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            resolved = cfg.model_dump(mode="json")
            (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
            if tracking is not None:
                tracker, already = start_tracking(tracking, resolved, {"world_size": str(ctx.world_size)})
                trainer.callbacks.append(TrackingCallback(tracker, already))
        if stop_requested is not None:  # after tracking: the stop step's metrics are logged before the stop
            flush = (lambda: tracker.flush(force=True)) if tracker is not None else (lambda: None)
            trainer.callbacks.append(PreemptionCallback(functools.partial(agree_on_stop, stop_requested, ctx),
                                                        f"{run_dir.name} rank {ctx.rank}", flush))
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
        final = latest_checkpoint(trainer.checkpoint_dir)
        result = {"rank": ctx.rank, "world_size": ctx.world_size, "sharding": "fsdp2" if fsdp else "replicated",
                  "steps": trainer.global_step, "checkpoint": str(final), "train_seconds": seconds,
                  "resumed_from": None if resumed_from is None else str(resumed_from), "slurm": slurm_tags()}
        if ctx.is_main:
            (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
            if tracker is not None:
                tracker.log_metrics({"train_seconds": seconds}, trainer.global_step)
                tracker.log_artifact(run_dir / "config.yaml")
                tracker.end("FINISHED")
        return result
    except Preempted:
        raise
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    finally:
        shutdown_distributed()
        torch.set_grad_enabled(True)


# The stop signals by precedence, lowest first: when ranks got different ones, the one that requeues wins. USR2
# (pre-emption / time limit) makes submitit requeue the job; TERM leaves the job to SLURM, which requeues it only
# when the TERM came from a requeue (and cancels it on `scancel`): a rank's USR2 means the run must come back.
STOP_PRECEDENCE = (signal.SIGTERM, signal.SIGUSR2)


def stop_rank(signum: int | None) -> int:
    """A stop signal's precedence (0: none), the value the ranks take the maximum of."""
    if signum is None:
        return 0
    if signum not in STOP_PRECEDENCE:
        raise ValueError(f"signal {signum} is not a stop signal; expected one of "
                         f"{[signal.Signals(s).name for s in STOP_PRECEDENCE]}")
    return STOP_PRECEDENCE.index(signum) + 1


def agree_on_stop(flag: StopFlag, ctx: Any) -> bool:
    """Whether some rank got a stop signal, with the signal of highest precedence (USR2 over TERM) adopted on every
    rank (an all-reduce each iteration): all ranks stop after the same iteration, and the first task requeues on
    USR2 even if its own copy of the signal has not arrived yet, or a TERM reached it instead."""
    from pdmd_core.realscale.distributed import max_over_ranks

    rank = max_over_ranks(stop_rank(flag.signum), ctx)
    if rank:
        flag.signum = STOP_PRECEDENCE[rank - 1]
    return bool(rank)


class CheckpointableTraining(StopOnSignal):
    """What `submit_training` submits: `run_training` on every task of the job, requeued by submitit on
    pre-emption / time-out after a checkpoint that all ranks agreed on (see the module doc)."""

    def run(self, stop_requested: StopFlag, config: str | Path | DistillConfig,  # type: ignore[override]
            run_dir: str | Path, overrides: dict | None = None, backend: str | None = None,
            tracking: TrackingTarget | None = None) -> dict[str, Any]:
        from pdmd_pipeline.realscale.slurm import export_torch_env_from_slurm

        export_torch_env_from_slurm()
        return run_training(config, run_dir, overrides, backend, tracking, stop_requested)

    def after_handover(self, flag: StopFlag, wait_s: float = 120.0) -> None:
        """Tasks other than the first: submitit's handler only requeues from the first task, and a task that
        exits now could take the job step down before the requeue is through; SLURM's requeue ends us."""
        time.sleep(wait_s)


def submit_training(config: str | Path | DistillConfig, run_dir: str | Path, profile_path: str | Path,
                    overrides: dict | None = None, tracking: TrackingTarget | None = None) -> Any:
    """Submit the training as one SLURM job of nodes x tasks_per_node ranks; returns the submitit job."""
    from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile

    profile = load_distributed_profile(profile_path)
    # a study's run: name the job after its run folder (arm / seed), a config file: after the file
    run = Path(run_dir)
    name = f"{run.parent.name}-{run.name}" if isinstance(config, DistillConfig) else Path(config).stem
    executor = distributed_executor(profile, Path(run_dir) / "slurm", name=f"pdmd-{name}")
    payload = config if isinstance(config, DistillConfig) else str(Path(config).resolve())
    return executor.submit(CheckpointableTraining(), payload, str(Path(run_dir).resolve()), overrides, None, tracking)
