"""Pre-emption on the real local SLURM cluster: a distillation job gets SLURM's USR2 in the middle of a run,
writes a checkpoint at the next iteration boundary, is requeued by submitit, resumes, and ends with parameters
bit-identical to an uninterrupted run; each step's metric is in the spool exactly once.

Signals at the edges of a run (real signals, no SLURM): in the run's last step or after it, the run finishes and
the job exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from pdmd_core.callbacks import Callback
from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_pipeline.executors import ExecutorSettings, SlurmProfile, slurm_executor, wait_until_started
from pdmd_pipeline.jobs import (
    CheckpointableDistill,
    DistillJob,
    Preempted,
    PreemptionCallback,
    StopFlag,
    StopOnSignal,
    TrackingTarget,
    run_distill,
)
from pdmd_pipeline.tracking import Spool

ITERATIONS = 400


def _job(tmp_path: Path, name: str) -> DistillJob:
    config = config_from_dict({
        "method": "phased", "phases": 2, "num_steps": 4, "iterations": ITERATIONS // 2, "batch_size": 32,
        "ttur_ratio": 2, "seed": 3, "checkpoint": {"every": 10_000, "keep_last": 2},
        "model": {"kind": "mlp", "dim": 8, "hidden": 64, "depth": 2},
    })
    target = TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="pdmd/preempt",
                            run_key=f"preempt/{name}", parent_key=None, spool_root=str(tmp_path / "spool"),
                            run_name=name, enabled=False)
    return DistillJob("toy", "phased_k2", 3, str(tmp_path / name), config, target)


def _generator_state(run_dir: str) -> list[dict[str, torch.Tensor]]:
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    assert path is not None
    return load_checkpoint(path, "cpu")["generator"]


def _spooled_steps(job: DistillJob) -> list[int]:
    spool = Spool(Path(job.tracking.spool_root), job.tracking.run_key)
    return [int(op["step"]) for op in spool.ops() if op["op"] == "metrics" and "generator_loss" in op["metrics"]]


@pytest.mark.slow
@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes_exactly(slurm_cluster, tmp_path):
    job = _job(tmp_path, "preempted")
    executor = slurm_executor(ExecutorSettings(kind="slurm", job_name="preempt-test"), tmp_path / "logs",
                              SlurmProfile(mem_gb=1, timeout_min=20, signal_delay_s=30))
    submitted = executor.submit(CheckpointableDistill(), job)
    wait_until_started(submitted.job_id)  # it may pend behind the other xdist worker's SLURM jobs
    deadline = time.monotonic() + 180
    while len(_spooled_steps(job)) < 40:  # well inside the run, before it can finish
        assert time.monotonic() < deadline, "the job started but logged fewer than 40 steps in 180 s"
        assert not submitted.done(), "the job finished before it could be signalled; raise ITERATIONS"
        time.sleep(0.2)
    signalled = time.monotonic()
    subprocess.run(["scancel", "--signal=USR2", submitted.job_id], check=True)
    result = submitted.result()
    resumed_after = time.monotonic() - signalled
    assert result["steps"] == ITERATIONS
    restarts = subprocess.run(["scontrol", "show", "job", submitted.job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts or int(result["slurm"].get("slurm_restart_count", "0")) >= 1
    print(f"requeued job finished {resumed_after:.0f} s after USR2 (credential lifetime 30 s)")

    reference = _job(tmp_path, "uninterrupted")
    run_distill(reference)
    for a, b in zip(_generator_state(job.run_dir), _generator_state(reference.run_dir), strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    counts = Counter(_spooled_steps(job))
    assert sorted(counts) == list(range(1, ITERATIONS + 1)) and set(counts.values()) == {1}


# ------------------------------------------------------------------ signals at the edges of a run (no SLURM)
def _small_trainer(run_dir: Path, callbacks: list) -> Any:
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    torch.set_num_threads(1)
    cfg = config_from_dict({"method": "phased", "phases": 2, "num_steps": 4, "iterations": [2, 2], "batch_size": 8,
                            "ttur_ratio": 1, "seed": 3, "checkpoint": {"every": 100, "keep_last": 2},
                            "model": {"kind": "mlp", "dim": 6, "hidden": 16, "depth": 1}})
    assert cfg.model is not None
    return Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), run_dir, callbacks=callbacks, progress=False)


class _SignalAt(Callback):
    """Sends this process a real signal at the end of one step (before the pre-emption check of that boundary)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signal_step, stops", [(3, True), (4, False)])
def test_a_stop_signal_in_the_last_step_lets_the_run_finish(tmp_path: Path, signal_step: int, stops: bool) -> None:
    """USR2 after step 3 of 4: checkpoint and Preempted; during step 4 (the last): the run finishes, with one
    checkpoint of step 4, written after the last phase ended (no mid-phase copy for a requeue to redo)."""
    flag = StopFlag()
    saved: list[tuple[int, int]] = []

    class Saves(Callback):
        def on_after_save(self, trainer: Any, path: Path) -> None:
            saved.append((trainer.global_step, trainer.phase))

    trainer = _small_trainer(tmp_path, [_SignalAt(signal_step, signal.SIGUSR2), Saves(),
                                        PreemptionCallback(flag, "edge", lambda: None)])
    previous = signal.signal(signal.SIGUSR2, flag.set)
    try:
        if stops:
            with pytest.raises(Preempted, match="checkpoint written at step 3"):
                trainer.fit()
        else:
            trainer.fit()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert flag.signum == signal.SIGUSR2  # the signal did arrive in both cases
    assert saved == ([(2, 1), (3, 1)] if stops else [(2, 1), (4, 2)])


def test_signals_after_the_job_returned_are_ignored_until_exit() -> None:
    """The job's own handler stays installed once it has its result: USR2 / TERM then are recorded, not acted on
    (restoring submitit's handler or the default one would requeue or kill a finished job)."""

    class Done(StopOnSignal):
        flag: StopFlag | None = None

        def run(self, stop_requested: StopFlag) -> str:  # type: ignore[override]
            self.flag = stop_requested
            return "result"

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    job = Done()
    try:
        assert job() == "result"
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert job.flag is not None and not job.flag()
    assert job.flag.after_finish == [signal.SIGUSR2, signal.SIGTERM] and job.flag.signum is None


@pytest.mark.slow
def test_usr2_or_term_during_the_last_step_exits_0_with_the_run_finished(tmp_path: Path) -> None:
    from pdmd_pipeline.reliability.edges import LAST_STEP, signal_during_last_step

    outcomes = signal_during_last_step(tmp_path)
    assert [o.ok for o in outcomes] == [True, True], [o.happened for o in outcomes]
    for outcome in outcomes:
        record = outcome.details["record"]
        assert record["exit"] == 0 and record["result"]["steps"] == LAST_STEP
        assert [s for s in record["saves"] if s[0] == LAST_STEP] == [[LAST_STEP, 2]]


@pytest.mark.slow
def test_usr2_and_term_after_the_last_step_exit_0(tmp_path: Path) -> None:
    from pdmd_pipeline.reliability.edges import signal_after_last_step

    [outcome] = signal_after_last_step(tmp_path)
    assert outcome.ok, outcome.happened
    assert outcome.details["record"]["after_finish"] == [signal.SIGUSR2, signal.SIGTERM]
