"""Cached prompts -> 2-phase Phased DMD training -> export -> stock diffusers pipeline, on tiny real classes.

The exported experts, loaded into WanPipeline (transformer / transformer_2 / boundary_ratio) or
QwenImagePipeline (LoRA adapters switched between steps), must reproduce the trainer's own N-step sampler.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from realscale_fixtures import first_frame_pairs
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.realscale.export import ExportManifest
from pdmd_core.realscale.pipelines import load_student_pipeline
from pdmd_core.realscale.student_io import load_student
from pdmd_core.realscale.text_cache import CachedPromptEncoder

pytestmark = pytest.mark.slow


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _config(tmp_path, kind, architecture, base, cache, shift, **extra) -> str:
    cfg = {"method": "phased", "num_steps": 4, "shift": shift, "phases": 2, "iterations": 2, "batch_size": 2,
           "ttur_ratio": 2, "generator": {"kind": "lora", "rank": 4, "alpha": 8.0},
           "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "checkpoint": {"every": 100, "keep_last": 1},
           "model": {"kind": kind, "architecture": architecture, "model_path": str(base),
                     "prompt_cache": str(cache), "resolution": [1, 16, 16]}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _distill_export_and_compare(tmp_path, config, base, cache, fmt, prompts):
    run = tmp_path / "run"
    _invoke("train", config, "--run-dir", str(run))
    _invoke("export", str(run), "--out", str(tmp_path / fmt), "--format", fmt)
    student, bundle, _ = load_student(run)
    cond = CachedPromptEncoder.from_file(cache).encode(prompts[:2])
    z = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(7))
    own = student.sample(z, cond)
    pipe = load_student_pipeline(tmp_path / fmt, base)
    via_diffusers = pipe.generate(z, cond)
    return own, via_diffusers, pipe, bundle, cond, z


def _teacher_euler(bundle, z, cond, timesteps):
    from pdmd_core.sampling import euler_sample

    return euler_sample(bundle.teacher, z, timesteps, cond)


def test_wan22_two_expert_teacher_distils_exports_and_samples_in_wan_pipeline(tmp_path, tiny_wan22, prompts):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n")
    cache = tmp_path / "prompts.safetensors"
    _invoke("embed-prompts", str(prompt_file), "--family", "wan", "--model-path", str(tiny_wan22), "--out", str(cache),
            "--max-sequence-length", "16")
    config = _config(tmp_path, "wan", "tiny-wan2.2", tiny_wan22, cache, 5.0, moe_boundary_clamp=True)
    own, via_diffusers, pipe, bundle, cond, z = _distill_export_and_compare(tmp_path, config, tiny_wan22, cache,
                                                                          "lora", prompts)
    assert (own - via_diffusers).abs().max() <= 1e-5
    # WanPipeline routed steps 1-2 to transformer (expert 1) and 3-4 to transformer_2 (expert 2)
    manifest = ExportManifest.read(tmp_path / "lora")
    assert [e.base_subfolder for e in manifest.experts] == ["transformer", "transformer_2"]
    assert manifest.timesteps[2] < manifest.boundary_ratio < manifest.timesteps[1]
    assert pipe.pipeline.transformer.active_adapters() == ["expert_1"]
    assert pipe.pipeline.transformer_2.active_adapters() == ["expert_2"]
    # training moved the experts away from the teacher, so the agreement above is not the teacher's
    teacher = _teacher_euler(bundle, z, cond, manifest.timesteps)
    assert (own - teacher).abs().max() > 1e-3
    # full-weight export (LoRA merged into each backbone) loads as plain transformers and agrees too
    _invoke("export", str(tmp_path / "run"), "--out", str(tmp_path / "full"), "--format", "full")
    full = load_student_pipeline(tmp_path / "full", tiny_wan22)
    assert not hasattr(full.pipeline.transformer, "peft_config")
    assert (full.generate(z, cond) - own).abs().max() <= 1e-5
    # decoded videos: (B, frames, 3, H, W) in [0, 1]
    pixels = pipe.generate(z, cond, output_type="pt")
    assert pixels.shape == (2, 1, 3, 16, 16) and 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0


def test_qwen_image_distils_exports_and_samples_in_qwen_pipeline(tmp_path, tiny_qwen, qwen_prompt_cache, prompts):
    config = _config(tmp_path, "qwen_image", "tiny-qwen-image", tiny_qwen, qwen_prompt_cache, 3.0)
    own, via_diffusers, pipe, bundle, cond, z = _distill_export_and_compare(tmp_path, config, tiny_qwen,
                                                                          qwen_prompt_cache, "lora", prompts)
    assert (own - via_diffusers).abs().max() <= 1e-5
    assert ExportManifest.read(tmp_path / "lora").timesteps == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0])
    teacher = _teacher_euler(bundle, z, cond, [1.0, 0.9, 0.75, 0.5, 0.0])
    assert (own - teacher).abs().max() > 1e-3
    # `pdmd sample` writes a pdmd_eval image sample set from the exported student
    out = tmp_path / "samples"
    output = _invoke("sample", "--export", str(tmp_path / "lora"), "--model-path", str(tiny_qwen),
                     "--prompt-cache", str(qwen_prompt_cache), "--out", str(out), "--resolution", "1,16,16",
                     "--seeds", "0-1", "--prompt-ids", "0,2")
    last = next(line for line in reversed(output.splitlines()) if '{"samples"' in line)
    summary = json.loads(last[last.index('{"samples"'):])
    from pdmd_eval.samples import load_sample_set

    samples = load_sample_set(out)
    assert summary["samples"] == 4 and samples.kind == "image" and samples.samples.shape == (4, 3, 16, 16)
    assert [(r.prompt, r.seed, r.steps) for r in samples.records][:2] == [(prompts[0], 0, 4), (prompts[0], 1, 4)]


def test_wan22_i2v_first_frame_conditions_train_export_and_match_the_i2v_pipeline(tmp_path, tiny_wan22_i2v, prompts):
    from PIL import Image
    from safetensors.torch import load_file

    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n")
    cache = tmp_path / "prompts.safetensors"
    _invoke("embed-prompts", str(prompt_file), "--family", "wan", "--model-path", str(tiny_wan22_i2v), "--out",
            str(cache), "--max-sequence-length", "16")
    i2v_cache = tmp_path / "first_frames.safetensors"
    _invoke("embed-images", str(first_frame_pairs(tmp_path, prompts, 16)), "--prompt-cache", str(cache), "--model-path",
            str(tiny_wan22_i2v), "--out", str(i2v_cache), "--resolution", "5,16,16")
    conditions = load_file(str(i2v_cache))["i2v_condition@5x16x16"]
    assert conditions.shape == (4, 8, 2, 4, 4)  # 4 prompts; frame mask (4) + image latent (4); 2 latent frames
    config = _config(tmp_path, "wan", "tiny-wan2.2-i2v", tiny_wan22_i2v, cache, 5.0, moe_boundary_clamp=True)
    raw = yaml.safe_load(open(config))
    raw["model"].update(i2v_cache=str(i2v_cache), resolution=[5, 16, 16])
    open(config, "w").write(yaml.safe_dump(raw))
    run = tmp_path / "run"
    _invoke("train", config, "--run-dir", str(run))
    _invoke("export", str(run), "--out", str(tmp_path / "lora"))
    student, bundle, _ = load_student(run)
    assert bundle.moe_boundary == 0.9 and bundle.sample_shape == (4, 2, 4, 4)
    pipe = load_student_pipeline(tmp_path / "lora", tiny_wan22_i2v)
    encoder = CachedPromptEncoder.from_file(cache)
    for row in (1, 3):
        cond = encoder.encode([prompts[row]])
        cond.extras["i2v_condition"] = conditions[row:row + 1]
        z = torch.randn(1, *bundle.sample_shape, generator=torch.Generator().manual_seed(row))
        own = student.sample(z, cond)
        via_diffusers = pipe.generate(z, cond, image=Image.open(tmp_path / f"frame{row}.png"))
        assert (own - via_diffusers).abs().max() <= 1e-5
