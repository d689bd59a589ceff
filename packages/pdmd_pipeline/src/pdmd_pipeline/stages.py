"""One function per DVC stage; `pdmd stage <name> <benchmark>` calls them (see dvc.yaml).

data → teacher → distill (arm × seed jobs through the executor) → sample → evaluate → tables → report.
Every stage reads the params file, writes only its own outputs (pipeline.layout) and logs to the MLflow runs
of the sweep through the spooled tracker, flushing (and replaying anything pending) before it returns.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams, deep_merge, resolve_run_config

MODEL_KIND = "cpu_tier"


class StageError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ helpers
def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_sha(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}-dirty" if dirty and sha != "unknown" else sha
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def dvc_data_hash(layout: Layout, benchmark: str) -> str:
    """The hash DVC recorded for `runs/data/<b>` in dvc.lock (a `.dir` md5); outside DVC (`pdmd launch` before any
    `dvc repro`) the md5 of the data's sample file, prefixed `file:`."""
    lock = layout.root / "dvc.lock"
    if lock.is_file():
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(f"data@{benchmark}", {})
        for out in stage.get("outs", []):
            if out.get("path") == f"runs/data/{benchmark}" and out.get("md5"):
                return str(out["md5"])
    return "file:" + md5_file(layout.data(benchmark) / "real" / "samples.safetensors")


def experiment_name(benchmark: str) -> str:
    return f"pdmd/{benchmark}"


def benchmark_config(params: PipelineParams, benchmark: str, root: Path) -> Any:
    """The CPU tier's BenchmarkConfig with the params file's `teacher` overrides applied."""
    from pdmd_core.cpu_tier.config import BenchmarkConfig

    bench = params.benchmark(benchmark)
    path = root / bench.config
    if not path.is_file():
        raise StageError(f"benchmarks.{benchmark}.config = {bench.config!r}: no such file under {root}")
    raw = yaml.safe_load(path.read_text()) or {}
    return BenchmarkConfig.model_validate(deep_merge(raw, bench.teacher))


def to_unit(kind: str, x: Any) -> Any:
    """Model space → the sample-set value range (images/videos [-1, 1] → [0, 1]; points unchanged)."""
    return x if kind == "points" else ((x + 1) / 2).clamp(0, 1)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise StageError(f"{path} is missing: run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ data
def stage_data(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    from pdmd_core.cpu_tier.data import build_dataset
    from pdmd_eval.samples import SampleRecord, SampleSet, save_sample_set

    cfg = benchmark_config(params, benchmark, layout.root)
    data = build_dataset(cfg.data, cfg.seed)
    out = layout.data(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    test = data.test
    records = [SampleRecord("real", int(p), data.prompts[int(p)], i, 0, 0, "data")
               for i, p in enumerate(test.labels.tolist())]
    arr = to_unit(data.kind, test.x).numpy().astype("float32")
    save_sample_set(SampleSet(arr, records, data.kind, benchmark, dict(data.meta)), out / "real")
    info = {"benchmark": benchmark, "kind": data.kind, "prompts": list(data.prompts),
            "sample_shape": list(data.sample_shape), "meta": dict(data.meta),
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(test)},
            "md5": md5_file(out / "real" / "samples.safetensors")}
    (out / "info.json").write_text(json.dumps(info, indent=2, default=str))
    return info


# ------------------------------------------------------------------------------------------------ toy1d
def stage_toy1d(params: PipelineParams, layout: Layout) -> dict[str, Any]:
    """The paper's Fig. 2 toy (as `pdmd toy1d`): reports/toy1d/subinterval.{json,png} from `toy1d.config` with
    `toy1d.overrides` applied."""
    import torch
    from pydantic import ValidationError

    from pdmd_core.config import ConfigError, format_validation_error
    from pdmd_core.cpu_tier.config import BenchmarkConfig
    from pdmd_core.cpu_tier.subinterval_toy import plot_subinterval_toy, run_subinterval_toy
    from pdmd_core.cpu_tier.train import configure_cpu

    path = layout.root / params.toy1d.config
    if not path.is_file():
        raise StageError(f"toy1d.config = {params.toy1d.config!r}: no such file under {layout.root}")
    try:
        cfg = BenchmarkConfig.model_validate(deep_merge(yaml.safe_load(path.read_text()) or {}, params.toy1d.overrides))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{path} with toy1d.overrides")) from None
    if cfg.benchmark != "toy1d" or cfg.subinterval is None:
        raise StageError(f"toy1d.config = {params.toy1d.config!r} must be a toy1d config with a `subinterval:` "
                         f"section (got benchmark {cfg.benchmark!r})")
    configure_cpu(params.torch_threads)
    torch.manual_seed(cfg.seed)
    result = run_subinterval_toy(cfg.data.atoms, cfg.subinterval, cfg.seed, False)  # type: ignore[union-attr]
    out = layout.toy1d()
    out.mkdir(parents=True, exist_ok=True)
    plot_subinterval_toy(result, str(out / "subinterval.png"), cfg.subinterval.s)
    report = {**result.report, "figure": "subinterval.png", "config": params.toy1d.config,
              "overrides": params.toy1d.overrides}
    (out / "subinterval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------------------------ teacher
def stage_teacher(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    from pdmd_pipeline.cpu_tier.teacher_quality import train_teacher_from_config

    cfg = benchmark_config(params, benchmark, layout.root)
    report = train_teacher_from_config(cfg, layout.root, output_dir=layout.teacher(benchmark), progress=True)
    if params.benchmark(benchmark).enforce_bar and not report.get("passed", False):
        raise StageError(f"teacher for {benchmark} missed its quality bar: metrics {report.get('metrics')}, bar "
                         f"{report.get('bar')} (see {layout.teacher_report(benchmark)}); set "
                         f"benchmarks.{benchmark}.enforce_bar: false to continue anyway")
    return report


def teacher_checkpoint(layout: Layout, benchmark: str) -> Path:
    from pdmd_core.cpu_tier.teacher import TEACHER_FILE

    path = layout.teacher(benchmark) / TEACHER_FILE
    if not path.is_file():
        raise StageError(f"no teacher at {path}: run `dvc repro teacher@{benchmark}` first")
    return path


def model_spec(layout: Layout, benchmark: str) -> dict[str, Any]:
    return {"kind": MODEL_KIND, "teacher": str(teacher_checkpoint(layout, benchmark))}


# ------------------------------------------------------------------------------------------------ distill
@dataclass(frozen=True)
class Sweep:
    benchmark: str
    sweep_id: str
    parent_key: str
    runs: list[dict[str, Any]]


def build_jobs(params: PipelineParams, benchmark: str, layout: Layout, sweep_id: str, uri: str,
               spool_root: Path, arms: list[str] | None = None, seeds: list[int] | None = None,
               tracking: bool = True) -> tuple[list[Any], str]:
    from pdmd_pipeline.jobs import DistillJob, TrackingTarget
    from pdmd_pipeline.params import arm_tags

    bench = params.benchmark(benchmark)
    arms = arms or bench.arms
    unknown = [a for a in arms if a not in bench.arms]
    if unknown:
        raise StageError(f"arms {unknown} are not run on {benchmark}; its arms: {bench.arms}")
    teacher_ckpt = teacher_checkpoint(layout, benchmark)
    read_json(layout.data(benchmark) / "info.json")  # fails early, naming the missing data stage
    common_tags = {"benchmark": benchmark, "sweep": sweep_id, "git_sha": git_sha(layout.root),
                   "dvc_data_md5": dvc_data_hash(layout, benchmark), "teacher_md5": md5_file(teacher_ckpt),
                   "executor": params.executor}
    parent_key = f"{benchmark}/{sweep_id}/sweep"
    jobs = []
    for arm in arms:
        for seed in (seeds if seeds is not None else params.seeds_for(arm)):
            config = resolve_run_config(params, benchmark, arm, seed, model_spec(layout, benchmark))
            tags = {**common_tags, **arm_tags(config), "arm": arm}
            target = TrackingTarget(uri=uri, experiment=experiment_name(benchmark),
                                    run_key=f"{benchmark}/{sweep_id}/{arm}/seed{seed}", parent_key=parent_key,
                                    spool_root=str(spool_root), run_name=f"{arm}/seed{seed}", tags=tags,
                                    enabled=tracking)
            jobs.append(DistillJob(benchmark, arm, seed, str(layout.run_dir(benchmark, arm, seed)), config,
                                   target, threads=params.torch_threads))
    return jobs, parent_key


def stage_distill(params: PipelineParams, benchmark: str, layout: Layout, arms: list[str] | None = None,
                  seeds: list[int] | None = None, executor: str | None = None) -> dict[str, Any]:
    """Submit every arm × seed of the benchmark, block until all finish; sweep.json lists the runs."""
    from pdmd_pipeline.executors import ExecutorSettings, check_executor, run_jobs
    from pdmd_pipeline.jobs import CheckpointableDistill, job_name, run_distill
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    kind = executor or params.executor
    check_executor(kind)
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    spool_root = default_spool_root(layout.root)
    sweep_id = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
    jobs, parent_key = build_jobs(params, benchmark, layout, sweep_id, uri, spool_root, arms, seeds)
    parent = Tracker(uri, parent_key, spool_root)
    parent.start(experiment_name(benchmark), f"sweep {sweep_id}",
                 {"benchmark": benchmark, "sweep": sweep_id, "executor": kind, "git_sha": git_sha(layout.root),
                  "kind": "sweep"})
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
    runs = [{k: r[k] for k in ("arm", "seed", "checkpoint", "run_key", "train_seconds", "steps", "slurm")}
            for r in results]
    for run in runs:  # checkpoints relative to the project, so the folder can move
        run["checkpoint"] = str(Path(run["checkpoint"]).resolve().relative_to(layout.root))
    sweep = {"benchmark": benchmark, "sweep_id": sweep_id, "parent_key": parent_key, "executor": kind,
             "seconds": seconds, "runs": runs}
    (layout.distill(benchmark) / "sweep.json").write_text(json.dumps(sweep, indent=2))
    return sweep


# ------------------------------------------------------------------------------------------------ sample
def eval_grid(info: dict[str, Any], params: PipelineParams) -> tuple[list[int], list[int]]:
    """(prompt ids, sample seeds) of the evaluation grid: every prompt × the same seeds for every arm."""
    prompts = list(range(len(info["prompts"])))
    seeds = [params.eval.sample_seed_offset + i for i in range(params.eval.seeds_per_prompt)]
    return prompts, seeds


def grid_noise(shape: tuple[int, ...], seeds: list[int]) -> Any:
    """One noise tensor per sample seed, identical for every arm, prompt and the teacher (the paper's protocol)."""
    import torch

    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _records(method: str, info: dict[str, Any], prompt_ids: list[int], seeds: list[int], steps: int, nfe: int,
             checkpoint: str) -> list[Any]:
    from pdmd_eval.samples import SampleRecord

    return [SampleRecord(method, p, info["prompts"][p], s, steps, nfe, checkpoint)
            for p in prompt_ids for s in seeds]


def _conditions(encoder: Any, info: dict[str, Any], prompt_ids: list[int], n_seeds: int) -> tuple[Any, Any]:
    import torch

    table = encoder.encode(list(info["prompts"]))
    ids = torch.tensor([p for p in prompt_ids for _ in range(n_seeds)])
    return table.index(ids), encoder.null(len(ids))


def _save(samples: Any, records: list[Any], info: dict[str, Any], folder: Path) -> Path:
    from pdmd_eval.samples import SampleSet, save_sample_set

    arr = to_unit(info["kind"], samples).numpy().astype("float32")
    return save_sample_set(SampleSet(arr, records, info["kind"], info["benchmark"], dict(info["meta"])), folder)


def distill_defaults(params: PipelineParams, benchmark: str) -> Any:
    """The DistillConfig fields every arm of the benchmark shares (schedule shift, teacher CFG)."""
    from pdmd_core.config import config_from_dict

    return config_from_dict(deep_merge(params.distill, params.benchmark(benchmark).distill),
                            source=f"{benchmark} distill defaults")


@dataclass(frozen=True)
class EvalGrid:
    """The evaluation grid of a benchmark: the same noise and prompts for every arm and the teacher."""

    info: dict[str, Any]
    prompt_ids: list[int]
    seeds: list[int]
    z: Any
    cond: Any
    null: Any


def eval_inputs(params: PipelineParams, benchmark: str, layout: Layout) -> tuple[EvalGrid, Any]:
    """(grid, teacher) for sampling: every prompt × the evaluation sample seeds."""
    from pdmd_core.cpu_tier.teacher import load_teacher

    info = read_json(layout.data(benchmark) / "info.json")
    prompt_ids, seeds = eval_grid(info, params)
    shape = tuple(info["sample_shape"])
    z = grid_noise(shape, seeds).repeat(len(prompt_ids), *([1] * len(shape)))
    teacher = load_teacher(teacher_checkpoint(layout, benchmark))
    cond, null = _conditions(teacher.encoder, info, prompt_ids, len(seeds))
    return EvalGrid(info, prompt_ids, seeds, z, cond, null), teacher


def sample_teacher_references(params: PipelineParams, benchmark: str, grid: EvalGrid, teacher: Any,
                              folder: Any) -> list[str]:
    """The teacher at every `eval.teacher_steps` count on the grid, saved to `folder(name)`. The references use the
    teacher exactly as distillation saw it: same CFG (scale, form, rescale) and shift."""
    import torch

    from pdmd_core.sampling import euler_sample, uniform_timesteps

    shared = distill_defaults(params, benchmark)
    tcfg = shared.teacher_cfg
    written = []
    for steps in params.eval.teacher_steps:
        with torch.no_grad():
            x = euler_sample(teacher.model, grid.z, uniform_timesteps(steps, shared.shift), grid.cond, grid.null,
                             tcfg.scale, tcfg.form, tcfg.rescale)
        nfe = steps * (1 if tcfg.scale == 1.0 and tcfg.form == "standard" else 2)
        name = f"{TEACHER_REFERENCE_PREFIX}{steps}"
        records = _records(name, grid.info, grid.prompt_ids, grid.seeds, steps, nfe, "teacher")
        written.append(str(_save(x, records, grid.info, folder(name))))
    return written


def sample_student(checkpoint: Path, bundle: Any, grid: EvalGrid, arm: str, label: str, folder: Path) -> Path:
    """The student of `checkpoint` on the grid, saved as a sample set (records name `label` as the checkpoint)."""
    import torch

    from pdmd_core.student import Student

    student = Student.from_checkpoint(checkpoint, bundle=bundle)
    with torch.no_grad():
        x = student.sample(grid.z, grid.cond)
    steps = len(student.timesteps) - 1
    return _save(x, _records(arm, grid.info, grid.prompt_ids, grid.seeds, steps, steps, label), grid.info, folder)


def stage_sample(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from pdmd_core.models.registry import build_model

    torch.set_num_threads(params.torch_threads)
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    grid, teacher = eval_inputs(params, benchmark, layout)
    written = sample_teacher_references(params, benchmark, grid, teacher,
                                        lambda name: layout.sample_set(benchmark, name, None))
    bundle = build_model(MODEL_KIND, {"teacher": str(teacher_checkpoint(layout, benchmark))})
    for run in tqdm(sweep["runs"], desc=f"sample {benchmark}", unit="run"):
        folder = layout.sample_set(benchmark, run["arm"], run["seed"])
        sample_student(layout.root / run["checkpoint"], bundle, grid, run["arm"], run["checkpoint"], folder)
        written.append(str(folder))
    return {"sample_sets": written}


# ------------------------------------------------------------------------------------------------ evaluate
def sample_sets(layout: Layout, benchmark: str, params: PipelineParams) -> list[tuple[str, int, Path]]:
    """(arm, training seed or -1 for teacher references, folder) for every sample set of the benchmark."""
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    out = [(f"{TEACHER_REFERENCE_PREFIX}{s}", -1, layout.sample_set(benchmark, f"{TEACHER_REFERENCE_PREFIX}{s}", None))
           for s in params.eval.teacher_steps]
    out += [(r["arm"], int(r["seed"]), layout.sample_set(benchmark, r["arm"], int(r["seed"]))) for r in sweep["runs"]]
    return out


def reference_name(params: PipelineParams) -> str:
    return f"{TEACHER_REFERENCE_PREFIX}{max(params.eval.teacher_steps)}"


def per_prompt_fd(ctx: Any, extractor: str) -> tuple[list[Any], list[float]]:
    """Fréchet distance to the teacher within each prompt (same features as pdmd_eval's fd_teacher)."""
    import numpy as np

    from pdmd_eval.functional.fidelity import frechet_distance
    from pdmd_eval.samples import group_by_prompt

    feats = ctx.features("samples", extractor)
    ref_feats = ctx.features("reference", extractor)
    ref_groups = group_by_prompt(ctx.reference)
    keys, values = [], []
    for pid, idx in group_by_prompt(ctx.samples).items():
        if pid not in ref_groups:
            continue
        keys.append(pid)
        values.append(frechet_distance(np.asarray(feats[idx]), np.asarray(ref_feats[ref_groups[pid]])))
    return keys, values


@dataclass
class Evaluator:
    """What evaluating a sample set of a benchmark needs: the teacher reference, real data, the feature net, the
    metric names (registry metrics, plus the pipeline's per-prompt Fréchet distance to the teacher)."""

    kind: str
    reference_name: str
    reference: Any
    real: Any
    feature_net: Any
    metrics: list[str]
    per_prompt_fd: bool
    confidence: float

    @classmethod
    def for_benchmark(cls, params: PipelineParams, benchmark: str, layout: Layout, reference_folder: Path,
                      only: list[str] | None = None) -> Evaluator:
        """`only`: restrict to these metric names (e.g. the claims' metrics); default: every applicable one."""
        from pdmd_core.cpu_tier.teacher import FEATURES_FILE
        from pdmd_eval.evaluate import default_metrics
        from pdmd_eval.features import load_feature_net
        from pdmd_eval.samples import load_sample_set

        info = read_json(layout.data(benchmark) / "info.json")
        kind = info["kind"]
        fnet_path = layout.teacher(benchmark) / FEATURES_FILE
        fnet = load_feature_net(fnet_path) if fnet_path.is_file() else None
        metrics = default_metrics(kind, True, True, fnet is not None)
        if only is not None:
            metrics = [m for m in metrics if m in only]
        return cls(kind, reference_name(params), load_sample_set(reference_folder),
                   load_sample_set(layout.data(benchmark) / "real"), fnet, metrics,
                   only is None or PER_PROMPT_FD in only, params.eval.confidence)

    def unit_rows(self, folder: Path) -> dict[str, tuple[str, str, list[Any], list[float]]]:
        """metric → (direction, unit, keys, values) for the sample set in `folder`."""
        from pdmd_eval.context import EvalContext
        from pdmd_eval.evaluate import evaluate
        from pdmd_eval.registry import DOWN
        from pdmd_eval.samples import load_sample_set

        sset = load_sample_set(folder)
        results = evaluate(sset, reference=self.reference, metrics=self.metrics, feature_net=self.feature_net,
                           real=self.real, confidence=self.confidence, progress=False)
        rows = {name: (res.direction, res.unit, list(res.keys), [float(v) for v in res.values])
                for name, res in results.items()}
        if self.per_prompt_fd:
            extractor = "raw" if self.kind == "points" else "feature_net"
            ctx = EvalContext(sset, self.reference, None, self.feature_net, {}, extractor, progress=False)
            keys, values = per_prompt_fd(ctx, extractor)
            rows[PER_PROMPT_FD] = (DOWN, "prompt", keys, [float(v) for v in values])
        return rows


PER_PROMPT_FD = "fd_teacher_prompt"


def unit_records(rows: dict[str, tuple[str, str, list[Any], list[float]]], **labels: Any) -> list[dict[str, Any]]:
    """units.jsonl lines of one sample set: one per metric value, with `labels` (arm, seed, ...)."""
    out = []
    for name, (direction, unit, ks, vs) in rows.items():
        for key, value in zip(ks if ks else ["all"], vs, strict=True):
            out.append({**labels, "metric": name, "direction": direction, "unit": unit,
                        "key": key if not isinstance(key, tuple) else list(key), "value": value})
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def stage_evaluate(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    torch.set_num_threads(params.torch_threads)
    ref_name = reference_name(params)
    evaluator = Evaluator.for_benchmark(params, benchmark, layout, layout.sample_set(benchmark, ref_name, None))
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    run_keys = {(r["arm"], int(r["seed"])): r["run_key"] for r in sweep["runs"]}
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    out = layout.eval(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    units = []
    summary: dict[str, dict[str, float]] = {}
    for arm, seed, folder in tqdm(sample_sets(layout, benchmark, params), desc=f"evaluate {benchmark}", unit="set"):
        rows = evaluator.unit_rows(folder)
        units += unit_records(rows, arm=arm, seed=seed)
        label = f"{arm}/seed{seed}" if seed >= 0 else arm
        summary[label] = {name: float(np.mean(vs)) for name, (_, _, _, vs) in rows.items()}
        if seed >= 0:
            tracker = Tracker(uri, run_keys[(arm, seed)], default_spool_root(layout.root))
            tracker.log_metrics({f"eval/{k}": v for k, v in summary[label].items()}, step=0)
            tracker.flush(force=True)
    write_jsonl(out / "units.jsonl", units)
    (out / "summary.json").write_text(json.dumps({"reference": ref_name,
                                                  "metrics": evaluator.metrics + [PER_PROMPT_FD],
                                                  "means": summary}, indent=2))
    return summary
