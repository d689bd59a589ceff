"""The trainer with FSDP2-sharded roles (2 gloo ranks, tiny Wan2.2 two-expert MoE, LoRA generator experts).

One spawned pair of processes runs, on both ranks: the trainer with replicated roles and averaged gradients
(`grad_sync`, DDP semantics), the same trainer with every role sharded by `fsdp2_role_wrapper` (+ activation
checkpointing), the same sharded trainer on transformers built empty whose ranks read only their shards from the
safetensors (`weights: sharded`), and a sharded SGTS-in-phase run that is killed after a checkpoint and resumed.
Sharded trainers share one run dir (their checkpoints are DCP folders every rank writes its shards into).
Rank 0 writes what it measured to a file the test checks.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from pdmd_pipeline.infra.mlflow_server import free_port

pytestmark = [pytest.mark.slow]

WORLD = 2
# Rounding budget of one forward through a tiny Wan2.2 expert (realscale.tiny.TINY_WAN_TRANSFORMER): the
# reductions on its path (26 linear layers, the patch-embedding conv, QKᵀ and AV of 4 attentions) and the widest
# reduction length (the FFN's hidden width 64; head dim 16, at most 16 text tokens).
_KERNEL_ORDER_LINEARS = 35
_KERNEL_ORDER_WIDEST_K = 64


def _config(model: dict[str, Any], **changes: Any) -> Any:
    from pdmd_core.config import DistillConfig

    raw: dict[str, Any] = {
        "method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 2, "batch_size": 1,
        "ttur_ratio": 2, "generator": {"kind": "lora", "rank": 2, "alpha": 8.0}, "device": "cpu",
        "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "model": model}
    raw.update(changes)
    return DistillConfig.model_validate(raw)


def _flat(trainer: Any) -> dict[str, torch.Tensor]:
    """Generator expert and fake-score tensors, full on every rank (collective under FSDP2)."""
    from pdmd_core.dtensor_state import gather_for_checkpoint

    state = {f"generator{e}.{k}": v for e in range(len(trainer.generator.experts))
             for k, v in trainer.generator.expert_state(e).items()}
    state |= {f"fake{i}.{k}": v for i, sd in enumerate(trainer.fake.state_dict()) for k, v in sd.items()}
    return {k: v.detach().clone() for k, v in gather_for_checkpoint(state, keep_full=True).items()}


def _teacher_tensors(trainer: Any) -> dict[str, torch.Tensor]:
    """The teacher's weights and buffers (rotary tables), full on every rank (collective under FSDP2)."""
    from pdmd_core.dtensor_state import gather_for_checkpoint

    module = trainer.teacher.module
    state = dict(module.named_parameters()) | {f"buffer:{k}": v for k, v in module.named_buffers()}
    return {k: v.detach().clone() for k, v in gather_for_checkpoint(state, keep_full=True).items()}


def _teacher_probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 4, 1, 2, 2, generator=g), torch.tensor([0.95, 0.3])  # one sample per MoE expert


def _run_probe(trainer: Any, probe: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The teacher's guided velocity on fixed inputs (collective when the teacher is sharded)."""
    cond, null = trainer.bundle.prompt_source.sample(2, torch.Generator().manual_seed(3))
    x, t = probe
    return trainer.teacher.velocity(x, t, cond, null).detach().clone()


class _Crash(RuntimeError):
    pass


def _crash_at(step: int, phase: int, metrics: dict[str, float], at: int) -> None:
    if step == at:
        raise _Crash(f"killed after generator step {step}")


def _rows_written(checkpoint: Path, name: str, rank: int) -> int:
    """Rows of tensor `name` that `rank` wrote into its own file of a DCP checkpoint."""
    from torch.distributed.checkpoint.metadata import MetadataIndex

    from pdmd_core.distributed_checkpoint import read_metadata_safely

    metadata = read_metadata_safely(checkpoint / ".metadata")
    chunks = metadata.state_dict_metadata[name].chunks  # type: ignore[union-attr]
    mine = [c for c in chunks
            if metadata.storage_data[MetadataIndex(name, c.offsets)].relative_path.startswith(f"__{rank}_")]
    return sum(c.sizes[0] for c in mine)


def _rank_main(rank: int, port: int, model: dict[str, Any], root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torch.distributed.tensor import DTensor

    from pdmd_core.callbacks import OnIteration
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import (
        average_gradients,
        fsdp2_role_wrapper,
        init_distributed,
        shutdown_distributed,
    )
    from pdmd_core.role_sharding import RankSyncedMoE
    from pdmd_core.trainer import Trainer

    ctx = init_distributed(device_type="cpu")
    out = Path(root)
    report: dict[str, Any] = {}

    def trainer(cfg: Any, name: str, sharded: bool, callbacks: tuple = ()) -> Trainer:
        bundle = build_model("wan", cfg.model.params, torch.device("cpu"))
        sync = {"wrap_module": fsdp2_role_wrapper(ctx, activation_checkpointing=True)} if sharded else {
            "grad_sync": functools.partial(average_gradients, ctx=ctx)}
        run_dir = out / name if sharded else out / name / str(rank)  # sharded: one DCP checkpoint for all ranks
        return Trainer(cfg, bundle, run_dir, callbacks=callbacks, progress=False, rank=rank, **sync)

    try:
        cfg = _config({**model, "weights": "full"})
        initial = trainer(cfg, "initial", sharded=False)
        report["initial"] = _flat(initial)
        replicated = trainer(cfg, "replicated", sharded=False)
        replicated.fit()
        report["replicated"] = _flat(replicated)
        sharded = trainer(cfg, "sharded", sharded=True)
        fake_name, fake_param = max(sharded.fake.experts[0].named_parameters(), key=lambda item: item[1].shape[0])
        teacher_param = next(sharded.teacher.module.parameters())
        report["roles_are_dtensors"] = all(isinstance(p, DTensor) for p in (fake_param, teacher_param))
        report["shard_rows"] = (fake_param.to_local().shape[0], fake_param.shape[0])
        sharded.fit()
        report["sharded"] = _flat(sharded)
        report["joined_calls"] = sum(m.joined_calls for m in (sharded.teacher.module, sharded.fake.module)
                                     if isinstance(m, RankSyncedMoE))

        # the same run with every transformer built empty and each rank reading only its shards from safetensors
        empty_cfg = _config({**model, "weights": "sharded"})
        empty_bundle = build_model("wan", empty_cfg.model.params, torch.device("cpu"))
        report["bundle_was_empty"] = all(p.is_meta for e in empty_bundle.teacher_experts for p in e.parameters())
        from_shards = Trainer(empty_cfg, empty_bundle, out / "from_shards", progress=False, rank=rank,
                              wrap_module=fsdp2_role_wrapper(ctx, activation_checkpointing=True))
        report["from_shards_local_rows"] = dict(from_shards.fake.experts[0].named_parameters())[
            fake_name].to_local().shape[0]
        report["from_shards_initial"] = _flat(from_shards)
        report["teacher_tensors"] = [_teacher_tensors(t) for t in (initial, from_shards)]
        probe = _teacher_probe()  # the teacher is frozen: `sharded` still holds the weights it was loaded with
        report["teacher_outputs"] = {name: _run_probe(t, probe) for name, t in
                                     (("whole", initial), ("sharded_whole", sharded), ("from_shards", from_shards))}
        from_shards.fit()
        report["from_shards"] = _flat(from_shards)

        sgts = _config({**model, "weights": "full"}, in_phase="sgts", checkpoint={"every": 1, "keep_last": 5})
        whole = trainer(sgts, "whole", sharded=True)
        whole.fit()
        report["whole"] = _flat(whole)
        try:
            trainer(sgts, "killed", sharded=True, callbacks=(OnIteration(functools.partial(_crash_at, at=4)),)).fit()
        except _Crash:
            pass
        resumed = trainer(sgts, "killed", sharded=True)
        report["resumed_from"] = str(resumed.resume())
        resumed.fit()
        report["resumed"] = _flat(resumed)
        ckpt = out / "killed" / "checkpoints" / "ckpt_00000003.dcp"
        report["ckpt_fake_rows"] = _rows_written(ckpt, f"fake.0.{fake_name}", rank)
        lora_name, lora_param = max(resumed.generator._owned(1), key=lambda item: item[1].shape[0])
        report["generator_rows"] = (lora_param.to_local().shape[0], lora_param.shape[0])
        report["ckpt_generator_rows"] = _rows_written(ckpt, f"generator.1.{lora_name}", rank)
        torch.save(report, out / f"report_{rank}.pt")
    finally:
        shutdown_distributed()


@pytest.fixture(scope="module")
def reports(tiny_wan22, wan_prompt_cache, tmp_path_factory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fsdp-trainer")
    model = {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
             "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16]}
    mp.spawn(_rank_main, args=(free_port(), model, str(root)), nprocs=WORLD, join=True)
    return [torch.load(root / f"report_{r}.pt", weights_only=False) for r in range(WORLD)]


def test_sharded_roles_train_like_replicated_roles_with_averaged_gradients(reports):
    from pdmd_core.realscale.ddp_check import compare_states

    rank0, rank1 = reports
    assert rank0["roles_are_dtensors"] and rank1["roles_are_dtensors"]
    local, full = rank0["shard_rows"]
    assert local + rank1["shard_rows"][0] == full and local < full  # each rank holds a part of each tensor
    # the MoE fake / teacher joined another rank's expert call at least once (per-rank t routing differs)
    assert rank0["joined_calls"] + rank1["joined_calls"] > 0
    for r in reports:  # the gathered sharded state is the same on every rank
        assert all(torch.equal(r["sharded"][k], rank0["sharded"][k]) for k in rank0["sharded"])
    report = compare_states(rank0["sharded"], rank0["replicated"], rank0["initial"])
    assert report["same_training"], report
    assert report["max_update"] > 1e-3


def test_roles_built_empty_and_read_shard_by_shard_train_exactly_like_roles_loaded_whole(reports):
    rank0, rank1 = reports
    assert rank0["bundle_was_empty"] and rank1["bundle_was_empty"]  # no rank ever held a whole transformer
    assert rank0["from_shards_local_rows"] + rank1["from_shards_local_rows"] == rank0["shard_rows"][1]
    for r in reports:
        whole, from_shards = r["teacher_tensors"]  # teacher weights and rotary buffers as from_pretrained's
        assert whole.keys() == from_shards.keys() and len(whole) > 0
        assert all(torch.equal(whole[k], from_shards[k]) for k in whole)
        out = r["teacher_outputs"]
        # Same code path (FSDP2 units over the same layout, the same kernels in the same order): bit-identical.
        assert torch.equal(out["sharded_whole"], out["from_shards"])
        # Across code paths (plain modules vs FSDP2-gathered parameters) only the summation order of the
        # kernels may differ, which BLAS picks per CPU and operand layout (an AMD EPYC rounded differently
        # here). Each fp32 dot product of length K then moves by at most ~K·eps relative, once per linear
        # layer on the path: the bound below is that, with K the widest reduction of the tiny Wan.
        bound = _KERNEL_ORDER_LINEARS * _KERNEL_ORDER_WIDEST_K * torch.finfo(torch.float32).eps
        scale = float(out["whole"].abs().max())
        torch.testing.assert_close(out["from_shards"], out["whole"], rtol=0, atol=bound * max(scale, 1.0))
        for key, value in r["initial"].items():  # fake = teacher copy, LoRA adapters from the same seeded init
            assert torch.equal(r["from_shards_initial"][key], value), key
        for key, value in r["sharded"].items():
            assert torch.equal(r["from_shards"][key], value), key


def test_a_sharded_checkpoint_resumes_like_an_uninterrupted_run(reports):
    rank0, rank1 = reports
    assert rank0["resumed_from"].endswith("ckpt_00000003.dcp")
    # every rank writes only its shard of the fake scores and of the generator (nothing is gathered to rank 0;
    # export reads the DCP checkpoint directly), and the shards together are the whole tensor
    assert rank0["ckpt_fake_rows"] == rank0["shard_rows"][0]
    assert rank1["ckpt_fake_rows"] == rank1["shard_rows"][0]
    assert rank0["ckpt_generator_rows"] == rank0["generator_rows"][0]
    assert rank1["ckpt_generator_rows"] == rank1["generator_rows"][0]
    assert rank0["ckpt_generator_rows"] + rank1["ckpt_generator_rows"] == rank0["generator_rows"][1]
    for r in reports:
        assert r["whole"].keys() == r["resumed"].keys()
        assert all(torch.equal(r["whole"][k], r["resumed"][k]) for k in r["whole"])


def test_rank_synced_moe_equals_moe_velocity_in_one_process():
    """Without a process group the synced container routes exactly like MoEVelocity (and joins nothing)."""
    from pdmd_core.models.moe import MoEVelocity
    from pdmd_core.protocols import Conditioning
    from pdmd_core.role_sharding import RankSyncedMoE

    torch.manual_seed(0)
    experts = [torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)]

    class Velocity(torch.nn.Module):
        def __init__(self, lin: torch.nn.Module) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x, t, cond):
            return self.lin(x) * t[:, None] + cond.embeds[:, 0]

    wrapped = [Velocity(e) for e in experts]
    x, embeds = torch.randn(4, 3), torch.randn(4, 2, 3)
    synced, plain = RankSyncedMoE(wrapped, 0.5), MoEVelocity(wrapped, 0.5)
    for t in (torch.tensor([0.9, 0.2, 0.7, 0.1]), torch.full((4,), 0.8), torch.full((4,), 0.3)):
        assert torch.equal(synced(x, t, Conditioning(embeds)), plain(x, t, Conditioning(embeds)))
    assert synced.joined_calls == 0
