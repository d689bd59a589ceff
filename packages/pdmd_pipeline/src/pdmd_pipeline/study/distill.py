"""The distill stage of a study (one DVC stage per model): every arm × seed as one multi-task SLURM job
(`realscale.launch.submit_training`, nodes × tasks_per_node ranks from the distill profile), all submitted at
once, the stage blocking until every job ends. Rank 0 of each job logs its MLflow child run through the spooled
tracker with the CPU tier's lineage tags; the stage owns the parent (sweep) run. `executor: local` runs each
arm × seed as one process (world size 1) in turn instead, e.g. a single-GPU machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_core.config import DistillConfig
from pdmd_pipeline.jobs import TrackingTarget
from pdmd_pipeline.stages.distill import new_sweep_id
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import StudyParams, generator_budget, resolve_run_config
from pdmd_pipeline.study.prompts import TRAIN_CACHE, model_paths, read_info

SWEEP = "sweep.json"


def experiment_name(study: StudyParams) -> str:
    return f"pdmd-study/{study.study}"


def config_hash(cfg: DistillConfig) -> str:
    """Names a run's checkpoint folder: the same resolved config resumes, another starts afresh."""
    import hashlib

    return hashlib.md5(cfg.model_dump_json().encode()).hexdigest()[:10]


def run_key(study: StudyParams, model: str, sweep_id: str, arm: str, seed: int) -> str:
    return f"{study.study}/{model}/{sweep_id}/{arm}/seed{seed}"


@dataclass(frozen=True)
class TrainSpec:
    """One arm × seed for the local executor (world size 1)."""

    config: DistillConfig
    run_dir: str
    tracking: TrackingTarget


def train_local(spec: TrainSpec) -> dict[str, Any]:
    from pdmd_pipeline.realscale.launch import train_rank

    result = train_rank(spec.config, spec.run_dir, tracking=spec.tracking)
    return {k: result[k] for k in ("rank", "world_size", "sharding")}


def common_tags(study: StudyParams, model: str, layout: StudyLayout, sweep_id: str) -> dict[str, str]:
    from pdmd_pipeline.stages.common import git_sha, md5_file

    info = read_info(layout, model)
    return {"benchmark": model, "model": model, "task": study.model(model).task, "study": study.study,
            "sweep": sweep_id, "git_sha": git_sha(layout.root),
            "dvc_data_md5": md5_file(layout.prompts(model) / TRAIN_CACHE), "teacher_md5": str(info["fingerprint"]),
            "architecture": str(info["architecture"]), "executor": study.executor}


def stage_distill(study: StudyParams, model: str, layout: StudyLayout) -> dict[str, Any]:
    from pdmd_pipeline.executors import ExecutorSettings, check_executor, run_jobs, wait_for_jobs
    from pdmd_pipeline.params import arm_tags
    from pdmd_pipeline.realscale.launch import submit_training
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    check_executor(study.executor)
    params = study.model(model)
    uri = resolve_tracking_uri(study.tracking_uri, layout.root)
    spool_root = default_spool_root(layout.root)
    sweep_id = new_sweep_id()  # the CPU study's scheme: time-ordered, random suffix (no same-ms collisions)
    paths = model_paths(layout, model)
    tags = common_tags(study, model, layout, sweep_id)
    parent_key = f"{study.study}/{model}/{sweep_id}/sweep"
    parent = Tracker(uri, parent_key, spool_root)
    parent.start(experiment_name(study), f"{model} sweep {sweep_id}", {**tags, "kind": "sweep"})
    parent.log_params({"arms": ",".join(params.arms), "seeds": ",".join(map(str, study.seeds)),
                       "iterations": study.iterations, "executor": study.executor,
                       "profile": params.distill_profile or study.profiles.distill})
    parent.flush(force=True)
    runs, specs, names = [], [], []
    for arm in params.arms:
        for seed in study.seeds:
            cfg = resolve_run_config(study, model, arm, seed, layout.root, paths)
            key = run_key(study, model, sweep_id, arm, seed)
            target = TrackingTarget(uri=uri, experiment=experiment_name(study), run_key=key, parent_key=parent_key,
                                    spool_root=str(spool_root), run_name=f"{model}/{arm}/seed{seed}",
                                    tags={**tags, **arm_tags(cfg), "arm": arm})
            run_dir = layout.run_dir(model, arm, seed, config_hash(cfg))
            run_dir.mkdir(parents=True, exist_ok=True)
            specs.append(TrainSpec(cfg, str(run_dir), target))
            names.append(f"{model}-{arm}-seed{seed}")
            runs.append({"arm": arm, "seed": seed, "run_dir": layout.rel(run_dir), "run_key": key,
                         "generator_updates": generator_budget(cfg), "phases": cfg.num_phases})
    start = time.perf_counter()
    try:
        if study.executor == "slurm":
            profile = layout.root / (params.distill_profile or study.profiles.distill)
            jobs = [submit_training(s.config, s.run_dir, profile, tracking=s.tracking) for s in specs]
            for run, job in zip(runs, jobs, strict=True):
                run["slurm_job_id"] = str(job.job_id)
            results = [r[0] for r in wait_for_jobs(jobs, names, f"distill {model}", all_tasks=True)]
        else:
            settings = ExecutorSettings(kind="local", local_parallel=1, job_name=f"distill {model}")
            results = run_jobs(train_local, specs, names, settings, layout.distill(model) / "logs")
    except BaseException:
        parent.end("FAILED")
        raise
    seconds = time.perf_counter() - start
    for run, result in zip(runs, results, strict=True):
        run.update(world_size=int(result["world_size"]), sharding=str(result["sharding"]))
    parent.log_metrics({"sweep_seconds": seconds, "runs": float(len(runs))})
    parent.end("FINISHED")
    sweep = {"model": model, "sweep_id": sweep_id, "parent_key": parent_key, "executor": study.executor,
             "seconds": seconds, "iterations": study.iterations, "runs": runs}
    layout.distill(model).mkdir(parents=True, exist_ok=True)
    (layout.distill(model) / SWEEP).write_text(json.dumps(sweep, indent=2))
    return sweep


def read_sweep(layout: StudyLayout, model: str) -> dict[str, Any]:
    path = layout.distill(model) / SWEEP
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the distill stage first (dvc repro ... distill@{model})")
    return dict(json.loads(path.read_text()))


def run_folder(layout: StudyLayout, run: dict[str, Any]) -> Path:
    return layout.root / str(run["run_dir"])
