"""Prompt-embedding cache (pipelines' own encoders), VAE conditions, architectures and memory plans."""

from __future__ import annotations

import types

import pytest
import torch

from pdmd_core.realscale.architectures import ARCHITECTURES, get_architecture, latent_shape
from pdmd_core.realscale.memory_plan import GIB, plan_memory
from pdmd_core.realscale.models import RealScaleParams
from pdmd_core.realscale.text_cache import CachedPromptEncoder, load_prompt_embeddings


def test_wan_cache_holds_exactly_what_the_pipeline_feeds_its_transformer(tiny_wan22, wan_prompt_cache, prompts):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(tiny_wan22, transformer=None, transformer_2=None, vae=None)
    with torch.no_grad():
        expected, _ = pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False, max_sequence_length=16)
    cache = load_prompt_embeddings(wan_prompt_cache)
    assert cache.family == "wan" and cache.prompts == prompts
    assert torch.allclose(cache.embeds, expected, atol=1e-6)  # the cache was encoded in batches of 3
    assert cache.mask.sum(1).tolist() == [len(p.split()) for p in prompts]  # one word-level token per word
    assert torch.all(cache.embeds[~cache.mask] == 0)  # WanPipeline zero-pads after the real tokens
    encoder = CachedPromptEncoder(cache)
    cond = encoder.encode([prompts[2], prompts[0]])
    assert torch.equal(cond.embeds, cache.embeds[[2, 0]])
    assert encoder.null(3).embeds.shape == (3, 16, 32)
    with pytest.raises(KeyError, match="not in the embedding cache"):
        encoder.encode(["an unseen prompt"])


def test_qwen_cache_pads_to_one_length_and_keeps_each_prompts_tokens(tiny_qwen, qwen_prompt_cache, prompts):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(tiny_qwen, transformer=None, vae=None)
    cache = load_prompt_embeddings(qwen_prompt_cache)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            alone, mask = pipe.encode_prompt(prompt=[prompt])
        length = alone.shape[1]
        assert mask is None  # a single prompt has no padding
        assert int(cache.mask[row].sum()) == length
        assert torch.allclose(cache.embeds[row, :length], alone[0], atol=1e-6)
        assert torch.all(cache.embeds[row, length:] == 0)


def test_i2v_conditions_match_the_i2v_pipelines_construction():
    from pdmd_core.realscale.tiny import tiny_wan_vae
    from pdmd_core.realscale.vae import decode_to_unit, i2v_conditions

    vae = tiny_wan_vae(0)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    cond = i2v_conditions(vae, images, num_frames=5, mode="i2v")["i2v_condition"]
    assert cond.shape == (2, 4 + 4, 2, 4, 4)  # frame mask (temporal factor 4) + image latent (z_dim 4)
    assert torch.all(cond[:, :4, 0] == 1) and torch.all(cond[:, :4, 1] == 0)  # only the first frame is given
    single = i2v_conditions(vae, images[1:], num_frames=5, mode="i2v")["i2v_condition"]
    assert torch.allclose(single, cond[1:])
    first = i2v_conditions(vae, images, num_frames=5, mode="ti2v")["first_frame_latent"]
    assert torch.allclose(first, cond[:, 4:, :1])
    video = decode_to_unit(vae, torch.randn(2, 4, 2, 4, 4))
    assert video.shape == (2, 5, 3, 16, 16) and 0 <= float(video.min()) <= float(video.max()) <= 1


def test_published_architectures_have_their_known_sizes_and_latent_shapes():
    from diffusers import QwenImageTransformer2DModel, WanTransformer3DModel

    def count(name: str, sub: str = "transformer") -> float:
        arch = get_architecture(name)
        cls = WanTransformer3DModel if arch.family == "wan" else QwenImageTransformer2DModel
        with torch.device("meta"):
            return sum(p.numel() for p in cls(**arch.config_for(sub)).parameters()) / 1e9

    assert 1.3 < count("wan2.1-t2v-1.3b") < 1.5
    assert 14.0 < count("wan2.2-t2v-a14b", "transformer_2") < 14.5
    assert 20.3 < count("qwen-image") < 20.6
    assert latent_shape(ARCHITECTURES["wan2.2-t2v-a14b"], 81, 720, 1280) == (16, 21, 90, 160)
    assert latent_shape(ARCHITECTURES["wan2.2-ti2v-5b"], 121, 704, 1280) == (48, 31, 44, 80)
    assert latent_shape(ARCHITECTURES["qwen-image"], 1, 1328, 1328) == (16, 166, 166)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        latent_shape(ARCHITECTURES["wan2.1-t2v-1.3b"], 80, 480, 832)
    with pytest.raises(ValueError, match="unknown architecture"):
        get_architecture("wan3")


def test_memory_plan_shards_persistent_state_over_the_gpus():
    arch = get_architecture("wan2.1-t2v-1.3b")
    params = RealScaleParams(architecture="wan2.1-t2v-1.3b", resolution=(81, 480, 832), gpus=8)
    roles = {"teacher": {"params": 1000, "trainable": 0}, "fake": {"params": 1000, "trainable": 1000},
             "generator": {"params": 1100, "trainable": 100}}
    cfg = types.SimpleNamespace(batch_size=8, optim=types.SimpleNamespace(ema_decay=0.99))
    shape = latent_shape(arch, 81, 480, 832)
    plan = plan_memory(params, arch, shape, cfg, roles)
    per_gpu = plan["per_gpu_gib"]
    assert per_gpu["weights"] == round(3100 * 4 / 8 / GIB, 2)
    assert plan["batch_per_gpu"] == 1 and plan["tokens_per_sample"] == 21 * 30 * 52
    # activations with checkpointing: block inputs of all 30 layers + one block recomputed (bf16)
    tokens, hidden = 21 * 30 * 52, 12 * 128
    expected = 30 * tokens * hidden * 2 + tokens * (10 * hidden + 8960) * 2
    assert per_gpu["activations_estimate"] == round(expected / GIB, 2)
    unsharded = plan_memory(params.model_copy(update={"fsdp": False}), arch, shape, cfg, roles)
    assert unsharded["sharding"].startswith("replicated")
