"""MLflow tracking through a write-ahead spool, so that an unreachable or dying server loses nothing.

Every record (run creation, params, tags, metrics with their step and timestamp, artifacts, run end) is first
appended to `<spool root>/<run key>/ops.jsonl`; `flush()` then sends the records not yet delivered, in order,
and advances a cursor in `state.json` after each delivered group. When the server is unreachable the records
stay in the spool and training goes on; the next flush (throttled while offline), the end of every stage and
`pdmd mlflow replay` deliver them. Replays are idempotent: metrics keep their original timestamps and MLflow
drops an exact duplicate (key, step, timestamp, value), so each step's value is present once even if a flush
died between sending and moving the cursor. A file lock serialises concurrent flushes of one run.

Runs are named by a stable key (`<benchmark>/<sweep>/<arm>/seed<k>`), not by MLflow's run id, so a run created
while the server was down is still addressable by later stages; its id is recorded in `state.json` once known.

Beyond params, tags and metrics the spool carries the dataset inputs of a run (`log_inputs`, with the DVC md5
as digest), MLflow 3 logged models (a folder of student weights; created once, its id kept in state.json so a
replay never duplicates it) and experiment tags (model-training kind, the saved runs view, the description).

Tracking URI: the configured value, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<state root>/mlflow.db` with
artifacts under `<state root>/mlruns` (both ignored by git); the spool lives in `<state root>/.pdmd/`. The state
root is the project, or, inside `dvc exp run` (whose stages run in a temporary copy that DVC deletes afterwards),
the repository DVC runs the experiment for (`$DVC_ROOT`), so runs and spools outlive the temporary workspace.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdmd_core.paths import project_root

STATE_DIRNAME = ".pdmd"  # pdmd_core.paths.state_dir, without creating it
# MLflow's experiment kind: 3.x UIs open a "custom_model_development" experiment on its training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SPOOL_DIRNAME = "mlflow-spool"
OPS_FILE = "ops.jsonl"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
BATCH_LIMIT = 900  # MLflow accepts up to 1000 metrics per log_batch
# Errors that retrying cannot fix: the record is skipped and noted in state.json instead of blocking the spool.
PERMANENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                         "INVALID_STATE", "BAD_REQUEST"}


def state_root(root: Path | None = None) -> Path:
    """Where the local MLflow store and the spool live: `$DVC_ROOT` when DVC runs this process as a stage (in
    `dvc exp run --temp/--queue` that is the real repository, not the temporary copy the stage runs in), else the
    project root."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and Path(dvc_root).is_dir():
        return Path(dvc_root).resolve()
    return (root or project_root()).resolve()


def dvc_experiment_tags() -> dict[str, str]:
    """The DVC experiment a stage runs for (set by `dvc exp run`), as run tags; empty under plain `dvc repro`."""
    names = {"dvc_exp": "DVC_EXP_NAME", "dvc_exp_baseline": "DVC_EXP_BASELINE_REV"}
    return {tag: os.environ[var] for tag, var in names.items() if os.environ.get(var)}


def resolve_tracking_uri(configured: str | None = None, root: Path | None = None) -> str:
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{state_root(root) / 'mlflow.db'}"


def local_artifact_root(root: Path | None = None) -> Path:
    return state_root(root) / "mlruns"


def default_spool_root(root: Path | None = None) -> Path:
    """`<state root>/.pdmd/mlflow-spool` (created by the first spooled run, not by looking)."""
    return state_root(root) / STATE_DIRNAME / SPOOL_DIRNAME


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quiet_http() -> None:
    # MLflow retries a dead server for minutes by default; the spool makes retries here pointless.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class TrackingError(RuntimeError):
    pass


class Spool:
    """The on-disk record of one run: ops.jsonl (append-only), state.json (run id, delivered count)."""

    def __init__(self, spool_root: Path, run_key: str) -> None:
        if not run_key or run_key.startswith("/") or ".." in run_key.split("/"):
            raise ValueError(f"run key {run_key!r} must be a relative path without '..'")
        self.root = Path(spool_root)
        self.key = run_key
        self.dir = self.root / run_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._append_lock = threading.Lock()  # the system-metrics thread appends beside the training loop

    @property
    def ops_path(self) -> Path:
        return self.dir / OPS_FILE

    def append(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, sort_keys=True) + "\n"
        with self._append_lock, open(self.ops_path, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def ops(self) -> list[dict[str, Any]]:
        if not self.ops_path.exists():
            return []
        out = []
        with open(self.ops_path) as fh:
            for line in fh:
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line torn by a crash mid-append: nothing after it was written either
        return out

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dir / STATE_FILE).read_text()))
        except (FileNotFoundError, ValueError):
            return {"run_id": None, "sent": 0, "skipped": []}

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / STATE_FILE)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.dir / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def pending(self) -> int:
        return len(self.ops()) - int(self.state().get("sent", 0))

    @property
    def run_id(self) -> str | None:
        return self.state().get("run_id")

    def stash_artifact(self, path: Path) -> Path:
        """Copy an artifact (file or folder) into the spool, so it survives DVC deleting a stage's outputs (or a
        `dvc exp run --temp` workspace) before it is delivered."""
        folder = self.dir / "artifacts"
        folder.mkdir(exist_ok=True)
        slot = folder / f"{len(list(folder.iterdir())):04d}"
        slot.mkdir()
        target = slot / path.name  # the artifact keeps its own file name in MLflow
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)
        return target


def _is_permanent(err: Exception) -> bool:
    code = getattr(err, "error_code", None)
    return isinstance(code, str) and code in PERMANENT_ERROR_CODES


class Delivery:
    """Sends one spool's pending records to a tracking URI (used by Tracker.flush and by replay)."""

    def __init__(self, uri: str) -> None:
        _quiet_http()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._experiments: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if not self.uri.startswith(("http://", "https://", "databricks")):
                location = (local_artifact_root() / name.replace("/", "_")).as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location,
                                                       tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException as err:  # created concurrently by another job
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise err from None
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # created before pdmd marked its experiments
                self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self._experiments[name] = exp_id
        return exp_id

    def _send(self, spool: Spool, state: dict[str, Any], group: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        op = group[0]["op"]
        if op == "create_run":
            rec = group[0]
            tags = dict(rec.get("tags", {}))
            parent_key = rec.get("parent_key")
            if parent_key:
                parent = Spool(spool.root, parent_key)
                self.deliver(parent)
                if parent.run_id:
                    tags["mlflow.parentRunId"] = parent.run_id
            if rec.get("run_name"):
                tags["mlflow.runName"] = rec["run_name"]
            run = self.client.create_run(self.experiment_id(rec["experiment"]), start_time=rec.get("time"),
                                         tags=tags, run_name=rec.get("run_name"))
            state["run_id"] = run.info.run_id
            return
        run_id = state["run_id"]
        if op == "metrics":
            metrics = [Metric(k, float(v), r["time"], int(r["step"])) for r in group for k, v in r["metrics"].items()]
            self.client.log_batch(run_id, metrics=metrics)
        elif op == "params":
            params = [Param(k, str(v)[:6000]) for r in group for k, v in r["params"].items()]
            for i in range(0, len(params), 90):
                self.client.log_batch(run_id, params=params[i:i + 90])
        elif op == "tags":
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for r in group for k, v in r["tags"].items()])
        elif op == "artifact":
            rec = group[0]
            self.client.log_artifact(run_id, rec["path"], rec.get("artifact_path"))
        elif op == "end":
            self.client.set_terminated(run_id, status=group[0]["status"], end_time=group[0].get("time"))
        elif op == "inputs":
            self._send_inputs(run_id, group[0]["datasets"])
        elif op == "logged_model":
            self._send_logged_model(spool, state, run_id, group[0])
        elif op == "experiment_tags":
            exp_id = self.experiment_id(group[0]["experiment"])
            for key, value in group[0]["tags"].items():
                self.client.set_experiment_tag(exp_id, key, str(value))
        else:
            raise TrackingError(f"unknown spool record {op!r} in {spool.ops_path}")

    def _send_inputs(self, run_id: str, datasets: list[dict[str, Any]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"], d.get("schema"),
                                       d.get("profile")), [InputTag(MLFLOW_DATASET_CONTEXT, d["context"])])
                  for d in datasets]
        self.client.log_inputs(run_id, datasets=inputs)

    def _send_logged_model(self, spool: Spool, state: dict[str, Any], run_id: str, rec: dict[str, Any]) -> None:
        """Create the logged model once (its id is saved before anything else is sent, so a retry after a dying
        server reuses it), upload its folder, mark it ready and link it to the run as an output."""
        from mlflow.entities import LoggedModelOutput

        models = state.setdefault("models", {})
        model_id = models.get(rec["key"])
        if model_id is None:
            experiment = self.client.get_run(run_id).info.experiment_id
            model = self.client.create_logged_model(experiment, rec["name"], source_run_id=run_id,
                                                    tags=rec.get("tags"), params=rec.get("params"),
                                                    model_type=rec.get("model_type"))
            model_id = models[rec["key"]] = model.model_id
            spool.write_state(state)
        self.client.log_model_artifacts(model_id, rec["path"])
        self.client.finalize_logged_model(model_id, "READY")
        self.client.log_outputs(run_id, [LoggedModelOutput(model_id, int(rec.get("step", 0)))])

    @staticmethod
    def _groups(ops: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Consecutive batchable records (metrics, params, tags) travel together; others alone."""
        i = 0
        while i < len(ops):
            op = ops[i]["op"]
            j = i + 1
            if op in ("metrics", "params", "tags"):
                size = len(ops[i].get(op, {}))
                while j < len(ops) and ops[j]["op"] == op and size + len(ops[j].get(op, {})) <= BATCH_LIMIT:
                    size += len(ops[j].get(op, {}))
                    j += 1
            yield ops[i:j]
            i = j

    def deliver(self, spool: Spool) -> bool:
        """Send what is pending; True when the spool is fully delivered. Raises nothing on outages."""
        with spool.locked():
            state = spool.state()
            ops = spool.ops()
            sent = int(state.get("sent", 0))
            if sent >= len(ops):
                return True
            if state.get("run_id") is None and ops[0]["op"] != "create_run":
                # e.g. a later stage on a machine that never saw the run's creation: keep, report, never crash
                state["last_error"] = "no run-creation record in this spool; the records stay pending"
                spool.write_state(state)
                return False
            if state.get("run_id") is None:
                sent = 0
            for group in self._groups(ops[sent:]):
                try:
                    self._send(spool, state, group)
                except Exception as err:  # noqa: BLE001 - any failure: keep records, retry later
                    if not _is_permanent(err) or group[0]["op"] == "create_run":
                        state["sent"] = sent
                        state["last_error"] = f"{type(err).__name__}: {str(err)[:300]}"
                        spool.write_state(state)
                        return False
                    state.setdefault("skipped", []).append(
                        {"index": sent, "op": group[0]["op"], "error": str(err)[:300]})
                sent += len(group)
                state["sent"] = sent
                state.pop("last_error", None)
                spool.write_state(state)
            return True


_DELIVERIES: dict[str, Delivery] = {}


def delivery_for(uri: str) -> Delivery:
    """One client per URI and process (building an MLflow client for a sqlite store costs about a second)."""
    if uri not in _DELIVERIES:
        _DELIVERIES[uri] = Delivery(uri)
    return _DELIVERIES[uri]


class Tracker:
    """One MLflow run, spooled. All methods only append locally; `flush()` talks to the server."""

    def __init__(self, uri: str | None, run_key: str, spool_root: Path | None = None,
                 flush_every_s: float = 10.0, retry_after_s: float = 15.0, enabled: bool = True) -> None:
        self.uri = resolve_tracking_uri(uri)
        self.spool = Spool(spool_root or default_spool_root(), run_key)
        self.flush_every_s = flush_every_s
        self.retry_after_s = retry_after_s
        self.enabled = enabled
        self._last_flush = 0.0
        self._last_failure = -1e9
        self._delivery: Delivery | None = None

    @property
    def run_key(self) -> str:
        return self.spool.key

    @property
    def run_id(self) -> str | None:
        return self.spool.run_id

    def started(self) -> bool:
        return any(op["op"] == "create_run" for op in self.spool.ops()[:1])

    def start(self, experiment: str, run_name: str, tags: dict[str, str] | None = None,
              parent_key: str | None = None) -> None:
        """Record the run's creation (once: a resumed job appends to the same run)."""
        if self.started():
            return
        self.spool.append({"op": "create_run", "experiment": experiment, "run_name": run_name,
                           "tags": {k: str(v) for k, v in (tags or {}).items()}, "parent_key": parent_key,
                           "time": _now_ms()})

    def log_params(self, params: dict[str, Any]) -> None:
        if params:
            self.spool.append({"op": "params", "params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self.spool.append({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        if clean:
            self.spool.append({"op": "metrics", "metrics": clean, "step": int(step), "time": _now_ms()})
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        stashed = self.spool.stash_artifact(Path(path))
        self.spool.append({"op": "artifact", "path": str(stashed), "artifact_path": artifact_path})

    def log_inputs(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs of the run: dicts with name, digest (e.g. DVC's md5), source_type, source, context
        ("training", "evaluation") and optionally schema and profile (JSON strings), as MLflow's Dataset has."""
        missing = [d.get("name", "?") for d in datasets if not {"name", "digest", "source_type", "source",
                                                                 "context"} <= set(d)]
        if missing:
            raise ValueError(f"dataset inputs {missing} need name, digest, source_type, source and context")
        if datasets:
            self.spool.append({"op": "inputs", "datasets": [dict(d) for d in datasets]})

    def log_model(self, folder: str | Path, name: str, params: dict[str, Any] | None = None,
                  tags: dict[str, Any] | None = None, model_type: str | None = None, step: int = 0) -> None:
        """An MLflow 3 logged model made of `folder`'s files, produced by this run (shown in the run's outputs
        and the experiment's Models tab)."""
        stashed = self.spool.stash_artifact(Path(folder))
        self.spool.append({"op": "logged_model", "key": stashed.parent.name, "path": str(stashed), "name": name,
                           "params": {k: str(v) for k, v in (params or {}).items()},
                           "tags": {k: str(v) for k, v in (tags or {}).items()}, "model_type": model_type,
                           "step": int(step)})

    def set_experiment_tags(self, experiment: str, tags: dict[str, Any]) -> None:
        """Tags of an MLflow experiment (by name), delivered in order with this run's records."""
        if tags:
            self.spool.append({"op": "experiment_tags", "experiment": experiment,
                               "tags": {k: str(v) for k, v in tags.items()}})

    def end(self, status: str = "FINISHED") -> None:
        self.spool.append({"op": "end", "status": status, "time": _now_ms()})
        self.flush(force=True)

    def flush(self, force: bool = False) -> bool:
        """Deliver pending records; while the server is down, tries at most every `retry_after_s`."""
        self._last_flush = time.monotonic()
        if not self.enabled:
            return False
        if not force and time.monotonic() - self._last_failure < self.retry_after_s:
            return False
        try:
            if self._delivery is None:
                self._delivery = delivery_for(self.uri)
            ok = self._delivery.deliver(self.spool)
        except TrackingError:
            raise
        except Exception:  # noqa: BLE001 - client construction can fail too while the server is down
            ok = False
        if not ok:
            self._last_failure = time.monotonic()
        return ok


def spools(spool_root: Path | None = None) -> list[Spool]:
    """Every run spool under a root (parents before children: shorter keys first)."""
    root = spool_root or default_spool_root()
    if not root.exists():
        return []
    keys = sorted((p.parent.relative_to(root).as_posix() for p in root.rglob(OPS_FILE)),
                  key=lambda k: (k.count("/"), k))
    return [Spool(root, k) for k in keys]


def replay(uri: str | None = None, spool_root: Path | None = None) -> dict[str, int]:
    """Deliver every spool's pending records; returns counts of delivered / still pending spools."""
    delivery = delivery_for(resolve_tracking_uri(uri))
    done = pending = 0
    for spool in spools(spool_root):
        if spool.pending() <= 0:
            continue
        try:
            ok = delivery.deliver(spool)
        except TrackingError:
            raise
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            done += 1
        else:
            pending += 1
    return {"delivered": done, "pending": pending}
