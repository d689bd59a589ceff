"""Checkpoints on disk: atomic single files (one process) and committed DCP folders (several ranks), one listing.

Two layouts share a run's `checkpoints/` folder and its naming (`<step>` = global generator step, 8 digits):

- `ckpt_<step>.pt`: one file written by one process via temp file + fsync + rename (`save_checkpoint`), so a
  crash or SIGKILL mid-write never leaves a truncated checkpoint under a final name. The single-process CPU tier
  (`pdmd train`, `dvc repro`) writes these.
- `ckpt_<step>.dcp/`: a torch.distributed.checkpoint folder written by every rank together
  (`pdmd_core.distributed_checkpoint`) into a staging folder `.tmp_ckpt_<step>.dcp/`, which rank 0 gives its
  commit marker `COMMITTED` and then its final name (`install_committed`) once every rank has finished its part.
  Only a folder with its marker counts; a staging folder without one (a killed save) is never read and is
  removed by the next save.

Saving a step again (a pre-emption on a phase's last iteration saves step N, the requeued job ends the phase
and saves step N again) replaces a committed folder: a file is replaced by one atomic rename, a folder cannot
be, so the old one is renamed aside to `.old_ckpt_<step>.dcp/`, the new one renamed in, then the old one
deleted. A kill between any two of these leaves a committed copy of step N (the staged new one, the final one,
or the aside old one): `list_checkpoints` counts it for step N, and `adopt_interrupted_replacements` (run by the
writer at resume and before each save) gives it its final name back instead of deleting it.

- `list_checkpoints(folder)` / `latest_checkpoint(folder)`: complete checkpoints of both kinds, by step.
- `load_checkpoint(path)`: a single file, with `torch.load(weights_only=True)`: tensors and plain data only. A
  file that would need to unpickle anything else (a crafted `__reduce__` payload, a class) is refused with
  `UnsafeCheckpointError` before any of its code can run.
- `remove_stale_temporaries(folder)`: temp files / uncommitted staging folders a killed writer left behind
  (after adopting the committed copies a killed replace left).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^ckpt_(\d{8,})\.(pt|dcp)$")
TEMP_PREFIX = ".tmp_ckpt_"
ASIDE_PREFIX = ".old_ckpt_"  # a committed DCP folder set aside while a new copy of its step replaces it
_STAGED = re.compile(r"^\.tmp_ckpt_(\d{8,})\.dcp$")
_ASIDE = re.compile(r"^\.old_ckpt_(\d{8,})\.dcp$")
COMMIT_MARKER = "COMMITTED"
SHARED_FILE = "trainer.json"  # a DCP checkpoint's non-tensor state (counters, config, callbacks)


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects other than tensors and plain data; loading it could run code."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def distributed_checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.dcp"


def staging_name(step: int) -> str:
    """Where the ranks write DCP step `step` before it is committed: `.tmp_ckpt_<step>.dcp`."""
    return f"{TEMP_PREFIX}{step:08d}.dcp"


def aside_name(step: int) -> str:
    """Where a committed DCP folder of step `step` waits while a new copy of the step replaces it."""
    return f"{ASIDE_PREFIX}{step:08d}.dcp"


def checkpoint_step(path: str | Path) -> int:
    """The step of a checkpoint (or of the staged / aside copy of one that `list_checkpoints` may return)."""
    name = Path(path).name
    match = _NAME.match(name) or _STAGED.match(name) or _ASIDE.match(name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (ckpt_<step>.pt or ckpt_<step>.dcp)")
    return int(match.group(1))


def is_distributed_checkpoint(path: str | Path) -> bool:
    return Path(path).suffix == ".dcp"


def is_committed(path: Path) -> bool:
    """A single file is complete once it has its final name; a DCP folder once its commit marker exists."""
    return (path / COMMIT_MARKER).is_file() if is_distributed_checkpoint(path) else path.is_file()


def _named(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def _copies(folder: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    """Staged or aside DCP folders (by `pattern`) with their steps, committed or not."""
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)) and p.is_dir())


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints (files, and DCP folders with their commit marker), oldest step first. A step whose
    DCP folder a killed replace left without its final name counts with the committed copy it left: the staged
    new one, else the aside old one (read-only here; `adopt_interrupted_replacements` renames it back)."""
    folder = Path(folder)
    found = [(s, p) for s, p in _named(folder) if is_committed(p)]
    have = {s for s, p in found if is_distributed_checkpoint(p)}
    for pattern in (_STAGED, _ASIDE):
        for step, copy in _copies(folder, pattern):
            if step not in have and is_committed(copy):
                found.append((step, copy))
                have.add(step)
    return [p for _, p in sorted(found)]


def partial_checkpoints(folder: str | Path) -> list[Path]:
    """DCP folders without a commit marker: a distributed save that did not finish on every rank."""
    return [p for _, p in _named(Path(folder)) if is_distributed_checkpoint(p) and not is_committed(p)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    items = list_checkpoints(folder)
    return items[-1] if items else None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, rename, fsync the folder (mode 0644,
    like the DCP shard files beside it)."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rename_durably(source: Path, target: Path) -> None:
    os.rename(source, target)
    fsync_dir(target.parent)


def install_committed(staged: Path, final: Path) -> None:
    """Give the committed DCP folder `staged` the name `final` so that a kill at any point leaves a committed copy
    of the step under a name `list_checkpoints` reads: a folder already at `final` is renamed aside first (a
    folder cannot be renamed over a non-empty one), then `staged` is renamed in, then the aside copy is deleted;
    each rename is fsynced."""
    if not is_committed(staged):
        raise ValueError(f"{staged} has no {COMMIT_MARKER} marker: only a committed folder may replace {final}")
    aside = final.with_name(aside_name(checkpoint_step(final)))
    if final.exists():
        if aside.exists():  # an older copy still, left by an earlier replace; `staged` is committed
            remove_checkpoint(aside)
        _rename_durably(final, aside)
    _rename_durably(staged, final)
    if aside.exists():
        remove_checkpoint(aside)


def adopt_interrupted_replacements(folder: str | Path) -> list[Path]:
    """Finish the commits and replacements a killed DCP writer left (writer side: one process, or rank 0 while
    the others wait): a committed staged folder is the newest state of its step and is installed under its final
    name; an aside folder is deleted once its step has a committed final folder, and renamed back otherwise.
    Returns the final paths installed or restored."""
    folder = Path(folder)
    done: list[Path] = []
    for step, staged in _copies(folder, _STAGED):
        if is_committed(staged):
            install_committed(staged, folder / distributed_checkpoint_name(step))
            done.append(folder / distributed_checkpoint_name(step))
    for step, aside in _copies(folder, _ASIDE):
        final = folder / distributed_checkpoint_name(step)
        if is_committed(final) or not is_committed(aside):
            remove_checkpoint(aside)
            continue
        if final.exists():  # a final folder without its marker: a half-deleted or half-written copy
            remove_checkpoint(final)
        _rename_durably(aside, final)
        done.append(final)
    return done


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
        fsync_dir(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[:-keep_last]:
        remove_checkpoint(old)
    return final


def remove_checkpoint(path: Path) -> None:
    """Delete one checkpoint of either kind (a DCP folder's marker first, so it is never half-committed)."""
    if is_distributed_checkpoint(path):
        (path / COMMIT_MARKER).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temp files and uncommitted staging folders of checkpoint writes that never completed, after
    adopting the committed copies a killed replace left (`adopt_interrupted_replacements`); returns what was
    removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    adopt_interrupted_replacements(folder)
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))
    for p in stale:
        if p.is_dir():  # the staging folder of a distributed save that never committed
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def refuse_unsafe(path: Path, err: Exception) -> UnsafeCheckpointError:
    """The error for a checkpoint whose unpickling needs more than tensors and plain data."""
    named = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f"unpickling it would call `{named.group(1)}`" if named else str(err).strip().splitlines()[0][:200]
    return UnsafeCheckpointError(
        f"refused to load {path}: it holds pickled objects other than tensors and plain data ({what}); "
        f"unpickling them could run arbitrary code, and pdmd checkpoints never contain such objects. Nothing from "
        f"the file was executed. Use checkpoints written by pdmd from a source you trust.")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A single-file checkpoint's state (tensors and plain data only; see UnsafeCheckpointError)."""
    path = Path(path)
    if is_distributed_checkpoint(path):
        raise ValueError(f"{path} is a distributed (DCP) checkpoint folder; read it with "
                         f"pdmd_core.distributed_checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse_unsafe(path, err) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a pdmd checkpoint state dict")
    return state


def read_header(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """What a checkpoint of either layout says besides its tensors: config, phase, phase_started, global_step
    (a single file is read whole; a DCP folder's `trainer.json` only, and only once committed)."""
    import json

    path = Path(path)
    if not is_distributed_checkpoint(path):
        return load_checkpoint(path, map_location)
    if not is_committed(path):
        raise FileNotFoundError(f"{path} has no {COMMIT_MARKER} marker: a distributed save that did not finish "
                                f"on every rank; use an earlier checkpoint")
    header = json.loads((path / SHARED_FILE).read_text())
    if not isinstance(header, dict):
        raise ValueError(f"{path / SHARED_FILE} is not a JSON object")
    return header
