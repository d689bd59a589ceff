"""The Phased-DMD-vs-DMD2 comparison is fair: each student is sampled as it was trained, I2V trains on the
preset's resolution mixture, every arm gets the same generator budget, and Qwen-Image's teacher CFG can be the
pipeline's own (norm-rescaled) combination.

Tolerances: the trainer's sampler and the stock pipeline run the same fp32 kernels on the same inputs, but the
pipeline's scheduler holds sigmas as float32 tensors where pdmd uses Python floats, and it upcasts/rounds the
latents between steps; those roundings are ~1e-7 relative per step on latents of magnitude ~1-10, so 1e-5 over
four steps is a bound with room, while any difference in transport (Euler vs re-noise, or other noise) is O(1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from realscale_fixtures import first_frame_pairs

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
    # no silent default stream (it would be shared by every sample): the fresh noise's generator is required
    with pytest.raises(ValueError, match="transport 'renoise'"):
        pipe.generate(z, cond)


# ---------------------------------------------------------------- the noise streams of one sample (prompt, seed)
SAMPLE_SEEDS = [3, 5]
FAMILIES = {"wan": ("tiny-wan2.2", 5.0, "tiny_wan22", "wan_prompt_cache"),
            "qwen_image": ("tiny-qwen-image", 3.0, "tiny_qwen", "qwen_prompt_cache")}


def test_a_samples_renoise_stream_is_reproducible_independent_of_its_initial_noise_and_its_own():
    from pdmd_core.sample_noise import initial_noise, renoise_generator, renoise_seed

    shape = (4, 1, 4, 4)
    for seed in (0, 3, 5, 2**40 + 3):
        z = initial_noise(shape, seed)
        first = torch.randn(z.shape, generator=renoise_generator(seed))
        assert (first - z).abs().max() > 1.0  # seeded `seed` itself it would be z (difference 0)
        assert torch.equal(first, torch.randn(z.shape, generator=renoise_generator(seed)))
        assert renoise_seed(seed) != seed % 2**32  # torch's CPU generator reads a seed's low 32 bits
    three, five = (torch.randn(1, *shape, generator=renoise_generator(s)) for s in (3, 5))
    assert (three - five).abs().max() > 1.0
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            renoise_generator(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-negative integer"):
            initial_noise(shape, bad)  # type: ignore[arg-type]


def _zero_velocity_base(base: Path, family: str, out: Path) -> Path:
    """A copy of `base` whose transformers predict velocity 0 (proj_out zeroed): a student that starts from it
    moves x only by its transport, so a 2-step re-noise sample is (1 - t_1) z + t_1 n_0 and shows its draw n_0."""
    import shutil

    from diffusers import QwenImageTransformer2DModel, WanTransformer3DModel

    shutil.copytree(base, out)
    cls, subfolders = ((WanTransformer3DModel, ("transformer", "transformer_2")) if family == "wan"
                       else (QwenImageTransformer2DModel, ("transformer",)))
    for sub in subfolders:
        model = cls.from_pretrained(out / sub)
        with torch.no_grad():
            model.proj_out.weight.zero_()
            model.proj_out.bias.zero_()
        model.save_pretrained(out / sub)
    return out


def _study_job(family: str, export: Path, base: Path, cache: Path, out: Path, resolution: tuple[int, int, int]):
    from pdmd_pipeline.study.sampling import SampleJob

    return SampleJob(model="tiny", architecture=FAMILIES[family][0], method="sgts", out=str(out), base=str(base),
                     eval_cache=str(cache), resolution=resolution, seeds=SAMPLE_SEEDS, export=str(export))


def _by_key(folder: Path) -> dict[tuple[int, int], np.ndarray]:
    from pdmd_eval.reader import open_sample_set

    reader = open_sample_set(folder)
    return {(int(r.prompt_id), r.seed): reader.read_uint8(i) for i, r in enumerate(reader.records)}


def _unit8(pixels: torch.Tensor) -> np.ndarray:
    from pdmd_eval.media import to_uint8

    return to_uint8(pixels.float().numpy())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_renoise_draws_of_pdmd_sample_and_the_study_are_each_seeds_own_and_not_its_initial_noise(
        family, tmp_path, request):
    """A zero-velocity 2-step re-noise student (t = 1, t_1, 0): its sample is (1 - t_1) z + t_1 n_0, so the first
    re-noise draw n_0 is read back from `pdmd sample`'s latents. n_0 must be the seed's re-noise stream: not z (a
    re-noise step from t = 1 with noise z is an Euler step), not shared between seeds, the same on every run.
    fp32: the pipeline holds t_1 as float32 (|error| <= 6e-8) and rounds each operation (~1e-7 relative on values
    ~1-5), so n_0 is recovered to ~1e-6; 1e-5 bounds it, while other noise differs by O(1)."""
    from safetensors.torch import load_file

    from pdmd_core.realscale.architectures import get_architecture, latent_shape
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.roles import GeneratorExperts
    from pdmd_core.sample_noise import initial_noise, renoise_generator
    from pdmd_pipeline.realscale.sample_set import sample_to_set
    from pdmd_pipeline.study.sampling import run_sample_job

    architecture, shift, base_fixture, cache_fixture = FAMILIES[family]
    cache = request.getfixturevalue(cache_fixture)
    base = _zero_velocity_base(request.getfixturevalue(base_fixture), family, tmp_path / "zero")
    raw = _sgts_renoise(family, architecture, base, cache, shift) | {"num_steps": 2}
    cfg = config_from_dict(raw)
    bundle = build_model(cfg.model.kind, cfg.model.params, "cpu")  # type: ignore[union-attr]
    manifest = export_student(GeneratorExperts(bundle, cfg), bundle, cfg, tmp_path / "export", "lora")
    t1 = manifest.timesteps[1]
    resolution = (1, 16, 16)
    shape = latent_shape(get_architecture(architecture), *resolution)

    def draws(out: Path) -> dict[int, torch.Tensor]:
        sample_to_set(tmp_path / "export", str(base), cache, out, resolution, SAMPLE_SEEDS, [0], "sgts")
        latents = load_file(str(out / "latents.safetensors"))["latents"]
        return {seed: (latents[i:i + 1] - (1 - t1) * initial_noise(shape, seed)) / t1
                for i, seed in enumerate(SAMPLE_SEEDS)}

    first, again = draws(tmp_path / "cli"), draws(tmp_path / "cli-again")
    for seed in SAMPLE_SEEDS:
        z = initial_noise(shape, seed)
        stream = torch.randn(z.shape, generator=renoise_generator(seed))
        print(f"{family} seed {seed}: max |n_0 - z| = {float((first[seed] - z).abs().max()):.3g}")
        assert (first[seed] - stream).abs().max() <= 1e-5
        assert (first[seed] - z).abs().max() > 1.0
        assert torch.equal(first[seed], again[seed])
    three_vs_five = float((first[3] - first[5]).abs().max())
    print(f"{family}: max |n_0(seed 3) - n_0(seed 5)| = {three_vs_five:.3g}")
    assert three_vs_five > 1.0

    # the study's sample stage: its pixels are those of (1 - t_1) z + t_1 n_0 with the seed's stream, not of z
    run_sample_job(_study_job(family, tmp_path / "export", base, cache, tmp_path / "study", resolution))
    study = _by_key(tmp_path / "study")
    decode = load_student_pipeline(tmp_path / "export", base).decode
    for seed in SAMPLE_SEEDS:
        z = initial_noise(shape, seed)
        expected = (1 - t1) * z + t1 * torch.randn(z.shape, generator=renoise_generator(seed))
        with torch.no_grad():
            ours, hybrid = _unit8(decode(expected)[0]), _unit8(decode(z)[0])
        got = study[(0, seed)].astype(int)
        print(f"{family} seed {seed}: study pixels vs the seed's stream {np.abs(got - ours).max()}, "
              f"vs noise z {np.abs(got - hybrid).max()} (uint8 levels)")
        assert np.abs(got - ours).max() <= 1  # rounding to uint8 can flip one level
        assert np.abs(got - hybrid).max() > 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pdmd_sample_and_the_study_sample_a_renoise_student_as_its_trainer_does_not_as_an_euler_first_hybrid(
        family, tmp_path, request, prompts):
    """One sampling path (`pipelines.sample_seed`): `pdmd sample`'s latents equal the trainer's re-noise sampler
    from the seed's initial noise and re-noise stream (1e-5, see the module docstring), and the study's pixels are
    those samples' pixels, bit for bit (same kernels in the same order). Neither equals what they did before: the
    study's stream seeded with the sample seed (first draw = z: an Euler first step, then re-noise steps) or
    `pdmd sample`'s stream seeded 0 for every sample."""
    from safetensors.torch import load_file

    from pdmd_core.realscale.architectures import get_architecture, latent_shape
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.sample_noise import initial_noise, renoise_generator
    from pdmd_pipeline.realscale.sample_set import sample_to_set
    from pdmd_pipeline.study.sampling import run_sample_job

    architecture, shift, base_fixture, cache_fixture = FAMILIES[family]
    base, cache = request.getfixturevalue(base_fixture), request.getfixturevalue(cache_fixture)
    run = _train(tmp_path, _sgts_renoise(family, architecture, base, cache, shift))
    student, bundle, cfg = load_student(run)
    export_student(student.generator, bundle, cfg, tmp_path / "export", "lora")
    resolution = (1, 16, 16)
    shape = latent_shape(get_architecture(architecture), *resolution)
    rows = list(range(len(prompts)))
    sample_to_set(tmp_path / "export", str(base), cache, tmp_path / "cli", resolution, SAMPLE_SEEDS, rows, "sgts")
    latents = load_file(str(tmp_path / "cli" / "latents.safetensors"))["latents"]
    encoder = CachedPromptEncoder.from_file(cache)
    keys = [(row, seed) for row in rows for seed in SAMPLE_SEEDS]
    decode = load_student_pipeline(tmp_path / "export", base).decode
    trainer_pixels = {}
    for i, (row, seed) in enumerate(keys):
        cond, z = encoder.encode([prompts[row]]), initial_noise(shape, seed)
        own = student.sample(z, cond, generator=renoise_generator(seed))
        hybrid = student.sample(z, cond, generator=torch.Generator().manual_seed(seed))
        shared = student.sample(z, cond, generator=torch.Generator().manual_seed(0))
        got = latents[i:i + 1]
        assert (got - own).abs().max() <= 1e-5
        assert (got - hybrid).abs().max() > 1e-2 and (got - shared).abs().max() > 1e-2
        with torch.no_grad():
            trainer_pixels[(row, seed)] = (_unit8(decode(own)[0]), _unit8(decode(hybrid)[0]))
    run_sample_job(_study_job(family, tmp_path / "export", base, cache, tmp_path / "study", resolution))
    study, cli = _by_key(tmp_path / "study"), _by_key(tmp_path / "cli")
    assert sorted(study) == sorted(cli) == sorted(keys)
    for key, pixels in study.items():
        assert np.array_equal(pixels, cli[key].reshape(pixels.shape)), key
        own, hybrid = trainer_pixels[key]
        assert np.abs(pixels.astype(int) - own.reshape(pixels.shape)).max() <= 1
        assert np.abs(pixels.astype(int) - hybrid.reshape(pixels.shape)).max() > 1


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
                 ["embed-images", str(first_frame_pairs(tmp_path, prompts, 24)), "--prompt-cache", str(cache),
                  "--model-path", str(tiny_wan22_i2v), "--out", str(tmp_path / "frames.safetensors"),
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
