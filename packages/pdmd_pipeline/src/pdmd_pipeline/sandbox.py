"""A fresh git + DVC repository holding the pipeline files and a preset as its params.yaml.

Used by `pdmd pipeline sandbox` (e.g. `make smoke`, CI) and by the tests: `dvc repro` there exercises the real
dvc.yaml without touching the project's own params.yaml, dvc.lock or reports. The packages' sources are copied
too, because dvc.yaml lists them as each stage's code deps (the stages themselves run the installed packages).

A study preset (a params file with a top-level `study` key, e.g. experiments/presets/realscale_smoke.yaml) becomes
the sandbox's experiments/realscale/params.yaml and `dvc repro` runs experiments/realscale/dvc.yaml; the CPU tier's
root dvc.yaml is left out (its params would not be there). `mlflow_for(uri, root)` serves a loopback tracking URI
(`http://127.0.0.1:PORT`) from the sandbox while `dvc repro` runs, when no server answers there yet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
STUDY_PARAMS = Path("experiments") / "realscale" / "params.yaml"
STUDY_PIPELINE = "experiments/realscale/dvc.yaml"
LOOPBACK = ("127.0.0.1", "localhost")


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
    params = yaml.safe_load(preset.read_text()) or {}
    params.update(overrides or {})
    study = is_study(params)
    for name in PIPELINE_FILES:
        if (source / name).exists() and not (study and name == "dvc.yaml"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, root / name)
    for name in PIPELINE_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, root / name, dirs_exist_ok=True, ignore=NOT_COPIED)
    (root / (STUDY_PARAMS if study else Path("params.yaml"))).write_text(yaml.safe_dump(params, sort_keys=False))
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


def is_study(params: dict[str, Any]) -> bool:
    return "study" in params


def targets_for(root: Path) -> tuple[str, ...]:
    """What `dvc repro` runs in a sandbox: the study pipeline when the sandbox holds a study, else everything."""
    return (STUDY_PIPELINE,) if (root / STUDY_PARAMS).is_file() and not (root / "dvc.yaml").exists() else ()


def tracking_uri_of(root: Path) -> str | None:
    path = root / STUDY_PARAMS if targets_for(root) else root / "params.yaml"
    value = (yaml.safe_load(path.read_text()) or {}).get("tracking_uri") if path.is_file() else None
    return str(value) if value else None


@contextlib.contextmanager
def mlflow_for(uri: str | None, root: Path) -> Iterator[bool]:
    """Serve `uri` from `<root>/.pdmd/mlflow` for the duration when it is a loopback http URL nobody serves yet
    (yields True when this started a server, which it stops afterwards); otherwise does nothing."""
    from urllib.parse import urlparse

    from pdmd_pipeline.infra import mlflow_server

    parsed = urlparse(uri or "")
    if parsed.scheme != "http" or parsed.hostname not in LOOPBACK or parsed.port is None \
            or mlflow_server.healthy(f"http://{parsed.hostname}:{parsed.port}"):
        yield False
        return
    folder = root / ".pdmd" / "mlflow"
    try:
        mlflow_server.start(folder, parsed.port, "127.0.0.1")
    except mlflow_server.MlflowServerError as err:
        raise mlflow_server.MlflowServerError(f"tracking_uri {uri}: {err} (is port {parsed.port} taken? pass "
                                              f"--tracking-uri http://127.0.0.1:<free port>)") from None
    try:
        yield True
    finally:
        mlflow_server.stop(folder)


def repro(root: Path, *targets: str, timeout: float | None = None) -> ReproResult:
    targets = targets or targets_for(root)
    start = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", *targets], cwd=root, env=sandbox_env(), capture_output=True, text=True,
                          timeout=timeout)
    return ReproResult(proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr)
