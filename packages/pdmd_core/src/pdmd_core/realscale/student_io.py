"""Load a trained real-scale student (with its bundle and config) from a run folder or a checkpoint (a file, or a
committed DCP folder of a multi-rank run, read directly: only the generator experts, no gather by a rank)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_student(run: Path | str, use_ema: bool = True, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(Student, ModelBundle, DistillConfig) from `run` (a run folder's latest complete checkpoint, or one)."""
    from pdmd_core.checkpoint import checkpoint_step, latest_checkpoint, read_header
    from pdmd_core.config import DistillConfig
    from pdmd_core.student import Student, bundle_from_checkpoint_config

    run = Path(run)
    path = run if _is_checkpoint(run) else latest_checkpoint(run / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
    checkpoint_step(path)  # a checkpoint's own name, or a clear error
    cfg = DistillConfig.model_validate(read_header(path, device)["config"] | {"device": device})
    bundle = bundle_from_checkpoint_config(cfg, path, device)
    return Student.from_checkpoint(path, bundle=bundle, device=device, use_ema=use_ema), bundle, cfg


def _is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or a DCP checkpoint folder (rather than a run folder)."""
    return path.is_file() or (path.is_dir() and path.suffix == ".dcp")
