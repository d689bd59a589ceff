"""Data-parallel layout (`Trainer(world_size=W)`): every rank draws the global batch from one stream and keeps its
rows, so the data of a run does not depend on the rank count; W = 1 is exactly the single-process trainer.
Distributed (DCP) checkpoints in one process: commit marker, partial saves ignored and cleaned up, keep-last-K,
bit-identical resume, asynchronous saves, and the single-file loader reading the same state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pdmd_core.callbacks import Callback, OnIteration
from pdmd_core.checkpoint import COMMIT_MARKER, TEMP_PREFIX, latest_checkpoint, list_checkpoints, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_core.distributed_checkpoint import load_tensors, staging_folders
from pdmd_core.models import build_model
from pdmd_core.student import Student
from pdmd_core.trainer import Trainer, global_batch_rows

MLP = {"dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}


def _cfg(**over: Any):
    base = {"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
            "iterations": [3, 3], "teacher_cfg": {"scale": 2.0}, "in_phase": "sgts", "transport": "renoise",
            "optim": {"ema_decay": 0.9}, "checkpoint": {"every": 1, "keep_last": 2}, "seed": 5,
            "model": {"kind": "mlp", **MLP}}
    return config_from_dict(base | over)


def _trainer(cfg, run_dir: Path, callbacks: tuple = (), **kw: Any) -> Trainer:
    torch.set_num_threads(1)
    return Trainer(cfg, build_model("mlp", MLP), run_dir, callbacks=list(callbacks), progress=False, **kw)


class _Stop(Exception):
    pass


def _stop_at(step: int) -> Callback:
    def hook(s: int, phase: int, metrics: dict[str, float]) -> None:
        if s == step:
            raise _Stop

    return OnIteration(hook)


def _generator(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    return [trainer.generator.expert_state(e) for e in range(len(trainer.generator.experts))]


def _equal(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ shared draws
def test_each_rank_draws_its_rows_of_the_global_batch(tmp_path: Path) -> None:
    cfg = _cfg()
    whole = _trainer(cfg, tmp_path / "w", world_size=1)
    ranks = [_trainer(cfg, tmp_path / f"r{r}", rank=r, world_size=2) for r in range(2)]
    assert [t.local_batch for t in (whole, *ranks)] == [8, 4, 4]
    cond, _ = whole._prompts()
    noise = whole._noise((8, 6))
    t = whole._renoise_t(8)
    for r, tr in enumerate(ranks):
        rows = slice(4 * r, 4 * r + 4)
        c, _ = tr._prompts()
        assert torch.equal(c.embeds, cond.embeds[rows])
        assert torch.equal(tr._noise((4, 6)), noise[rows])
        assert torch.equal(tr._renoise_t(4), t[rows])
        assert torch.equal(tr.rng.get_state(), whole.rng.get_state())  # the stream advanced alike


def test_world_size_one_trains_exactly_like_the_single_process_trainer(tmp_path: Path) -> None:
    cfg = _cfg(iterations=[2, 2])
    logs: dict[str, list] = {"plain": [], "world1": []}
    for name, kw in (("plain", {}), ("world1", {"world_size": 1})):
        tr = _trainer(cfg, tmp_path / name, (OnIteration(lambda s, p, m, n=name: logs[n].append(m)),), **kw)
        tr.fit()
    assert logs["plain"] == logs["world1"] and len(logs["plain"]) == 4
    plain = load_checkpoint(latest_checkpoint(tmp_path / "plain" / "checkpoints"))  # type: ignore[arg-type]
    dcp_path = latest_checkpoint(tmp_path / "world1" / "checkpoints")
    assert dcp_path is not None and dcp_path.name == "ckpt_00000004.dcp"
    student = Student.from_checkpoint(dcp_path)  # the one loader reads the DCP folder
    assert _equal(plain["generator"], _generator_of_student(student))


def _generator_of_student(student: Student) -> list[dict[str, torch.Tensor]]:
    return [student.generator.expert_state(e) for e in range(len(student.generator.experts))]


@pytest.mark.parametrize("world, rank, batch, match", [(2, 2, 8, "world_size"), (3, 0, 8, "not divisible"),
                                                       (0, 0, 8, "world_size")])
def test_bad_data_parallel_layout_is_rejected(world: int, rank: int, batch: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        global_batch_rows(batch, rank, world)


# ------------------------------------------------------------------ DCP checkpoints in one process
def test_dcp_resume_is_bit_identical_and_commits_each_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg()
    full_log: dict[int, dict[str, float]] = {}
    full = _trainer(cfg, tmp_path / "full", (OnIteration(lambda s, p, m: full_log.update({s: m})),), world_size=1)
    full.fit()
    cut_log: list[tuple[int, dict[str, float]]] = []
    record = OnIteration(lambda s, p, m: cut_log.append((s, m)))
    with pytest.raises(_Stop):  # after step 5's metrics, before its checkpoint
        _trainer(cfg, tmp_path / "cut", (record, _stop_at(5)), world_size=1).fit()
    folder = tmp_path / "cut" / "checkpoints"
    names = [p.name for p in list_checkpoints(folder)]
    assert names == ["ckpt_00000003.dcp", "ckpt_00000004.dcp"]  # keep_last 2, both committed
    marker = json.loads((folder / "ckpt_00000004.dcp" / COMMIT_MARKER).read_text())
    assert marker == {"step": 4, "world_size": 1}
    shared = json.loads((folder / "ckpt_00000004.dcp" / "trainer.json").read_text())
    assert (shared["phase"], shared["iter_in_phase"], shared["global_step"]) == (1, 1, 4)
    # a save killed half-way: its staging folder is never read and the next save removes it
    stale = folder / f"{TEMP_PREFIX}ckpt_00000005.dcp"
    stale.mkdir()
    (stale / "__0_0.distcp").write_bytes(b"half a shard")
    resumed = _trainer(cfg, tmp_path / "cut", (record,), world_size=1)
    assert resumed.resume() == folder / "ckpt_00000004.dcp"
    resumed.fit()
    assert not staging_folders(folder)
    assert [s for s, _ in cut_log] == [1, 2, 3, 4, 5, 5, 6]  # step 5 recomputed after the resume
    for step, metrics in cut_log:
        assert metrics == full_log[step], f"step {step} differs after the resume"
    assert _equal(_generator(resumed), _generator(full))


def test_async_distributed_saves_commit_later_and_train_identically(tmp_path: Path) -> None:
    cfg = _cfg(iterations=[3, 3])
    sync = _trainer(cfg, tmp_path / "sync", world_size=1)
    sync.fit()
    committed: list[str] = []

    class Commits(Callback):
        def on_after_save(self, trainer: Trainer, path: Path) -> None:
            committed.append(path.name)

    def check_pending(step: int, phase: int, metrics: dict[str, float]) -> None:
        if step == 2:  # step 1's async save is still pending until the next save starts
            assert latest_checkpoint(tmp_path / "async" / "checkpoints") is None

    async_cfg = _cfg(iterations=[3, 3], checkpoint={"every": 1, "keep_last": 2, "async_save": True})
    tr = _trainer(async_cfg, tmp_path / "async", (OnIteration(check_pending), Commits()), world_size=1)
    tr.fit()
    assert committed == [f"ckpt_{s:08d}.dcp" for s in (1, 2, 3, 4, 5, 6)]
    assert _equal(_generator(tr), _generator(sync))
    template = {"generator": {str(e): {k: torch.empty_like(v) for k, v in sd.items()}
                              for e, sd in enumerate(_generator(sync))}}
    load_tensors(tmp_path / "async" / "checkpoints" / "ckpt_00000006.dcp", template)
    assert _equal([template["generator"][str(e)] for e in range(2)], _generator(sync))


def test_a_plain_trainer_resumes_a_dcp_checkpoint_and_saves_it_as_one_file(tmp_path: Path) -> None:
    """One loader reads both layouts: the single-process trainer continues a run written as DCP folders."""
    cfg = _cfg()
    full = _trainer(cfg, tmp_path / "full")
    full.fit()
    with pytest.raises(_Stop):
        _trainer(cfg, tmp_path / "cut", (_stop_at(5),), world_size=1).fit()
    plain = _trainer(cfg, tmp_path / "cut")  # no world_size: single-file checkpoints from here on
    assert plain.resume() == tmp_path / "cut" / "checkpoints" / "ckpt_00000004.dcp"
    plain.fit()
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints") == tmp_path / "cut" / "checkpoints" / "ckpt_00000006.pt"
    assert _equal(_generator(plain), _generator(full))
