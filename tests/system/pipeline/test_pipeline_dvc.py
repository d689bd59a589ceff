"""`dvc repro` of the smoke preset in a fresh git + DVC repository: every stage runs, the tables hold every arm
with confidence intervals, the report states every claim; `dvc metrics show` and `dvc plots show` list the
declared files (plots render offline); an edit of the trainer, a metric or the metric math marks exactly the
stages that run it as changed; a diverging arm fails the distill stage with its log path and leaves dvc.lock
untouched. The SLURM variant runs the arm × seed jobs as array tasks on the real local cluster and logs to a real
MLflow server, checked back with MlflowClient."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from pipeline_smoke import ROOT, SMOKE, run_in, smoke_preset

from pdmd_pipeline import claims as C
from pdmd_pipeline.dvc_views import headline_metrics
from pdmd_pipeline.jobs import flatten
from pdmd_pipeline.sandbox import make_sandbox, repro

STAGES = ("data", "teacher", "teacher_check", "distill", "sample", "evaluate", "convergence", "tables")
KIND = {"mog2d": "points", "moving_digits": "video"}


def _preset() -> dict:
    return smoke_preset()


def _dvc(root: Path, *args: str) -> str:
    return run_in(root, "dvc", *args)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_smoke_repro_runs_every_stage_and_reports_every_arm(smoke_repo):
    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = _preset()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    expected = {f"{s}@{b}" for s in STAGES for b in preset["benchmarks"]} | {"report", "toy1d"}
    assert set(lock["stages"]) == expected
    extra = preset["extra_seeds"]
    conv_sweeps: dict[str, str] = {}
    for bench, spec in preset["benchmarks"].items():
        rows = _rows(root / "reports" / bench / "results.csv")
        assert list(rows) == ["teacher_4", "teacher_40", *spec["arms"]]
        div = C.metrics_for("diversity", "points" if bench == "mog2d" else "video")[0]
        for arm in spec["arms"]:
            row = rows[arm]
            seeds = len(preset["seeds"]) + (len(extra["seeds"]) if arm in extra["arms"] else 0)
            assert int(row[f"{div}_n"]) == seeds  # the table's unit is the training seed
            assert float(row[f"{div}_low"]) <= float(row[div]) <= float(row[f"{div}_high"])
            assert float(row["fd_teacher_prompt_low"]) < float(row["fd_teacher_prompt_high"])
        assert rows["teacher_40"][f"{div}_low"] == "nan"  # one teacher: no interval
        conv = yaml.safe_load((root / "runs" / "convergence" / bench / "convergence.json").read_text())
        assert conv["budgets"] == [4, 8, 16]
        conv_sweeps[bench] = conv["sweep_id"]  # its MLflow runs carry it as tag `sweep`
        assert (root / "reports" / "figures" / bench / "convergence.png").stat().st_size > 0
        claims = yaml.safe_load((root / "runs" / "claims" / f"{bench}.json").read_text())
        budget_rows = claims["convergence"]["rows"]
        assert budget_rows and all(set(r["directions"]) == {"4", "8", "16"} for r in budget_rows)
        md = (root / "reports" / bench / "results.md").read_text()
        tex = (root / "reports" / bench / "results.tex").read_text()
        assert all(arm in md and arm.replace("_", r"\_") in tex for arm in spec["arms"])
        assert (root / "reports" / "figures" / bench / "diversity_vs_fidelity.png").stat().st_size > 0
    assert (root / "reports" / "figures" / "moving_digits" / "motion.png").is_file()
    readme = (root / "reports" / "README.md").read_text()
    for claim in C.CLAIMS:
        assert claim.title in readme
    verdicts = re.findall(r"\*\*(held|not held|inconclusive|diversity with artefacts)\*\*", readme)
    assert verdicts, "the report states verdicts"
    assert "## What changed since the previous verdicts" in readme and "## Budget stability" in readme
    assert "sits on a plateau" in readme or "does not sit on a plateau" in readme
    toy = yaml.safe_load((root / "reports" / "toy1d" / "subinterval.json").read_text())
    assert toy["w1_eq13_to_true_x_s"] >= 0 and (root / "reports" / "toy1d" / "subinterval.png").is_file()
    # every run is in the local MLflow store: one parent per sweep, one child per arm × seed
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for bench, spec in preset["benchmarks"].items():
        exp = client.get_experiment_by_name(f"pdmd/{bench}")
        # other tests of this module add sweeps to the same store: select this repro's by their sweep ids
        sweep_id = json.loads((root / "runs" / "distill" / bench / "sweep.json").read_text())["sweep_id"]
        runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{sweep_id}'")
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(runs) - len(children) == 1  # the sweep's parent
        seeds = {a: len(preset["seeds"]) + (len(extra["seeds"]) if a in extra["arms"] else 0) for a in spec["arms"]}
        assert len(children) == sum(seeds.values())
        assert {r.data.tags.get("kind") for r in children} == {"run"}
        conv_id = conv_sweeps[bench]
        runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{conv_id}'")
        convergence = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(runs) - len(convergence) == 1  # the convergence parent
        assert {r.data.tags.get("kind") for r in convergence} == {"convergence"}
        assert sorted(r.info.run_name for r in convergence) == [
            "convergence phased_k2_sgts/it16", "convergence phased_k2_sgts/it4", "convergence phased_k2_sgts/it8",
            "convergence sgts/it16"]
        sgts = next(r for r in convergence if r.info.run_name == "convergence sgts/it16")
        div = C.metrics_for("diversity", "points" if bench == "mog2d" else "video")[0]
        assert [m.step for m in client.get_metric_history(sgts.info.run_id, f"eval/{div}")] == [4, 8, 16]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")


def _status(root: Path) -> set[str]:
    """Changed stages of the CPU tier's pipeline. `dvc status` without a target also lists the other dvc.yaml
    files of the project (the real-scale study, never reproduced here); `dvc repro` defaults to ./dvc.yaml."""
    return set(json.loads(_dvc(root, "status", "dvc.yaml", "--json") or "{}"))


@pytest.mark.slow
def test_dvc_metrics_plots_and_code_deps(smoke_repo, tmp_path):
    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = _preset()
    # metrics: per benchmark every arm's headline metrics (the results table's means), per teacher its bar
    shown = json.loads(_dvc(root, "metrics", "show", "--json"))[""]["data"]
    for bench, spec in preset["benchmarks"].items():
        record = shown[f"reports/metrics/{bench}.json"]["data"]
        assert list(record) == ["teacher_4", "teacher_40", *spec["arms"]]
        rows = _rows(root / "reports" / bench / "results.csv")
        for arm, values in record.items():
            assert set(values) == set(headline_metrics(KIND[bench]))
            for metric, value in values.items():
                assert value == pytest.approx(float(rows[arm][metric]), abs=1e-6)
        teacher = shown[f"reports/metrics/teachers/{bench}.json"]["data"]
        assert isinstance(teacher["passed"], bool) and any(k.endswith(("_min", "_max")) for k in teacher)
    # plots: every figure is an image plot, and the HTML page needs nothing from the internet
    out = tmp_path / "plots"
    _dvc(root, "plots", "show", "-o", str(out))
    page = _Images()
    page.feed((out / "index.html").read_text())
    figures = sorted((root / "reports" / "figures").rglob("*.png"))
    common = {"convergence", "diversity_vs_fidelity", "diversity_vs_precision", "headline_metrics", "training_curves"}
    expected = {f"{bench}/{name}.png" for bench in preset["benchmarks"]
                for name in common | ({"motion", "samples"} if KIND[bench] == "video" else set())}
    assert {str(f.relative_to(root / "reports" / "figures")) for f in figures} == expected
    assert len(page.images) == len(figures)
    assert all((out / src).is_file() for src in page.images) and page.scripts == []
    # code deps: each edit marks exactly the stages that run the edited file
    assert _status(root) == set()
    edits = {
        # the convergence stage trains and evaluates too
        "packages/pdmd_core/src/pdmd_core/trainer.py": {"distill", "convergence"},
        "packages/pdmd_eval/src/pdmd_eval/metrics/diversity.py": {"evaluate", "convergence", "tables", "report"},
        "packages/pdmd_eval/src/pdmd_eval/functional/fidelity.py": {"teacher_check", "evaluate", "convergence",
                                                                     "tables", "report"},
    }
    for path, stages in edits.items():
        source = root / path
        original = source.read_text()
        source.write_text(original + "\n# an edit\n")
        try:
            expected = {f"{s}@{b}" for s in stages - {"report"} for b in preset["benchmarks"]} | (stages & {"report"})
            assert _status(root) == expected, path
        finally:
            source.write_text(original)
    assert _status(root) == set()


@pytest.mark.slow
def test_failing_arm_fails_the_stage_and_keeps_the_lock(smoke_repo):
    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    params_file = root / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    # a teacher CFG scale of 1e38 overflows the DMD gradient: the engine stops the run on a non-finite value
    params["arms"]["diverge"] = {"method": "dmd", "num_steps": 1, "teacher_cfg": {"scale": 1.0e38}}
    params["benchmarks"]["mog2d"]["arms"] = ["dmd", "diverge"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    lock_before = (root / "dvc.lock").read_bytes()
    try:
        failed = repro(root, "distill@mog2d", timeout=300)
        assert failed.returncode != 0
        logs = re.findall(r"mog2d-diverge-seed\d: log (\S+\.log)", failed.output)
        assert logs, failed.output[-3000:]
        assert all(Path(p).is_file() and "non-finite" in Path(p).read_text() for p in logs)
        assert "mog2d-dmd-seed" not in " ".join(re.findall(r"--- (\S+): log", failed.output))
        assert (root / "dvc.lock").read_bytes() == lock_before
    finally:  # the session's sandbox as it was: its params, and the outputs DVC removed, back from the cache
        params_file.write_text(original)
        _dvc(root, "checkout", "--force", "distill@mog2d")


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
