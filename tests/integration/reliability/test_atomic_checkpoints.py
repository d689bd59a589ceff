"""Atomic checkpoints: fsync of the temp file before the rename and of the folder after it, keep-last-K, a failed
write leaves the previous checkpoint, and a REAL `pdmd train` process SIGKILLed half-way through a checkpoint
write leaves the previous checkpoint loadable and resumes to the same final parameters as an uninterrupted run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdmd_core import checkpoint
from pdmd_core.checkpoint import (
    TEMP_PREFIX,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from pdmd_pipeline.reliability.scenarios import kill_during_checkpoint_write


def test_file_is_fsynced_before_rename_and_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file", Path(path).name))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("rename", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    save_checkpoint(tmp_path, 7, {"w": torch.ones(3)})
    kinds = [k for k, _ in events]
    assert kinds == ["fsync-file", "rename", "fsync-dir"]
    assert events[0][1].startswith(TEMP_PREFIX) and events[1][1] == "ckpt_00000007.pt"
    assert events[2][1] == tmp_path.name


def test_failed_write_removes_its_temp_file_and_keeps_the_previous(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)})
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises; the point is what is left on disk
        save_checkpoint(tmp_path, 2, {"w": torch.ones(2), "bad": lambda: None})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_00000001.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "ckpt_00000001.pt")["w"], torch.zeros(2))


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(st.integers(0, 50), min_size=1, max_size=8), keep=st.integers(1, 4))
def test_keep_last_k_holds_the_k_highest_steps(tmp_path_factory: pytest.TempPathFactory, steps: list[int],
                                               keep: int) -> None:
    folder = tmp_path_factory.mktemp("ckpts")
    for s in steps:
        save_checkpoint(folder, s, {"step": s}, keep_last=keep)
    names = [p.name for p in list_checkpoints(folder)]
    # "last" is by step: a resumed run only ever writes steps above the checkpoint it resumed from
    assert names == [f"ckpt_{s:08d}.pt" for s in sorted(set(steps))[-keep:]]
    assert all(load_checkpoint(folder / n)["step"] == int(n[5:13]) for n in names)
    assert not [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_stale_temporaries_are_ignored_and_removed(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 3, {"w": torch.ones(1)})
    stale = tmp_path / f"{TEMP_PREFIX}killed"
    stale.write_bytes(b"\x80\x02half a pickle")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_00000003.pt"
    assert remove_stale_temporaries(tmp_path) == [stale] and not stale.exists()


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_previous_and_resumes_exactly(tmp_path: Path) -> None:
    [outcome] = kill_during_checkpoint_write(tmp_path, stall_step=6)
    assert outcome.ok, outcome.happened
    # the killed process left checkpoints 3-5 (keep_last=3) and a half-written temp file, never ckpt_6
    assert outcome.details["checkpoints_after_kill"] == ["ckpt_00000003.pt", "ckpt_00000004.pt", "ckpt_00000005.pt"]
    [size] = outcome.details["temp_sizes"].values()
    assert size > 0
    assert outcome.details["replayed"] == [6]
    final = latest_checkpoint(tmp_path / "killed" / "checkpoints")
    assert final is not None and final.name == "ckpt_00000008.pt"
