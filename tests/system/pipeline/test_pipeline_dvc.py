"""The smoke sandbox: `dvc repro` of the smoke preset in a fresh git + DVC repository, built once for this module
(every test of that world is here, so that xdist's `--dist loadfile` builds it once, on one worker).

- every stage runs, the tables hold every arm with confidence intervals, the report states every claim;
- `dvc metrics show` and `dvc plots show` list the declared files (plots render offline); an edit of the trainer,
  a metric or the metric math marks exactly the stages that run it as changed;
- a diverging arm fails the distill stage with its log path and leaves dvc.lock untouched;
- the MLflow UI as a user meets it: `pdmd mlflow ui` on the run's store, opened in headless Chromium with a fresh
  profile: the address it prints for each benchmark lands on the runs table of the latest sweep grouped by arm,
  one row per arm × seed, the headline `eval/*` metrics as columns; `pdmd compare`'s address lists those runs;
- `dvc exp run --temp` and `--queue` + `--run-all` run the stages in temporary copies that DVC deletes, yet each
  experiment's MLflow runs land in the repository's store and its spool in the repository's `.pdmd/`
  (DVC_ROOT), every record delivered; `dvc exp show` lists the experiments; the workspace is left as it was.

Each test leaves the sandbox as it found it, in the sense that matters to the tests after it: the UI test
runs right after the repro (the failing-arm test adds a failed sweep, which `pdmd compare -b` would pick as
the latest), and the experiments test, which commits the sandbox, runs last."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from browser import render
from pipeline_smoke import ROOT, SMOKE, run_in, seeds_of, smoke_preset

from pdmd_pipeline import claims as C
from pdmd_pipeline.dvc_views import headline_metrics
from pdmd_pipeline.infra.mlflow_server import free_port, healthy
from pdmd_pipeline.infra.processes import wait_for
from pdmd_pipeline.sandbox import make_sandbox, repro, sandbox_env
from pdmd_pipeline.tracking import spools

STAGES = ("data", "teacher", "teacher_check", "distill", "sample", "evaluate", "convergence", "tables")
KIND = {"mog2d": "points", "moving_digits": "video"}
BIN = Path(sys.executable).parent
EXP_BENCH = "mog2d"
EXPERIMENTS = {"it12": 12, "it16": 16}  # divisible by every arm's phase count (1, 2, 4)


def _exp_rows(root) -> dict[str, dict]:
    """name → {"params": ..., "metrics": ...} from `dvc exp show --json` (DVC 3 layout)."""
    out = {}
    for baseline in json.loads(run_in(root, "dvc", "exp", "show", "--json")):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                out[rev.get("name") or exp.get("name")] = {
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}}
    return out


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    """The sandbox every test here shares: `dvc repro` of the smoke preset (every stage, two benchmarks)."""
    root = make_sandbox(SMOKE, tmp_path_factory.mktemp("smoke"), source=ROOT)
    return root, repro(root, timeout=1200)


def _preset() -> dict:
    return smoke_preset()


def _dvc(root: Path, *args: str) -> str:
    return run_in(root, "dvc", *args)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


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


@pytest.mark.slow
@pytest.mark.mlflow
def test_first_screen_groups_runs_by_arm_and_compare_view_lists_them(smoke_repo, tmp_path):
    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = smoke_preset()
    port = free_port()
    env = sandbox_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "pdmd"), "mlflow", "ui", "--port", str(port)], cwd=root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 180, 0.5)
        assert proc.poll() is None, log.read_text()
        printed = log.read_text()
        ui = f"http://127.0.0.1:{port}"
        for bench, spec in preset["benchmarks"].items():
            match = re.search(rf"pdmd/{bench}: arms table (\S+)", printed)
            assert match, printed
            url = match.group(1)
            assert url.startswith(f"{ui}/#/experiments/") and "workflowType=machine_learning" in url
            seeds = {arm: seeds_of(preset, arm) for arm in spec["arms"]}
            runs = [f"{arm}/seed{seed}" for arm in spec["arms"] for seed in seeds[arm]]
            headline = [f"eval/{m}" for m in headline_metrics(KIND[bench])]
            # the count the page states: arm × seed runs (extra seeds included), the sweep's parent and the
            # convergence runs filtered out
            text = render(url, [f"pdmd/{bench}", f"{len(runs)} matching runs", *runs, *headline], tmp_path,
                          f"runs-{bench}")
            for arm in spec["arms"]:  # one group per arm holding its seeds
                assert re.search(rf"Group: {re.escape(arm)} {len(seeds[arm])}\b", text), arm
            assert "Traces 0" not in text and "GenAI apps" not in text  # the training layout, not the GenAI one
            cmp = json.loads(run_in(root, str(BIN / "pdmd"), "compare", "-b", bench, "--ui", ui, "--json"))
            assert len(cmp["run_ids"]) == len(runs)
            text = render(cmp["compare_url"], [f"Comparing {len(runs)} Runs from 1 Experiment", *runs], tmp_path,
                          f"compare-{bench}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


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
def test_exp_run_temp_and_queue_keep_their_runs_and_spools(smoke_repo):
    from mlflow.tracking import MlflowClient

    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = smoke_preset()
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-q", "-m", "smoke baseline")
    target = f"tables@{EXP_BENCH}"
    run_in(root, "dvc", "exp", "run", "--temp", "-n", "it12", "-S", "iterations=12", target, timeout=1200)
    run_in(root, "dvc", "exp", "run", "--queue", "-n", "it16", "-S", "iterations=16", target)
    run_in(root, "dvc", "exp", "run", "--run-all", "-j", "1", timeout=1200)

    # the workspace is untouched and DVC removed its temporary copies
    assert yaml.safe_load((root / "params.yaml").read_text())["iterations"] == preset["iterations"]
    assert run_in(root, "git", "status", "--porcelain", "--untracked-files=no") == ""
    leftovers = [p for p in (root / ".dvc" / "tmp" / "exps").glob("tmp*") if p.is_dir()]
    assert leftovers == []

    # dvc exp show: both experiments, their iterations and their headline metrics per arm
    rows = _exp_rows(root)
    for name, iterations in EXPERIMENTS.items():
        assert rows[name]["params"]["iterations"] == iterations
        metrics = rows[name]["metrics"][f"reports/metrics/{EXP_BENCH}.json"]
        assert set(metrics) == {"teacher_4", "teacher_40", *preset["benchmarks"][EXP_BENCH]["arms"]}

    # MLflow: one sweep per experiment in the repository's store, each arm × seed with its own step count
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"pdmd/{EXP_BENCH}")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    data_md5 = lock[f"data@{EXP_BENCH}"]["outs"][0]["md5"]
    arms = preset["benchmarks"][EXP_BENCH]["arms"]
    for name, iterations in EXPERIMENTS.items():
        parents = client.search_runs([exp.experiment_id], f"tags.dvc_exp = '{name}' AND tags.kind = 'sweep'")
        assert len(parents) == 1, name
        sweep = parents[0].data.tags["sweep"]
        children = client.search_runs([exp.experiment_id], f"tags.sweep = '{sweep}' AND tags.kind = 'run'")
        assert sorted(r.info.run_name for r in children) == sorted(f"{a}/seed{s}" for a in arms
                                                                  for s in seeds_of(preset, a))
        for run in children:
            assert run.data.tags["dvc_exp"] == name and run.data.tags["dvc_data_md5"] == data_md5
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "generator_loss")]
            assert sorted(steps) == list(range(1, iterations + 1))
            assert any(k.startswith("eval/") for k in run.data.metrics)
        # its spool is in the repository, not in the deleted copy, and fully delivered
        mine = [s for s in spools(root / ".pdmd" / "mlflow-spool") if s.key.startswith(f"{EXP_BENCH}/{sweep}/")]
        assert len(mine) == len(children) + 1 and all(s.pending() == 0 for s in mine)
