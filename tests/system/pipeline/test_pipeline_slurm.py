"""The CPU-tier pipeline on SLURM: `dvc repro` of the smoke preset (one benchmark) with `executor: slurm` and a
real MLflow server runs every stage's arm × seed jobs as array tasks on the local cluster; checked back with
MlflowClient (params, tags, metric steps, artifacts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from pipeline_smoke import ROOT, SMOKE, smoke_preset

from pdmd_pipeline.jobs import flatten
from pdmd_pipeline.sandbox import make_sandbox, repro


def _preset() -> dict:
    return smoke_preset()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.mlflow
def test_slurm_executor_with_mlflow_server(slurm_cluster, mlflow_server, tmp_path):
    """A fresh world: the session's smoke sandbox runs on the local executor with no tracking server; this one is
    the same pipeline with `executor: slurm` and a server, one benchmark only, so that every stage's jobs go
    through SLURM arrays."""
    from mlflow.tracking import MlflowClient

    preset = _preset()
    bench = "moving_digits"  # video: PNG grids and GIFs
    overrides = {"executor": "slurm", "tracking_uri": mlflow_server.url,
                 "benchmarks": {bench: preset["benchmarks"][bench]}}
    root = make_sandbox(SMOKE, tmp_path / "repo", overrides, source=ROOT)
    result = repro(root, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    sweep = yaml.safe_load((root / "runs" / "distill" / bench / "sweep.json").read_text())
    arms, extra = preset["benchmarks"][bench]["arms"], preset["extra_seeds"]
    assert len(sweep["runs"]) == sum(len(preset["seeds"]) + (len(extra["seeds"]) if a in extra["arms"] else 0)
                                     for a in arms)
    array_ids = {r["slurm"]["slurm_array_job_id"] for r in sweep["runs"]}
    assert len(array_ids) == 1  # one array for the whole sweep
    assert sorted(int(r["slurm"]["slurm_array_task_id"]) for r in sweep["runs"]) == list(range(len(sweep["runs"])))
    # the convergence runs went through the same executor: one more array, student snapshots at every budget
    conv = [yaml.safe_load(p.read_text()) for p in (root / "runs" / "convergence" / bench / "train").glob("*/*/"
                                                                                                       "result.json")]
    assert len(conv) == 4 and len({r["slurm"]["slurm_array_job_id"] for r in conv}) == 1
    assert len(list((root / "runs" / "convergence" / bench / "train").glob("*/*/snapshots/ckpt_*.pt"))) == 6

    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name(f"pdmd/{bench}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.sweep = '{sweep['sweep_id']}'")
    parent = next(r for r in runs if r.data.tags.get("kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(sweep["runs"])
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    data_md5 = lock[f"data@{bench}"]["outs"][0]["md5"]
    assert data_md5.endswith(".dir")
    teacher_md5 = _md5(root / "runs" / "teachers" / bench / "teacher.pt")
    for run in children:
        arm, seed = run.info.run_name.split("/seed")
        config = yaml.safe_load((root / "runs" / "distill" / bench / arm / f"seed{seed}" / "config.yaml").read_text())
        assert run.data.params == {k: str(v) for k, v in flatten(config).items()}
        tags = run.data.tags
        assert (tags["method"], tags["seed"], tags["steps"]) == (config["method"], seed, str(config["num_steps"]))
        assert tags["phases"] == str(config["phases"] or 1) and tags["sgts"] in ("true", "false")
        assert tags["dvc_data_md5"] == data_md5 and tags["teacher_md5"] == teacher_md5 and tags["git_sha"]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "generator_loss"))
        assert steps == list(range(1, preset["iterations"] + 1))
        for metric in ("eval/featnet_similarity", "eval/recall_teacher_prompt", "eval/flow_mag",
                       "eval/fd_teacher_prompt"):
            assert metric in run.data.metrics
        files = {a.path for folder in ("samples", "tables") for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"samples/samples.png", "samples/sample.gif", "tables/table_rows.csv"} <= files
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    sgts = {r.info.run_name.split("/")[0]: r.data.tags["sgts"] for r in children}
    assert sgts["sgts"] == "true" and sgts["phased_k2_sgts"] == "true" and sgts["phased_k4"] == "false"
