"""Distributed (DCP) checkpoints of a sharded run resume on another number of ranks (tiny Wan2.2 two-expert MoE,
LoRA experts, FSDP2 on 2 gloo ranks via `pdmd_pipeline.realscale.launch.run_training`), and export reads them.

- 2 → 1 and 1 → 2: the state right after loading (generator experts, fake scores, EMA, AdamW moments and step
  counts, all keyed by name) equals the committed checkpoint bit for bit, and the trainer's stream is the
  writer's (every rank draws the global batch from one stream, so the data after the resume is the data an
  uninterrupted run sees).
- The continued run matches the uninterrupted one within the project's cross-rank-count tolerance
  (`ddp_check.compare_states`): per tensor, |Δ| ≤ 1% of that tensor's training update, since the gradient
  average sums in another order on another rank count and AdamW's 1/√v magnifies that on near-zero gradients.
  Resuming on the same rank count is bit-identical (test_fsdp_trainer, the reliability report).
- Export of the sharded run's committed DCP checkpoint, read directly, equals the export of the same state saved
  as one file by a single process.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from pdmd_pipeline.infra.mlflow_server import free_port

pytestmark = [pytest.mark.slow]

WORLD = 2
ITERATIONS = [3, 3]
STOP_AFTER = 5  # the crash comes after step 5's metrics and before its checkpoint: resume from step 4


class _Crash(RuntimeError):
    pass


def _config(model: dict[str, Any]) -> Any:
    from pdmd_core.config import DistillConfig

    return DistillConfig.model_validate({
        "method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": ITERATIONS, "batch_size": 2,
        "ttur_ratio": 2, "seed": 3, "generator": {"kind": "lora", "rank": 2, "alpha": 8.0}, "device": "cpu",
        "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3, "ema_decay": 0.9},
        "checkpoint": {"every": 1, "keep_last": 10}, "model": model})


def _callbacks(crash_at: int | None, record: str | None) -> list[Any]:
    from pdmd_core.callbacks import Callback

    class Crash(Callback):
        def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
            if step == crash_at:
                raise _Crash(f"killed after step {step}")

    class RecordLoaded(Callback):
        """The whole state right after the resume (gathered on every rank, saved by rank 0)."""

        def on_fit_begin(self, trainer: Any) -> None:
            from safetensors.torch import save_file

            from pdmd_core.dtensor_state import gather_for_checkpoint
            from pdmd_core.trainer_state import tensor_state
            from pdmd_pipeline.reliability.distributed import flatten_tensors

            full = flatten_tensors(gather_for_checkpoint(tensor_state(trainer), keep_full=True))
            if trainer.rank == 0:
                assert record is not None
                save_file({k: v.contiguous() for k, v in full.items()}, record)
                torch.save(trainer.rng.get_state(), record + ".rng")

    out: list[Any] = []
    if crash_at is not None:
        out.append(Crash())
    if record is not None:
        out.append(RecordLoaded())
    return out


def _train(cfg: Any, run_dir: Path, crash_at: int | None = None, record: str | None = None) -> Any:
    from pdmd_pipeline.realscale.launch import run_training

    try:
        return run_training(cfg, run_dir, callbacks=_callbacks(crash_at, record))
    except _Crash:
        return None


def _rank_main(rank: int, ports: list[int], model: dict[str, Any], root: str) -> None:
    torch.set_num_threads(1)
    out = Path(root)
    cfg = _config(model)
    for port, job in zip(ports, ("two", "two_to_one", "one_to_two", "two_async"), strict=True):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                          LOCAL_RANK=str(rank))
        if job == "two":  # uninterrupted
            _train(cfg, out / "two")
        elif job == "two_to_one":  # crashes; a single process resumes it later
            _train(cfg, out / "two_to_one", crash_at=STOP_AFTER)
        elif job == "two_async":  # periodic checkpoints written in the background (gloo group of their own)
            checkpoint = cfg.checkpoint.model_copy(update={"async_save": True})
            _train(cfg.model_copy(update={"checkpoint": checkpoint}), out / "two_async")
        else:  # resumes the single process's crashed run on 2 ranks
            _train(cfg, out / "one_to_two", record=str(out / "loaded_one_to_two.safetensors"))
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)


def _generator(checkpoint: Path) -> dict[str, torch.Tensor]:
    from pdmd_core.distributed_checkpoint import read_tensors

    return read_tensors(checkpoint, "generator.")


def _final(run: Path) -> dict[str, torch.Tensor]:
    from pdmd_core.checkpoint import latest_checkpoint

    path = latest_checkpoint(run / "checkpoints")
    assert path is not None and path.suffix == ".dcp"
    return _generator(path)


def _mean_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    total = sum(float((a[k] - b[k]).abs().sum()) for k in a)
    return total / sum(a[k].numel() for k in a)


@pytest.fixture(scope="module")
def runs(tiny_wan22, wan_prompt_cache, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dcp-resharding")
    model = {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
             "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16]}
    cfg = _config(model)
    torch.set_num_threads(1)
    _train(cfg, root / "one")  # uninterrupted, 1 rank
    _train(cfg, root / "one_to_two", crash_at=STOP_AFTER)  # 1 rank, crashes after step 5
    mp.spawn(_rank_main, args=([free_port() for _ in range(4)], model, str(root)), nprocs=WORLD, join=True)
    _train(cfg, root / "two_to_one", record=str(root / "loaded_two_to_one.safetensors"))
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    fresh = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), root / "unused", progress=False)
    initial = {f"generator.{e}.{k}": v for e in range(2) for k, v in fresh.generator.expert_state(e).items()}
    return {"root": root, "cfg": cfg, "initial": initial}


@pytest.mark.parametrize("case", ["two_to_one", "one_to_two"])
def test_resume_on_another_rank_count_loads_exactly_and_continues_the_run(runs, case):
    from safetensors.torch import load_file

    from pdmd_core.distributed_checkpoint import SHARED_FILE, rank_file, read_json, read_tensors
    from pdmd_core.realscale.ddp_check import compare_states

    root: Path = runs["root"]
    committed = root / case / "checkpoints" / f"ckpt_{STOP_AFTER - 1:08d}.dcp"
    saved = read_tensors(committed)
    loaded = load_file(str(root / f"loaded_{case}.safetensors"))
    kinds = {name.split(".")[0] for name in loaded}
    assert kinds == {"generator", "fake", "ema", "opt_fake", "opt_generator"}  # mid-phase: everything
    assert set(saved) == set(loaded)
    for name, value in loaded.items():
        assert torch.equal(value, saved[name]), name  # bit for bit after resharding
    writer = read_json(committed, rank_file(0))
    assert read_json(committed, SHARED_FILE)["world_size"] == (2 if case == "two_to_one" else 1)
    stream = torch.frombuffer(bytearray(base64.b64decode(writer["trainer_rng"])), dtype=torch.uint8)
    assert torch.equal(torch.load(str(root / f"loaded_{case}.safetensors") + ".rng"), stream)  # the writer's stream

    one, two, resumed = _final(root / "one"), _final(root / "two"), _final(root / case)
    same_first = two if case == "two_to_one" else one
    report = compare_states(resumed, same_first, runs["initial"])
    print(f"{case}: {report}; 1 vs 2 ranks uninterrupted: mean |diff| {_mean_abs(one, two):.2e}")
    assert report["same_training"], report
    assert report["max_update"] > 1e-3  # the runs trained: agreement within 1% of the update is not trivial


def test_export_of_the_sharded_run_equals_the_export_of_the_same_state_saved_as_one_file(runs):
    import shutil

    from safetensors.torch import load_file

    from pdmd_core.checkpoint import latest_checkpoint
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.trainer import Trainer

    root: Path = runs["root"]
    sharded = latest_checkpoint(root / "two" / "checkpoints")
    assert sharded is not None and sharded.suffix == ".dcp"
    single = root / "single"
    shutil.copytree(sharded, single / "checkpoints" / sharded.name)
    cfg = runs["cfg"]
    one = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), single, progress=False)  # one process
    assert one.resume() == single / "checkpoints" / sharded.name
    file = one.save()
    shutil.rmtree(single / "checkpoints" / sharded.name)
    assert file.suffix == ".pt" and latest_checkpoint(single / "checkpoints") == file
    for fmt in ("lora", "full"):
        exported = {}
        for name, source in (("sharded", root / "two"), ("single", single)):
            student, bundle, scfg = load_student(source)
            exported[name] = root / f"export-{name}-{fmt}"
            export_student(student.generator, bundle, scfg, exported[name], fmt)
        files = sorted(p.relative_to(exported["sharded"]) for p in exported["sharded"].rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(exported["single"]) for p in exported["single"].rglob("*")
                               if p.is_file())
        tensors = 0
        for rel in files:
            a, b = exported["sharded"] / rel, exported["single"] / rel
            if rel.suffix == ".safetensors":
                ta, tb = load_file(str(a)), load_file(str(b))
                assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), rel
                tensors += len(ta)
            else:
                assert a.read_bytes() == b.read_bytes(), rel
        assert tensors > 0


def test_asynchronous_saves_on_two_ranks_commit_every_checkpoint_and_train_identically(runs):
    from pdmd_core.checkpoint import list_checkpoints, partial_checkpoints
    from pdmd_core.distributed_checkpoint import staging_folders

    root: Path = runs["root"]
    folder = root / "two_async" / "checkpoints"
    assert [p.name for p in list_checkpoints(folder)] == [f"ckpt_{s:08d}.dcp" for s in range(1, 7)]
    assert not partial_checkpoints(folder) and not staging_folders(folder)
    a, b = _final(root / "two_async"), _final(root / "two")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same kernels, same order
