"""Determinism: two separate `pdmd train` processes with the same config and seed write byte-identical metrics
and bit-identical parameters (CPU). The `pdmd reliability report` command writes the report from real faults."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_pipeline.reliability.scenarios import generator_state, pdmd, run_config, same_parameters, write_config


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics_in_separate_processes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "run.yaml", run_config())
    for name in ("first", "second"):
        assert pdmd(["train", str(cfg), "--run-dir", str(tmp_path / name)], tmp_path / f"{name}.log").returncode == 0
    first = (tmp_path / "first" / "metrics.jsonl").read_bytes()
    assert len(first.splitlines()) == 8
    assert first == (tmp_path / "second" / "metrics.jsonl").read_bytes()
    assert same_parameters(generator_state(tmp_path / "first"), generator_state(tmp_path / "second"))
    # and a different seed really changes them (the comparison is not vacuous)
    other = write_config(tmp_path / "other.yaml", run_config(seed=8))
    assert pdmd(["train", str(other), "--run-dir", str(tmp_path / "third")], tmp_path / "third.log").returncode == 0
    assert first != (tmp_path / "third" / "metrics.jsonl").read_bytes()


def test_report_command_injects_faults_and_writes_markdown(tmp_path: Path) -> None:
    out = tmp_path / "reliability.md"
    result = CliRunner().invoke(app, ["reliability", "report", "--out", str(out), "--work", str(tmp_path / "work"),
                                      "-s", "corrupt_batch_skips", "-s", "divergence_stops", "--no-progress"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "**3 of 3 faults handled as required.**" in text
    assert "NaN batches with policy skip (max_skipped=2)" in text
    assert "non_finite_skipped per step [0, 1, 1, 1, 2, 2, 2, 2]" in text
    assert "role 'generator' in phase 1 at generator step 6 after skipping 2" in text
    assert "divergence (lr_generator=1e30, no clipping)" in text
    assert "## Not run" in text and "--services" in text
    bad = CliRunner().invoke(app, ["reliability", "report", "--out", str(out), "-s", "nope"])
    assert bad.exit_code == 2 and "unknown scenario(s) ['nope']" in bad.output
