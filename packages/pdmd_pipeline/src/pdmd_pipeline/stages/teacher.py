"""The `teacher` stage: train the benchmark's teacher (and its feature net) → runs/teachers/<b>/, with the
training statistics in train_stats.json. Its quality bar is checked by the `teacher_check` stage."""

from __future__ import annotations

import json
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams
from pdmd_pipeline.stages.common import benchmark_config

TRAIN_STATS_FILE = "train_stats.json"


def stage_teacher(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    from pdmd_core.cpu_tier.teacher import train_teacher

    cfg = benchmark_config(params, benchmark, layout.root)
    folder = layout.teacher(benchmark)
    teacher = train_teacher(cfg, folder, progress=True)
    (folder / TRAIN_STATS_FILE).write_text(json.dumps(teacher.stats, indent=2) + "\n")
    return teacher.stats
