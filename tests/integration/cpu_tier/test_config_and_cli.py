"""Benchmark configs (strict validation) and the teacher CLI's failure path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.cpu_tier.config import BenchmarkConfig, load_config

BENCHMARKS = Path(__file__).resolve().parents[3] / "experiments" / "benchmarks"


@pytest.mark.parametrize("name", ["toy1d", "mog2d", "digits", "moving_digits"])
def test_shipped_configs_validate(name):
    cfg = load_config(BENCHMARKS / f"{name}.yaml")
    assert cfg.benchmark == name


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError, match="extra"):
        BenchmarkConfig.model_validate({"data": {"kind": "mog2d"}, "trian": {}})
    with pytest.raises(ValidationError):
        BenchmarkConfig.model_validate({"data": {"kind": "mog2d", "grid_size": 5}})
    with pytest.raises(ValidationError):
        BenchmarkConfig.model_validate({"data": {"kind": "cifar"}})


def test_teacher_below_its_bar_exits_non_zero_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMD_PROJECT_ROOT", str(tmp_path))
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"kind": "toy1d", "num_points": 200},
        "model": {"hidden": 16, "depth": 1},
        "train": {"iterations": 3, "batch_size": 16, "warmup": 1},
        "quality": {"steps": 4, "cfg_scale": 1.0, "num_samples": 100},
    }))
    result = CliRunner().invoke(app, ["teacher", "train", str(config), "--no-progress"])
    assert result.exit_code == 1
    assert "below its quality bar" in result.output and "w1_to_data" in result.output
    report = json.loads((tmp_path / "reports" / "teachers" / "toy1d.json").read_text())
    assert report["passed"] is False and report["metrics"]["w1_to_data"] > 0.05
    assert (tmp_path / "runs" / "teachers" / "toy1d" / "teacher.pt").exists()
    assert (tmp_path / "runs" / "teachers" / "toy1d" / "samples" / "meta.json").exists()
