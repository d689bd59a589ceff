"""The smoke study end to end: `dvc repro experiments/realscale/dvc.yaml` of experiments/presets/realscale_smoke.yaml
in a fresh git + DVC repository, every stage through the local SLURM cluster (distillation as 2-task jobs), logged
to an MLflow server the sandbox starts and stops; checked back with MlflowClient and in the report's files.
The one big test of the real-scale study (minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pdmd_pipeline.infra.mlflow_server import free_port, healthy
from pdmd_pipeline.sandbox import make_sandbox, mlflow_for, repro

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "experiments" / "presets" / "realscale_smoke.yaml"
STAGES = ("prompts", "distill", "export", "sample", "evaluate")
ARM_TAGS = ("method", "phases", "sgts", "steps", "seed", "arm", "git_sha", "dvc_data_md5", "teacher_md5", "sweep",
            "benchmark", "executor", "slurm_job_id")

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_smoke_study_runs_every_stage_on_slurm_logs_to_mlflow_and_writes_the_paper_tables(slurm_cluster, tmp_path):
    """A fresh world: the real-scale study is a pipeline of its own (experiments/realscale/dvc.yaml), with its own
    MLflow server, started and stopped by the sandbox, which the test checks; no other test shares it."""
    from mlflow.tracking import MlflowClient

    preset = yaml.safe_load(SMOKE.read_text())
    uri = f"http://127.0.0.1:{free_port()}"
    root = make_sandbox(SMOKE, tmp_path / "repo", {"tracking_uri": uri}, source=ROOT)
    assert not (root / "dvc.yaml").exists() and (root / "experiments" / "realscale" / "params.yaml").is_file()
    with mlflow_for(uri, root) as started:
        assert started and healthy(uri)
        result = repro(root, timeout=3600)
        assert result.returncode == 0, result.output[-4000:]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("pdmd-study/realscale_smoke")
        runs = client.search_runs([experiment.experiment_id], max_results=500)
        children = {r.data.tags["mlflow.runName"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
        parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
        expected = {f"{m}/{a}/seed{s}" for m, spec in preset["models"].items() for a in spec["arms"]
                    for s in preset["seeds"]}
        assert set(children) == expected and len(parents) == len(preset["models"])
        for name, run in children.items():
            model, arm, _ = name.split("/")
            assert all(tag in run.data.tags for tag in ARM_TAGS), sorted(run.data.tags)
            assert run.data.tags["arm"] == arm and run.data.tags["model"] == model
            assert run.data.tags["world_size"] == "2" and run.info.status == "FINISHED"
            assert run.data.params["transport"] == ("renoise" if arm == "sgts" else "euler")
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "generator_loss")]
            assert steps == list(range(1, preset["iterations"] + 1))  # every generator update once
            assert any(k.startswith("eval/") for k in run.data.metrics)
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
            video = preset["models"][model]["task"] != "t2i"
            assert artifacts == {"samples/samples.png", *(["samples/sample.gif", "samples/videos"] if video else [])}
            if video:  # every sample's MP4, as the sample stage wrote it
                mp4s = {a.path for a in client.list_artifacts(run.info.run_id, "samples/videos")}
                assert len(mp4s) == preset["models"][model]["eval"]["max_prompts"] and all(
                    p.endswith(".mp4") for p in mp4s)
    assert not healthy(uri)  # the sandbox stopped the server it started

    lock = yaml.safe_load((root / "experiments" / "realscale" / "dvc.lock").read_text())
    assert set(lock["stages"]) == {f"{s}@{m}" for s in STAGES for m in preset["models"]} | {"tables"}
    report = root / preset["report_dir"]
    for name in ("README.md", "table2.md", "table3.md", "table6.md", "speed.md"):
        assert "meaningless by construction" in (report / name).read_text() or name == "speed.md"
    table2 = (report / "table2.md").read_text()
    assert "| Base (40 steps, CFG 4) | paper | 10.26 | 79.55 | 0.00 | 0.0 | 9.32 |" in table2
    ours = [line for line in table2.splitlines() if line.startswith("|  | this study |")]
    assert len(ours) == 3 and all("not run" not in line for line in ours)  # T2V and I2V filled for every row
    table3 = (report / "table3.md").read_text()
    phased3 = table3.split("| Phased DMD | paper |")[1].splitlines()[1]
    assert phased3.count("not run") == 6 and phased3.count("±") == 3  # only the Qwen column is in the smoke
    table6 = (report / "table6.md").read_text()
    assert "4-step/4-phase (no SGTS) | paper | 9.43" in table6 and table6.count("| this study |") == 4
    assert "| Base (40 steps, CFG 4) | paper | 10.26 |" in table6 and "| DMD2 (SGTS) | paper | 3.23 |" in table6
    claims = json.loads((report / "claims.json").read_text())
    assert {c["claim"] for c in claims} >= {"diversity", "motion", "fidelity", "phases"}
    speed = (report / "speed.md").read_text()
    assert "| 40 | 80 |" in speed and speed.count("| 4 | 4 |") == 7  # teacher 40 steps x CFG; 7 student arms
    # the exported DMD2 students recorded their re-noise transport
    exports = json.loads((root / "runs/realscale/exports/wan22_t2v/exports.json").read_text())
    assert {e["arm"]: e["transport"] for e in exports}["sgts"] == "renoise"
    # nothing changed: a second repro reruns nothing
    again = repro(root, timeout=600)
    assert again.returncode == 0 and "didn't change" in again.output and "Running stage" not in again.output
