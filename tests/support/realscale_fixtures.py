"""Session fixtures: tiny real-class Wan2.2 / Qwen-Image base models saved as diffusers folders, and their prompt
caches (a pytest plugin of the root conftest: built once per test process, shared by every layer)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROMPTS = ["a red cat", "a blue dog sitting", "photo of a cat", "the dog runs"]


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture(scope="session")
def tiny_wan22(tmp_path_factory) -> Path:
    """A Wan2.2-style two-expert base model folder (boundary 0.875) with a tiny UMT5 text encoder."""
    from pdmd_core.realscale.tiny import tiny_wan22_pipeline

    root = tmp_path_factory.mktemp("tiny-wan22")
    tiny_wan22_pipeline(PROMPTS).save_pretrained(root / "base")
    return root / "base"


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    from pdmd_core.realscale.tiny import save_tiny_base

    return save_tiny_base("tiny-qwen-image", PROMPTS, tmp_path_factory.mktemp("tiny-qwen") / "base")


def _cache(base: Path, family: str, out: Path, **kwargs) -> Path:
    from diffusers import QwenImagePipeline, WanPipeline

    from pdmd_core.realscale.text_cache import encode_prompts, save_prompt_embeddings

    if family == "wan":
        pipe = WanPipeline.from_pretrained(base, transformer=None, transformer_2=None, vae=None)
    else:
        pipe = QwenImagePipeline.from_pretrained(base, transformer=None, vae=None)
    return save_prompt_embeddings(encode_prompts(pipe, family, PROMPTS, batch_size=3, progress=False, **kwargs), out)


@pytest.fixture(scope="session")
def wan_prompt_cache(tiny_wan22, tmp_path_factory) -> Path:
    return _cache(tiny_wan22, "wan", tmp_path_factory.mktemp("wan-cache") / "prompts.safetensors",
                  max_sequence_length=16)


@pytest.fixture(scope="session")
def qwen_prompt_cache(tiny_qwen, tmp_path_factory) -> Path:
    return _cache(tiny_qwen, "qwen_image", tmp_path_factory.mktemp("qwen-cache") / "prompts.safetensors")


@pytest.fixture(scope="session")
def tiny_wan22_i2v(tmp_path_factory) -> Path:
    """A Wan2.2-I2V-style two-expert base model folder (boundary 0.9; 3 x z_dim input channels)."""
    from pdmd_core.realscale.tiny import save_tiny_base

    return save_tiny_base("tiny-wan2.2-i2v", PROMPTS, tmp_path_factory.mktemp("tiny-wan22-i2v") / "base")


@pytest.fixture(scope="session")
def tiny_wan22_ti2v(tmp_path_factory) -> Path:
    """A Wan2.2-TI2V-5B-style base model folder: one transformer (in/out channels = z_dim), the Wan2.2 VAE
    layout (residual, 2x2 patchify, 16x spatial), saved as diffusers saves TI2V (WanPipeline, expand_timesteps)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from pdmd_core.realscale.tiny import (
        TINY_TI2V_Z_DIM,
        tiny_tokenizer,
        tiny_umt5_encoder,
        tiny_wan22_vae,
        tiny_wan_transformer,
    )

    root = tmp_path_factory.mktemp("tiny-wan22-ti2v")
    tokenizer = tiny_tokenizer(PROMPTS)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=tiny_umt5_encoder(1, len(tokenizer)), vae=tiny_wan22_vae(2),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                       transformer=tiny_wan_transformer(3, in_channels=TINY_TI2V_Z_DIM, out_channels=TINY_TI2V_Z_DIM),
                       expand_timesteps=True)
    pipe.save_pretrained(root / "base")
    return root / "base"
