"""A fresh git + DVC repository holding the pipeline files and a preset as its params.yaml.

Used by `pdmd pipeline sandbox` (e.g. `make smoke`, CI) and by the tests: `dvc repro` there exercises the real
dvc.yaml without touching the project's own params.yaml, dvc.lock or reports. The packages' sources are copied
too, because dvc.yaml lists them as each stage's code deps (the stages themselves run the installed packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pdmd_core.paths import project_root

PIPELINE_FILES = ("dvc.yaml", ".dvcignore", "reports/verdicts_before.json")  # + the report stage's reference
PIPELINE_DIRS = ("experiments", "slurm", "packages")
NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
# DVC passes these to stage commands; a sandbox run from inside another DVC stage must not inherit them
DVC_STAGE_ENV = ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")


@dataclass
class ReproResult:
    returncode: int
    seconds: float
    output: str


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def sandbox_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PDMD_PROJECT_ROOT", None)
    for name in DVC_STAGE_ENV:
        env.pop(name, None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")  # `pdmd` and `dvc` of this environment
    return env


def make_sandbox(preset: Path, folder: Path | None = None, overrides: dict[str, Any] | None = None,
                 source: Path | None = None) -> Path:
    source = (source or project_root()).resolve()
    preset = preset if preset.is_absolute() else source / preset
    if not preset.is_file():
        raise FileNotFoundError(f"preset {preset} does not exist")
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="pdmd-sandbox-"))
    root.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        if (source / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, root / name)
    for name in PIPELINE_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, root / name, dirs_exist_ok=True, ignore=NOT_COPIED)
    params = yaml.safe_load(preset.read_text()) or {}
    params.update(overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/.pdmd/\n/mlflow.db\n/mlruns/\n__pycache__/\n*.egg-info/\n")
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "sandbox@pdmd.local")
    _git(root, "config", "user.name", "pdmd sandbox")
    env = sandbox_env()
    subprocess.run(["dvc", "init", "-q"], cwd=root, check=True, capture_output=True, env=env)
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=root, check=True, capture_output=True,
                   env=env)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sandbox")
    return root


def repro(root: Path, *targets: str, timeout: float | None = None) -> ReproResult:
    start = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", *targets], cwd=root, env=sandbox_env(), capture_output=True, text=True,
                          timeout=timeout)
    return ReproResult(proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr)
