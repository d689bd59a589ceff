"""`train_rank(..., tracking=TrackingTarget)`: rank 0 logs the run to MLflow through the spooled tracker, as the CPU
tier's jobs do — tags, the resolved config as params, every generator iteration's metrics once, the run's end."""

from __future__ import annotations

import pytest

from pdmd_core.config import config_from_dict
from pdmd_pipeline.jobs import TrackingTarget
from pdmd_pipeline.realscale.launch import train_rank

pytestmark = pytest.mark.slow


def test_rank0_logs_tags_params_and_each_step_once(tmp_path, tiny_wan22, wan_prompt_cache):
    from mlflow.tracking import MlflowClient

    cfg = config_from_dict({"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 2,
                            "batch_size": 1, "ttur_ratio": 1, "generator": {"kind": "lora", "rank": 2},
                            "checkpoint": {"every": 100, "keep_last": 1},
                            "model": {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
                                      "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16]}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = TrackingTarget(uri=uri, experiment="pdmd-study/test", run_key="test/m/sweep/phased/seed0",
                            parent_key=None, spool_root=str(tmp_path / "spool"), run_name="m/phased/seed0",
                            tags={"arm": "phased", "method": "phased", "model": "m"})
    result = train_rank(cfg, tmp_path / "run", tracking=target)
    assert result["world_size"] == 1
    train_rank(cfg, tmp_path / "run", tracking=target)  # resumed at its end: nothing is logged twice
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("pdmd-study/test").experiment_id])
    assert run.data.tags["arm"] == "phased" and run.data.tags["world_size"] == "1"
    assert run.data.tags["mlflow.runName"] == "m/phased/seed0" and run.info.status == "FINISHED"
    assert run.data.params["method"] == "phased" and run.data.params["model.params.architecture"] == "tiny-wan2.2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "generator_loss")] == [1, 2, 3, 4]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "phase")] == [0, 0, 1, 1]
