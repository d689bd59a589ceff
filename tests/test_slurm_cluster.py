"""The real local SLURM cluster runs submitit jobs and arrays and reports them to accounting."""

import operator
import socket
import subprocess

import pytest

pytestmark = pytest.mark.slurm


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
    assert job.state == "COMPLETED"


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
    acct = subprocess.run(["sacct", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                          check=True).stdout
    assert "COMPLETED" in acct
