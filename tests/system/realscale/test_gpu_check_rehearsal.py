"""The GPU check script (`python -m pdmd_core.realscale.gpu_check`) runs end to end on the CPU (`--cpu-rehearsal`),
so it cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pdmd_pipeline.infra.mlflow_server import free_port

pytestmark = [pytest.mark.slow]


def test_gpu_check_rehearsal_trains_exports_and_matches_the_pipeline(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "pdmd_core.realscale.gpu_check", str(out),
                           "--cpu-rehearsal"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    tiny = report["tiny_wan22_end_to_end"]
    assert "error" not in tiny, tiny.get("traceback")
    assert tiny["built_empty"] and tiny["fsdp2_dtensor_roles"] and tiny["losses_finite"]
    assert tiny["generator_steps"] == 6 and tiny["n_loss_values"] > 0
    assert tiny["pipeline_vs_trainer_max_abs_diff"]["fp32"] <= 1e-5
    preset = report["wan21_1p3b_preset_step"]
    assert "error" not in preset, preset.get("traceback")
    assert preset["generator_iterations"] == 4 and preset["losses_finite"]
    assert preset["memory_plan_gib"].keys() >= {"weights", "activations_estimate", "total"}
