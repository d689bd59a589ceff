"""Session services for the suite: a real single-node SLURM cluster and a real MLflow tracking server.

Each is started on first use by a session fixture and stopped at the end; `pytest_sessionfinish` fails the
run if a daemon the fixtures started is still alive afterwards.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_started_by_suite: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _isolate_flush_denormal():
    """CPU-tier training turns on flush-to-zero for the whole process (a worker-process setting); undo it so
    later tests (hypothesis refuses to run in flush-to-zero mode) see the default floating-point behaviour."""
    yield
    import torch

    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def slurm_cluster():
    from pdmd_pipeline.infra import slurm_cluster as cluster

    started = cluster.start()
    _started_by_suite["slurm"] = started
    yield cluster
    cluster.stop(only=started)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    from pdmd_pipeline.infra import mlflow_server as server

    root = tmp_path_factory.mktemp("mlflow-server")
    info = server.start(root=root, port=server.free_port())
    _started_by_suite["mlflow"] = info
    yield info
    server.stop(root)


def pytest_sessionfinish(session, exitstatus):
    from pdmd_pipeline.infra.processes import pid_alive, read_pid

    leftovers = []
    if "slurm" in _started_by_suite:
        from pdmd_pipeline.infra import slurm_cluster as cluster

        leftovers += [d.name for d in cluster.START_ORDER
                      if d.name in _started_by_suite["slurm"] and pid_alive(read_pid(d.pid_file))]
    info = _started_by_suite.get("mlflow")
    if info is not None and pid_alive(info.pid):  # type: ignore[attr-defined]
        leftovers.append("mlflow server")
    if leftovers:
        print(f"\nERROR: services started by the tests are still running: {', '.join(leftovers)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
