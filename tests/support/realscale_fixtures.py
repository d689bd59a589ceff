"""Session fixtures: tiny real-class Wan2.2 / Qwen-Image base models saved as diffusers folders, and their prompt
caches (a pytest plugin of the root conftest: built once per test process, shared by every layer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

PROMPTS = ["a red cat", "a blue dog sitting", "photo of a cat", "the dog runs"]


def first_frame_pairs(folder: Path, prompts: list[str], size: int) -> Path:
    """Random size x size first frames `frame<i>.png` in `folder` and the (prompt, image) pairs file
    `pairs.jsonl` that `pdmd embed-images` reads; returns the pairs file."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i, prompt in enumerate(prompts):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"frame{i}.png")
        lines.append(json.dumps({"prompt": prompt, "image": f"frame{i}.png"}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl"


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


@pytest.fixture(scope="session")
def tiny_wan21_study_model(tmp_path_factory) -> dict[str, object]:
    """The GPU study's CPU-rehearsal model (pdmd_pipeline.study.gpu_check): a one-expert tiny Wan2.1 with random
    weights and a random prompt cache, as the `model` section of a study arm (full weights, fp32, no autocast)."""
    from pdmd_core.realscale.gpu_check import _random_prompt_cache
    from pdmd_pipeline.study.gpu_check import random_wan_pipeline

    root = tmp_path_factory.mktemp("tiny-wan21-study")
    base = random_wan_pipeline(root / "base", "tiny-wan2.1", rehearsal=True)
    cache = _random_prompt_cache(root / "prompts.safetensors", 32, length=16)
    return {"architecture": "tiny-wan2.1", "model_path": str(base), "prompt_cache": str(cache),
            "resolution": [5, 32, 32], "resolutions": None, "gpus": 1, "weights": "full", "autocast_dtype": None}


@dataclass
class CountedIteration:
    """One real generator iteration under torch.utils.flop_counter.FlopCounterMode, with the exit steps its
    rollouts took (read off the order of the generator and fake-score calls)."""

    phase: int
    flops: int
    fake_exit_steps: list[int]
    generator_exit_step: int


@dataclass
class CountedRun:
    iterations: list[CountedIteration]
    costs: dict[int, Any]  # phase -> pdmd_core.iteration_flops.IterationCosts, counted at the phase's start


def _exit_steps(calls: list[str], ttur_ratio: int) -> tuple[list[int], int]:
    """Every rollout calls the generator once per executed step (up to its exit step), then a fake forward
    follows: `ttur_ratio` fake updates, then the generator update (teacher calls are not logged)."""
    runs = "".join(calls).split("F")
    if len(runs) != ttur_ratio + 2 or runs[-1]:
        raise AssertionError(f"unexpected call order {''.join(calls)!r} for ttur_ratio {ttur_ratio}")
    return [len(r) - 1 for r in runs[:ttur_ratio]], len(runs[ttur_ratio]) - 1


@pytest.fixture(scope="session")
def count_iterations(tmp_path_factory):
    """count_iterations(cfg, checkpointing, until=None, max_iterations=1) -> CountedRun: a Trainer on the
    config's model (activation checkpointing on the fake and generator roles when `checkpointing`, as the GPU
    study's FSDP2 wrapper does; the teacher never), phase by phase: the pass costs counted at the phase's start
    (pdmd_core.pass_flops), then iterations until `until(iterations of this phase)` holds (at most
    `max_iterations`), each counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from pdmd_core.models.registry import build_model
    from pdmd_core.pass_flops import measure_pass_flops
    from pdmd_core.realscale.distributed import enable_activation_checkpointing
    from pdmd_core.trainer import Trainer

    def checkpoint_trainable(role: str, module: torch.nn.Module) -> torch.nn.Module:
        if not role.startswith("teacher"):
            enable_activation_checkpointing(module.transformer)  # type: ignore[arg-type]
        return module

    def run(cfg: Any, checkpointing: bool, until: Any = None, max_iterations: int = 1) -> CountedRun:
        bundle = build_model(cfg.model.kind, cfg.model.params, "cpu")
        trainer = Trainer(cfg, bundle, tmp_path_factory.mktemp("count-run"), progress=False,
                          wrap_module=checkpoint_trainable if checkpointing else None)
        calls: list[str] = []
        hooks = [e.register_forward_pre_hook(lambda *_: calls.append("G")) for e in trainer.generator.experts]
        hooks.append(trainer.fake.module.register_forward_pre_hook(lambda *_: calls.append("F")))
        counted = CountedRun([], {})
        for phase in range(cfg.num_phases):
            trainer.begin_phase(phase)
            counted.costs[phase] = measure_pass_flops(trainer)
            done: list[CountedIteration] = []
            while len(done) < max_iterations and not (until is not None and until(done)):
                calls.clear()
                with FlopCounterMode(display=False) as counter:
                    metrics = trainer.train_iteration()
                fake_exits, generator_exit = _exit_steps(calls, cfg.ttur_ratio)
                assert generator_exit == metrics["exit_step"]
                done.append(CountedIteration(phase, counter.get_total_flops(), fake_exits, generator_exit))
            counted.iterations += done
            trainer.end_phase()
        for hook in hooks:
            hook.remove()
        return counted

    return run
