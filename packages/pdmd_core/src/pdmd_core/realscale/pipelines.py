"""Sample an exported student with the stock diffusers pipelines (WanPipeline / QwenImagePipeline), CFG 1.

Wan: `transformer` = the expert of the first steps (high noise), `transformer_2` = the expert of the last
steps, `boundary_ratio` from the phase edge (see `timesteps.expert_boundary_ratio`); more than two experts
(e.g. 4 phases) share the two transformers by base weights (`export.wan_pipeline_slots`), each expert's LoRA
adapter (or full transformer) switched in for its own steps through `callback_on_step_end`. The scheduler is
the export's FixedScheduleEulerScheduler (both families), so the pipeline steps through exactly the student's
timesteps with the student's transport; a re-noise (DMD2) student draws its fresh noise from the `generator`
given to `generate` (required for it), so the same generator reproduces pdmd's own sampler. `sample_seed` is the
one way the study and `pdmd sample` draw a sample (prompt, seed): z and the re-noise stream from the seed's two
independent streams (`pdmd_core.sample_noise`).
Wan modes: t2v -> WanPipeline; i2v (Wan2.2 I2V-A14B) -> WanImageToVideoPipeline; ti2v (Wan2.2 TI2V-5B) ->
WanImageToVideoPipeline with `expand_timesteps=True`, as diffusers runs the released TI2V model from an image
(first latent frame replaced by the encoded image, its tokens at timestep 0, pasted back after the last step).
Qwen-Image: QwenImagePipeline takes `sigmas`; its single transformer switches experts between steps through
`callback_on_step_end` (LoRA adapters via `set_adapters`, or full expert modules swapped in).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.architectures import get_architecture
from pdmd_core.realscale.export import ExportManifest
from pdmd_core.realscale.timesteps import scheduler_sigmas

IMAGE_PIPELINE_MODES: tuple[str, ...] = ("i2v", "ti2v")  # Wan modes sampled by WanImageToVideoPipeline


@dataclass
class StudentPipeline:
    """A diffusers pipeline loaded with an exported student, plus what `generate` needs to drive it."""

    pipeline: Any
    manifest: ExportManifest
    spatial_factor: int
    temporal_factor: int = 1
    expert_modules: list[nn.Module] = field(default_factory=list)  # full-format experts switched per step
    slots: list[list[int]] = field(default_factory=list)  # Wan: experts run by transformer / transformer_2

    def generate(self, latents: Tensor, cond: Conditioning, output_type: str = "latent",
                 image: Any = None, generator: torch.Generator | None = None) -> Tensor:
        """N-step CFG-1 samples from initial noise `latents` (pdmd layout). output_type "latent" returns
        pdmd latents; "pt" returns pixels in [0, 1]: videos (B, T, 3, H, W), images (B, 3, H, W).
        I2V / TI2V students take the first frame as `image` (a PIL image, as WanImageToVideoPipeline does).
        `generator`: the fresh noise of a re-noise student's steps, required for one (a silent default stream
        would be shared by every sample; `noise.renoise_generator(seed)` is the sample seed's own); Euler students
        draw nothing."""
        if output_type not in ("latent", "pt"):
            raise ValueError(f"output_type must be 'latent' or 'pt', got {output_type!r}")
        if generator is None and self.manifest.transport == "renoise":
            raise ValueError("this student re-noises between its steps (transport 'renoise'): pass the `generator` "
                             "of its fresh noise, e.g. pdmd_core.sample_noise.renoise_generator(seed)")
        scheduler = self.pipeline.scheduler
        scheduler.noise_generator = generator
        try:
            if self.manifest.family == "wan":
                out = _generate_wan(self, latents, cond, image)
            else:
                out = _generate_qwen(self, latents, cond)
        finally:
            scheduler.noise_generator = scheduler.latent_layout = None
        return out if output_type == "latent" else self.decode(out)

    def decode(self, latents: Tensor) -> Tensor:
        """pdmd latents -> pixels in [0, 1] with the pipeline's VAE."""
        from pdmd_core.realscale.vae import decode_to_unit

        if self.pipeline.vae is None:
            raise ValueError("this pipeline was loaded without a VAE; use output_type='latent'")
        return decode_to_unit(self.pipeline.vae, latents)


def sample_seed(student: StudentPipeline, cond: Conditioning, shape: tuple[int, ...], seed: int,
                device: torch.device | str, dtype: torch.dtype, image: Any = None) -> Tensor:
    """One sample (pdmd latents, batch 1) of prompt `cond` and sample seed `seed`, as the study and `pdmd sample`
    draw it: initial noise `noise.initial_noise(shape, seed)` (then on `device` in `dtype`), a re-noise student's
    fresh noise from `noise.renoise_generator(seed)`, a stream independent of z."""
    from pdmd_core.sample_noise import initial_noise, renoise_generator

    z = initial_noise(shape, seed).to(device, dtype)
    return student.generate(z, cond, image=image, generator=renoise_generator(seed))


def load_student_pipeline(export_dir: Path | str, model_path: Path | str, *, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = "cpu", load_vae: bool = True) -> StudentPipeline:
    """Build the family's diffusers pipeline from a base model folder (transformers, VAE) and an export."""
    export_dir, model_path = Path(export_dir), str(model_path)
    manifest = ExportManifest.read(export_dir)
    if manifest.family == "wan":
        student = _wan_pipeline(export_dir, model_path, manifest, dtype, load_vae)
    else:
        student = _qwen_pipeline(export_dir, model_path, manifest, dtype, load_vae)
    student.pipeline.to(device)
    for module in student.expert_modules:
        module.to(device)
    student.pipeline.set_progress_bar_config(disable=True)
    return student


def _transformer(cls: Any, model_path: str, subfolder: str, dtype: torch.dtype) -> nn.Module:
    return cls.from_pretrained(model_path, subfolder=subfolder, dtype=dtype).eval()


def _wan_pipeline(export_dir: Path, model_path: str, manifest: ExportManifest, dtype: torch.dtype,
                  load_vae: bool) -> StudentPipeline:
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    from pdmd_core.realscale.export import wan_pipeline_slots

    if manifest.wan_mode not in IMAGE_PIPELINE_MODES + ("t2v",):
        raise ValueError(f"pipeline sampling covers Wan t2v, i2v and ti2v students; got mode {manifest.wan_mode!r}")
    if manifest.wan_mode in IMAGE_PIPELINE_MODES and not load_vae:
        raise ValueError(f"a Wan {manifest.wan_mode} student encodes its first frame with the VAE: load_vae=True")
    slots = wan_pipeline_slots(manifest.experts)
    experts: list[nn.Module] = []
    if manifest.format == "full":
        experts = [_transformer(WanTransformer3DModel, str(export_dir / e.path), "", dtype) for e in manifest.experts]
        modules = [experts[slot[0]] for slot in slots]
    else:
        modules = [_transformer(WanTransformer3DModel, model_path, manifest.experts[slot[0]].base_subfolder, dtype)
                   for slot in slots]
    vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae", dtype=torch.float32) if load_vae else None
    pipeline_cls: Any = WanImageToVideoPipeline if manifest.wan_mode in IMAGE_PIPELINE_MODES else WanPipeline
    with warnings.catch_warnings():  # several adapters on one transformer is the point (more than 2 experts)
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        pipe: Any = pipeline_cls(tokenizer=None, text_encoder=None, vae=vae, scheduler=_scheduler(export_dir),
                                 transformer=modules[0], transformer_2=modules[1] if len(modules) == 2 else None,
                                 boundary_ratio=manifest.boundary_ratio,
                                 expand_timesteps=manifest.wan_mode == "ti2v")
        if manifest.format == "lora":
            for index, slot in enumerate(slots):
                for expert in slot:
                    entry = manifest.experts[expert]
                    pipe.load_lora_weights(str(export_dir / entry.path), adapter_name=entry.name,
                                           load_into_transformer_2=index == 1)
    if vae is not None:
        spatial, temporal = vae.config.scale_factor_spatial, vae.config.scale_factor_temporal
    else:  # latent-only sampling: the compression the architecture's VAE has
        arch = get_architecture(manifest.extras["architecture"])
        spatial, temporal = arch.spatial_factor, arch.temporal_factor
    return StudentPipeline(pipe, manifest, spatial, temporal, experts if any(len(s) > 1 for s in slots) else [],
                           slots)


def _scheduler(export_dir: Path) -> Any:
    from pdmd_core.realscale.scheduler import FixedScheduleEulerScheduler

    return FixedScheduleEulerScheduler.from_pretrained(export_dir / "scheduler")


def _qwen_pipeline(export_dir: Path, model_path: str, manifest: ExportManifest, dtype: torch.dtype,
                   load_vae: bool) -> StudentPipeline:
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel

    experts: list[nn.Module] = []
    if manifest.format == "full":
        experts = [_transformer(QwenImageTransformer2DModel, str(export_dir / e.path), "", dtype)
                   for e in manifest.experts]
        transformer = experts[0]
    else:
        bases = {e.base_subfolder for e in manifest.experts}
        if len(bases) != 1:
            raise ValueError(f"Qwen-Image LoRA experts must share one base transformer, got {sorted(bases)}")
        transformer = _transformer(QwenImageTransformer2DModel, model_path, bases.pop(), dtype)
    vae = AutoencoderKLQwenImage.from_pretrained(model_path, subfolder="vae") if load_vae else None
    # the export's scheduler: shift 1, no dynamic shifting (sigmas are passed already shifted), its transport
    pipe: Any = QwenImagePipeline(scheduler=_scheduler(export_dir), vae=vae, text_encoder=None, tokenizer=None,
                                  transformer=transformer)
    if manifest.format == "lora":
        with warnings.catch_warnings():  # several adapters on one transformer is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for entry in manifest.experts:
                pipe.load_lora_weights(str(export_dir / entry.path), adapter_name=entry.name)
    spatial = 2 ** len(vae.temperal_downsample) if vae is not None else 8
    return StudentPipeline(pipe, manifest, spatial, 1, experts)


def _activate_wan_expert(student: StudentPipeline, expert: int) -> None:
    """Switch `expert` in on the transformer that runs it (pipelines whose transformers hold several experts)."""
    slot = next(i for i, members in enumerate(student.slots) if expert in members)
    if len(student.slots[slot]) == 1:
        return
    attribute = "transformer" if slot == 0 else "transformer_2"
    if student.manifest.format == "lora":
        getattr(student.pipeline, attribute).set_adapters([student.manifest.experts[expert].name])
    else:
        setattr(student.pipeline, attribute, student.expert_modules[expert])


def _generate_wan(student: StudentPipeline, latents: Tensor, cond: Conditioning, image: Any) -> Tensor:
    _, _, frames, height, width = latents.shape
    manifest = student.manifest
    extra: dict[str, Any] = {}
    if any(len(slot) > 1 for slot in student.slots):
        for slot in student.slots:  # each transformer starts with the first expert it runs
            _activate_wan_expert(student, slot[0])

        def switch_expert(pipe: Any, step: int, timestep: Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
            if step + 1 < manifest.num_steps:
                _activate_wan_expert(student, manifest.expert_of_step(step + 1))
            return {}

        extra["callback_on_step_end"] = switch_expert
    if student.manifest.wan_mode in IMAGE_PIPELINE_MODES:
        if image is None or latents.shape[0] != 1:
            raise ValueError(f"{student.manifest.wan_mode} sampling takes one first-frame `image` and a batch of 1 "
                             f"(the pipeline repeats a single image over its batch)")
        extra["image"] = image
    out = student.pipeline(
        **extra,
        prompt_embeds=cond.embeds, guidance_scale=1.0, num_inference_steps=student.manifest.num_steps,
        latents=latents, height=height * student.spatial_factor, width=width * student.spatial_factor,
        num_frames=(frames - 1) * student.temporal_factor + 1, output_type="latent",
    ).frames
    return out


def _activate_expert(student: StudentPipeline, index: int) -> None:
    if student.manifest.format == "lora":
        student.pipeline.set_adapters([student.manifest.experts[index].name])
    else:
        student.pipeline.transformer = student.expert_modules[index]


def _generate_qwen(student: StudentPipeline, latents: Tensor, cond: Conditioning) -> Tensor:
    from pdmd_core.realscale.qwen_image import pack_latents, unpack_latents

    manifest = student.manifest
    _, _, height, width = latents.shape

    def switch_expert(pipe: Any, step: int, timestep: Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        if step + 1 < manifest.num_steps:
            _activate_expert(student, manifest.expert_of_step(step + 1))
        return {}

    _activate_expert(student, 0)
    mask = cond.mask if cond.mask is not None else torch.ones(cond.embeds.shape[:2], dtype=torch.bool)
    # re-noise steps draw their noise as pdmd does, unpacked (B, C, H, W), then packed like the latents
    student.pipeline.scheduler.latent_layout = (tuple(latents.shape), pack_latents)
    out = student.pipeline(
        prompt_embeds=cond.embeds, prompt_embeds_mask=mask.to(cond.embeds.device), true_cfg_scale=1.0,
        num_inference_steps=manifest.num_steps, sigmas=scheduler_sigmas(manifest.timesteps),
        latents=pack_latents(latents), height=height * student.spatial_factor, width=width * student.spatial_factor,
        output_type="latent", callback_on_step_end=switch_expert,
    ).images
    return unpack_latents(out, height, width)


@dataclass
class TeacherPipeline:
    """The base model in its stock diffusers pipeline, as released: its own scheduler, N steps, CFG w (Wan's
    `guidance_scale`, Qwen-Image's `true_cfg_scale`): the reference every student is compared against."""

    pipeline: Any
    family: str
    mode: str
    spatial_factor: int
    temporal_factor: int = 1

    def generate(self, latents: Tensor, cond: Conditioning, null: Conditioning, steps: int, cfg: float,
                 image: Any = None) -> Tensor:
        """Samples (pdmd latents) from initial noise `latents` with the pipeline's CFG against `null`."""
        if self.family == "wan":
            _, _, frames, height, width = latents.shape
            extra: dict[str, Any] = {}
            if self.mode in IMAGE_PIPELINE_MODES:
                if image is None or latents.shape[0] != 1:
                    raise ValueError(f"{self.mode} sampling takes one first-frame `image` and a batch of 1")
                extra["image"] = image
            return self.pipeline(
                **extra, prompt_embeds=cond.embeds, negative_prompt_embeds=null.embeds, guidance_scale=cfg,
                num_inference_steps=steps, latents=latents, height=height * self.spatial_factor,
                width=width * self.spatial_factor, num_frames=(frames - 1) * self.temporal_factor + 1,
                output_type="latent").frames
        from pdmd_core.realscale.qwen_image import pack_latents, unpack_latents

        _, _, height, width = latents.shape
        device = cond.embeds.device
        out = self.pipeline(
            prompt_embeds=cond.embeds, prompt_embeds_mask=_mask(cond).to(device), negative_prompt_embeds=null.embeds,
            negative_prompt_embeds_mask=_mask(null).to(device), true_cfg_scale=cfg, num_inference_steps=steps,
            latents=pack_latents(latents), height=height * self.spatial_factor, width=width * self.spatial_factor,
            output_type="latent").images
        return unpack_latents(out, height, width)

    def decode(self, latents: Tensor) -> Tensor:
        from pdmd_core.realscale.vae import decode_to_unit

        return decode_to_unit(self.pipeline.vae, latents)

    def nfe(self, steps: int, cfg: float) -> int:
        """Transformer calls per sample: two per step under CFG (conditional and unconditional)."""
        return steps * (2 if cfg > 1.0 else 1)


def _mask(cond: Conditioning) -> Tensor:
    return cond.mask if cond.mask is not None else torch.ones(cond.embeds.shape[:2], dtype=torch.bool)


def load_teacher_pipeline(model_path: Path | str, architecture: str, *, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = "cpu") -> TeacherPipeline:
    """The base model's stock pipeline (transformers, VAE and scheduler from `model_path`; no text encoder:
    prompts come from the embedding cache)."""
    from diffusers import QwenImagePipeline, WanImageToVideoPipeline, WanPipeline

    arch = get_architecture(architecture)
    model_path = str(model_path)
    if arch.family == "wan":
        cls: Any = WanImageToVideoPipeline if arch.mode in IMAGE_PIPELINE_MODES else WanPipeline
        pipe = cls.from_pretrained(model_path, text_encoder=None, tokenizer=None, dtype=dtype)
        pipe.vae.to(torch.float32)
        spatial, temporal = pipe.vae.config.scale_factor_spatial, pipe.vae.config.scale_factor_temporal
    else:
        pipe = QwenImagePipeline.from_pretrained(model_path, text_encoder=None, tokenizer=None, dtype=dtype)
        pipe.vae.to(torch.float32)
        spatial, temporal = 2 ** len(pipe.vae.temperal_downsample), 1
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return TeacherPipeline(pipe, arch.family, arch.mode, spatial, temporal)
