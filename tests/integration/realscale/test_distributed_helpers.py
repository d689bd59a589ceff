"""Single-process behaviour of the distributed helpers (the multi-process runs are in test_distributed_slurm)."""

from __future__ import annotations

import pytest
import torch

from pdmd_core.realscale.ddp_check import compare_states
from pdmd_core.realscale.distributed import (
    DistContext,
    accumulation_plan,
    autocast,
    average_gradients,
    enable_activation_checkpointing,
    init_distributed,
    rank_slice,
    transformer_block_types,
)
from pdmd_core.realscale.tiny import tiny_qwen_transformer, tiny_wan_transformer


def test_accumulation_plan_and_rank_slices_cover_the_global_batch_once():
    assert accumulation_plan(64, 8, 2) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_plan(10, 4, 2)
    rows = []
    for micro in range(accumulation_plan(8, 2, 2)):
        for rank in range(2):
            s = rank_slice(8, DistContext(rank=rank, world_size=2), 2, micro)
            rows.extend(range(s.start, s.stop))
    assert sorted(rows) == list(range(8))


def test_single_process_context_fsdp_units_checkpointing_and_cpu_autocast():
    ctx = init_distributed(device_type="cpu")  # no SLURM / torchrun variables: one process
    assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    average_gradients([param], ctx)
    assert torch.equal(param.grad, torch.full((3,), 2.0))
    wan, qwen = tiny_wan_transformer(0), tiny_qwen_transformer(0)
    assert [c.__name__ for c in transformer_block_types(wan)] == ["WanTransformerBlock"]
    assert [c.__name__ for c in transformer_block_types(qwen)] == ["QwenImageTransformerBlock"]
    enable_activation_checkpointing(wan)
    assert wan.gradient_checkpointing
    with autocast(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # CPU runs stay fp32


def test_compare_states_flags_a_distributed_run_that_trained_differently():
    initial = {"w": torch.zeros(4)}
    single = {"w": torch.full((4,), 1e-3)}
    close = {"w": single["w"] + 5e-6}
    off = {"w": single["w"] + 1e-4}
    assert compare_states(close, single, initial)["same_training"]
    report = compare_states(off, single, initial)
    assert not report["same_training"] and report["worst_tensor"] == "w"
    # norms: |diff| = 2e-4, |update| = 2e-3, plus abs_tol / rel_tol = 1e-4
    assert report["worst_diff_over_update"] == pytest.approx(2e-4 / (2e-3 + 1e-4), rel=1e-3)


def test_compare_states_judges_tensors_by_norm_and_reports_the_worst_element():
    """One AdamW element whose gradient flipped sign between steps can differ by a large share of the tensor's
    largest update while the tensor trained alike; a whole tensor off by the same amount did not."""
    initial = {"w": torch.zeros(10_000)}
    single = {"w": torch.full((10_000,), 2e-3)}
    one_element = {"w": single["w"].clone()}
    one_element["w"][0] += 2e-4  # 10 % of the largest update, in one element of 10,000
    report = compare_states(one_element, single, initial)
    assert report["same_training"]
    assert report["worst_element_over_update"] == pytest.approx(2e-4 / (2e-3 + 1e-4), rel=1e-3)
    assert report["worst_diff_over_update"] == pytest.approx(2e-4 / (0.2 + 1e-4), rel=1e-3)
    whole = {"w": single["w"] + 2e-4}
    assert not compare_states(whole, single, initial)["same_training"]
