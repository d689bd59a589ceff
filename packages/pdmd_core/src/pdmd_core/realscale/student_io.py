"""Load a trained real-scale student (with its bundle and config) from a run folder or checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_student(run: Path | str, use_ema: bool = True, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(Student, ModelBundle, DistillConfig) from `run` (a run folder's latest checkpoint, or a file)."""
    from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint
    from pdmd_core.config import DistillConfig
    from pdmd_core.models.registry import build_model
    from pdmd_core.student import Student

    run = Path(run)
    path = run if run.is_file() else latest_checkpoint(run / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no checkpoint under {run / 'checkpoints'}")
    state = load_checkpoint(path, device)
    cfg = DistillConfig.model_validate(state["config"] | {"device": device})
    if cfg.model is None:
        raise ValueError(f"checkpoint {path} has no `model` section")
    bundle = build_model(cfg.model.kind, cfg.model.params, device)
    return Student.from_checkpoint(path, bundle=bundle, device=device, use_ema=use_ema), bundle, cfg
