"""One arm × seed distillation job: train with the engine, log to MLflow (spooled), leave the student on disk.

`run_distill(job)` is a plain module-level function, so both executors can ship it (a local worker process or a
SLURM array task). Outputs in `job.run_dir`: `checkpoints/` (the engine's atomic checkpoints; the newest one is
the trained student), `metrics.jsonl` (every iteration's metrics), `student/` (the student alone: its experts'
weights and a manifest, `Student.from_export`), `config.yaml` (the resolved DistillConfig) and `result.json`.
To MLflow (spooled): params, tags, the dataset inputs, every iteration's metrics, system metrics (CPU, memory,
GPU) sampled beside training, the config and the student as an MLflow logged model.

`CheckpointableDistill` is what the SLURM executor submits: on SLURM's pre-emption/time-limit signal (USR2) the
job finishes the generator iteration it is in, writes a checkpoint, and hands over to submitit, which requeues
it; the requeued job resumes from that checkpoint (the engine restores roles, optimisers, EMA and RNG states,
so the result equals an uninterrupted run). Metrics of steps already spooled before the interruption are not
logged twice. `StopOnSignal` is that signal handling for any job (the multi-rank real-scale job uses it too);
`TrackingCallback`, `PreemptionCallback`, `start_tracking` are shared with it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from submitit.helpers import Checkpointable

from pdmd_core.callbacks import Callback, MetricsJsonl
from pdmd_core.config import DistillConfig
from pdmd_pipeline.layout import RUN_METRICS_FILE

RESULT_FILE = "result.json"
# Recorded as run tags and in result.json, so a sweep shows which SLURM array task ran each arm × seed.
SLURM_ENV = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_restart_count": "SLURM_RESTART_COUNT"}
CONFIG_FILE = "config.yaml"
STUDENT_DIR = "student"


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    experiment: str
    run_key: str
    parent_key: str | None
    spool_root: str
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    inputs: tuple[dict[str, str], ...] = ()  # dataset inputs (Tracker.log_inputs), logged once per run
    system_metrics_s: float = 5.0  # sampling interval of CPU/memory/GPU metrics; 0 turns them off


@dataclass(frozen=True)
class DistillJob:
    benchmark: str
    arm: str
    seed: int
    run_dir: str
    config: DistillConfig  # validated once when the params were resolved; a dict only where it is written
    tracking: TrackingTarget
    threads: int = 1
    progress: bool = False
    snapshots: tuple[int, ...] = ()  # generator iterations at which to keep the student (`snapshots/`)


class Preempted(RuntimeError):
    """Raised out of the training loop after the checkpoint that a pre-emption signal asked for."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → {'optim.lr_fake': 1e-4, ...} (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def logged_steps(tracker: Any) -> set[int]:
    """Training steps already spooled (system metrics count their own steps and are not among them)."""
    from pdmd_pipeline.system_metrics import PREFIX

    return {int(op["step"]) for op in tracker.spool.ops()
            if op["op"] == "metrics" and not all(k.startswith(PREFIX) for k in op["metrics"])}


def _has_op(tracker: Any, name: str) -> bool:
    return any(op["op"] == name for op in tracker.spool.ops())


def make_tracker(target: TrackingTarget) -> Any:
    from pdmd_pipeline.tracking import Tracker

    return Tracker(target.uri, target.run_key, Path(target.spool_root), enabled=target.enabled)


def slurm_tags() -> dict[str, str]:
    return {k: os.environ[v] for k, v in SLURM_ENV.items() if v in os.environ}


def start_tracking(target: TrackingTarget, params: dict[str, Any], tags: dict[str, str] | None = None
                   ) -> tuple[Any, set[int]]:
    """The run's tracker, started (once over requeues) with the target's tags, the SLURM job ids and `tags`;
    `params` (flattened) are logged the first time only; returns it with the steps whose metrics it already
    holds (a resumed job recomputes them and must not log them again)."""
    tracker = make_tracker(target)
    current = {**slurm_tags(), **(tags or {})}
    tracker.start(target.experiment, target.run_name, {**target.tags, **current}, target.parent_key)
    ops = tracker.spool.ops()
    if not any(op["op"] == "params" for op in ops):
        tracker.log_params(flatten(params))
    elif current:  # a requeued job: the current job id and restart count
        tracker.set_tags(current)
    return tracker, logged_steps(tracker)


class TrackingCallback(Callback):
    """Each generator iteration's metrics (+ phase) to the run's spooled MLflow tracker, each step once: a resumed
    run recomputes the steps after its checkpoint bit-identically, and those already spooled are not logged again."""

    def __init__(self, tracker: Any, already_logged: set[int]) -> None:
        self.tracker, self.already = tracker, already_logged

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        if step not in self.already:
            self.tracker.log_metrics({**metrics, "phase": float(phase)}, step)


SNAPSHOT_DIR = "snapshots"
SNAPSHOT_KEYS = ("format", "config", "phase", "phase_started", "global_step", "generator", "ema")


class StudentSnapshots(Callback):
    """At the given generator iterations, the student as it is then (generator experts, EMA, config) in
    `snapshots/ckpt_<step>.pt`, readable by `Student.from_checkpoint`. With a constant learning rate the student
    at iteration b of a longer single-phase run is the one a b-iteration run ends with, so one long run gives the
    students of every shorter budget (a K-phase run does not: its phases split the whole budget)."""

    def __init__(self, folder: Path, steps: tuple[int, ...]) -> None:
        self.folder, self.steps = folder, set(steps)

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        if step in self.steps:
            from pdmd_core.checkpoint import save_checkpoint

            state = trainer.state_dict()
            save_checkpoint(self.folder, step, {k: state[k] for k in SNAPSHOT_KEYS}, keep_last=len(self.steps))


class PreemptionCallback(Callback):
    """At the first iteration boundary after `stop_requested()` turns true: write a checkpoint, deliver the spooled
    records (`before_stop`), raise `Preempted` (the requeued job resumes from that checkpoint). Not after the run's
    last iteration: only the final phase end and save remain, so the run finishes instead of being requeued with
    nothing left to train (`stop_requested` is not even asked there, on every rank alike)."""

    def __init__(self, stop_requested: Any, label: str, before_stop: Any) -> None:
        self.stop_requested, self.label, self.before_stop = stop_requested, label, before_stop

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        if step >= trainer.total_iterations:
            return
        if self.stop_requested():
            trainer.save()
            self.before_stop()
            raise Preempted(f"{self.label}: checkpoint written at step {step} for requeue")


def run_distill(job: DistillJob, stop_requested: Any = None) -> dict[str, Any]:
    """Train one arm × seed; returns the result dict (also written to run_dir/result.json)."""
    import torch

    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    torch.set_num_threads(job.threads)
    torch.set_flush_denormal(True)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = job.config
    resolved = cfg.model_dump(mode="json")
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False))
    slurm = slurm_tags()
    tracker, already = start_tracking(job.tracking, resolved)
    if not _has_op(tracker, "inputs"):
        tracker.log_inputs(list(job.tracking.inputs))
    start = time.perf_counter()
    assert cfg.model is not None, "the pipeline always sets `model`"
    bundle = build_model(cfg.model.kind, cfg.model.params, cfg.device)
    callbacks: list[Callback] = [TrackingCallback(tracker, already), MetricsJsonl(run_dir / RUN_METRICS_FILE)]
    if job.snapshots:
        callbacks.append(StudentSnapshots(run_dir / SNAPSHOT_DIR, job.snapshots))
    if stop_requested is not None:
        callbacks.append(PreemptionCallback(stop_requested, f"{job.arm}/seed{job.seed}",
                                            lambda: tracker.flush(force=True)))
    trainer = Trainer(cfg, bundle, run_dir, callbacks=callbacks, progress=job.progress)
    try:
        with _system_metrics(tracker, job.tracking.system_metrics_s):
            trainer.fit()
    except Preempted:
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    seconds = time.perf_counter() - start
    checkpoint = trainer.save()
    student = export_student(checkpoint, bundle, run_dir / STUDENT_DIR)
    result = {"benchmark": job.benchmark, "arm": job.arm, "seed": job.seed, "checkpoint": str(checkpoint),
              "student": str(student), "train_seconds": seconds, "run_key": job.tracking.run_key,
              "steps": trainer.global_step, "slurm": slurm}
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    tracker.log_metrics({"train_seconds": seconds}, trainer.global_step)
    tracker.log_artifact(run_dir / CONFIG_FILE)
    tracker.log_model(student, f"student-{job.arm}-seed{job.seed}", model_type="pdmd-student",
                      params={"method": cfg.method, "phases": cfg.num_phases, "steps": cfg.num_steps,
                              "generator": cfg.generator.kind},
                      tags={"arm": job.arm, "seed": job.seed, "benchmark": job.benchmark,
                            "load": "pdmd_core.student.Student.from_export(folder)"},
                      step=trainer.global_step)
    tracker.end("FINISHED")
    return result


def export_student(checkpoint: Path, bundle: Any, folder: Path) -> Path:
    """The trained student (EMA weights, as the sample stage uses it) written alone to `folder`."""
    from pdmd_core.student import Student

    return Student.from_checkpoint(checkpoint, bundle=bundle).save_export(folder)


def _system_metrics(tracker: Any, interval_s: float) -> Any:
    import contextlib

    if interval_s <= 0 or not tracker.enabled:
        return contextlib.nullcontext()
    from pdmd_pipeline.system_metrics import SystemMetricsSampler

    return SystemMetricsSampler(tracker, interval_s)


class StopFlag:
    """Set by a signal handler; the pre-emption callback checks it at the next iteration boundary. Once the job
    has its result (`finish()`), signals are only recorded in `after_finish`: a finished run stays finished."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.finished = False
        self.after_finish: list[int] = []

    def set(self, signum: int, _frame: Any = None) -> None:
        if self.finished:
            self.after_finish.append(signum)
        else:
            self.signum = signum

    def finish(self) -> None:
        self.finished = True

    def __call__(self) -> bool:
        return self.signum is not None and not self.finished


class StopOnSignal(Checkpointable):
    """A submitit Checkpointable job that stops cleanly on USR2 (SLURM's pre-emption / time-limit warning) or
    TERM (`scontrol requeue`, `scancel`): `run(stop_requested, ...)` finishes the current generator iteration,
    writes a checkpoint and raises `Preempted`.

    USR2 then goes to submitit's own handler, which on the job's first task calls `checkpoint()` (resubmitting
    this same job, which resumes from that checkpoint), requeues the job and exits; `after_handover` lets the
    other tasks of a multi-task job wait for that. After TERM, SLURM itself requeues (or cancels) the job; the
    process exits without a result so the submitter keeps waiting for the requeued run.

    A run that finished exits 0 whatever arrives: a signal during its last iteration is not acted on (see
    `PreemptionCallback`), and once `run` has returned its result our handler stays installed, ignoring USR2 and
    TERM until the process exits (recorded in `StopFlag.after_finish`). Restoring submitit's handler (or the
    default one) there would requeue a finished job, or kill it, while submitit writes its result.
    """

    def run(self, stop_requested: StopFlag, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def after_handover(self, flag: StopFlag) -> None:
        """Runs after submitit's handler returned instead of exiting (tasks other than the first)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flag = StopFlag()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, flag.set)
        try:
            return self.run(flag, *args, **kwargs)
        except Preempted:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            submitit_handler = previous[signal.SIGUSR2]
            if flag.signum == signal.SIGUSR2 and callable(submitit_handler):
                submitit_handler(signal.SIGUSR2, None)  # first task: requeues and exits
                self.after_handover(flag)
            sys.exit(128 + int(flag.signum or signal.SIGTERM))
        finally:  # a result (or an error) is final: our handler stays and ignores signals until the process exits
            flag.finish()


class CheckpointableDistill(StopOnSignal):
    """The CPU tier's arm × seed job (`run_distill`) as a StopOnSignal job (see there)."""

    def run(self, stop_requested: StopFlag, job: DistillJob) -> dict[str, Any]:  # type: ignore[override]
        return run_distill(job, stop_requested=stop_requested)


def job_name(job: DistillJob) -> str:
    return f"{job.benchmark}-{job.arm}-seed{job.seed}"


def describe(job: DistillJob) -> dict[str, Any]:
    return asdict(job)
