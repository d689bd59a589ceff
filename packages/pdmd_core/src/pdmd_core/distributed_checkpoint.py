"""Distributed checkpoints (torch.distributed.checkpoint, DCP) with one commit point for all ranks.

A checkpoint of step N is the folder `checkpoints/ckpt_<N>.dcp/`:

    .metadata, __<rank>_<i>.distcp   DCP: every tensor of the state by name; each rank writes only its own shards
                                     of sharded (DTensor) tensors, replicated tensors are written once. Any number
                                     of ranks (or one process) can read it back: DCP reshards on load.
    trainer.json                     what is not a tensor and the same on every rank (rank 0 writes it)
    rank_<r>.json                    what differs per rank (RNG states), one file per rank
    COMMITTED                        the commit marker (JSON: step, world size)

How a save commits (`DistributedCheckpointer.save`): rank 0 finishes what earlier killed commits left
(`adopt_interrupted_replacements`), clears what killed saves left and creates the staging folder
`.tmp_ckpt_<N>.dcp/`; every rank writes its JSON and its DCP shards there (fsynced); a barrier waits for every
rank; then rank 0 writes COMMITTED, renames the staging folder to `ckpt_<N>.dcp` (`install_committed`: a folder
of step N already there is renamed aside first and deleted last; each rename fsynced), deletes checkpoints beyond
keep-last-K, and a last barrier lets every rank go on. A rank killed in the middle of a save therefore leaves
only an uncommitted staging folder: never listed, never read, removed by the next save; a kill during the
renames leaves a committed copy of step N that is listed and adopted. Resume starts from the newest checkpoint
every rank completed (rank 0 adopts, picks it and broadcasts the choice).
With `async_save` the shards are written in the background (`dcp.async_save` on a dedicated gloo group) and the
commit happens when the next save starts or `finish()` is called.

Loading never executes code from the checkpoint: DCP keeps its `.metadata` as a pickle and reads non-tensor
items with `torch.load(weights_only=False)`, so `SafeFileSystemReader` unpickles the metadata with an allow-list
of DCP's own metadata classes and `SafeLoadPlanner` loads non-tensor items with `weights_only=True`; anything
else is refused with `UnsafeCheckpointError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from pdmd_core.checkpoint import (
    COMMIT_MARKER,
    SHARED_FILE,
    TEMP_PREFIX,
    adopt_interrupted_replacements,
    distributed_checkpoint_name,
    install_committed,
    list_checkpoints,
    partial_checkpoints,
    refuse_unsafe,
    remove_checkpoint,
    staging_name,
    write_atomic,
)

# Globals DCP's `.metadata` pickle may name: its own metadata records (dataclasses and an enum), torch's tensor
# descriptors, and the checkpoint's path (a PosixPath in StorageMeta). None of them has side effects when built.
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.json"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


@contextlib.contextmanager
def _one_process_ok() -> Iterator[None]:
    """DCP warns on every call without a process group; reading or writing in one process is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


# ------------------------------------------------------------------------------------------------ safe loading
class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata records, tensor dtypes/layouts and nothing else (Python's restricted-globals
    pattern: every callable a pickle can invoke is looked up here first)."""

    def find_class(self, module: str, name: str) -> Any:
        value = super().find_class(module, name) if (module, name) in _METADATA_GLOBALS else None
        if value is None and module == "torch":
            candidate = getattr(torch, name, None)
            if isinstance(candidate, torch.dtype | torch.layout | torch.memory_format):
                value = candidate
        if value is None:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name} is not a DCP metadata type")
        return value


def read_metadata_safely(path: Path) -> Metadata:
    try:
        with path.open("rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
    except pickle.UnpicklingError as err:
        raise refuse_unsafe(path, err) from None
    if not isinstance(metadata, Metadata):
        raise ValueError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose metadata is unpickled with an allow-list (tensors are read with weights_only)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata_safely(Path(self._get_metadata_path(kwargs.get("rank"))))
        storage = getattr(metadata, "storage_meta", None) or StorageMeta()
        storage.load_id = self.load_id
        metadata.storage_meta = storage
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose non-tensor items load with `torch.load(weights_only=True)`."""

    def __init__(self, source: Path) -> None:
        super().__init__()
        self.source = source

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as err:
            raise refuse_unsafe(self.source, err) from None
        checked = io.BytesIO()  # re-serialised from plain data only: the base class's load cannot run code
        torch.save(obj, checked)
        checked.seek(0)
        super().load_bytes(read_item, checked)


def load_tensors(folder: Path, template: dict[str, Any], collective: bool | None = None) -> None:
    """Fill `template` (nested dicts of tensors/DTensors, each laid out as the caller needs) in place from the
    DCP checkpoint `folder`, resharding as needed; collective when torch.distributed is initialised, unless
    `collective=False` (one process reading whole tensors, e.g. export on one rank)."""
    read_metadata_safely(folder / ".metadata")  # refused here, as itself, on every rank
    try:
        with _one_process_ok():
            dcp.load(template, storage_reader=SafeFileSystemReader(str(folder)), planner=SafeLoadPlanner(folder),
                     no_dist=not (_distributed() if collective is None else collective))
    except BaseException as err:  # DCP raises CheckpointException, a BaseException
        unsafe = _unsafe_cause(err)
        if unsafe is not None:
            raise unsafe from None
        raise


def _unsafe_cause(err: BaseException) -> BaseException | None:
    """DCP wraps a rank's exception in a CheckpointException; surface our refusal as itself."""
    from pdmd_core.checkpoint import UnsafeCheckpointError

    if isinstance(err, UnsafeCheckpointError):
        return err
    failures = getattr(err, "failures", None)
    if isinstance(failures, dict):
        for failure in failures.values():  # (exception, traceback) per failed rank
            inner = failure[0] if isinstance(failure, tuple) else failure
            found = _unsafe_cause(inner) if isinstance(inner, BaseException) else None
            if found is not None:
                return found
    if err.__cause__ is not None:
        return _unsafe_cause(err.__cause__)
    return None


def read_tensors(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint whose flattened name starts with `prefix` (e.g. "generator."), whole, on
    the CPU of this one process (the layout is taken from the metadata; no process group needed)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    entries = read_metadata_safely(folder / ".metadata").state_dict_metadata
    template = {name: torch.empty(tuple(md.size), dtype=md.properties.dtype)
                for name, md in entries.items() if name.startswith(prefix) and isinstance(md, TensorStorageMetadata)}
    if not template:
        raise KeyError(f"{folder} holds no tensor named {prefix}*")
    with _one_process_ok():
        dcp.load(template, storage_reader=SafeFileSystemReader(str(folder)), planner=SafeLoadPlanner(folder),
                 no_dist=True)
    return template


def read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not a complete pdmd distributed checkpoint")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, expected a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        text = json.dumps(data, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"{path.name}: checkpoint state outside the tensors must be JSON data ({err})") from None
    write_atomic(path, text.encode())


# ------------------------------------------------------------------------------------------------ choosing
def newest_committed(folder: Path) -> Path | None:
    """The newest complete checkpoint (file or committed DCP folder); rank 0 decides, after giving a committed
    copy that a killed replace left its final name back, and every rank agrees."""
    choice: list[str | None] = [None]
    if _rank() == 0:
        adopt_interrupted_replacements(folder)
        found = list_checkpoints(folder)
        choice = [str(found[-1]) if found else None]
    if _distributed() and dist.get_world_size() > 1:
        dist.broadcast_object_list(choice, src=0)
    return None if choice[0] is None else Path(choice[0])


# ------------------------------------------------------------------------------------------------ saving
class DistributedCheckpointer:
    """Writes DCP checkpoints into one folder from every rank, committing each once all ranks are done."""

    def __init__(self, folder: Path, keep_last: int, async_save: bool = False) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.async_save = async_save
        self._pending: tuple[int, Any, Callable[[Path], None] | None] | None = None
        self._group: Any = None

    def save(self, step: int, tensors: dict[str, Any], shared: dict[str, Any], per_rank: dict[str, Any],
             wait: bool = True, on_commit: Callable[[Path], None] | None = None) -> Path:
        """Write step `step` (collective). Returns its final path; with `wait` (or without async_save) the
        checkpoint is committed on return, else when the next save starts or `finish()` runs."""
        self.finish()
        staging = self.folder / staging_name(step)
        if _rank() == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._clear_leftovers()
            staging.mkdir()
        _barrier()
        if _rank() == 0:
            _write_json(staging / SHARED_FILE, shared)
        _write_json(staging / rank_file(_rank()), per_rank)
        writer = FileSystemWriter(str(staging), sync_files=True)
        with _one_process_ok():
            if self.async_save and not wait:
                future = dcp.async_save(tensors, storage_writer=writer, process_group=self._async_group(),
                                        no_dist=not _distributed())
                self._pending = (step, future, on_commit)
                return self.folder / distributed_checkpoint_name(step)
            dcp.save(tensors, storage_writer=writer, no_dist=not _distributed())
        return self._commit(step, on_commit)

    def finish(self) -> Path | None:
        """Wait for a background save on every rank and commit it; None when none was pending."""
        if self._pending is None:
            return None
        step, future, on_commit = self._pending
        self._pending = None
        future.result()
        return self._commit(step, on_commit)

    def _async_group(self) -> Any:
        if not _distributed():
            return None
        if self._group is None:  # collectives of the background writer must not share the training group
            self._group = dist.new_group(backend="gloo")
        return self._group

    def _commit(self, step: int, on_commit: Callable[[Path], None] | None) -> Path:
        _barrier()  # every rank has written its shards and its JSON
        final = self.folder / distributed_checkpoint_name(step)
        if _rank() == 0:
            staging = self.folder / staging_name(step)
            world = dist.get_world_size() if _distributed() else 1
            _write_json(staging / COMMIT_MARKER, {"step": step, "world_size": world})
            install_committed(staging, final)  # replaces step N if saved again (pre-emption at a phase's end)
            for old in list_checkpoints(self.folder)[:-self.keep_last]:
                remove_checkpoint(old)
        _barrier()
        if on_commit is not None:
            on_commit(final)
        return final

    def _clear_leftovers(self) -> None:
        """What killed saves left behind (rank 0): committed copies are adopted (a killed replace), uncommitted
        staging folders and checkpoint folders removed."""
        adopt_interrupted_replacements(self.folder)
        for path in partial_checkpoints(self.folder) + staging_folders(self.folder):
            shutil.rmtree(path, ignore_errors=True)


def staging_folders(folder: Path) -> list[Path]:
    """Staging folders of distributed saves that never committed (what a killed rank leaves)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and p.name.startswith(TEMP_PREFIX) and not (p / COMMIT_MARKER).is_file())


