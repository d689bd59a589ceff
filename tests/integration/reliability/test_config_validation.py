"""Config validation on `pdmd train`: one clear error naming field, value and what is allowed, exit 2, nothing
written; property tests (hypothesis) for schedules and partitions at the level of the whole DistillConfig (the
function-level properties live in tests/core/test_schedules_and_config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.config import ConfigError, config_from_dict
from pdmd_core.flow import shift_time
from pdmd_core.models.registry import build_model
from pdmd_core.trainer import Trainer
from pdmd_pipeline.reliability.scenarios import SMALL_MODEL, TRAIN_CASES, run_config, write_config

runner = CliRunner()


def _tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize(("over", "needles"), [(o, n) for _, o, n in TRAIN_CASES], ids=[c for c, _, _ in TRAIN_CASES])
def test_pdmd_train_rejects_bad_config_naming_field_and_writes_nothing(tmp_path: Path, over: dict[str, Any],
                                                                       needles: list[str]) -> None:
    cfg = write_config(tmp_path / "config.yaml", run_config(**over))
    before = _tree(tmp_path)
    result = runner.invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert all(n in result.output for n in needles), result.output
    assert result.output.startswith(f"invalid config {cfg}")
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before  # no run dir, no config.yaml, no metrics.jsonl


def test_resuming_with_another_config_is_rejected_before_any_write(tmp_path: Path) -> None:
    first = write_config(tmp_path / "a.yaml", run_config(iterations=[1, 1]))
    assert runner.invoke(app, ["train", str(first), "--run-dir", str(tmp_path / "run")]).exit_code == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    other = write_config(tmp_path / "b.yaml", run_config(iterations=[1, 1], ttur_ratio=3))
    result = runner.invoke(app, ["train", str(other), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "ttur_ratio: 2 != 3" in result.output
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == stamps


# ---------------------------------------------------------------- properties of whole configs
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 24), k=st.integers(1, 24), shift=st.floats(0.2, 12.0))
def test_phased_config_partition_is_valid_or_rejected_by_name(n: int, k: int, shift: float) -> None:
    data = {"method": "phased", "num_steps": n, "phases": k, "shift": shift}
    if k > n or n % k:
        with pytest.raises(ConfigError, match="phases"):
            config_from_dict(data)
        return
    cfg = config_from_dict(data)
    bounds, ts = cfg.phase_step_bounds(), cfg.timestep_schedule()
    assert bounds == list(range(0, n + 1, n // k)) and cfg.num_phases == k
    # phase k ends at t_{b_k}: the phase end times are strictly decreasing from t_0 = 1 to t_N = 0
    ends = [ts[b] for b in bounds]
    assert ends[0] == 1.0 and ends[-1] == 0.0 and all(b < a for a, b in zip(ends, ends[1:], strict=False))
    assert ts[1] == pytest.approx(float(shift_time(1 - 1 / n, shift))) if n > 1 else ts == [1.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(inner=st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=0, max_size=5),
       first=st.sampled_from([1.0, 0.99]), last=st.sampled_from([0.0, 0.01]))
def test_explicit_timesteps_valid_iff_strictly_decreasing_from_1_to_0(inner: list[float], first: float,
                                                                       last: float) -> None:
    ts = [first, *inner, last]
    data = {"method": "sgts", "num_steps": len(ts) - 1, "timesteps": ts}
    valid = first == 1.0 and last == 0.0 and all(b < a for a, b in zip(ts, ts[1:], strict=False))
    if valid:
        assert config_from_dict(data).timestep_schedule() == ts
    else:
        with pytest.raises(ConfigError, match=r"timesteps = \["):
            config_from_dict(data)


@settings(max_examples=40, deadline=None)
@given(shift=st.one_of(st.floats(-10.0, 0.0), st.floats(1e-3, 50.0)))
def test_shift_must_be_positive(shift: float) -> None:
    if shift <= 0:
        with pytest.raises(ConfigError, match=f"shift = {shift!r}: Input should be greater than 0"):
            config_from_dict({"shift": shift})
    else:
        ts = config_from_dict({"shift": shift, "num_steps": 4}).timestep_schedule()
        assert ts[0] == 1.0 and ts[-1] == 0.0 and all(b < a for a, b in zip(ts, ts[1:], strict=False))


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 7), max_size=4, unique=True).map(sorted), fixed=st.floats(0.01, 0.99))
def test_trainer_accepts_fixed_dmd_t_iff_inside_every_phase_interval(cuts: list[int], fixed: float) -> None:
    """Nested re-noise intervals (t_{b_k}, 1]: a fixed generator t must exceed the first phase's end time."""
    data = run_config(num_steps=8, phases=None, phase_boundaries=[0, *cuts, 8], iterations=1, fixed_dmd_t=fixed)
    cfg = config_from_dict(data)
    first_end = cfg.timestep_schedule()[cfg.phase_step_bounds()[1]]
    bundle = build_model("mlp", {k: v for k, v in SMALL_MODEL.items() if k != "kind"})
    if fixed > first_end:
        Trainer(cfg, bundle, "/nonexistent-never-written", progress=False)
    else:
        with pytest.raises(ValueError, match=f"fixed_dmd_t={fixed} lies outside phase 0"):
            Trainer(cfg, bundle, "/nonexistent-never-written", progress=False)
