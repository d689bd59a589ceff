"""`pdmd train` (dry run, real run with resume, clear config errors), the model registry and `pdmd bench step`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.models import ModelBundle, available_models, build_model

runner = CliRunner()

CONFIG = """\
method: phased
num_steps: 4
shift: 5.0
phases: 2
iterations: 2
batch_size: 4
ttur_ratio: 1
checkpoint: {every: 1, keep_last: 2}
generator: {kind: lora, rank: 2}
model: {kind: mlp, dim: 4, hidden: 16, depth: 1, cond_dim: 4, moe_boundary: 0.875}
"""


def test_dry_run_prints_roles_and_memory_plan(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    result = runner.invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["roles"]["fake"]["experts"] == 2 and plan["roles"]["generator"]["experts"] == 2
    assert 0 < plan["roles"]["generator"]["trainable"] < plan["roles"]["generator"]["params"]
    assert plan["schedule"]["expert_of_step"] == [0, 0, 1, 1]
    assert plan["schedule"]["phases"][0]["renoise_interval"] == pytest.approx([0.8333333, 1.0])
    assert plan["memory_bytes"]["total_persistent"] > plan["memory_bytes"]["weights"] > 0
    assert not (tmp_path / "runs").exists()


def test_train_writes_checkpoints_metrics_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(path), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and [r["phase"] for r in lines] == [0, 0, 1, 1]
    assert {"fake_loss", "generator_loss", "generator_grad_norm", "x0_gap", "dmd_grad_norm"} <= set(lines[0])
    # a longer budget resumes from the last checkpoint instead of starting over
    result = runner.invoke(app, ["train", str(path), "--run-dir", str(run_dir), "--set", "iterations=[2, 3]"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]  # phase 1 ended at its old budget: nothing replayed


def test_config_errors_exit_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG + "ttur: 5\n")
    result = runner.invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 2 and "unknown key 'ttur'" in result.output


def test_registry_kinds_and_errors() -> None:
    assert "mlp" in available_models()
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="unknown params for model kind 'mlp'"):
        build_model("mlp", {"widht": 3})
    bundle = build_model("pdmd_core.models.mlp:build_mlp", {"dim": 3, "hidden": 8})
    assert isinstance(bundle, ModelBundle) and bundle.sample_shape == (3,)
    cond, null = bundle.prompt_source.sample(5, torch.Generator().manual_seed(0))
    assert cond is not None and null is not None and cond.embeds.shape[0] == 5


def test_bench_step_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "step_cost.json"
    result = runner.invoke(app, ["bench", "step", "--dim", "8", "--hidden", "16", "--depth", "1",
                                 "--batch-size", "8", "--repeats", "1", "--ttur-ratio", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("peak_mem_ratio_phased_vs_dmd", "peak_mem_ratio_phased_vs_full", "overhead_ratio"):
        assert report[key] > 0
    arms = report["arms"]
    # structural facts of the activation measure: one grad step (dmd, sgts, K=4) < two (K=2) < four (full)
    assert arms["phased_k4"]["peak_bytes"] == arms["dmd"]["peak_bytes"]
    assert arms["dmd"]["peak_bytes"] < arms["phased_k2"]["peak_bytes"] < arms["dmd_full"]["peak_bytes"]
