"""Where pdmd keeps its local state (MLflow store, run folders) for a project checkout."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The project folder: $PDMD_PROJECT_ROOT, else the nearest parent holding dvc.yaml or .git, else cwd."""
    env = os.environ.get("PDMD_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return here


def state_dir(start: Path | None = None) -> Path:
    """Per-project scratch state (server pid files, spools); ignored by git."""
    path = project_root(start) / ".pdmd"
    path.mkdir(parents=True, exist_ok=True)
    return path
