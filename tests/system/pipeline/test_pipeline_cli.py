"""CLI entry points: `executor: slurm` without sbatch fails naming the field and writes nothing; `pdmd mlflow ui`
serves the project's local store; `pdmd mlflow replay` reports an empty spool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pdmd_pipeline.infra.mlflow_server import free_port, healthy
from pdmd_pipeline.infra.processes import wait_for

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def _project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "experiments" / "presets" / "smoke.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def test_launch_slurm_without_sbatch_names_the_field_and_writes_nothing(tmp_path):
    root = _project(tmp_path)
    env = dict(os.environ, PATH=str(BIN), PDMD_PROJECT_ROOT=str(root))
    proc = subprocess.run([str(BIN / "pdmd"), "launch", "--executor", "slurm"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "executor = 'slurm' but `sbatch` is not on PATH" in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["dvc.yaml", "params.yaml"]


@pytest.mark.mlflow
def test_mlflow_ui_serves_the_local_store(tmp_path):
    root = _project(tmp_path)
    port = free_port()
    env = dict(os.environ, PDMD_PROJECT_ROOT=str(root))
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([str(BIN / "pdmd"), "mlflow", "ui", "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 120, 0.5)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert (root / "mlflow.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_mlflow_replay_with_nothing_spooled(tmp_path):
    root = _project(tmp_path)
    env = dict(os.environ, PDMD_PROJECT_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'm.db'}")
    proc = subprocess.run([str(BIN / "pdmd"), "mlflow", "replay"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"pending": 0' in proc.stdout and '"records_pending": 0' in proc.stdout
