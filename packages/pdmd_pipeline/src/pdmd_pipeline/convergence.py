"""The convergence stage (`pdmd stage convergence B`): is the default generator budget enough?

The claims' arms (`convergence.arms`) are trained with one seed (`convergence.seed`) at several multiples of the
benchmark's budget (`convergence.multiples`, e.g. ¼ … 4×), then sampled on the evaluation grid and evaluated on
the claims' metrics against the same teacher reference as the main evaluation. A single-phase arm trains once at
the largest budget and keeps its student at every smaller budget (`jobs.StudentSnapshots`: with a constant
learning rate, the student at iteration b is the one a b-iteration run ends with); a K-phase arm splits its budget
over its phases, so it trains once per budget. The jobs go through the params' executor like a distill sweep.

Writes runs/convergence/<b>/: `train/<arm>/it<budget>/` (config, result, student snapshots; the full training
checkpoints are deleted once the jobs succeeded), `samples/` (every arm × budget and the teacher references),
`units.jsonl` (per-unit metric values with `arm`, `budget`) and `convergence.json` (what ran). The tables stage
draws reports/figures/<b>/convergence.png and the budget-stability table from them
(pdmd_pipeline.convergence_summary, which imports none of the training code).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_pipeline import claims as C
from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams, resolve_run_config


@dataclass(frozen=True)
class ConvergenceRun:
    arm: str
    total: int                 # generator budget of the run
    budgets: tuple[int, ...]   # budgets whose student this run provides (snapshots)

    @property
    def name(self) -> str:
        return f"{self.arm}/it{self.total}"


def plan(params: PipelineParams, benchmark: str) -> list[ConvergenceRun]:
    """One run at the largest budget for a single-phase arm, one run per budget for a K-phase arm."""
    budgets = params.convergence_budgets(benchmark)
    runs = []
    for arm in params.convergence_arms(benchmark):
        cfg = resolve_run_config(params, benchmark, arm, params.convergence.seed, {"kind": "validation-only"},
                                 budget=max(budgets))
        if cfg.num_phases == 1:
            runs.append(ConvergenceRun(arm, max(budgets), tuple(budgets)))
        else:
            runs += [ConvergenceRun(arm, b, (b,)) for b in budgets]
    return runs


def run_dir(layout: Layout, benchmark: str, run: ConvergenceRun) -> Path:
    return layout.convergence(benchmark) / "train" / run.arm / f"it{run.total}"


def sample_dir(layout: Layout, benchmark: str, arm: str, budget: int | None) -> Path:
    folder = layout.convergence(benchmark) / "samples" / arm
    return folder if budget is None else folder / f"it{budget}"


def _run_key(benchmark: str, sweep_id: str, run: ConvergenceRun) -> str:
    return f"{benchmark}/{sweep_id}/convergence/{run.name}"


def _train(params: PipelineParams, benchmark: str, layout: Layout, runs: list[ConvergenceRun]) -> tuple[str, float]:
    """Train every run through the params' executor; returns (sweep id, seconds)."""
    from pdmd_pipeline.executors import ExecutorSettings, check_executor, run_jobs
    from pdmd_pipeline.jobs import CheckpointableDistill, DistillJob, TrackingTarget, run_distill
    from pdmd_pipeline.params import arm_tags
    from pdmd_pipeline.stages.common import data_input, dvc_data_hash, experiment_name, git_sha, md5_file
    from pdmd_pipeline.stages.distill import new_sweep_id
    from pdmd_pipeline.stages.teacher_files import model_spec, teacher_checkpoint
    from pdmd_pipeline.tracking import Tracker, default_spool_root, dvc_experiment_tags, resolve_tracking_uri

    check_executor(params.executor)
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    spool_root = default_spool_root(layout.root)
    sweep_id = new_sweep_id()
    parent_key = f"{benchmark}/{sweep_id}/convergence"
    tags = {"benchmark": benchmark, "sweep": sweep_id, "git_sha": git_sha(layout.root), "kind": "convergence",
            "dvc_data_md5": dvc_data_hash(layout, benchmark),
            "teacher_md5": md5_file(teacher_checkpoint(layout, benchmark)), "executor": params.executor,
            **dvc_experiment_tags()}
    inputs = (data_input(layout, benchmark, "training"),)
    parent = Tracker(uri, parent_key, spool_root)
    parent.start(experiment_name(benchmark), f"convergence {sweep_id}", {**tags, "kind": "convergence-sweep"})
    budgets = params.convergence_budgets(benchmark)
    parent.log_params({"arms": ",".join(params.convergence_arms(benchmark)), "seed": params.convergence.seed,
                       "budgets": ",".join(map(str, budgets)), "default_budget": params.budget(benchmark)})
    parent.flush(force=True)
    seed = params.convergence.seed
    jobs = []
    for run in runs:
        config = resolve_run_config(params, benchmark, run.arm, seed, model_spec(layout, benchmark), budget=run.total)
        target = TrackingTarget(uri=uri, experiment=experiment_name(benchmark),
                                run_key=_run_key(benchmark, sweep_id, run), parent_key=parent_key,
                                spool_root=str(spool_root), run_name=f"convergence {run.name}",
                                tags={**tags, **arm_tags(config), "arm": run.arm, "budget": str(run.total)},
                                inputs=inputs)
        jobs.append(DistillJob(benchmark, run.arm, seed, str(run_dir(layout, benchmark, run)), config, target,
                               threads=params.torch_threads, snapshots=run.budgets))
    settings = ExecutorSettings(kind=params.executor, local_parallel=params.local_parallel,
                                slurm_profile=params.slurm_profile, job_name=f"convergence {benchmark}")
    fn = CheckpointableDistill() if params.executor == "slurm" else run_distill
    start = time.perf_counter()
    try:
        run_jobs(fn, jobs, [f"{benchmark}-{r.arm}-it{r.total}" for r in runs], settings,
                 layout.convergence(benchmark) / "logs")
    except BaseException:
        parent.end("FAILED")
        raise
    seconds = time.perf_counter() - start
    parent.log_metrics({"sweep_seconds": seconds, "runs": float(len(runs))})
    parent.end("FINISHED")
    return sweep_id, seconds


def student_snapshot(layout: Layout, benchmark: str, run: ConvergenceRun, budget: int) -> Path:
    from pdmd_core.checkpoint import checkpoint_name
    from pdmd_pipeline.jobs import SNAPSHOT_DIR

    path = run_dir(layout, benchmark, run) / SNAPSHOT_DIR / checkpoint_name(budget)
    if not path.is_file():
        raise FileNotFoundError(f"convergence run {run.name} of {benchmark} left no student at iteration {budget} "
                                f"({path})")
    return path


def stage_convergence(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from pdmd_core.models.registry import build_model
    from pdmd_pipeline.stages.common import read_json, reference_name
    from pdmd_pipeline.stages.evaluate import PER_PROMPT_FD, Evaluator, unit_records, write_jsonl
    from pdmd_pipeline.stages.sample import eval_inputs, sample_student, sample_teacher_references
    from pdmd_pipeline.stages.teacher_files import MODEL_KIND, teacher_checkpoint
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    torch.set_num_threads(params.torch_threads)
    out = layout.convergence(benchmark)
    if out.exists():
        shutil.rmtree(out)  # a partial earlier attempt: nothing in it is reused (DVC removes it too)
    out.mkdir(parents=True)
    runs = plan(params, benchmark)
    sweep_id, seconds = _train(params, benchmark, layout, runs)
    grid, teacher = eval_inputs(params, benchmark, layout)
    sample_teacher_references(params, benchmark, grid, teacher, lambda name: sample_dir(layout, benchmark, name, None))
    ref = reference_name(params)
    kind = read_json(layout.data(benchmark) / "info.json")["kind"]
    evaluator = Evaluator.for_benchmark(params, benchmark, layout, sample_dir(layout, benchmark, ref, None),
                                        only=C.claim_metrics(kind))
    bundle = build_model(MODEL_KIND, {"teacher": str(teacher_checkpoint(layout, benchmark))})
    units: list[dict[str, Any]] = []
    for steps in params.eval.teacher_steps:
        name = f"{TEACHER_REFERENCE_PREFIX}{steps}"
        units += unit_records(evaluator.unit_rows(sample_dir(layout, benchmark, name, None)), arm=name, seed=-1,
                              budget=None)
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    seed = params.convergence.seed
    for run in tqdm(runs, desc=f"convergence {benchmark}", unit="run"):
        tracker = Tracker(uri, _run_key(benchmark, sweep_id, run), default_spool_root(layout.root))
        for budget in run.budgets:
            folder = sample_dir(layout, benchmark, run.arm, budget)
            sample_student(student_snapshot(layout, benchmark, run, budget), bundle, grid, run.arm,
                           f"convergence/{run.name}@{budget}", folder)
            rows = evaluator.unit_rows(folder)
            units += unit_records(rows, arm=run.arm, seed=seed, budget=budget)
            tracker.log_metrics({f"eval/{k}": float(np.mean(vs)) for k, (_, _, _, vs) in rows.items()}, step=budget)
        tracker.flush(force=True)
        shutil.rmtree(run_dir(layout, benchmark, run) / "checkpoints", ignore_errors=True)
    write_jsonl(out / "units.jsonl", units)
    summary = {"benchmark": benchmark, "kind": kind, "seed": seed, "default_budget": params.budget(benchmark),
               "budgets": params.convergence_budgets(benchmark), "arms": params.convergence_arms(benchmark),
               "reference": ref, "metrics": evaluator.metrics + ([PER_PROMPT_FD] if evaluator.per_prompt_fd else []),
               "runs": [{"arm": r.arm, "total": r.total, "budgets": list(r.budgets)} for r in runs],
               "train_seconds": round(seconds, 1)}
    (out / "convergence.json").write_text(json.dumps(summary, indent=2))
    return summary
