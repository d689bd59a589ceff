"""`pdmd compare`: the arms of a sweep (or of a whole study) side by side, read back from MLflow.

Per arm: each `eval/*` metric's mean over the arm's runs (one run = one training seed) with the 95 % Student-t
interval on those seed values (`pdmd_eval.stats.t_interval`), the statistic of the results tables and the claims
(`clustered_ci`: t on seed means). A percentile bootstrap over 2-3 seeds cannot reach outside the seeds' own
min-max and covers far less than 95 %, so it is not used here. One seed: the mean alone (n=1).
Also printed: the MLflow UI addresses of the experiment's saved arms view and of the compare page with exactly
these runs selected.

Selection: `--sweep ID` (the runs of one distill stage, in any experiment), `--benchmark B` (the latest sweep in
experiment `pdmd/B`), or `--study NAME` (every run with an `arm` tag in the MLflow experiment NAME, e.g. a
real-scale study spanning several sweeps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pdmd_pipeline.mlflow_views import DIRECTIONS_TAG, HEADLINE_TAG

EVAL_PREFIX = "eval/"


class CompareError(RuntimeError):
    pass


@dataclass
class Comparison:
    title: str
    experiment_ids: list[str]
    run_ids: list[str]
    arms: list[str]
    metrics: list[str]
    directions: dict[str, str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm → metric → MetricResult
    seeds: dict[str, list[str]] = field(default_factory=dict)


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    from pdmd_pipeline.tracking import _quiet_http

    _quiet_http()
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> Any:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise CompareError(f"no MLflow experiment {name!r} at this tracking URI; experiments: {names}")
    return exp


def select_runs(client: Any, sweep: str | None = None, benchmark: str | None = None,
                study: str | None = None) -> tuple[str, list[Any]]:
    """(title, runs): the arm × seed runs chosen by exactly one of sweep / benchmark / study."""
    if sum(x is not None for x in (sweep, benchmark, study)) != 1:
        raise CompareError("give exactly one of --sweep, --benchmark, --study")
    if study is not None:
        exp = _experiment(client, study)
        runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000) if "arm" in r.data.tags]
        title = f"study {study}"
    else:
        if benchmark is not None:
            from pdmd_pipeline.stages.common import experiment_name

            exp = _experiment(client, experiment_name(benchmark))
            parents = client.search_runs([exp.experiment_id], "tags.kind = 'sweep'", max_results=1,
                                         order_by=["attributes.start_time DESC"])
            if not parents:
                raise CompareError(f"experiment {exp.name!r} has no sweep yet (run `dvc repro` or `pdmd launch`)")
            sweep = parents[0].data.tags["sweep"]
            experiments = [exp.experiment_id]
        else:
            experiments = [e.experiment_id for e in client.search_experiments()]
        runs = [r for r in client.search_runs(experiments, f"tags.sweep = '{sweep}'", max_results=5000)
                if "arm" in r.data.tags and r.data.tags.get("kind") != "sweep"]
        title = f"sweep {sweep}"
    if not runs:
        raise CompareError(f"{title}: no arm runs found")
    return title, sorted(runs, key=lambda r: r.info.start_time or 0)


def summarize(client: Any, title: str, runs: list[Any], confidence: float = 0.95,
              all_metrics: bool = False) -> Comparison:
    import numpy as np

    from pdmd_eval.registry import MetricResult
    from pdmd_eval.stats import t_interval

    experiment_ids = sorted({r.info.experiment_id for r in runs})
    tags = client.get_experiment(experiment_ids[0]).tags
    headline = [m for m in tags.get(HEADLINE_TAG, "").split(",") if m]
    directions = json.loads(tags.get(DIRECTIONS_TAG, "{}"))
    present = sorted({k for r in runs for k in r.data.metrics if k.startswith(EVAL_PREFIX)})
    metrics = [m for m in headline if m in present] if headline and not all_metrics else present
    metrics = metrics or present
    arms: list[str] = []
    for run in runs:
        if run.data.tags["arm"] not in arms:
            arms.append(run.data.tags["arm"])
    out = Comparison(title, experiment_ids, [r.info.run_id for r in runs], arms, metrics,
                     {m: directions.get(m, "") for m in metrics})
    for arm in arms:
        mine = [r for r in runs if r.data.tags["arm"] == arm]
        out.seeds[arm] = [r.data.tags.get("seed", "?") for r in mine]
        out.results[arm] = {}
        for metric in metrics:
            vals = [(r.data.tags.get("seed", r.info.run_id), r.data.metrics[metric]) for r in mine
                    if metric in r.data.metrics]
            if vals:
                keys, values = zip(*vals, strict=True)
                arr = np.asarray(values, dtype=np.float64)
                mean, low, high = t_interval(arr, confidence)
                out.results[arm][metric] = MetricResult(metric, out.directions[metric], "seed", list(keys), arr,
                                                        mean, low, high)
    return out


def _cell(res: Any) -> str:
    if res is None:
        return "–"
    if len(res.values) < 2 or res.low == res.high:  # one seed: no interval; identical seeds: zero width
        return f"{res.mean:.4g} (n={len(res.values)})"
    return f"{res.mean:.4g} [{res.low:.4g}, {res.high:.4g}]"


def render(cmp: Comparison, ui: str) -> tuple[Any, list[str]]:
    """A rich table (arms × metrics) and the lines with the UI addresses."""
    from rich.table import Table

    from pdmd_pipeline.mlflow_views import compare_url, runs_url

    table = Table(title=f"{cmp.title}: mean [95% t interval over training seeds]")
    table.add_column("arm")
    table.add_column("seeds")
    for metric in cmp.metrics:
        table.add_column(f"{metric} {cmp.directions.get(metric, '')}".strip(), justify="right")
    for arm in cmp.arms:
        table.add_row(arm, ",".join(cmp.seeds[arm]), *(_cell(cmp.results[arm].get(m)) for m in cmp.metrics))
    lines = [f"compare view ({len(cmp.run_ids)} runs): {compare_url(ui, cmp.experiment_ids, cmp.run_ids)}"]
    lines += [f"arms view: {runs_url(ui, e)}" for e in cmp.experiment_ids]
    return table, lines
