"""`dvc exp run` on the smoke sandbox: `--temp` and `--queue` + `--run-all` run the stages in temporary copies
that DVC deletes afterwards, yet each experiment's MLflow runs land in the repository's store and its spool in
the repository's `.pdmd/` (DVC_ROOT), every record delivered; `dvc exp show` lists the experiments with their
params and metrics; the workspace is left as it was."""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_smoke import run_in, seeds_of, smoke_preset

from pdmd_pipeline.tracking import spools

BENCH = "mog2d"
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


@pytest.mark.slow
def test_exp_run_temp_and_queue_keep_their_runs_and_spools(smoke_repo):
    from mlflow.tracking import MlflowClient

    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = smoke_preset()
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-q", "-m", "smoke baseline")
    target = f"tables@{BENCH}"
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
        metrics = rows[name]["metrics"][f"reports/metrics/{BENCH}.json"]
        assert set(metrics) == {"teacher_4", "teacher_40", *preset["benchmarks"][BENCH]["arms"]}

    # MLflow: one sweep per experiment in the repository's store, each arm × seed with its own step count
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"pdmd/{BENCH}")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    data_md5 = lock[f"data@{BENCH}"]["outs"][0]["md5"]
    arms = preset["benchmarks"][BENCH]["arms"]
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
        mine = [s for s in spools(root / ".pdmd" / "mlflow-spool") if s.key.startswith(f"{BENCH}/{sweep}/")]
        assert len(mine) == len(children) + 1 and all(s.pending() == 0 for s in mine)
