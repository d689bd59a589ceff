"""The real local SLURM cluster runs submitit jobs and arrays and reports them to accounting."""

import operator
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm


def _accounted_state(job_id: str, timeout: float = 60.0) -> str:
    """The job's state in slurmdbd accounting, polled until it is recorded as finished."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True, check=True).stdout.split()
        state = out[0] if out else ""
        if state and state not in ("PENDING", "RUNNING"):
            return state
        time.sleep(1)
    return state


def _executor(tmp_path):
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=5, cpus_per_task=1, slurm_mem="500M")
    return executor


def test_node_is_idle_with_configured_resources(slurm_cluster):
    out = subprocess.run(["scontrol", "show", "node", "localhost"], capture_output=True, text=True,
                         check=True).stdout
    cpus, mem = slurm_cluster.machine_resources()
    assert f"CPUTot={cpus}" in out
    assert f"RealMemory={mem}" in out
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert "DefMemPerCPU" in conf and "slurmdbd" in conf


def test_submitit_job_returns_result(slurm_cluster, tmp_path):
    job = _executor(tmp_path).submit(socket.gethostname)
    assert job.result() == socket.gethostname()
    assert _accounted_state(job.job_id) == "COMPLETED"


def test_submitit_array_of_three_returns_all_results(slurm_cluster, tmp_path):
    jobs = _executor(tmp_path).map_array(operator.mul, [1, 2, 3], [4, 5, 6])
    assert len(jobs) == 3
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one array, three tasks
    assert [job.result() for job in jobs] == [4, 10, 18]


def test_failed_job_raises_with_remote_traceback(slurm_cluster, tmp_path):
    import submitit

    job = _executor(tmp_path).submit(operator.truediv, 1, 0)
    with pytest.raises(submitit.core.utils.FailedJobError, match="ZeroDivisionError"):
        job.result()


def test_sbatch_wrap_completes_and_is_accounted(slurm_cluster, tmp_path):
    out = subprocess.run(["sbatch", "--parsable", "--wait", f"--output={tmp_path}/h.out", "--wrap", "hostname"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    job_id = out.strip().split(";")[0]
    assert (tmp_path / "h.out").read_text().strip() == socket.gethostname()
    assert _accounted_state(job_id) == "COMPLETED"
