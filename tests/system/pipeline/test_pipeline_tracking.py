"""MLflow tracking through the spool: a local sqlite store, and a real server that is down at the start, then
killed in the middle of a run and restarted — every step's metric arrives exactly once."""

from __future__ import annotations

import time

import pytest

from pdmd_pipeline.infra import mlflow_server
from pdmd_pipeline.tracking import Spool, Tracker, replay


def _history(client, run_id, key="loss"):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_sqlite_store_params_tags_metrics_artifacts_and_parent(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(uri, "b/s/sweep", tmp_path / "spool")
    parent.start("pdmd/test", "sweep", {"kind": "sweep"})
    child = Tracker(uri, "b/s/arm/seed0", tmp_path / "spool", flush_every_s=0.0)
    child.start("pdmd/test", "arm/seed0", {"method": "phased", "phases": "4"}, parent_key="b/s/sweep")
    child.log_params({"optim.lr_fake": 1e-4, "method": "phased"})
    for step in range(1, 21):
        child.log_metrics({"loss": 1.0 / step}, step)
    (tmp_path / "config.yaml").write_text("method: phased\n")
    child.log_artifact(tmp_path / "config.yaml", "config")
    child.end()
    parent.end()
    client = MlflowClient(uri)
    run = client.get_run(child.run_id)
    assert run.data.params == {"optim.lr_fake": "0.0001", "method": "phased"}
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["phases"] == "4" and run.info.run_name == "arm/seed0"
    assert run.info.status == "FINISHED"
    assert _history(client, child.run_id) == [(s, 1.0 / s) for s in range(1, 21)]
    assert [a.path for a in client.list_artifacts(child.run_id, "config")] == ["config/config.yaml"]
    assert Spool(tmp_path / "spool", "b/s/arm/seed0").pending() == 0


@pytest.mark.slow
@pytest.mark.mlflow
def test_server_down_at_start_and_killed_mid_run(tmp_path):
    """A fresh world: this test kills and restarts its own server mid-run, which the session's shared server
    (`mlflow_server`) must not suffer."""
    from mlflow.tracking import MlflowClient

    root, port = tmp_path / "server", mlflow_server.free_port()
    url = f"http://127.0.0.1:{port}"
    spool_root = tmp_path / "spool"
    # 1. the server is not running: logging goes on, nothing is lost
    early = Tracker(url, "b/s/early/seed0", spool_root, flush_every_s=0.0, retry_after_s=0.2)
    early.start("pdmd/outage", "early/seed0", {"method": "sgts"})
    early.log_params({"seed": 0})
    t0 = time.perf_counter()
    for step in range(1, 11):
        early.log_metrics({"loss": float(step)}, step)
    early.end()
    assert time.perf_counter() - t0 < 10, "an unreachable server must not stall training"
    assert early.run_id is None and early.spool.pending() == 13  # create, params, 10 steps, end
    try:
        mlflow_server.start(root=root, port=port)
        # 2. a run that loses its server in the middle and gets it back
        run = Tracker(url, "b/s/mid/seed0", spool_root, flush_every_s=0.0, retry_after_s=0.2)
        run.start("pdmd/outage", "mid/seed0", {"method": "phased"})
        for step in range(1, 11):
            run.log_metrics({"loss": float(step)}, step)
        assert run.spool.pending() == 0 and run.run_id is not None
        mlflow_server.stop(root)
        for step in range(11, 21):
            run.log_metrics({"loss": float(step)}, step)
        assert run.spool.pending() == 10
        mlflow_server.start(root=root, port=port)
        time.sleep(0.3)
        for step in range(21, 31):
            run.log_metrics({"loss": float(step)}, step)
        run.end()
        assert run.spool.pending() == 0
        # 3. the run spooled while the server was down is replayed; replaying again changes nothing
        assert replay(url, spool_root) == {"delivered": 1, "pending": 0}
        assert replay(url, spool_root) == {"delivered": 0, "pending": 0}
        client = MlflowClient(url)
        assert _history(client, run.run_id) == [(s, float(s)) for s in range(1, 31)]
        assert client.get_run(run.run_id).info.status == "FINISHED"
        assert early.run_id is not None
        assert _history(client, early.run_id) == [(s, float(s)) for s in range(1, 11)]
        assert client.get_run(early.run_id).data.params == {"seed": "0"}
        # a crash between delivery and the cursor update re-sends records: still present once
        state = run.spool.state()
        run.spool.write_state({**state, "sent": 2})
        assert replay(url, spool_root)["delivered"] == 1
        assert _history(client, run.run_id) == [(s, float(s)) for s in range(1, 31)]
    finally:
        mlflow_server.stop(root)
