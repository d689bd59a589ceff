"""The Phased-DMD-vs-DMD2 comparison is fair: each student is sampled as it was trained, I2V trains on the
preset's resolution mixture, every arm gets the same generator budget, and Qwen-Image's teacher CFG can be the
pipeline's own (norm-rescaled) combination.

Tolerances: the trainer's sampler and the stock pipeline run the same fp32 kernels on the same inputs, but the
pipeline's scheduler holds sigmas as float32 tensors where pdmd uses Python floats, and it upcasts/rounds the
latents between steps; those roundings are ~1e-7 relative per step on latents of magnitude ~1-10, so 1e-5 over
four steps is a bound with room, while any difference in transport (Euler vs re-noise, or other noise) is O(1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pdmd_core.config import config_from_dict
from pdmd_core.models.registry import build_model
from pdmd_core.trainer import Trainer

pytestmark = pytest.mark.slow

PRESETS = Path(__file__).resolve().parents[3] / "experiments" / "realscale"


def _train(tmp_path: Path, raw: dict, name: str = "run") -> Path:
    cfg = config_from_dict(raw)
    bundle = build_model(cfg.model.kind, cfg.model.params, "cpu")  # type: ignore[union-attr]
    run = tmp_path / name
    Trainer(cfg, bundle, run, progress=False).fit()
    return run


def _sgts_renoise(kind: str, architecture: str, base: Path, cache: Path, shift: float) -> dict:
    return {"method": "sgts", "num_steps": 4, "shift": shift, "transport": "renoise", "iterations": 2,
            "batch_size": 1, "ttur_ratio": 1, "generator": {"kind": "lora", "rank": 4, "alpha": 8.0},
            "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "checkpoint": {"every": 100, "keep_last": 1},
            "model": {"kind": kind, "architecture": architecture, "model_path": str(base),
                      "prompt_cache": str(cache), "resolution": [1, 16, 16]}}


@pytest.mark.parametrize("family", ["wan", "qwen_image"])
def test_exported_dmd2_renoise_student_in_the_stock_pipeline_reproduces_the_trained_sampler(
        family, tmp_path, request, prompts):
    from pdmd_core.realscale.export import ExportManifest, export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder

    base = request.getfixturevalue("tiny_wan22" if family == "wan" else "tiny_qwen")
    cache = request.getfixturevalue("wan_prompt_cache" if family == "wan" else "qwen_prompt_cache")
    arch, shift = ("tiny-wan2.2", 5.0) if family == "wan" else ("tiny-qwen-image", 3.0)
    run = _train(tmp_path, _sgts_renoise(family, arch, base, cache, shift))
    student, bundle, cfg = load_student(run)
    export_student(student.generator, bundle, cfg, tmp_path / "export", "lora")
    pipe = load_student_pipeline(tmp_path / "export", base)
    cond = CachedPromptEncoder.from_file(cache).encode(prompts[:2])
    z = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(7))
    own = student.sample(z, cond, generator=torch.Generator().manual_seed(11))
    via_pipeline = pipe.generate(z, cond, generator=torch.Generator().manual_seed(11))
    assert (own - via_pipeline).abs().max() <= 1e-5
    # the re-noise draws are what is being reproduced: other noise, or Euler steps, land elsewhere
    other_noise = student.sample(z, cond, generator=torch.Generator().manual_seed(12))
    assert (own - other_noise).abs().max() > 1e-2
    assert ExportManifest.read(tmp_path / "export").transport == "renoise"
    # the same generator seed gives the same pipeline samples (sampling is reproducible per seed)
    again = pipe.generate(z, cond, generator=torch.Generator().manual_seed(11))
    assert torch.equal(again, via_pipeline)


def _frames(tmp_path: Path, prompts: list[str]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i, prompt in enumerate(prompts):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"frame{i}.png")
        lines.append(json.dumps({"prompt": prompt, "image": f"frame{i}.png"}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.jsonl"


def test_i2v_with_a_two_resolution_mixture_trains_and_samples(tmp_path, tiny_wan22_i2v, prompts):
    from PIL import Image
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from pdmd_core.cli import app
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.realscale.vae import load_rgb

    cache = tmp_path / "prompts.safetensors"
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    runner = CliRunner()
    for args in (["embed-prompts", str(tmp_path / "prompts.txt"), "--family", "wan", "--model-path",
                  str(tiny_wan22_i2v), "--out", str(cache), "--max-sequence-length", "16"],
                 ["embed-images", str(_frames(tmp_path, prompts)), "--prompt-cache", str(cache), "--model-path",
                  str(tiny_wan22_i2v), "--out", str(tmp_path / "frames.safetensors"),
                  "--resolution", "5,16,16", "--resolution", "5,16,32"]):
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    mixture = [[5, 16, 16, 0.5], [5, 16, 32, 0.5]]
    raw = {"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "in_phase": "sgts", "iterations": 2,
           "batch_size": 1, "ttur_ratio": 2, "moe_boundary_clamp": True,
           "generator": {"kind": "lora", "rank": 4, "alpha": 8.0}, "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3},
           "checkpoint": {"every": 100, "keep_last": 1},
           "model": {"kind": "wan", "architecture": "tiny-wan2.2-i2v", "model_path": str(tiny_wan22_i2v),
                     "prompt_cache": str(cache), "i2v_cache": str(tmp_path / "frames.safetensors"),
                     "resolutions": mixture}}
    cfg = config_from_dict(raw)
    bundle = build_model("wan", cfg.model.params, "cpu")  # type: ignore[union-attr]
    drawn: list[tuple[int, ...]] = []
    sampler = bundle.extras["sample_shape_sampler"]
    bundle.extras["sample_shape_sampler"] = lambda g: drawn.append(sampler(g)) or drawn[-1]
    Trainer(cfg, bundle, tmp_path / "run", progress=False).fit()
    assert set(drawn) == {(4, 2, 4, 4), (4, 2, 4, 8)}  # both resolutions of the mixture were trained on
    student, bundle, cfg = load_student(tmp_path / "run")
    export_student(student.generator, bundle, cfg, tmp_path / "export", "lora")
    pipe = load_student_pipeline(tmp_path / "export", tiny_wan22_i2v)
    encoder = CachedPromptEncoder.from_file(cache)
    tables = load_file(str(tmp_path / "frames.safetensors"))
    assert sorted(tables) == ["i2v_condition@5x16x16", "i2v_condition@5x16x32"]
    for (_, height, width, _), row in zip(mixture, (1, 2), strict=True):
        latent = (4, 2, height // 4, width // 4)
        cond = encoder.encode([prompts[row]])  # every resolution's condition; the adapter takes the latents'
        cond.extras.update({key: table[row:row + 1] for key, table in tables.items()})
        z = torch.randn(1, *latent, generator=torch.Generator().manual_seed(row))
        own = student.sample(z, cond)
        image = load_rgb(str(tmp_path / f"frame{row}.png"), height, width)
        assert isinstance(image, Image.Image)
        via_pipeline = pipe.generate(z, cond, image=image)
        assert via_pipeline.shape == (1, *latent)
        assert (own - via_pipeline).abs().max() <= 1e-5


def _total_generator_iterations(path: Path) -> int:
    from pdmd_core.config import load_config

    cfg = load_config(path)
    return sum(cfg.iterations_for_phase(k) for k in range(cfg.num_phases))


@pytest.mark.parametrize("model", ["wan21_t2v_1p3b", "wan22_t2v_a14b", "wan22_i2v_a14b", "qwen_image"])
def test_phased_and_dmd2_presets_get_the_same_generator_budget(model):
    phased = _total_generator_iterations(PRESETS / f"{model}_phased.yaml")
    dmd2 = _total_generator_iterations(PRESETS / f"{model}_dmd2_sgts.yaml")
    assert phased == dmd2, f"{model}: Phased DMD gets {phased} generator updates, DMD2/SGTS {dmd2}"


def test_qwen_true_cfg_teacher_form_equals_the_qwen_image_pipelines_own_combination(tiny_qwen, qwen_prompt_cache):
    """QwenImagePipeline (true_cfg_scale > 1) combines u + w (c - u) and rescales every packed token to the
    conditional prediction's norm. One pipeline Euler step from sigma s to 0 moves the latents by -s * v, so the
    guided velocity the pipeline used is (x - x_out) / s; the trainer's teacher with `form: true_cfg` must
    give the same velocity (fp32, same transformer; the teacher batches cond and uncond in one call, the
    pipeline runs them separately: ~1e-6 differences)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    from pdmd_core.realscale.qwen_image import pack_latents, unpack_latents
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.roles import Teacher

    encoder = CachedPromptEncoder.from_file(qwen_prompt_cache)
    cond, null = encoder.encode(["a blue dog sitting"]), encoder.null(1)
    bundle = build_model("qwen_image", {"architecture": "tiny-qwen-image", "model_path": str(tiny_qwen),
                                        "prompt_cache": str(qwen_prompt_cache), "resolution": [1, 32, 32]}, "cpu")
    x = torch.randn(1, *bundle.sample_shape, generator=torch.Generator().manual_seed(3))
    sigma = 0.8
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=None, text_encoder=None,
                             tokenizer=None, transformer=bundle.teacher.transformer)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt_embeds=cond.embeds, prompt_embeds_mask=cond.mask, negative_prompt_embeds=null.embeds,
               negative_prompt_embeds_mask=null.mask, true_cfg_scale=4.0, num_inference_steps=1, sigmas=[sigma],
               latents=pack_latents(x), height=32 * 2, width=32 * 2, output_type="latent").images
    v_pipeline = (x - unpack_latents(out, *x.shape[-2:])) / sigma
    t = torch.full((1,), sigma)

    def teacher_velocity(form: str, rescale: float = 0.0) -> torch.Tensor:
        cfg = config_from_dict({"teacher_cfg": {"scale": 4.0, "form": form, "rescale": rescale},
                                "model": {"kind": "qwen_image", "architecture": "tiny-qwen-image"}})
        return Teacher(bundle, cfg).velocity(x, t, cond, null)

    assert (teacher_velocity("true_cfg") - v_pipeline).abs().max() <= 1e-5 * v_pipeline.abs().max()
    # neither plain CFG nor the std rescale of the other forms is the pipeline's combination
    assert (teacher_velocity("standard") - v_pipeline).abs().max() > 1e-2
    assert (teacher_velocity("standard", 1.0) - v_pipeline).abs().max() > 1e-2


def test_qwen_presets_state_and_use_the_pipelines_cfg_form():
    for name in ("qwen_image_phased.yaml", "qwen_image_dmd2_sgts.yaml"):
        text = (PRESETS / name).read_text()
        assert yaml.safe_load(text)["teacher_cfg"]["form"] == "true_cfg"
        assert "QwenImagePipeline" in text  # the preset says which combination it uses and why


def test_a_missing_mixture_resolution_fails_when_the_model_is_built_and_the_adapter_names_the_shapes(
        tmp_path, tiny_wan22_i2v, wan_prompt_cache, prompts):
    """The crash this replaces happened on a random batch mid-training; now the build names the missing grid."""
    from safetensors.torch import save_file

    from pdmd_core.protocols import Conditioning
    from pdmd_core.realscale.wan import first_frame_condition

    save_file({"i2v_condition@5x16x16": torch.zeros(len(prompts), 8, 2, 4, 4)}, str(tmp_path / "frames.safetensors"))
    params = {"architecture": "tiny-wan2.2-i2v", "model_path": str(tiny_wan22_i2v),
              "prompt_cache": str(wan_prompt_cache), "i2v_cache": str(tmp_path / "frames.safetensors"),
              "resolutions": [[5, 16, 16, 0.5], [5, 16, 32, 0.5]]}
    with pytest.raises(ValueError, match=r"training draws \[\(2, 4, 8\)\]"):
        build_model("wan", params, "cpu")
    cond = Conditioning(torch.zeros(1, 3, 32), extras={"i2v_condition@5x16x16": torch.zeros(1, 8, 2, 4, 4)})
    with pytest.raises(ValueError, match=r"no i2v_condition for latents \(4, 2, 4, 8\)"):
        first_frame_condition(cond, "i2v_condition", torch.zeros(1, 4, 2, 4, 8))


def test_a_four_phase_wan22_student_samples_in_the_stock_pipeline_with_adapters_switched_per_step(
        tmp_path, tiny_wan22, wan_prompt_cache, prompts):
    """Table 6's 4-phase student has 4 experts: two share `transformer` (high noise), two `transformer_2`."""
    from pdmd_core.realscale.export import ExportManifest, export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder

    raw = {"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 4, "iterations": 1, "batch_size": 1,
           "ttur_ratio": 1, "moe_boundary_clamp": True, "generator": {"kind": "lora", "rank": 4, "alpha": 8.0},
           "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "checkpoint": {"every": 100, "keep_last": 1},
           "model": {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
                     "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16]}}
    run = _train(tmp_path, raw)
    student, bundle, cfg = load_student(run)
    manifest = export_student(student.generator, bundle, cfg, tmp_path / "export", "lora")
    assert [e.base_subfolder for e in manifest.experts] == ["transformer"] * 2 + ["transformer_2"] * 2
    assert manifest.timesteps[2] < ExportManifest.read(tmp_path / "export").boundary_ratio < manifest.timesteps[1]
    pipe = load_student_pipeline(tmp_path / "export", tiny_wan22)
    cond = CachedPromptEncoder.from_file(wan_prompt_cache).encode(prompts[:2])
    z = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(5))
    own = student.sample(z, cond)
    assert (own - pipe.generate(z, cond)).abs().max() <= 1e-5
    # the switch matters: with step 2 run by expert 1's adapter too, the pipeline lands elsewhere
    pipe.manifest.experts[1].name = pipe.manifest.experts[0].name
    assert (own - pipe.generate(z, cond)).abs().max() > 1e-4
