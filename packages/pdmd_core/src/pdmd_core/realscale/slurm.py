"""Multi-node, multi-task SLURM profiles for distributed real-scale jobs (submitit).

A distributed profile is the orchestration tier's `SlurmProfile` with `nodes` and `tasks_per_node` set (one task
per GPU); every task of the job runs the same function, and `realscale.distributed.init_distributed` turns
the SLURM environment into a torch.distributed process group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pdmd_core.paths import project_root
from pdmd_core.pipeline.executors import SlurmProfile, submitit_slurm_executor


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
