"""Atomic checkpoint files: `ckpt_<step:08d>.pt` in a folder, written via temp file + fsync + rename.

- `save_checkpoint(folder, step, state, keep_last)`: the state goes to a `.tmp_ckpt_*` file in the same folder,
  which is fsynced, renamed to its final name (atomic on POSIX) and the folder fsynced, so a crash or SIGKILL
  mid-write never leaves a truncated checkpoint under a final name; older checkpoints beyond `keep_last` are
  deleted only after the new one is durable.
- `latest_checkpoint(folder) -> Path | None`, `list_checkpoints(folder)`, `load_checkpoint(path, map_location)`.
- `remove_stale_temporaries(folder)`: delete `.tmp_ckpt_*` files a killed writer left behind (the trainer
  calls it when it resumes; only one process writes a checkpoint folder).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
TEMP_PREFIX = ".tmp_ckpt_"


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    items = list_checkpoints(folder)
    return items[-1] if items else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temp files of checkpoint writes that never completed; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=map_location, weights_only=False)
