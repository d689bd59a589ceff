"""The toy1d stage: the Fig. 2 toy from the params' config and overrides, and clear errors for a wrong config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pdmd_core.config import ConfigError
from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import load_params
from pdmd_pipeline.stages.common import StageError
from pdmd_pipeline.stages.toy1d import stage_toy1d

ROOT = Path(__file__).resolve().parents[3]
TINY = {"subinterval": {"hidden": 16, "depth": 1, "iterations": 5, "batch_size": 32, "euler_steps": 4,
                        "trajectories": 10, "w1_samples": 200}}


def _project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    return tmp_path


def test_toy1d_stage_writes_the_figure_and_numbers(tmp_path):
    params = load_params(ROOT / "params.yaml").model_copy(deep=True)
    params.toy1d.overrides = TINY
    report = stage_toy1d(params, Layout(_project(tmp_path)))
    written = json.loads((tmp_path / "reports" / "toy1d" / "subinterval.json").read_text())
    assert written["overrides"] == TINY and written["euler_steps"] == 4 and written["w1_samples"] == 200
    assert report["w1_eq13_to_true_x_s"] == written["w1_eq13_to_true_x_s"] >= 0
    assert (tmp_path / "reports" / "toy1d" / "subinterval.png").stat().st_size > 0


def test_toy1d_stage_names_a_wrong_config(tmp_path):
    params = load_params(ROOT / "params.yaml").model_copy(deep=True)
    layout = Layout(_project(tmp_path))
    params.toy1d.config = "experiments/benchmarks/mog2d.yaml"
    with pytest.raises(StageError, match="must be a toy1d config"):
        stage_toy1d(params, layout)
    params.toy1d.config = "experiments/benchmarks/nope.yaml"
    with pytest.raises(StageError, match="nope.yaml"):
        stage_toy1d(params, layout)
    params.toy1d.config = "experiments/benchmarks/toy1d.yaml"
    params.toy1d.overrides = {"subinterval": {"iteratoins": 5}}
    with pytest.raises(ConfigError, match="iteratoins"):
        stage_toy1d(params, layout)
