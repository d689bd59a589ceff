"""Real faults on a small CPU model.

- `build_faulty_mlp(params, device)`: the `mlp` model kind (pdmd_core.models.mlp) whose prompt source returns a
  corrupt conditioning (every embedding `value`: "inf" or "nan") on the rollouts listed in `corrupt_rollouts`
  (0-based count of `prompt_source.sample` calls in this process). The trainer samples prompts once per rollout:
  `ttur_ratio` critic rollouts, then one generator rollout per generator step, so `rollout_index` maps
  (step, role) to the call to corrupt. The NaN/Inf then arises for real in the networks and the losses.
  Use it as `model: {kind: "pdmd_pipeline.reliability.faults:build_faulty_mlp", corrupt_rollouts: [...], ...}`.
- `stalling_save(real_save, stall_step, marker)`: a `torch.save` replacement that, for the checkpoint of
  `stall_step`, writes half of the serialised bytes to the open temp file, fsyncs, writes `marker` (JSON with
  the temp file's path and sizes) and sleeps, so that the parent can SIGKILL the process in mid-write.
- `kill_during_replace(point, step)`: this process SIGKILLs itself at `point` of replacing the committed DCP
  checkpoint of `step` with a new copy (`pdmd_core.checkpoint.install_committed`): before the old copy is renamed
  aside, between the two renames, before the old copy is deleted, or half-way through deleting it. The hook
  watches this process's renames and folder deletions for the step's names; the kill itself is a real SIGKILL.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from pdmd_core.checkpoint import TEMP_PREFIX
from pdmd_core.models.mlp import build_mlp
from pdmd_core.models.registry import ModelBundle, PromptSource
from pdmd_core.protocols import Conditioning

CORRUPT_VALUES = {"inf": float("inf"), "nan": float("nan")}


def rollout_index(step: int, role: str, ttur_ratio: int, fake_update: int = 0) -> int:
    """0-based prompt-sampling call of generator step `step` (from 1): critic rollouts first, then the generator's."""
    if step < 1 or role not in ("fake", "generator") or not 0 <= fake_update < ttur_ratio:
        raise ValueError(f"need step >= 1, role fake|generator and 0 <= fake_update < {ttur_ratio}; "
                         f"got step={step}, role={role!r}, fake_update={fake_update}")
    offset = ttur_ratio if role == "generator" else fake_update
    return (step - 1) * (ttur_ratio + 1) + offset


class CorruptingPromptSource:
    """Delegates to `inner`; on the listed calls the conditioning embeddings are all `value` (a corrupt batch)."""

    def __init__(self, inner: PromptSource, corrupt_rollouts: set[int], value: float) -> None:
        self.inner, self.corrupt_rollouts, self.value = inner, corrupt_rollouts, value
        self.calls = 0
        self.corrupted: list[int] = []

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning | None,
                                                                          Conditioning | None]:
        cond, null = self.inner.sample(batch_size, generator)
        index, self.calls = self.calls, self.calls + 1
        if index in self.corrupt_rollouts and cond is not None:
            self.corrupted.append(index)
            cond = Conditioning(torch.full_like(cond.embeds, self.value), cond.mask, dict(cond.extras))
        return cond, null


def build_faulty_mlp(params: dict[str, Any], device: torch.device) -> ModelBundle:
    params = dict(params)
    rollouts = params.pop("corrupt_rollouts", [])
    value = str(params.pop("value", "inf"))
    if value not in CORRUPT_VALUES:
        raise ValueError(f"value = {value!r} is not allowed; use one of {sorted(CORRUPT_VALUES)}")
    if not isinstance(rollouts, list) or not all(isinstance(i, int) and i >= 0 for i in rollouts):
        raise ValueError(f"corrupt_rollouts = {rollouts!r}: expected a list of ints >= 0")
    bundle = build_mlp(params, device)
    bundle.prompt_source = CorruptingPromptSource(bundle.prompt_source, set(rollouts), CORRUPT_VALUES[value])
    bundle.name = "faulty-mlp"
    return bundle


def stalling_save(real_save: Callable[..., None], stall_step: int, marker: Path,
                  stall_s: float = 600.0) -> Callable[..., None]:
    """torch.save that stalls half-way through writing the checkpoint of `stall_step` (see module doc)."""

    def save(obj: Any, f: BinaryIO, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(obj, dict) and obj.get("global_step") == stall_step):
            real_save(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        folder = Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).parent
        temps = sorted(str(p) for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))
        marker.write_text(json.dumps({"step": stall_step, "temp_files": temps, "bytes_written": len(data) // 2,
                                      "bytes_total": len(data), "pid": os.getpid()}))
        time.sleep(stall_s)  # the parent SIGKILLs us here
        raise TimeoutError(f"nobody killed the checkpoint writer of step {stall_step} within {stall_s} s")

    return save


# Where a re-save of a DCP step can be killed; the value says what is on disk then.
REPLACE_POINTS = {
    "before_aside": "before the old copy is renamed aside (new copy staged and committed, old one in place)",
    "before_install": "between the renames (old copy aside, new copy still staged)",
    "before_delete": "after the new copy is renamed in, before the old aside copy is deleted",
    "mid_delete": "half-way through deleting the old aside copy (its commit marker gone, its files not yet)",
}


def kill_during_replace(point: str, step: int) -> None:
    """Make this process SIGKILL itself at `point` (REPLACE_POINTS) of replacing DCP checkpoint `step`."""
    from pdmd_core.checkpoint import aside_name, distributed_checkpoint_name, staging_name

    if point not in REPLACE_POINTS:
        raise ValueError(f"kill point {point!r} is not allowed; use one of {sorted(REPLACE_POINTS)}")
    final, staged, aside = distributed_checkpoint_name(step), staging_name(step), aside_name(step)
    real_rename, real_rmtree = os.rename, shutil.rmtree

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def rename(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        names = (Path(source).name, Path(target).name)
        if (point == "before_aside" and names[1] == aside) or (point == "before_install" and names == (staged, final)):
            die()
        real_rename(source, target, *args, **kwargs)
        if point == "before_delete" and names == (staged, final):
            die()

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if point == "mid_delete" and Path(path).name == aside:
            die()
        real_rmtree(path, *args, **kwargs)

    os.rename = rename  # type: ignore[assignment]
    shutil.rmtree = rmtree  # type: ignore[assignment]
