"""The spool's newer record types, against a real MLflow sqlite store: dataset inputs (DVC md5 as digest), MLflow 3
logged models, experiment tags (model-training kind, saved views), system metrics sampled beside training. Each
survives an unreachable server (spooled, replayed later) and a replay repeated after a failure mid-delivery
creates nothing twice."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from unittest import mock

import psutil
import pytest

from pdmd_pipeline.infra.mlflow_server import free_port
from pdmd_pipeline.jobs import logged_steps
from pdmd_pipeline.system_metrics import SystemMetricsSampler
from pdmd_pipeline.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Spool, Tracker, replay

DATA = {"name": "mog2d/data", "digest": "0123456789abcdef0123456789abcdef.dir", "source_type": "dvc",
        "source": json.dumps({"path": "runs/data/mog2d"}), "schema": json.dumps({"kind": "points"}),
        "profile": json.dumps({"test": 500}), "context": "training"}


def _student(folder: Path) -> Path:
    folder.mkdir()
    (folder / "student.json").write_text('{"experts": 1}')
    (folder / "student.safetensors").write_bytes(b"\0" * 64)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs ~10 s of schema migrations); each test has its own
    experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def _log_everything(tracker: Tracker, tmp_path: Path, experiment: str) -> None:
    tracker.start(experiment, "dmd/seed0", {"arm": "dmd"})
    tracker.log_inputs([DATA])
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.log_model(_student(tmp_path / "student"), "student-dmd-seed0", params={"method": "dmd"},
                      tags={"arm": "dmd"}, model_type="pdmd-student", step=1)
    tracker.set_experiment_tags(experiment, {"mlflow.note.content": "hello", "pdmd.headline_metrics": "eval/x"})
    tracker.end()


def _check_store(uri: str, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert (ds.name, ds.digest, ds.source_type) == (DATA["name"], DATA["digest"], "dvc")
    assert json.loads(ds.source) == {"path": "runs/data/mog2d"} and json.loads(ds.profile) == {"test": 500}
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}
    models = client.search_logged_models([run.info.experiment_id])
    assert len(models) == 1
    model = models[0]
    assert (model.name, model.source_run_id, model.model_type, str(model.status)) == (
        "student-dmd-seed0", run_id, "pdmd-student", "READY")
    assert model.params == {"method": "dmd"} and model.tags["arm"] == "dmd"
    assert sorted(a.path for a in client.list_logged_model_artifacts(model.model_id)) == [
        "student.json", "student.safetensors"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert exp.tags["mlflow.note.content"] == "hello" and exp.tags["pdmd.headline_metrics"] == "eval/x"


def test_inputs_logged_model_and_experiment_tags_reach_the_store(tmp_path, store):
    tracker = Tracker(store, "b/s/dmd/seed0", tmp_path / "spool", flush_every_s=0.0)
    _log_everything(tracker, tmp_path, "pdmd/lineage-online")
    assert tracker.spool.pending() == 0
    _check_store(store, tracker.run_id)


def test_server_down_then_replayed_twice_after_a_failed_upload_creates_nothing_twice(tmp_path, store):
    dead = f"http://127.0.0.1:{free_port()}"
    tracker = Tracker(dead, "b/s/dmd/seed0", tmp_path / "spool", flush_every_s=0.0, retry_after_s=0.0)
    _log_everything(tracker, tmp_path, "pdmd/lineage-outage")
    assert tracker.run_id is None and tracker.spool.pending() == 6  # nothing reached a server that is down
    uri = store
    from mlflow.tracking import MlflowClient

    # the model's upload fails once after the model was created (a dying server): the replay stops there
    real = MlflowClient.log_model_artifacts
    with mock.patch.object(MlflowClient, "log_model_artifacts", side_effect=OSError("connection reset")):
        assert replay(uri, tmp_path / "spool") == {"delivered": 0, "pending": 1}
    spool = Spool(tmp_path / "spool", "b/s/dmd/seed0")
    assert spool.pending() == 3 and len(spool.state()["models"]) == 1
    with mock.patch.object(MlflowClient, "log_model_artifacts", autospec=True, side_effect=real):
        assert replay(uri, tmp_path / "spool") == {"delivered": 1, "pending": 0}
    assert replay(uri, tmp_path / "spool") == {"delivered": 0, "pending": 0}
    _check_store(uri, spool.run_id)


def test_an_existing_experiment_is_marked_as_model_training(tmp_path, store):
    from mlflow.tracking import MlflowClient

    uri = store
    client = MlflowClient(uri)
    exp_id = client.create_experiment("pdmd/old", artifact_location=(tmp_path / "a").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(exp_id).tags
    tracker = Tracker(uri, "old/s/run", tmp_path / "spool")
    tracker.start("pdmd/old", "run")
    tracker.end()
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_dataset_inputs_must_name_their_fields(tmp_path):
    tracker = Tracker("sqlite:///unused.db", "b/s/r", tmp_path / "spool")
    with pytest.raises(ValueError, match=r"\['mog2d/data'\] need name, digest"):
        tracker.log_inputs([{k: v for k, v in DATA.items() if k != "digest"}])


def test_system_metrics_are_sampled_into_the_spool_beside_training_steps(tmp_path, store):
    from mlflow.tracking import MlflowClient

    uri = store
    tracker = Tracker(uri, "b/s/dmd/seed0", tmp_path / "spool", flush_every_s=1e9)
    tracker.start("pdmd/system", "dmd/seed0")
    stop = threading.Event()
    with SystemMetricsSampler(tracker, interval_s=0.05) as sampler:
        for step in range(1, 6):  # the training loop logs its own steps meanwhile
            tracker.log_metrics({"loss": float(step)}, step)
            stop.wait(0.06)
    assert sampler.step >= 3  # samples at ~0.05 s intervals over ~0.3 s, plus one at exit
    system = [op for op in tracker.spool.ops() if op["op"] == "metrics" and "system/cpu_utilization_percentage"
              in op["metrics"]]
    assert [op["step"] for op in system] == list(range(len(system)))
    total_mb = psutil.virtual_memory().total / 1e6
    for op in system:
        values = op["metrics"]
        assert 0 <= values["system/cpu_utilization_percentage"] <= 100 * psutil.cpu_count()
        assert 0 < values["system/system_memory_usage_megabytes"] < total_mb
        assert 0 < values["system/process_rss_megabytes"] < total_mb
        assert not any(k.startswith("system/gpu_") for k in values)  # no GPU on this machine: CPU and memory only
    assert logged_steps(tracker) == {1, 2, 3, 4, 5}  # a resumed job skips training steps, not sample counts
    tracker.end()
    run = MlflowClient(uri).get_run(tracker.run_id)
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    assert len(history) == len(system)
    assert {"system/cpu_utilization_percentage", "system/process_cpu_percentage", "loss"} <= set(run.data.metrics)
