"""Multi-node, multi-task SLURM profiles for distributed real-scale jobs (submitit).

A distributed profile is the orchestration tier's `SlurmProfile` with `nodes` and `tasks_per_node` set (one task
per GPU); every task of the job runs the same function. `submit_ranks` submits it through `run_as_slurm_rank`,
which exports SLURM's task layout as the torchrun-style variables (MASTER_ADDR/PORT, RANK, WORLD_SIZE,
LOCAL_RANK; submitit's TorchDistributedEnvironment) that pdmd_core's `init_distributed` reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pdmd_core.paths import project_root
from pdmd_pipeline.executors import SlurmProfile, submitit_slurm_executor


class DistributedSlurmProfile(SlurmProfile):
    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def load_distributed_profile(path: str | Path) -> DistributedSlurmProfile:
    path = Path(path)
    if not path.is_absolute():
        path = project_root() / path
    if not path.is_file():
        raise FileNotFoundError(f"slurm profile {path} does not exist")
    try:
        return DistributedSlurmProfile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as err:
        raise ValueError(f"invalid distributed slurm profile {path}:\n{err}") from None


def distributed_executor(profile: DistributedSlurmProfile, folder: Path, name: str = "pdmd-realscale") -> Any:
    """A submitit executor whose jobs run `nodes x tasks_per_node` ranks of one function."""
    return submitit_slurm_executor(profile, folder, name)


def export_torch_env_from_slurm() -> None:
    """Inside a multi-task SLURM job (and not under torchrun): set the torch.distributed variables from SLURM's.
    A MASTER_PORT the profile exports (its `setup` lines) is kept: submitit reads it instead of drawing a port."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_JOB_ID" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    # overwrite=True: submitit refuses to export over a MASTER_PORT it has itself just read from the environment
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def run_as_slurm_rank(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What every task of a distributed job runs: export the rank layout, then `fn(*args, **kwargs)`."""
    export_torch_env_from_slurm()
    return fn(*args, **kwargs)


def submit_ranks(executor: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Submit `fn` as one job whose every task is a torch.distributed rank; returns the submitit job."""
    return executor.submit(run_as_slurm_rank, fn, *args, **kwargs)
