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


PEAK_TFLOPS = 0.05  # any peak: the CPU has no dense bf16 figure


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> Path:
    """One run of the whole rehearsal (every part), read by both tests: the preset part is the costly one."""
    out = tmp_path_factory.mktemp("gpu-study")
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "TMPDIR": str(out)}
    env.pop("PDMD_PROJECT_ROOT", None)
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "pdmd_pipeline.study.gpu_check", str(out),
                           "--cpu-rehearsal", "--peak-tflops", str(PEAK_TFLOPS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_gpu_study_rehearsal_runs_every_part(rehearsal):
    tmp_path = rehearsal
    report = json.loads((tmp_path / "gpu_study_cpu_rehearsal.json").read_text())
    assert report["smoke"]["returncode"] == 0, report["smoke"]["output_tail"]
    assert "| qwen_t2i | Base (40 steps, CFG 4) | cpu | 40 | 80 |" in report["smoke"]["speed_md"]
    for arm, phases in (("phased_k2_sgts", 2), ("sgts", 1), ("phased_k4", 4)):
        r = report["preset"]["arms"][arm]
        assert "error" not in r, r.get("traceback")
        # per phase: 1 warm-up + 2 timed iterations (the rehearsal's default)
        assert r["phases"] == phases and r["generator_iterations"] == 3 * phases and r["losses_finite"]
        assert [(p["phase"], len(p["seconds_per_iteration"]), p["steady_iterations"]) for p in r["per_phase"]] == \
            [(k, 3, 2) for k in range(phases)]
        assert all(0 < p["model_flops_per_iteration"] < p["hardware_flops_per_iteration"] for p in r["per_phase"])
        assert r["memory_plan_gib"].keys() >= {"weights", "activations_estimate", "total"}
    assert report["preset"]["arms"]["sgts"]["transport"] == "renoise"
    sampling = report["sampling"]
    assert "error" not in sampling, sampling.get("traceback")
    assert sampling["nfe"] == {"teacher": 80, "student": 4} and sampling["wall_speedup"] > 1
    assert "## Wan2.1-1.3B preset arms" in (tmp_path / "gpu_study_cpu_rehearsal.md").read_text()


def test_gpu_study_reports_each_phase_with_its_own_flops_and_steady_time(rehearsal, tiny_wan21_study_model,
                                                                          count_iterations):
    """The preset part's MFU / HFU: per phase, the FLOPs of that phase's iterations (an iteration of phase k of
    Phased DMD K=4 rolls out k more steps without grad in each of its 6 rollouts, so it costs more than one of
    phase 0) over the mean time of that phase's steady iterations. The FLOPs are checked against torch's counter
    over real iterations of the same arm on the same tiny model (FSDP2 at world size 1 adds no counted FLOPs):
    Phased DMD K=4 iteration by iteration (no exit step to draw), the SGTS arms through the formula's expectation
    at the pass costs counted here (the formula itself: tests/integration/realscale/test_iteration_flops.py)."""
    from pdmd_core.iteration_flops import Schedule, expected_iteration_flops
    from pdmd_core.paths import project_root
    from pdmd_pipeline.study.gpu_check import arm_config

    arms = json.loads((rehearsal / "gpu_study_cpu_rehearsal.json").read_text())["preset"]["arms"]
    peak = PEAK_TFLOPS * 1e12
    for arm in ("phased_k4", "phased_k2_sgts", "sgts"):
        r = arms[arm]
        assert "error" not in r, r.get("traceback")
        phases = r["per_phase"]
        cfg = arm_config(project_root(), arm, tiny_wan21_study_model, 1, "cpu")
        schedule = Schedule.of(cfg)
        deterministic = not schedule.truncated
        with_ac = count_iterations(cfg, checkpointing=True, max_iterations=1 if deterministic else 0)
        expected = [expected_iteration_flops(with_ac.costs[k], schedule, k) for k in range(cfg.num_phases)]
        assert [(p["model_flops_per_iteration"], p["hardware_flops_per_iteration"]) for p in phases] == \
            [(float(e.model), float(e.hardware)) for e in expected], arm
        if deterministic:  # the counter over real iterations: hardware with checkpointing, model without
            without = count_iterations(cfg, checkpointing=False, max_iterations=1)
            assert [p["hardware_flops_per_iteration"] for p in phases] == [i.flops for i in with_ac.iterations]
            assert [p["model_flops_per_iteration"] for p in phases] == [i.flops for i in without.iterations]
        for p in phases:  # the first (warm-up) iteration of each phase dropped; the rehearsal times 2 more
            steady = p["seconds_per_iteration"][1:]
            assert p["steady_iterations"] == len(steady) == 2 and p["mean_steady_seconds"] == sum(steady) / len(steady)
            assert p["mfu"] == pytest.approx(p["model_flops_per_iteration"] / p["mean_steady_seconds"] / peak,
                                             rel=1e-12)  # float division order only
            assert p["hfu"] == pytest.approx(p["hardware_flops_per_iteration"] / p["mean_steady_seconds"] / peak,
                                             rel=1e-12)
    k4 = [p["model_flops_per_iteration"] for p in arms["phased_k4"]["per_phase"]]
    assert k4 == sorted(set(k4)) and k4[1] > k4[0]  # every phase costs more than the one before
