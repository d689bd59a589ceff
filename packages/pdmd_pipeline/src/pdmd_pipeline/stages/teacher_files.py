"""Where a trained teacher is, and the model spec that builds distillation roles from it (distill, sample and
evaluate read the teacher; data and the teacher stage itself do not import this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.stages.common import StageError

MODEL_KIND = "cpu_tier"


def teacher_checkpoint(layout: Layout, benchmark: str) -> Path:
    from pdmd_core.cpu_tier.teacher import TEACHER_FILE

    path = layout.teacher(benchmark) / TEACHER_FILE
    if not path.is_file():
        raise StageError(f"no teacher at {path}: run `dvc repro teacher@{benchmark}` first")
    return path


def model_spec(layout: Layout, benchmark: str) -> dict[str, Any]:
    return {"kind": MODEL_KIND, "teacher": str(teacher_checkpoint(layout, benchmark))}
