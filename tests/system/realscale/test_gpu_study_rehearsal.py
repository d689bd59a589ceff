"""The study's GPU script (`python -m pdmd_pipeline.study.gpu_check`) runs end to end on the CPU
(`--cpu-rehearsal`: tiny architecture, gloo, the smoke study reduced to one model with the local executor), so it
cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdmd_pipeline.infra.mlflow_server import free_port

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


def test_gpu_study_rehearsal_runs_every_part(tmp_path):
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("PDMD_PROJECT_ROOT", None)
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "pdmd_pipeline.study.gpu_check", str(tmp_path),
                           "--cpu-rehearsal"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_study_cpu_rehearsal.json").read_text())
    assert report["smoke"]["returncode"] == 0, report["smoke"]["output_tail"]
    assert "| qwen_t2i | Base (40 steps, CFG 4) | cpu | 40 | 80 |" in report["smoke"]["speed_md"]
    for arm, phases in (("phased_k2_sgts", 2), ("sgts", 1), ("phased_k4", 4)):
        r = report["preset"]["arms"][arm]
        assert "error" not in r, r.get("traceback")
        assert r["phases"] == phases and r["generator_iterations"] == 3 * phases and r["losses_finite"]
        assert r["flops_per_iteration"] > 0 and len(r["seconds_per_generator_iteration"]) == 3 * phases - 1
        assert r["memory_plan_gib"].keys() >= {"weights", "activations_estimate", "total"}
    assert report["preset"]["arms"]["sgts"]["transport"] == "renoise"
    sampling = report["sampling"]
    assert "error" not in sampling, sampling.get("traceback")
    assert sampling["nfe"] == {"teacher": 80, "student": 4} and sampling["wall_speedup"] > 1
    assert "## Wan2.1-1.3B preset arms" in (tmp_path / "gpu_study_cpu_rehearsal.md").read_text()
