"""Service faults, injected through the pipeline's own machinery (pdmd_pipeline, helper E's):

- `mlflow_outage`: training logs through `pipeline.tracking.Tracker` (a write-ahead spool) to a real MLflow
  server that is down when the run starts, comes up, is killed mid-run and comes back; afterwards
  `pipeline.tracking.replay` delivers the rest and every step's metric must be on the server exactly once.
- `slurm_preemption`: `pipeline.jobs.CheckpointableDistill` submitted to the real local SLURM cluster gets
  SLURM's USR2 mid-run, checkpoints, is requeued by submitit, resumes (the requeue waits ~2 minutes here) and
  must end with parameters bit-identical to an uninterrupted run and each step spooled once.

Both start the local services they need (pdmd_pipeline.infra) and stop only what they started.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pdmd_pipeline.reliability.scenarios import FaultOutcome, generator_state, run_config, same_parameters


def mlflow_outage(work: Path, down_at: int = 5, back_at: int = 7) -> list[FaultOutcome]:
    from mlflow.tracking import MlflowClient

    from pdmd_core.callbacks import OnIteration
    from pdmd_core.config import config_from_dict
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer
    from pdmd_pipeline.infra import mlflow_server
    from pdmd_pipeline.tracking import Tracker, replay

    start = time.perf_counter()
    root, port = work / "server", mlflow_server.free_port()
    url = f"http://127.0.0.1:{port}"
    tracker = Tracker(url, "reliability/outage", work / "spool", flush_every_s=0.0, retry_after_s=0.2)
    tracker.start("pdmd/reliability", "mlflow-outage", {"fault": "mlflow outage"})
    events: list[str] = []
    logged: dict[int, float] = {}

    def hook(step: int, phase: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics({**metrics, "phase": float(phase)}, step)
        logged[step] = metrics["generator_loss"]
        if step == 2:
            mlflow_server.start(root=root, port=port)
            events.append(f"server started after step 2 (steps 1-2 spooled while it was down: "
                          f"{tracker.spool.pending()} records pending)")
        elif step == down_at:
            mlflow_server.stop(root)
            events.append(f"server killed after step {down_at}")
        elif step == back_at:
            mlflow_server.start(root=root, port=port)
            events.append(f"server back after step {back_at} ({tracker.spool.pending()} records pending)")

    try:
        cfg = config_from_dict(run_config())
        assert cfg.model is not None
        trainer = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), work / "run",
                          callbacks=[OnIteration(hook)], progress=False)
        trainer.fit()
        tracker.end()
        counts = replay(url, work / "spool")
        history = MlflowClient(url).get_metric_history(tracker.run_id, "generator_loss")  # type: ignore[arg-type]
    finally:
        mlflow_server.stop(root)
    steps = Counter(m.step for m in history)
    values = {m.step: m.value for m in history}
    once = sorted(steps) == sorted(logged) and set(steps.values()) == {1}
    exact = all(abs(values[s] - v) <= 1e-6 * max(1.0, abs(v)) for s, v in logged.items() if s in values)
    ok = trainer.global_step == len(logged) == 8 and once and exact
    return [FaultOutcome(
        "tracking", "MLflow server down at start and killed mid-run",
        "no server for steps 1-2; real server started, killed after step "
        f"{down_at}, restarted after step {back_at}",
        f"training finished all {trainer.global_step} steps; {'; '.join(events)}; replay {counts}; server holds "
        f"generator_loss for steps {sorted(steps)} ({'each once' if once else 'NOT once each'}, values "
        f"{'equal' if exact else 'DIFFERENT'})", "nothing" if ok else "see details", ok,
        time.perf_counter() - start)]


def slurm_preemption(work: Path, iterations: int = 400, signal_after: int = 40) -> list[FaultOutcome]:
    from pdmd_core.checkpoint import load_checkpoint
    from pdmd_core.config import config_from_dict
    from pdmd_pipeline.executors import ExecutorSettings, SlurmProfile, slurm_executor, wait_until_started
    from pdmd_pipeline.infra import slurm_cluster
    from pdmd_pipeline.jobs import CheckpointableDistill, DistillJob, TrackingTarget, run_distill
    from pdmd_pipeline.tracking import Spool

    start = time.perf_counter()

    def job(name: str) -> DistillJob:
        config = config_from_dict(run_config(iterations=[iterations // 2] * 2, batch_size=32,
                                             checkpoint={"every": 10_000, "keep_last": 2}))
        target = TrackingTarget(uri=f"sqlite:///{work / 'mlflow.db'}", experiment="pdmd/reliability",
                                run_key=f"preempt/{name}", parent_key=None, spool_root=str(work / "spool"),
                                run_name=name, enabled=False)
        return DistillJob("reliability", "phased_k2", 7, str(work / name), config, target)

    def spooled(j: DistillJob) -> list[int]:
        spool = Spool(Path(j.tracking.spool_root), j.tracking.run_key)
        return [int(op["step"]) for op in spool.ops() if op["op"] == "metrics" and "generator_loss" in op["metrics"]]

    started = slurm_cluster.start()
    try:
        preempted = job("preempted")
        executor = slurm_executor(ExecutorSettings(kind="slurm", job_name="reliability-preempt"), work / "logs",
                                  SlurmProfile.model_validate({"mem_gb": 1, "timeout_min": 20, "signal_delay_s": 30}))
        submitted: Any = executor.submit(CheckpointableDistill(), preempted)
        wait_until_started(submitted.job_id)
        deadline = time.monotonic() + 240
        while len(spooled(preempted)) < signal_after:
            if time.monotonic() > deadline or submitted.done():
                raise RuntimeError(f"job {submitted.job_id} did not reach step {signal_after} before finishing "
                                   f"or within 240 s; logs in {work / 'logs'}")
            time.sleep(0.2)
        at_signal = len(spooled(preempted))
        subprocess.run(["scancel", "--signal=USR2", submitted.job_id], check=True)
        signalled = time.monotonic()
        result = submitted.result()
        waited = time.monotonic() - signalled
        info = subprocess.run(["scontrol", "show", "job", submitted.job_id], capture_output=True, text=True).stdout
    finally:
        slurm_cluster.stop(only=started)
    reference = job("uninterrupted")
    run_distill(reference)
    identical = same_parameters(generator_state(Path(preempted.run_dir)), generator_state(Path(reference.run_dir)))
    counts = Counter(spooled(preempted))
    once = sorted(counts) == list(range(1, iterations + 1)) and set(counts.values()) == {1}
    restarts = "Restarts=1" in info or int(result["slurm"].get("slurm_restart_count", "0")) >= 1
    ckpt = load_checkpoint(Path(result["checkpoint"]))
    ok = identical and once and restarts and result["steps"] == iterations == ckpt["global_step"]
    return [FaultOutcome(
        "preemption", "SLURM pre-emption signal (USR2) mid-run",
        f"`scancel --signal=USR2` after ~{at_signal} of {iterations} steps of a submitit Checkpointable job",
        f"checkpointed, requeued (restarted: {restarts}), finished {waited:.0f} s after the signal with "
        f"{result['steps']} steps; final generator parameters {'bit-identical' if identical else 'DIFFERENT'} to "
        f"an uninterrupted run; every step's metric spooled {'exactly once' if once else 'NOT once'}",
        "nothing" if ok else "see details", ok, time.perf_counter() - start)]


SERVICE_SCENARIOS = {"mlflow_outage": mlflow_outage, "slurm_preemption": slurm_preemption}
