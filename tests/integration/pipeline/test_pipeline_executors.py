"""Executors: local pool results, failure reports with the failing job's log path, profile validation, and
the clear error for `executor: slurm` without sbatch."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_toyjobs import picky, square

from pdmd_pipeline.executors import (
    ExecutorSettings,
    JobsFailed,
    SlurmProfile,
    check_executor,
    load_profile,
    run_jobs,
)

ROOT = Path(__file__).resolve().parents[3]


def test_local_executor_returns_results_in_order(tmp_path):
    out = run_jobs(square, [3, 1, 2], ["a", "b", "c"], ExecutorSettings(local_parallel=2), tmp_path)
    assert out == [9, 1, 4]
    assert "job 3" in (tmp_path / "a.log").read_text()


def test_local_failure_names_job_and_log(tmp_path):
    with pytest.raises(JobsFailed) as info:
        run_jobs(square, [2, -5], ["good", "bad"], ExecutorSettings(local_parallel=2), tmp_path)
    msg = str(info.value)
    assert "bad: log " + str(tmp_path / "bad.log") in msg
    assert "negative input -5" in msg and "good" not in msg.split("---")[1].split(":")[0]
    assert "Traceback" in (tmp_path / "bad.log").read_text()


def test_slurm_without_sbatch_names_the_field(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(RuntimeError, match=r"executor = 'slurm' but `sbatch` is not on PATH"):
        check_executor("slurm")
    with pytest.raises(ValueError, match=r"executor = 'pbs' is not allowed; use 'local' or 'slurm'"):
        check_executor("pbs")


def test_profiles_in_repo_are_valid():
    for path in sorted((ROOT / "slurm" / "profiles").glob("*.yaml")):
        assert isinstance(load_profile(path), SlurmProfile)


def test_profile_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: debug\ngpu: 1\n")
    with pytest.raises(ValueError, match="gpu"):
        load_profile(bad)
    with pytest.raises(FileNotFoundError, match="profiles in"):
        load_profile(tmp_path / "missing.yaml")


def test_unpicklable_exception_does_not_break_the_pool(tmp_path):
    with pytest.raises(JobsFailed) as info:
        run_jobs(picky, [1, -1, 2, 3], list("abcd"), ExecutorSettings(local_parallel=2), tmp_path)
    assert [name for name, _, _ in info.value.failures] == ["b"]
    assert "PickyError: bad value inf at step -1" in str(info.value)
