"""Wan2.2 TI2V-5B students against diffusers, the reference implementation of the released model.

diffusers runs TI2V image-to-video with WanImageToVideoPipeline(expand_timesteps=True): latent frame 0 is
replaced by the VAE-encoded image in the transformer input, its tokens get timestep 0, and the image latent is
pasted over frame 0 after the last step. pdmd's `WanVelocity(mode="ti2v")` must feed the transformer the same
input and its own N-step sampler must end on the same latents; an exported (trained) TI2V student sampled by
the stock pipeline must reproduce the trainer's sampler.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.flow import velocity_to_x0
from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.tiny import TINY_TI2V_Z_DIM, tiny_wan22_vae, tiny_wan_transformer
from pdmd_core.realscale.wan import WanVelocity, ti2v_token_timesteps
from pdmd_core.sampling import euler_sample, uniform_timesteps

FRAMES, HEIGHT, WIDTH = 9, 32, 64  # -> latents (z_dim, 3, 2, 4): 16x spatial, 4x temporal (Wan2.2 VAE)
LATENT = (TINY_TI2V_Z_DIM, 3, 2, 4)


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _adapter(seed: int = 0) -> WanVelocity:
    return WanVelocity(tiny_wan_transformer(seed, in_channels=TINY_TI2V_Z_DIM, out_channels=TINY_TI2V_Z_DIM),
                       mode="ti2v")


def test_ti2v_transformer_input_and_token_timesteps_are_the_i2v_pipelines_expand_timesteps_construction():
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=tiny_wan22_vae(0), scheduler=None,
                                   transformer=None, expand_timesteps=True)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=g) * 2 - 1
    latents = torch.randn(2, *LATENT, generator=g)
    _, condition, mask = pipe.prepare_latents(image, 2, TINY_TI2V_Z_DIM, HEIGHT, WIDTH, FRAMES, torch.float32,
                                              torch.device("cpu"), None, latents)
    timestep = torch.tensor(812.5)
    # what the pipeline hands its transformer at this step (pipeline_wan_i2v.py, `expand_timesteps` branch)
    pipeline_input = (1 - mask) * condition + mask * latents
    pipeline_timestep = (mask[0][0][:, ::2, ::2] * timestep).flatten().unsqueeze(0).expand(2, -1)

    assert torch.equal(ti2v_token_timesteps(timestep.expand(2), latents.shape, (1, 2, 2)), pipeline_timestep)
    adapter = _adapter()
    seen: dict[str, torch.Tensor] = {}

    def record(module, args, kwargs):
        seen.update(hidden=kwargs["hidden_states"], timestep=kwargs["timestep"])

    adapter.transformer.register_forward_pre_hook(record, with_kwargs=True)
    cond = Conditioning(torch.randn(2, 5, 32, generator=g), extras={"first_frame_latent": condition})
    adapter(latents, torch.full((2,), 0.8125), cond)
    assert torch.equal(seen["hidden"], pipeline_input)
    assert torch.equal(seen["timestep"], pipeline_timestep)


def test_ti2v_first_frame_velocity_is_exact_so_the_sampler_ends_on_the_image_and_frame_zero_trains_nothing():
    adapter = _adapter()
    g = torch.Generator().manual_seed(1)
    first = torch.randn(2, TINY_TI2V_Z_DIM, 1, 2, 4, generator=g)
    cond = Conditioning(torch.randn(2, 5, 32, generator=g), extras={"first_frame_latent": first})
    x_t = torch.randn(2, *LATENT, generator=g)
    t = torch.tensor([0.7, 0.3])
    v = adapter(x_t, t, cond)
    # v = eps - x_0 on the known frame, so the x_0-prediction there is the image latent itself
    assert torch.allclose(v[:, :, :1], (x_t[:, :, :1] - first) / t.view(2, 1, 1, 1, 1))
    assert torch.allclose(velocity_to_x0(x_t, v, t.view(2, 1, 1, 1, 1))[:, :, :1], first, atol=1e-6)
    # the noisy frame 0 does not reach the transformer: frames 1.. do not depend on it
    moved = x_t.clone()
    moved[:, :, 0] += 3.0
    assert torch.equal(adapter(moved, t, cond)[:, :, 1:], v[:, :, 1:])
    # any Euler schedule lands on the image latent, as the pipeline's final paste does
    z = torch.randn(2, *LATENT, generator=g)
    sample = euler_sample(adapter, z, uniform_timesteps(4, 5.0), cond)
    assert (sample[:, :, :1] - first).abs().max() <= 1e-6
    # t = 0: x_t is already clean; zero velocity, no division by zero
    assert torch.equal(adapter(x_t, torch.zeros(2), cond)[:, :, :1], torch.zeros_like(first))
    # losses on frame 0 send no gradient into the transformer
    adapter.transformer.requires_grad_(True)
    adapter(x_t, t, cond)[:, :, :1].square().sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in adapter.transformer.parameters())


def _pairs(tmp_path, prompts) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i, prompt in enumerate(prompts):
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(tmp_path / f"frame{i}.png")
        lines.append(json.dumps({"prompt": prompt, "image": f"frame{i}.png"}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")


def _config(tmp_path, base, cache, first_frames) -> str:
    cfg = {"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 2, "batch_size": 2,
           "ttur_ratio": 2, "generator": {"kind": "lora", "rank": 4, "alpha": 8.0},
           "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "checkpoint": {"every": 100, "keep_last": 1},
           "model": {"kind": "wan", "architecture": "tiny-wan2.2-ti2v", "model_path": str(base),
                     "prompt_cache": str(cache), "i2v_cache": str(first_frames),
                     "resolution": [FRAMES, HEIGHT, WIDTH]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_ti2v_student_trains_exports_and_the_expand_timesteps_i2v_pipeline_reproduces_its_sampler(
        tmp_path, tiny_wan22_ti2v, prompts):
    from diffusers import AutoencoderKLWan

    from pdmd_core.realscale.export import ExportManifest
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.realscale.vae import load_image
    from pdmd_core.sample_noise import initial_noise

    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    cache = tmp_path / "prompts.safetensors"
    _invoke("embed-prompts", str(tmp_path / "prompts.txt"), "--family", "wan", "--model-path", str(tiny_wan22_ti2v),
            "--out", str(cache), "--max-sequence-length", "16")
    _pairs(tmp_path, prompts)
    first_frames = tmp_path / "first_frames.safetensors"
    _invoke("embed-images", str(tmp_path / "pairs.jsonl"), "--prompt-cache", str(cache), "--model-path",
            str(tiny_wan22_ti2v), "--out", str(first_frames), "--resolution", f"{FRAMES},{HEIGHT},{WIDTH}",
            "--mode", "ti2v")
    first = load_file(str(first_frames))[f"first_frame_latent@{FRAMES}x{HEIGHT}x{WIDTH}"]
    assert first.shape == (4, TINY_TI2V_Z_DIM, 1, 2, 4)
    # the condition is the normalised VAE mode of the image alone (no zero frames after it, unlike I2V)
    vae = AutoencoderKLWan.from_pretrained(tiny_wan22_ti2v, subfolder="vae").eval()
    with torch.no_grad():
        raw = vae.encode(load_image(str(tmp_path / "frame2.png"), HEIGHT, WIDTH)[None, :, None]).latent_dist.mode()
    mean, std = (torch.tensor(vae.config[k]).view(1, -1, 1, 1, 1) for k in ("latents_mean", "latents_std"))
    assert torch.allclose(first[2:3], (raw - mean) / std, atol=1e-6)

    run = tmp_path / "run"
    _invoke("train", _config(tmp_path, tiny_wan22_ti2v, cache, first_frames), "--run-dir", str(run))
    _invoke("export", str(run), "--out", str(tmp_path / "lora"))
    student, bundle, _ = load_student(run)
    assert bundle.sample_shape == LATENT
    manifest = ExportManifest.read(tmp_path / "lora")
    # one base transformer, two phase experts: both start from it; the pipeline switches at the phase edge
    assert manifest.wan_mode == "ti2v" and [e.base_subfolder for e in manifest.experts] == ["transformer"] * 2
    pipe = load_student_pipeline(tmp_path / "lora", tiny_wan22_ti2v)
    assert type(pipe.pipeline).__name__ == "WanImageToVideoPipeline" and pipe.pipeline.config.expand_timesteps
    assert (pipe.spatial_factor, pipe.temporal_factor) == (16, 4)

    encoder = CachedPromptEncoder.from_file(cache)
    diffs = []
    for row in (1, 3):
        cond = encoder.encode([prompts[row]])
        cond.extras["first_frame_latent"] = first[row:row + 1]
        z = initial_noise(LATENT, row)
        own = student.sample(z, cond)
        via_diffusers = pipe.generate(z, cond, image=Image.open(tmp_path / f"frame{row}.png"))
        diffs.append(float((own - via_diffusers).abs().max()))
        assert (own[:, :, :1] - first[row:row + 1]).abs().max() <= 1e-5  # the video starts on the image
        teacher = euler_sample(bundle.teacher, z, manifest.timesteps, cond)
        assert (own - teacher).abs().max() > 1e-3  # training moved the student: the agreement is not trivial
    print(f"TI2V student vs WanImageToVideoPipeline(expand_timesteps): max |diff| = {max(diffs):.3g}")
    assert max(diffs) <= 1e-5

    # `pdmd sample --images` drives the same pipeline; its latents are the trainer's sampler's
    out = tmp_path / "samples"
    _invoke("sample", "--export", str(tmp_path / "lora"), "--model-path", str(tiny_wan22_ti2v), "--prompt-cache",
            str(cache), "--out", str(out), "--resolution", f"{FRAMES},{HEIGHT},{WIDTH}", "--seeds", "3",
            "--prompt-ids", "3", "--images", str(tmp_path / "pairs.jsonl"))
    cond = encoder.encode([prompts[3]])
    cond.extras["first_frame_latent"] = first[3:4]
    written = load_file(str(out / "latents.safetensors"))["latents"]
    assert (written - student.sample(initial_noise(LATENT, 3), cond)).abs().max() <= 1e-5
    from pdmd_eval.samples import load_sample_set

    samples = load_sample_set(out)
    assert samples.kind == "video" and samples.samples.shape == (1, FRAMES, 3, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="first-frame image"):
        _invoke("sample", "--export", str(tmp_path / "lora"), "--model-path", str(tiny_wan22_ti2v),
                "--prompt-cache", str(cache), "--out", str(tmp_path / "none"), "--resolution",
                f"{FRAMES},{HEIGHT},{WIDTH}", "--seeds", "0", "--prompt-ids", "0")
