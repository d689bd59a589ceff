"""A run logged to the real local MLflow server reads back through MlflowClient."""

import pytest

pytestmark = pytest.mark.mlflow


def test_run_with_params_metrics_artifact_and_child_reads_back(mlflow_server, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_experiment("foundation-check")
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [3, 1, 2])
    png = tmp_path / "curve.png"
    fig.savefig(png)
    plt.close(fig)
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_params({"method": "phased", "phases": 2})
        for step, value in enumerate([1.0, 0.5, 0.25]):
            mlflow.log_metric("loss", value, step=step)
        mlflow.log_artifact(str(png), artifact_path="figures")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("fd", 1.5)

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(parent.info.run_id)
    assert run.data.params == {"method": "phased", "phases": "2"}
    history = client.get_metric_history(parent.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    files = [f.path for f in client.list_artifacts(parent.info.run_id, "figures")]
    assert files == ["figures/curve.png"]
    local = client.download_artifacts(parent.info.run_id, "figures/curve.png", str(tmp_path / "dl"))
    assert open(local, "rb").read() == png.read_bytes()
    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.metrics == {"fd": 1.5}
