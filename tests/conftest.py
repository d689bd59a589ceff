"""The suite's shared set-up: session services (a real single-node SLURM cluster and a real MLflow tracking server,
each started on first use and stopped at the end; `pytest_sessionfinish` fails the run if a daemon the fixtures
started is still alive afterwards), the shared worlds of `tests/support` (tiny diffusers base models, the
evaluation networks) and one torch thread per test process.

Layers: `tests/unit` (pure functions and single modules), `tests/integration` (a stage, a job, a CLI, a
multi-process run; no SLURM, no services), `tests/system` (end to end: SLURM, MLflow servers, DVC sandboxes, the
real-scale smoke study, the unprivileged user, the fault scenarios). `make test` runs all three on two xdist
workers; `make test-fast` runs the first two.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_started_by_suite: dict[str, object] = {}
RUN_DIR = "PDMD_TEST_RUN_DIR"

# fixtures shared by every layer (tests/support is on sys.path through `pythonpath` in pyproject.toml)
pytest_plugins = ["eval_helpers", "realscale_fixtures"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test process: two xdist workers share the 2-core CI box, and on it two threads per
    process ran ~10x slower when the other core was busy."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolate_flush_denormal():
    """CPU-tier training turns on flush-to-zero for the whole process (a worker-process setting); undo it so
    later tests (hypothesis refuses to run in flush-to-zero mode) see the default floating-point behaviour."""
    yield
    import torch

    torch.set_flush_denormal(False)


# Longest first (LPT scheduling): xdist hands modules to idle workers in collection order, so the end-to-end
# modules go first and the many short unit and integration modules fill in around them, instead of one long module
# starting last while the other worker idles. The named modules are the longest in CI's `--durations` output
# (a renamed module only loses its place in the queue).
LONGEST_MODULES = ("system/pipeline/test_pipeline_dvc.py", "system/pipeline/test_study_smoke.py",
                   "system/reliability/test_distributed_faults.py", "system/pipeline/test_pipeline_slurm.py")
LAYER_ORDER = ("system", "integration", "unit")


def _queue_rank(item: pytest.Item) -> tuple[int, int]:
    rel = Path(str(item.fspath)).resolve().relative_to(Path(__file__).resolve().parent).as_posix()
    longest = next((i for i, name in enumerate(LONGEST_MODULES) if rel == name), len(LONGEST_MODULES))
    layer = next((i for i, name in enumerate(LAYER_ORDER) if rel.startswith(name + "/")), len(LAYER_ORDER))
    return longest, layer


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_queue_rank)  # stable: the order inside a module and a layer is kept


def pytest_configure(config):
    """One folder for this run, shared by the xdist workers (they inherit the controller's environment)."""
    if not hasattr(config, "workerinput") and RUN_DIR not in os.environ:
        os.environ[RUN_DIR] = tempfile.mkdtemp(prefix="pdmd-tests-")


def _slurm_record() -> Path:
    return Path(os.environ[RUN_DIR]) / "slurm-started.json"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The machine's one SLURM cluster, started by whichever worker needs it first (a file lock keeps two from
    starting daemons at once); stopped once, after every worker is done (`pytest_sessionfinish` of the controller,
    or of the only process without xdist)."""
    from filelock import FileLock

    from pdmd_pipeline.infra import slurm_cluster as cluster

    record = _slurm_record()
    with FileLock(str(record) + ".lock"):
        started = cluster.start()
        before = json.loads(record.read_text()) if record.is_file() else []
        record.write_text(json.dumps(sorted(set(before) | set(started))))
    yield cluster


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
    record = _slurm_record()
    if not hasattr(session.config, "workerinput") and record.is_file():  # the controller, or the only process
        from pdmd_pipeline.infra import slurm_cluster as cluster

        started = json.loads(record.read_text())
        cluster.stop(only=started)
        leftovers += [d.name for d in cluster.START_ORDER if d.name in started and pid_alive(read_pid(d.pid_file))]
    info = _started_by_suite.get("mlflow")
    if info is not None and pid_alive(info.pid):  # type: ignore[attr-defined]
        leftovers.append("mlflow server")
    if leftovers:
        print(f"\nERROR: services started by the tests are still running: {', '.join(leftovers)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
