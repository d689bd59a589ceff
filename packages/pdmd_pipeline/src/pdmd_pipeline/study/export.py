"""The export stage of a study (one job per model): every trained arm × seed exported in diffusers form
(per-expert LoRA files, the student's scheduler with its transport, pdmd_export.json), which the sample stage
loads into the stock pipelines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_pipeline.study.distill import read_sweep, run_folder
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import StudyParams

EXPORTS = "exports.json"


def export_run(run_dir: Path, out: Path) -> dict[str, Any]:
    """Export rank 0's latest checkpoint of a run (EMA weights when the run has them) as LoRA experts."""
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.student_io import load_student

    student, bundle, cfg = load_student(run_dir)
    manifest = export_student(student.generator, bundle, cfg, out, "lora")
    return {"experts": len(manifest.experts), "transport": manifest.transport, "timesteps": manifest.timesteps}


@dataclass(frozen=True)
class ExportJob:
    model: str
    runs: list[tuple[str, str]]  # (run folder, export folder)
    threads: int = 1


def run_export_job(job: ExportJob) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(job.threads)
    return [export_run(Path(run), Path(out)) for run, out in job.runs]


def stage_export(study: StudyParams, model: str, layout: StudyLayout) -> list[dict[str, Any]]:
    from pdmd_pipeline.executors import ExecutorSettings, run_jobs

    sweep = read_sweep(layout, model)
    pairs = [(str(run_folder(layout, r)), str(layout.export(model, r["arm"], int(r["seed"])))) for r in sweep["runs"]]
    settings = ExecutorSettings(kind=study.executor, local_parallel=1, slurm_profile=study.profiles.export,
                                job_name=f"export {model}")
    [summaries] = run_jobs(run_export_job, [ExportJob(model, pairs, study.torch_threads)], [f"export-{model}"],
                           settings, layout.exports(model) / "logs")
    rows = [{"arm": r["arm"], "seed": r["seed"], "export": layout.rel(Path(out)), **summary}
            for r, (_, out), summary in zip(sweep["runs"], pairs, summaries, strict=True)]
    (layout.exports(model) / EXPORTS).write_text(json.dumps(rows, indent=2))
    return rows
