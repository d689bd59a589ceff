"""Helpers shared by the stage modules: errors, hashes, the teacher's files, the evaluation grid."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams, deep_merge


class StageError(RuntimeError):
    pass


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


def data_input(layout: Layout, benchmark: str, context: str) -> dict[str, str]:
    """The benchmark's data (the `data` stage's output) as an MLflow dataset input, DVC's md5 as its digest."""
    info = read_json(layout.data(benchmark) / "info.json")
    digest = dvc_data_hash(layout, benchmark)
    source = {"path": f"runs/data/{benchmark}", "dvc_md5": digest, "samples_md5": info.get("md5")}
    schema = {"kind": info["kind"], "sample_shape": info["sample_shape"], "prompts": info["prompts"]}
    return {"name": f"{benchmark}/{'test' if context == 'evaluation' else 'data'}",
            "digest": digest.removeprefix("file:")[:36], "source_type": "dvc", "source": json.dumps(source),
            "schema": json.dumps(schema), "profile": json.dumps(info.get("sizes", {})), "context": context}


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


def shared_distill_config(params: PipelineParams, benchmark: str) -> Any:
    """The DistillConfig fields every arm of the benchmark shares (schedule, CFG), validated."""
    from pdmd_core.config import config_from_dict

    return config_from_dict(deep_merge(params.distill, params.benchmark(benchmark).distill),
                            source=f"{benchmark} distill defaults")


def eval_grid(info: dict[str, Any], params: PipelineParams) -> tuple[list[int], list[int]]:
    """(prompt ids, sample seeds) of the evaluation grid: every prompt × the same seeds for every arm."""
    prompts = list(range(len(info["prompts"])))
    seeds = [params.eval.sample_seed_offset + i for i in range(params.eval.seeds_per_prompt)]
    return prompts, seeds


def reference_name(params: PipelineParams) -> str:
    return f"{TEACHER_REFERENCE_PREFIX}{max(params.eval.teacher_steps)}"


def sample_sets(layout: Layout, benchmark: str, params: PipelineParams) -> list[tuple[str, int, Path]]:
    """(arm, training seed or -1 for teacher references, folder) for every sample set of the benchmark."""
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    out = [(f"{TEACHER_REFERENCE_PREFIX}{s}", -1, layout.sample_set(benchmark, f"{TEACHER_REFERENCE_PREFIX}{s}", None))
           for s in params.eval.teacher_steps]
    out += [(r["arm"], int(r["seed"]), layout.sample_set(benchmark, r["arm"], int(r["seed"]))) for r in sweep["runs"]]
    return out
