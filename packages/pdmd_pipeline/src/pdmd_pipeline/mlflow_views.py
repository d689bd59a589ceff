"""What MLflow's UI (3.17) shows first: a saved runs view per benchmark that answers "DMD vs SGTS vs Phased DMD",
and the addresses of that view and of the compare page.

MLflow 3.x keeps the runs page's state (search, columns, grouping, charts) as a *saved view*: an experiment tag
`mlflow.sharedViewState.<id>` holding `{"name", "createdAt", "updatedAt", "state"}`, `state` being the JSON of
the search facets and UI state (here zlib-compressed as `deflate;<base64>`, which the UI inflates). The runs tab
lists saved views under "Views", and `#/experiments/<id>/runs?viewStateShareKey=<view id>` opens one. The view
written for a sweep filters to its arm × seed runs, groups them by the `arm` tag (MLflow averages the seeds of a
group and draws its min-max band), shows the headline `eval/*` metrics as columns, bar charts of them, and the
training losses as line charts.

Since 3.17 the UI picks its GenAI or model-training layout from a workflow switch (remembered by the browser,
default GenAI), not from the experiment's `mlflow.experimentKind` tag, so every address printed here carries
`workflowType=machine_learning`. The experiments are still tagged as model-training experiments (tracking.py).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from typing import Any
from urllib.parse import quote

SAVED_VIEW_PREFIX = "mlflow.sharedViewState."
ARMS_VIEW_ID = "pdmd-arms"
ARMS_VIEW_NAME = "DMD vs SGTS vs Phased DMD (latest sweep)"
DESCRIPTION_TAG = "mlflow.note.content"
DEFAULT_UI = "http://127.0.0.1:5000"
MODEL_TRAINING = "workflowType=machine_learning"
HEADLINE_TAG = "pdmd.headline_metrics"  # experiment tags `pdmd compare` reads
DIRECTIONS_TAG = "pdmd.metric_directions"
HEADLINE_SECTION = "pdmd-headline"
TRAINING_SECTION = "pdmd-training"


def column(kind: str, key: str) -> str:
    """MLflow's column key, e.g. column("metrics", "eval/div_feat") = "metrics.`eval/div_feat`"."""
    return f"{kind}.`{key}`"


def _bar(metric: str) -> dict[str, Any]:
    return {"uuid": f"pdmd-bar-{metric}", "type": "BAR", "runsCountToCompare": 100, "metricSectionId": HEADLINE_SECTION,
            "deleted": False, "isGenerated": False, "metricKey": metric, "displayName": metric}


def _line(metric: str) -> dict[str, Any]:
    return {"uuid": f"pdmd-line-{metric}", "type": "LINE", "runsCountToCompare": 100,
            "metricSectionId": TRAINING_SECTION, "deleted": False, "isGenerated": False, "metricKey": metric,
            "selectedMetricKeys": [metric], "displayName": metric, "lineSmoothness": 0, "xAxisKey": "step",
            "selectedXAxisMetricKey": "", "scaleType": "linear", "xAxisScaleType": "linear", "showPoints": False,
            "useGlobalLineSmoothing": False, "useGlobalXaxisKey": False}


def arms_view_state(sweep_id: str, headline: list[str], curves: list[str]) -> dict[str, Any]:
    """The runs page state: this sweep's arm × seed runs grouped by arm, headline metrics as columns and charts."""
    return {
        "searchFilter": f"tags.sweep = '{sweep_id}' AND tags.kind = 'run'",
        "orderByKey": column("attributes", "run_name"),
        "orderByAsc": True,
        # the headline metrics right after the run names (the dataset and model columns would push them off
        # screen; both are on each run's page)
        "selectedColumns": [*(column("metrics", m) for m in headline),
                            column("tags", "method"), column("tags", "phases"), column("tags", "sgts"),
                            column("tags", "steps")],
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "arm"}]},
        "groupsExpanded": {},
        "runsHiddenMode": "SHOW_ALL",
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "isAccordionReordered": True,
        "compareRunSections": [
            {"uuid": HEADLINE_SECTION, "name": "DMD vs SGTS vs Phased DMD: headline metrics (mean over seeds)",
             "display": True, "isReordered": True},
            {"uuid": TRAINING_SECTION, "name": "Training (mean and range over seeds)", "display": True,
             "isReordered": True},
        ],
        "compareRunCharts": [*(_bar(m) for m in headline), *(_line(m) for m in curves)],
    }


def compress(text: str) -> str:
    return "deflate;" + base64.b64encode(zlib.compress(text.encode())).decode("ascii")


def saved_view_tag(view_id: str, name: str, state: dict[str, Any], now_ms: int | None = None) -> tuple[str, str]:
    """(experiment tag key, value) of a saved runs view, in the envelope MLflow's UI reads."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now, "updatedAt": now,
                "state": compress(json.dumps(state, separators=(",", ":")))}
    return SAVED_VIEW_PREFIX + view_id, json.dumps(envelope, separators=(",", ":"))


def read_saved_view(value: str) -> dict[str, Any]:
    """The state dict of a saved view's tag value (the inverse of saved_view_tag, for tests and tools)."""
    envelope = json.loads(value)
    state = envelope["state"]
    if state.startswith("deflate;"):
        state = zlib.decompress(base64.b64decode(state[len("deflate;"):])).decode()
    return dict(json.loads(state))


def arms_view_tags(benchmark: str, sweep_id: str, headline: list[str], curves: list[str],
                   directions: dict[str, str] | None = None) -> dict[str, str]:
    """Experiment tags for a finished sweep: the saved view (a stable id, so it always shows the latest sweep,
    plus one per sweep), a description pointing to it, and the headline metrics and metric directions that
    `pdmd compare` reads."""
    state = arms_view_state(sweep_id, headline, curves)
    latest_key, latest = saved_view_tag(ARMS_VIEW_ID, ARMS_VIEW_NAME, state)
    sweep_key, sweep = saved_view_tag(f"pdmd-sweep-{sweep_id}", f"Arms of sweep {sweep_id}", state)
    description = (f"**{benchmark}**: distillation arms (DMD, SGTS, Phased DMD and ablations) × training seeds, one "
                   f"run each, under a parent run per sweep. Runs tab → *Views* → **{ARMS_VIEW_NAME}** groups the "
                   f"latest sweep ({sweep_id}) by arm with the headline metrics {', '.join(headline)}. In a "
                   f"terminal: `pdmd compare -b {benchmark}` (means and 95 % CIs over seeds).")
    return {latest_key: latest, sweep_key: sweep, DESCRIPTION_TAG: description, HEADLINE_TAG: ",".join(headline),
            DIRECTIONS_TAG: json.dumps(directions or {}, sort_keys=True)}


def runs_url(ui: str, experiment_id: str, view_id: str = ARMS_VIEW_ID, charts: bool = False) -> str:
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={view_id}{mode}&{MODEL_TRAINING}"


def compare_url(ui: str, experiment_ids: list[str], run_ids: list[str]) -> str:
    """MLflow's compare page with these runs selected."""
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps(sorted(set(experiment_ids)), separators=(",", ":")))
    return f"{ui.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}&{MODEL_TRAINING}"


def ui_address(tracking_uri: str, local_ui: str = DEFAULT_UI) -> str:
    """Where the UI for a tracking URI is: the server itself, or `pdmd mlflow ui`'s address for a local store."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else local_ui
