"""Building real-scale transformers empty and filling them from diffusers safetensors (one process).

The two-rank case (FSDP2 shards read straight from the checkpoint, bit-identical training) is in
test_fsdp_trainer.py; here the loader itself is checked against diffusers' own `from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pdmd_core.realscale.sharded_weights import (
    WeightsSource,
    build_empty,
    checkpoint_files,
    checkpoint_key,
    materialize_from_checkpoint,
    own_cpu_storage,
    require_only_adapters,
)


@pytest.fixture(scope="module")
def sharded_checkpoint(tmp_path_factory) -> Path:
    """A tiny Wan transformer saved as a multi-file diffusers checkpoint (index + shards)."""
    from pdmd_core.realscale.tiny import tiny_wan_transformer

    folder = tmp_path_factory.mktemp("wan-sharded") / "transformer"
    tiny_wan_transformer(11).save_pretrained(folder, max_shard_size="20KB")
    return folder


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 1, 8, 8, generator=g), torch.tensor([900.0, 250.0]),
            torch.randn(2, 6, 32, generator=g))


def test_the_checkpoint_fixture_really_is_split_into_several_files(sharded_checkpoint):
    index = json.loads((sharded_checkpoint / "diffusion_pytorch_model.safetensors.index.json").read_text())
    files = checkpoint_files(sharded_checkpoint)
    assert len(set(index["weight_map"].values())) > 2
    assert set(files) == set(index["weight_map"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_empty_build_filled_from_the_checkpoint_equals_from_pretrained(sharded_checkpoint, dtype):
    from diffusers import WanTransformer3DModel

    reference = WanTransformer3DModel.from_pretrained(sharded_checkpoint, dtype=dtype).eval()
    empty = build_empty(WanTransformer3DModel, WeightsSource(sharded_checkpoint, dtype)).eval()
    assert all(p.is_meta for p in empty.parameters())
    assert not any(b.is_meta for b in empty.buffers())  # rotary tables are computed, not stored
    assert materialize_from_checkpoint(empty, torch.device("cpu")) == []
    ours, theirs = dict(empty.named_parameters()), dict(reference.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, param in theirs.items():  # same dtypes (fp32 modules kept in fp32) and same values
        assert ours[name].dtype == param.dtype, name
        assert torch.equal(ours[name], param), name
    for (name, buf), (_, ref) in zip(empty.named_buffers(), reference.named_buffers(), strict=True):
        assert torch.equal(buf, ref), name
    # from_pretrained leaves the weights inside the mmapped file at the header's byte offsets; BLAS picks its code
    # path (and so its rounding) by operand alignment on some CPUs. The project's whole-load path copies them to
    # allocator memory (own_cpu_storage), so with that copy both sides run the same kernels: bit-identical.
    own_cpu_storage(reference)
    x, t, text = _inputs()
    with torch.no_grad():
        out = empty(x.to(dtype), t, text.to(dtype), return_dict=False)[0]
        ref_out = reference(x.to(dtype), t, text.to(dtype), return_dict=False)[0]
    assert torch.equal(out, ref_out)


def test_peft_base_layers_map_to_checkpoint_names_and_adapters_stay_for_their_owner(sharded_checkpoint):
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model

    empty = build_empty(WanTransformer3DModel, WeightsSource(sharded_checkpoint, torch.float32))
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q", "ffn.net.2"]), empty, adapter_name="e0",
                            low_cpu_mem_usage=True)
    missing = materialize_from_checkpoint(empty, torch.device("cpu"))
    assert missing and all(".lora_A.e0." in n or ".lora_B.e0." in n for n in missing)
    require_only_adapters(missing, sharded_checkpoint)
    reference = WanTransformer3DModel.from_pretrained(sharded_checkpoint)
    base = dict(empty.named_parameters())["blocks.0.attn1.to_q.base_layer.weight"]
    assert checkpoint_key("blocks.0.attn1.to_q.base_layer.weight") == "blocks.0.attn1.to_q.weight"
    assert torch.equal(base, reference.blocks[0].attn1.to_q.weight)


def test_a_checkpoint_that_lacks_or_misshapes_a_weight_is_refused_by_name(sharded_checkpoint, tmp_path):
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    with pytest.raises(KeyError, match="lacks 1 weights the model needs"):
        require_only_adapters(["blocks.0.attn1.to_q.weight", "x.lora_A.e0.weight"], sharded_checkpoint)

    folder = tmp_path / "transformer"
    WanTransformer3DModel.from_pretrained(sharded_checkpoint).save_pretrained(folder)
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    weights["proj_out.weight"] = weights["proj_out.weight"][:-1].contiguous()
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    empty = build_empty(WanTransformer3DModel, WeightsSource(folder, torch.float32))
    with pytest.raises(ValueError, match="'proj_out.weight' has shape"):
        materialize_from_checkpoint(empty, torch.device("cpu"))

    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_empty(WanTransformer3DModel, WeightsSource(tmp_path / "nowhere", torch.float32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        checkpoint_files(tmp_path / "empty")


def test_context_parallel_is_refused_for_training_but_planned_in_a_dry_run(tmp_path):
    from pdmd_core.models.registry import build_model

    params = {"architecture": "wan2.1-t2v-1.3b", "resolution": [81, 480, 832], "context_parallel": 2}
    assert build_model("wan", params, torch.device("meta")).extras["params"].context_parallel == 2
    with pytest.raises(ValueError, match="context_parallel: 2 is a memory-plan what-if"):
        build_model("wan", params, torch.device("cpu"))


def test_a_run_on_roles_built_empty_trains_and_reloads_like_one_loaded_whole(tiny_wan22, wan_prompt_cache,
                                                                              tmp_path, prompts):
    """One process, no FSDP: `weights: sharded` fills each role whole after building it empty; training, the
    checkpoint and the reloaded student (also built empty) equal a `weights: full` run bit for bit."""
    from pdmd_core.config import DistillConfig
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.trainer import Trainer

    samples = {}
    for weights in ("full", "sharded"):
        cfg = DistillConfig.model_validate({
            "method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 1, "batch_size": 2,
            "ttur_ratio": 2, "generator": {"kind": "lora", "rank": 2, "alpha": 8.0}, "device": "cpu",
            "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3, "ema_decay": 0.9},
            "model": {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
                      "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16], "weights": weights}})
        bundle = build_model("wan", cfg.model.params, torch.device("cpu"))
        assert all(p.is_meta for p in bundle.teacher.parameters()) == (weights == "sharded")
        Trainer(cfg, bundle, tmp_path / weights, progress=False).fit()
        student, _, _ = load_student(tmp_path / weights)
        z = torch.randn(2, 4, 1, 4, 4, generator=torch.Generator().manual_seed(5))
        samples[weights] = student.sample(z, CachedPromptEncoder.from_file(wan_prompt_cache).encode(prompts[:2]))
    assert torch.equal(samples["full"], samples["sharded"])


def test_whole_loads_compute_from_allocator_memory_not_the_mmapped_file(sharded_checkpoint):
    """`own_cpu_storage` moves from_pretrained's file-mapped tensors into torch's 64-byte-aligned allocations (the
    layout the shard-by-shard path has), keeping values and tied parameters."""
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(sharded_checkpoint, dtype=torch.float32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mapped = [n for n, p in model.named_parameters() if p.data_ptr() % 64]
    assert mapped, "fixture: some weights sit at unaligned file offsets (what makes this test meaningful)"
    own_cpu_storage(model)
    assert all(p.data_ptr() % 64 == 0 for p in model.parameters())
    assert all(b.data_ptr() % 64 == 0 for b in model.buffers())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
