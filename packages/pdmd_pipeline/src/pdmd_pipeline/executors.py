"""Run a list of jobs and block until all finish: locally (a worker pool) or as a SLURM array (submitit).

`run_jobs(fn, specs, names, settings, log_dir)` returns the results in input order or raises `JobsFailed`,
whose message names every failed job, its log file and the last lines of that log.

- `local`: a spawn-context process pool of `local_parallel` workers, each job's stdout/stderr (file
  descriptors, so native output too) redirected to `<log_dir>/<job>.log`. No SLURM needed.
- `slurm`: `submitit.AutoExecutor(cluster="slurm")` with a profile from `slurm/profiles/*.yaml`, one array for
  all jobs (`map_array`), logs in `<log_dir>/slurm/<array>_<task>_log.{out,err}`. A job object that is a
  `submitit.helpers.Checkpointable` is requeued by submitit on preemption or time-out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdmd_core.paths import project_root

TAIL_LINES = 15


class SlurmProfile(BaseModel):
    """A submission profile (`slurm/profiles/<name>.yaml`); names follow sbatch."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = Field(None, description="sbatch --partition (None: the cluster's default)")
    nodes: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1, description="one task per GPU for DDP/FSDP jobs")
    cpus_per_task: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    mem_gb: float = Field(2.0, gt=0)
    timeout_min: int = Field(60, ge=1)
    array_parallelism: int = Field(2, ge=1, description="array tasks running at once (%N)")
    requeue: bool = Field(True, description="sbatch --requeue, and submitit requeues checkpointable jobs")
    max_num_timeout: int = Field(3, ge=0, description="requeues after a time-out or preemption")
    signal_delay_s: int = Field(60, ge=1, description="USR2 this long before the time limit (checkpoint)")
    additional: dict[str, Any] = Field(default_factory=dict, description="extra sbatch flags: {flag: value}")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the job (module load ...)")


def load_profile(path: str | Path) -> SlurmProfile:
    path = Path(path)
    if not path.is_absolute():
        path = project_root() / path
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"slurm_profile {path} does not exist; profiles in {path.parent}: {available}")
    try:
        return SlurmProfile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as err:
        raise ValueError(f"invalid slurm profile {path}:\n{err}") from None


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"                  # local | slurm
    local_parallel: int = 2
    slurm_profile: str = "slurm/profiles/local.yaml"
    job_name: str = "pdmd"
    poll_s: float = 1.0


class JobError(RuntimeError):
    """One job's failure as it crosses the process boundary (type name and message of the original)."""


class JobsFailed(RuntimeError):
    def __init__(self, failures: list[tuple[str, Path, str]]) -> None:
        self.failures = failures
        parts = [f"{len(failures)} job(s) failed:"]
        for name, log, tail in failures:
            parts.append(f"--- {name}: log {log}\n{tail}")
        super().__init__("\n".join(parts))


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_executor(kind: str) -> None:
    """Fail early with the field's name when `executor: slurm` cannot work here."""
    if kind not in ("local", "slurm"):
        raise ValueError(f"executor = {kind!r} is not allowed; use 'local' or 'slurm'")
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise RuntimeError("executor = 'slurm' but `sbatch` is not on PATH: install/load SLURM, start the local "
                           "cluster with `pdmd cluster start`, or set `executor: local` in the params file")


# ---------------------------------------------------------------------------------------------- local
def _run_logged(fn: Callable[[Any], Any], spec: Any, log_path: str) -> Any:
    """Worker side: send this job's fd 1/2 to its log file, run it, restore."""
    import traceback

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            return fn(spec)
        except BaseException as err:
            traceback.print_exc()
            # Re-raised as a plain error: exceptions with custom __init__ signatures do not survive the trip
            # back to the parent (unpickling fails and breaks the whole pool).
            raise JobError(f"{type(err).__name__}: {err}") from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def _run_local(fn: Callable[[Any], Any], specs: Sequence[Any], names: Sequence[str], settings: ExecutorSettings,
               log_dir: Path) -> list[Any]:
    import multiprocessing as mp

    from tqdm import tqdm

    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"{_safe_name(n)}.log" for n in names]
    for log in logs:
        log.write_text("")
    results: list[Any] = [None] * len(specs)
    failures: list[tuple[str, Path, str]] = []
    workers = max(1, min(settings.local_parallel, len(specs)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        pending: dict[Future, int] = {pool.submit(_run_logged, fn, spec, str(log)): i
                                      for i, (spec, log) in enumerate(zip(specs, logs, strict=True))}
        with tqdm(total=len(specs), desc=settings.job_name, unit="job", file=sys.stderr) as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        results[i] = fut.result()
                    except Exception as err:  # noqa: BLE001 - every failure is reported with its log
                        what = str(err) if isinstance(err, JobError) else f"{type(err).__name__}: {err}"
                        failures.append((names[i], logs[i], f"{what}\n{_tail(logs[i])}"))
                    bar.update(1)
    if failures:
        raise JobsFailed(failures)
    return results


# ---------------------------------------------------------------------------------------------- slurm
def submitit_slurm_executor(profile: SlurmProfile, folder: Path, name: str) -> Any:
    """A submitit SLURM executor configured from a profile; each job's logs go to folder/<job id>."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(Path(folder).resolve() / "%j"), cluster="slurm",
                                     slurm_max_num_timeout=profile.max_num_timeout)
    additional = dict(profile.additional)
    if profile.requeue:
        additional.setdefault("requeue", True)
    params: dict[str, Any] = dict(
        name=name, timeout_min=profile.timeout_min, cpus_per_task=profile.cpus_per_task,
        nodes=profile.nodes, tasks_per_node=profile.tasks_per_node,
        mem_gb=profile.mem_gb, slurm_array_parallelism=profile.array_parallelism,
        slurm_signal_delay_s=profile.signal_delay_s,
        slurm_additional_parameters=additional, slurm_setup=list(profile.setup),
    )
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.partition:
        params["slurm_partition"] = profile.partition
    executor.update_parameters(**params)
    return executor


def slurm_executor(settings: ExecutorSettings, log_dir: Path, profile: SlurmProfile | None = None) -> Any:
    check_executor("slurm")
    profile = profile or load_profile(settings.slurm_profile)
    return submitit_slurm_executor(profile, log_dir / "slurm", settings.job_name)


# A job pends at most this long (one cluster is shared by every test worker and by a user's other jobs).
QUEUE_WAIT_S = 1200.0


def queue_state(job_id: str) -> str:
    """The job's state in slurmctld's queue ("PENDING", "RUNNING", ...), or "" once it has left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.split()
    return out[0] if out else ""


def wait_until_started(job_id: str, timeout: float = QUEUE_WAIT_S, poll_s: float = 0.5) -> str:
    """Block while the job pends in the queue; its state once it no longer does ("" if it already left the
    queue). A deadline on a job's own progress starts here, not at submission: the queue wait is not its work."""
    deadline = time.monotonic() + timeout
    while (state := queue_state(job_id)) in ("PENDING", "CONFIGURING"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"slurm job {job_id} still {state} after {timeout:.0f} s in the queue")
        time.sleep(poll_s)
    return state


def wait_for_jobs(jobs: Sequence[Any], names: Sequence[str], label: str, poll_s: float = 1.0,
                  all_tasks: bool = False) -> list[Any]:
    """Block until every submitit job ends; results in input order (each job's list of per-task results with
    `all_tasks`, e.g. multi-task distributed jobs), or `JobsFailed` naming every failed job and its log."""
    from tqdm import tqdm

    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[str, Path, str]] = []
    remaining = dict(enumerate(jobs))
    with tqdm(total=len(jobs), desc=label, unit="job", file=sys.stderr) as bar:
        while remaining:
            for i, job in list(remaining.items()):
                if not job.done():
                    continue
                del remaining[i]
                bar.update(1)
                try:
                    results[i] = job.results() if all_tasks else job.result()
                except Exception as err:  # noqa: BLE001
                    log = Path(job.paths.stderr)
                    failures.append((f"{names[i]} (slurm job {job.job_id})", log,
                                     f"{type(err).__name__}: {str(err)[-2000:]}"))
            if remaining:
                time.sleep(poll_s)
    if failures:
        raise JobsFailed(failures)
    return results


def _run_slurm(fn: Callable[[Any], Any], specs: Sequence[Any], names: Sequence[str], settings: ExecutorSettings,
               log_dir: Path) -> list[Any]:
    executor = slurm_executor(settings, log_dir)
    jobs = executor.map_array(fn, list(specs))
    return wait_for_jobs(jobs, names, f"{settings.job_name} (slurm {jobs[0].job_id.split('_')[0]})", settings.poll_s)


def run_jobs(fn: Callable[[Any], Any], specs: Sequence[Any], names: Sequence[str], settings: ExecutorSettings,
             log_dir: Path) -> list[Any]:
    """Run `fn(spec)` for every spec with the chosen executor; block; results in input order."""
    if len(specs) != len(names):
        raise ValueError(f"{len(specs)} specs but {len(names)} names")
    if not specs:
        return []
    check_executor(settings.kind)
    if settings.kind == "slurm":
        return _run_slurm(fn, specs, names, settings, log_dir)
    return _run_local(fn, specs, names, settings, log_dir)
