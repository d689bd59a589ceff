"""Paths and the preset of the session's smoke sandbox (the fixture itself is in this folder's conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pdmd_pipeline.sandbox import sandbox_env

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "experiments" / "presets" / "smoke.yaml"


def smoke_preset() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def seeds_of(preset: dict, arm: str) -> list[int]:
    """The training seeds of an arm: the preset's seeds, plus `extra_seeds` for the arms it names."""
    extra = preset.get("extra_seeds") or {}
    return list(preset["seeds"]) + (list(extra.get("seeds", [])) if arm in extra.get("arms", []) else [])


def run_in(root: Path, *cmd: str, timeout: float = 300) -> str:
    """A command (dvc, git, pdmd) in the sandbox with this environment's tools; its stdout, failing loudly."""
    proc = subprocess.run(list(cmd), cwd=root, env=sandbox_env(), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output}"
    return proc.stdout
