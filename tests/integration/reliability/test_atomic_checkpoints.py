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


# ------------------------------------------------------------------ re-saving a DCP step (a folder) over itself
_RESAVE = """
import sys
from pathlib import Path
import torch
from pdmd_core.distributed_checkpoint import DistributedCheckpointer
from pdmd_pipeline.reliability.faults import kill_during_replace

folder, point = Path(sys.argv[1]), sys.argv[2]
writer = DistributedCheckpointer(folder, keep_last=1)
writer.save(4, {"w": torch.zeros(3)}, {"copy": "old"}, {})
kill_during_replace(point, 4)
writer.save(4, {"w": torch.ones(3)}, {"copy": "new"}, {})
"""
# what a SIGKILL at each point leaves listed for step 4: (name, which copy); adopting it installs the new copy
# wherever a committed one exists (the staged copy is the newest state of the step)
_LEFT_LISTED = {"before_aside": ("ckpt_00000004.dcp", "old"), "before_install": (".tmp_ckpt_00000004.dcp", "new"),
                "before_delete": ("ckpt_00000004.dcp", "new"), "mid_delete": ("ckpt_00000004.dcp", "new")}


@pytest.mark.parametrize("point", list(_LEFT_LISTED))
def test_sigkill_while_resaving_a_dcp_step_leaves_a_committed_copy_that_is_adopted(tmp_path: Path,
                                                                                    point: str) -> None:
    """A real SIGKILL at each point of replacing committed step 4 (keep_last 1): step 4 stays listed and
    readable, the writer's next start gives the copy its final name back, and the next save keeps it."""
    import subprocess
    import sys

    from pdmd_core.distributed_checkpoint import DistributedCheckpointer, read_json, read_tensors

    folder = tmp_path / "checkpoints"
    child = subprocess.run([sys.executable, "-c", _RESAVE, str(folder), point], capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
    assert child.returncode == -9, f"not killed at {point}: exit {child.returncode}\n{child.stderr[-2000:]}"
    name, copy = _LEFT_LISTED[point]
    found = list_checkpoints(folder)
    assert [p.name for p in found] == [name], sorted(p.name for p in folder.iterdir())
    listed = found[0]
    assert read_json(listed, "trainer.json")["copy"] == copy
    assert torch.equal(read_tensors(listed)["w"], torch.full((3,), float(copy == "new")))
    assert checkpoint.checkpoint_step(listed) == 4
    from pdmd_core.checkpoint import adopt_interrupted_replacements

    adopt_interrupted_replacements(folder)  # what resume / the next save does first
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt_00000004.dcp"]
    assert read_json(folder / "ckpt_00000004.dcp", "trainer.json")["copy"] == "new"
    DistributedCheckpointer(folder, keep_last=2).save(5, {"w": torch.full((3,), 5.0)}, {"copy": "five"}, {})
    assert [p.name for p in list_checkpoints(folder)] == ["ckpt_00000004.dcp", "ckpt_00000005.dcp"]


def test_resaving_a_dcp_step_renames_the_old_copy_aside_before_the_new_one_in(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pdmd_core.distributed_checkpoint import DistributedCheckpointer, read_json

    writer = DistributedCheckpointer(tmp_path, keep_last=1)
    writer.save(4, {"w": torch.zeros(2)}, {"copy": "old"}, {})
    events: list[tuple[str, ...]] = []
    real_rename, real_fsync = os.rename, os.fsync

    def rename(src: str, dst: str) -> None:
        if Path(dst).parent == tmp_path:  # not DCP's own renames inside the staging folder
            events.append(("rename", Path(src).name, Path(dst).name))
        real_rename(src, dst)

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            events.append(("fsync-dir", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "fsync", fsync)
    writer.save(4, {"w": torch.ones(2)}, {"copy": "new"}, {})
    renames = [e for e in events if e[0] == "rename" or e == ("fsync-dir", tmp_path.name)]
    assert renames == [("rename", "ckpt_00000004.dcp", ".old_ckpt_00000004.dcp"), ("fsync-dir", tmp_path.name),
                       ("rename", ".tmp_ckpt_00000004.dcp", "ckpt_00000004.dcp"), ("fsync-dir", tmp_path.name)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000004.dcp"]
    assert read_json(tmp_path / "ckpt_00000004.dcp", "trainer.json")["copy"] == "new"


def test_an_aside_copy_without_its_replacement_is_renamed_back_and_an_uncommitted_staging_folder_is_not_listed(
        tmp_path: Path) -> None:
    from pdmd_core.checkpoint import adopt_interrupted_replacements
    from pdmd_core.distributed_checkpoint import DistributedCheckpointer, staging_folders

    DistributedCheckpointer(tmp_path, keep_last=1).save(4, {"w": torch.zeros(2)}, {"copy": "old"}, {})
    (tmp_path / "ckpt_00000004.dcp").rename(tmp_path / ".old_ckpt_00000004.dcp")  # as if the staged copy was lost
    (tmp_path / ".tmp_ckpt_00000004.dcp").mkdir()  # a staged copy a killed rank never finished: no marker
    assert [p.name for p in list_checkpoints(tmp_path)] == [".old_ckpt_00000004.dcp"]
    assert [p.name for p in staging_folders(tmp_path)] == [".tmp_ckpt_00000004.dcp"]
    assert adopt_interrupted_replacements(tmp_path) == [tmp_path / "ckpt_00000004.dcp"]
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".tmp_ckpt_00000004.dcp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000004.dcp"]
    with pytest.raises(ValueError, match="no COMMITTED marker"):
        checkpoint.install_committed(tmp_path / "nothing.dcp", tmp_path / "ckpt_00000004.dcp")


@pytest.mark.slow
def test_a_training_job_killed_while_resaving_a_phase_end_resumes_from_that_step(tmp_path: Path) -> None:
    """The issue's path with real jobs: USR2 on phase 0's last iteration saves step 4, the requeued job ends the
    phase, saves step 4 again and is SIGKILLed at each point of the replace; the next job resumes from step 4 and
    ends bit-identical to an uninterrupted run (pdmd_pipeline.reliability.edges)."""
    from pdmd_pipeline.reliability.edges import kill_while_replacing_checkpoint

    outcomes = kill_while_replacing_checkpoint(tmp_path)
    assert [o.ok for o in outcomes] == [True] * 4, [o.happened for o in outcomes if not o.ok]
    listed = {o.fault.rsplit(": ", 1)[1]: (o.details["listed"], o.details["phase"])
              for o in outcomes}
    # phase 0: the old copy (saved at phase 0's last iteration); phase 1: the new one (phase 0 ended)
    assert listed == {"before aside": ("ckpt_00000004.dcp", 0), "before install": (".tmp_ckpt_00000004.dcp", 1),
                      "before delete": ("ckpt_00000004.dcp", 1), "mid delete": ("ckpt_00000004.dcp", 1)}
    assert {o.details["resumed_from"] for o in outcomes} == {"ckpt_00000004.dcp"}
