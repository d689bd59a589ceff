"""Pre-emption on the real local SLURM cluster: a distillation job gets SLURM's USR2 in the middle of a run,
writes a checkpoint at the next iteration boundary, is requeued by submitit, resumes, and ends with parameters
bit-identical to an uninterrupted run; each step's metric is in the spool exactly once."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_pipeline.executors import ExecutorSettings, SlurmProfile, slurm_executor
from pdmd_pipeline.jobs import CheckpointableDistill, DistillJob, TrackingTarget, run_distill
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
    deadline = time.monotonic() + 180
    while len(_spooled_steps(job)) < 40:  # well inside the run, before it can finish
        assert time.monotonic() < deadline, "the job did not start"
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
