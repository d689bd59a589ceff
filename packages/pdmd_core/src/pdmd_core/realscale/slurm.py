"""Multi-node, multi-task SLURM profiles for distributed real-scale jobs (submitit).

A distributed profile is the orchestration tier's `SlurmProfile` plus `nodes` and `tasks_per_node` (one task
per GPU); every task of the job runs the same function, and `realscale.distributed.init_distributed` turns
the SLURM environment into a torch.distributed process group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from pdmd_core.paths import project_root
from pdmd_core.pipeline.executors import SlurmProfile


class DistributedSlurmProfile(SlurmProfile):
    nodes: int = Field(1, ge=1, description="sbatch --nodes")
    tasks_per_node: int = Field(1, ge=1, description="ranks per node (one per GPU)")

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
    import submitit

    executor = submitit.AutoExecutor(folder=str(Path(folder).resolve() / "%j"), cluster="slurm",
                                     slurm_max_num_timeout=profile.max_num_timeout)
    additional = dict(profile.additional)
    if profile.requeue:
        additional.setdefault("requeue", True)
    params: dict[str, Any] = dict(
        name=name, nodes=profile.nodes, tasks_per_node=profile.tasks_per_node, cpus_per_task=profile.cpus_per_task,
        mem_gb=profile.mem_gb, timeout_min=profile.timeout_min, slurm_signal_delay_s=profile.signal_delay_s,
        slurm_additional_parameters=additional, slurm_setup=list(profile.setup),
    )
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.partition:
        params["slurm_partition"] = profile.partition
    executor.update_parameters(**params)
    return executor
