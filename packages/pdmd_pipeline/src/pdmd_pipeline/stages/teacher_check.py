"""The `teacher_check` stage: the trained teacher against its benchmark's quality bar → reports/teachers/<b>.json
(the full report), reports/metrics/teachers/<b>.json (the bar and the measured values, flat: DVC metrics), the
check's samples, and the gate file that `distill` depends on.

The gate file holds only the verdict ({"passed", "enforced"}), so a change of the metric math that moves the
numbers but not the verdict reruns this check and nothing downstream; a missed bar with `enforce_bar: true`
fails the stage, and DVC then runs no distillation on that teacher.
"""

from __future__ import annotations

import json
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams
from pdmd_pipeline.stages.common import StageError, benchmark_config


def stage_teacher_check(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    from pdmd_pipeline.cpu_tier.teacher_quality import check_saved_teacher
    from pdmd_pipeline.stages.teacher import TRAIN_STATS_FILE

    cfg = benchmark_config(params, benchmark, layout.root)
    folder = layout.teacher(benchmark)
    stats_file = folder / TRAIN_STATS_FILE
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    report = check_saved_teacher(cfg, folder, layout.root, layout.teacher_check(benchmark) / "samples", stats)
    enforced = params.benchmark(benchmark).enforce_bar
    flat = {"passed": bool(report["passed"]), **report["metrics"], **report["bar"]}
    layout.teacher_metrics(benchmark).parent.mkdir(parents=True, exist_ok=True)
    layout.teacher_metrics(benchmark).write_text(json.dumps(flat, indent=2) + "\n")
    gate = layout.teacher_gate(benchmark)
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text(json.dumps({"passed": bool(report["passed"]), "enforced": enforced}) + "\n")
    if enforced and not report.get("passed", False):
        raise StageError(f"teacher for {benchmark} missed its quality bar: metrics {report.get('metrics')}, bar "
                         f"{report.get('bar')} (see {layout.teacher_report(benchmark)}); set "
                         f"benchmarks.{benchmark}.enforce_bar: false to continue anyway")
    return report
