"""`pdmd compare` on a real MLflow store: the latest sweep of a benchmark, a given sweep, or a whole study; each
arm's mean over its seeds with the Student-t interval on the seed values (the tables' statistic), headline
metrics first; the compare-page and
arms-view addresses; the saved view the tables stage writes round-trips through MLflow's tag envelope."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import pytest
from scipy import stats

from pdmd_pipeline.compare import CompareError, render, select_runs, summarize
from pdmd_pipeline.mlflow_views import (
    ARMS_VIEW_ID,
    SAVED_VIEW_PREFIX,
    arms_view_tags,
    compare_url,
    read_saved_view,
    runs_url,
)
from pdmd_pipeline.tracking import Tracker

ARMS = ("dmd", "sgts", "phased_k2_sgts")


def _value(sweep: int, arm: int, seed: int) -> float:
    return 1.0 + sweep + 0.1 * arm + 0.01 * seed


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment pdmd/toy with two sweeps (s0 older, s1 newer) of 3 arms × 2 seeds, as the pipeline logs them."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for s in range(2):
        sweep = f"s{s}"
        parent = Tracker(uri, f"toy/{sweep}/sweep", tmp / "spool")
        parent.start("pdmd/toy", f"sweep {sweep}", {"kind": "sweep", "sweep": sweep})
        for a, arm in enumerate(ARMS):
            for seed in (0, 1):
                child = Tracker(uri, f"toy/{sweep}/{arm}/seed{seed}", tmp / "spool")
                child.start("pdmd/toy", f"{arm}/seed{seed}", {"kind": "run", "sweep": sweep, "arm": arm,
                                                              "seed": seed}, parent_key=f"toy/{sweep}/sweep")
                child.log_metrics({"eval/div": _value(s, a, seed), "eval/fd": 10 * _value(s, a, seed),
                                   "eval/extra": 0.5}, 0)
                child.end()
        parent.set_experiment_tags("pdmd/toy", arms_view_tags("toy", sweep, ["eval/div", "eval/fd"],
                                                              ["generator_loss"], {"eval/div": "↑", "eval/fd": "↓"}))
        parent.end()
    return uri, MlflowClient(uri)


def test_latest_sweep_of_a_benchmark_side_by_side(store):
    uri, client = store
    title, runs = select_runs(client, benchmark="toy")
    assert title == "sweep s1" and len(runs) == 6
    cmp = summarize(client, title, runs)
    assert cmp.arms == list(ARMS) and cmp.metrics == ["eval/div", "eval/fd"]  # headline only, in their order
    assert cmp.directions == {"eval/div": "↑", "eval/fd": "↓"}
    for a, arm in enumerate(ARMS):
        values = [_value(1, a, seed) for seed in (0, 1)]
        res = cmp.results[arm]["eval/div"]
        assert res.mean == pytest.approx(np.mean(values), abs=1e-12)
        # two seeds: mean ± t_{0.975, 1} · sd / √2, with t_{0.975, 1} = 12.706 (wider than the seeds' own span, as
        # it must be with one degree of freedom; a percentile bootstrap could not leave [min, max])
        half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / np.sqrt(2)
        assert (res.low, res.high) == pytest.approx((np.mean(values) - half, np.mean(values) + half), abs=1e-12)
        assert res.low < min(values) and res.high > max(values)
        assert cmp.seeds[arm] == ["0", "1"]
    assert summarize(client, title, runs, all_metrics=True).metrics == ["eval/div", "eval/extra", "eval/fd"]
    table, lines = render(cmp, "http://ui:5000")
    assert table.row_count == 3 and lines[0].startswith("compare view (6 runs): http://ui:5000/#/compare-runs?")


def test_a_given_sweep_and_a_study(store):
    _, client = store
    _, older = select_runs(client, sweep="s0")
    assert {r.data.tags["sweep"] for r in older} == {"s0"} and len(older) == 6
    title, study = select_runs(client, study="pdmd/toy")
    cmp = summarize(client, title, study)
    assert title == "study pdmd/toy" and len(study) == 12  # both sweeps; the parents have no arm
    assert cmp.results["dmd"]["eval/div"].mean == pytest.approx(np.mean([_value(s, 0, k) for s in (0, 1)
                                                                          for k in (0, 1)]))
    with pytest.raises(CompareError, match="no arm runs"):
        select_runs(client, sweep="missing")
    with pytest.raises(CompareError, match="no MLflow experiment 'pdmd/other'"):
        select_runs(client, benchmark="other")
    with pytest.raises(CompareError, match="exactly one"):
        select_runs(client, sweep="s0", study="pdmd/toy")


def test_addresses_select_the_runs_and_open_the_saved_view(store):
    _, client = store
    _, runs = select_runs(client, benchmark="toy")
    ids = [r.info.run_id for r in runs]
    url = compare_url("http://127.0.0.1:5000", ["1", "1"], ids)
    query = parse_qs(urlparse(url).fragment.split("?", 1)[1])
    assert json.loads(unquote(query["runs"][0])) == ids and json.loads(query["experiments"][0]) == ["1"]
    assert query["workflowType"] == ["machine_learning"]
    assert runs_url("http://h:1/", "7", charts=True) == (
        "http://h:1/#/experiments/7/runs?viewStateShareKey=pdmd-arms&compareRunsMode=CHART"
        "&workflowType=machine_learning")
    tags = client.get_experiment_by_name("pdmd/toy").tags
    envelope = json.loads(tags[SAVED_VIEW_PREFIX + ARMS_VIEW_ID])
    assert envelope["name"].startswith("DMD vs SGTS vs Phased DMD") and envelope["state"].startswith("deflate;")
    state = read_saved_view(tags[SAVED_VIEW_PREFIX + ARMS_VIEW_ID])
    assert state["searchFilter"] == "tags.sweep = 's1' AND tags.kind = 'run'"  # the latest sweep
    assert state["groupBy"] == {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "arm"}]}
    assert state["selectedColumns"][:2] == ["metrics.`eval/div`", "metrics.`eval/fd`"]
    assert [(c["type"], c["metricKey"]) for c in state["compareRunCharts"]] == [
        ("BAR", "eval/div"), ("BAR", "eval/fd"), ("LINE", "generator_loss")]
    assert read_saved_view(tags[SAVED_VIEW_PREFIX + "pdmd-sweep-s0"])["searchFilter"].startswith("tags.sweep = 's0'")
