"""The `distill` stage: every arm × seed of a benchmark as one array of jobs (local worker pool or SLURM via
submitit), a parent MLflow run per sweep and a child run per job; runs/distill/<b>/sweep.json lists the runs."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams, resolve_run_config
from pdmd_pipeline.stages.common import (
    StageError,
    data_input,
    dvc_data_hash,
    experiment_name,
    git_sha,
    md5_file,
    read_json,
)
from pdmd_pipeline.stages.teacher_files import model_spec, teacher_checkpoint


def new_sweep_id() -> str:
    """Time-ordered and unique even for two sweeps started in the same second (`dvc exp run --run-all -j 2`)."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(2)}"


def build_jobs(params: PipelineParams, benchmark: str, layout: Layout, sweep_id: str, uri: str,
               spool_root: Path, arms: list[str] | None = None, seeds: list[int] | None = None,
               tracking: bool = True) -> tuple[list[Any], str]:
    from pdmd_pipeline.jobs import DistillJob, TrackingTarget
    from pdmd_pipeline.params import arm_tags
    from pdmd_pipeline.tracking import dvc_experiment_tags

    bench = params.benchmark(benchmark)
    arms = arms or bench.arms
    unknown = [a for a in arms if a not in bench.arms]
    if unknown:
        raise StageError(f"arms {unknown} are not run on {benchmark}; its arms: {bench.arms}")
    teacher_ckpt = teacher_checkpoint(layout, benchmark)
    read_json(layout.data(benchmark) / "info.json")  # fails early, naming the missing data stage
    common_tags = {"benchmark": benchmark, "sweep": sweep_id, "git_sha": git_sha(layout.root),
                   "dvc_data_md5": dvc_data_hash(layout, benchmark), "teacher_md5": md5_file(teacher_ckpt),
                   "executor": params.executor, "kind": "run", **dvc_experiment_tags()}
    inputs = (data_input(layout, benchmark, "training"),)
    parent_key = f"{benchmark}/{sweep_id}/sweep"
    jobs = []
    for arm in arms:
        for seed in (seeds if seeds is not None else params.seeds_for(arm)):
            config = resolve_run_config(params, benchmark, arm, seed, model_spec(layout, benchmark))
            tags = {**common_tags, **arm_tags(config), "arm": arm}
            target = TrackingTarget(uri=uri, experiment=experiment_name(benchmark),
                                    run_key=f"{benchmark}/{sweep_id}/{arm}/seed{seed}", parent_key=parent_key,
                                    spool_root=str(spool_root), run_name=f"{arm}/seed{seed}", tags=tags,
                                    enabled=tracking, inputs=inputs)
            jobs.append(DistillJob(benchmark, arm, seed, str(layout.run_dir(benchmark, arm, seed)), config,
                                   target, threads=params.torch_threads))
    return jobs, parent_key


def stage_distill(params: PipelineParams, benchmark: str, layout: Layout, arms: list[str] | None = None,
                  seeds: list[int] | None = None, executor: str | None = None) -> dict[str, Any]:
    """Submit every arm × seed of the benchmark, block until all finish; sweep.json lists the runs."""
    from pdmd_pipeline.executors import ExecutorSettings, check_executor, run_jobs
    from pdmd_pipeline.jobs import CheckpointableDistill, job_name, run_distill
    from pdmd_pipeline.tracking import Tracker, default_spool_root, dvc_experiment_tags, resolve_tracking_uri

    kind = executor or params.executor
    check_executor(kind)
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    spool_root = default_spool_root(layout.root)
    sweep_id = new_sweep_id()
    jobs, parent_key = build_jobs(params, benchmark, layout, sweep_id, uri, spool_root, arms, seeds)
    parent = Tracker(uri, parent_key, spool_root)
    parent.start(experiment_name(benchmark), f"sweep {sweep_id}",
                 {"benchmark": benchmark, "sweep": sweep_id, "executor": kind, "git_sha": git_sha(layout.root),
                  "kind": "sweep", **dvc_experiment_tags()})
    parent.log_params({"arms": ",".join(sorted({j.arm for j in jobs})),
                       "seeds": ",".join(map(str, sorted({j.seed for j in jobs}))),
                       "iterations": params.budget(benchmark), "executor": kind})
    parent.flush(force=True)
    settings = ExecutorSettings(kind=kind, local_parallel=params.local_parallel, slurm_profile=params.slurm_profile,
                                job_name=f"distill {benchmark}")
    fn = CheckpointableDistill() if kind == "slurm" else run_distill
    start = time.perf_counter()
    try:
        results = run_jobs(fn, jobs, [job_name(j) for j in jobs], settings, layout.distill(benchmark) / "logs")
    except BaseException:
        parent.end("FAILED")
        raise
    seconds = time.perf_counter() - start
    parent.log_metrics({"sweep_seconds": seconds, "runs": float(len(results))})
    parent.end("FINISHED")
    runs = [{k: r[k] for k in ("arm", "seed", "checkpoint", "student", "run_key", "train_seconds", "steps", "slurm")}
            for r in results]
    for run in runs:  # paths relative to the project, so the folder can move
        for key in ("checkpoint", "student"):
            run[key] = str(Path(run[key]).resolve().relative_to(layout.root))
    sweep = {"benchmark": benchmark, "sweep_id": sweep_id, "parent_key": parent_key, "executor": kind,
             "seconds": seconds, "runs": runs}
    (layout.distill(benchmark) / "sweep.json").write_text(json.dumps(sweep, indent=2))
    return sweep
