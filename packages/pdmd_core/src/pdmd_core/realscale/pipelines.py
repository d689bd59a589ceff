"""Sample an exported student with the stock diffusers pipelines (WanPipeline / QwenImagePipeline), CFG 1.

Wan: `transformer` = the expert of the first steps (high noise), `transformer_2` = the expert of the last
steps, `boundary_ratio` from the phase edge (see `timesteps.expert_boundary_ratio`); the scheduler is the
export's FixedScheduleEulerScheduler, so the pipeline steps through exactly the student's timesteps.
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
    expert_modules: list[nn.Module] = field(default_factory=list)  # Qwen full-format experts

    def generate(self, latents: Tensor, cond: Conditioning, output_type: str = "latent",
                 image: Any = None) -> Tensor:
        """N-step CFG-1 samples from initial noise `latents` (pdmd layout). output_type "latent" returns
        pdmd latents; "pt" returns pixels in [0, 1]: videos (B, T, 3, H, W), images (B, 3, H, W).
        I2V / TI2V students take the first frame as `image` (a PIL image, as WanImageToVideoPipeline does)."""
        if output_type not in ("latent", "pt"):
            raise ValueError(f"output_type must be 'latent' or 'pt', got {output_type!r}")
        if self.manifest.family == "wan":
            out = _generate_wan(self, latents, cond, image)
        else:
            out = _generate_qwen(self, latents, cond)
        return out if output_type == "latent" else self.decode(out)

    def decode(self, latents: Tensor) -> Tensor:
        """pdmd latents -> pixels in [0, 1] with the pipeline's VAE."""
        from pdmd_core.realscale.vae import decode_to_unit

        if self.pipeline.vae is None:
            raise ValueError("this pipeline was loaded without a VAE; use output_type='latent'")
        return decode_to_unit(self.pipeline.vae, latents)


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

    from pdmd_core.realscale.scheduler import FixedScheduleEulerScheduler

    if len(manifest.experts) > 2:
        raise ValueError(f"WanPipeline holds at most two experts (transformer, transformer_2); this student has "
                         f"{len(manifest.experts)}: sample it with pdmd's own Student sampler")
    if manifest.wan_mode not in IMAGE_PIPELINE_MODES + ("t2v",):
        raise ValueError(f"pipeline sampling covers Wan t2v, i2v and ti2v students; got mode {manifest.wan_mode!r}")
    if manifest.wan_mode in IMAGE_PIPELINE_MODES and not load_vae:
        raise ValueError(f"a Wan {manifest.wan_mode} student encodes its first frame with the VAE: load_vae=True")
    if manifest.format == "full":
        modules = [_transformer(WanTransformer3DModel, str(export_dir / e.path), "", dtype)
                   for e in manifest.experts]
    else:
        modules = [_transformer(WanTransformer3DModel, model_path, e.base_subfolder, dtype)
                   for e in manifest.experts]
    vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae", dtype=torch.float32) if load_vae else None
    scheduler = FixedScheduleEulerScheduler.from_pretrained(export_dir / "scheduler")
    pipeline_cls: Any = WanImageToVideoPipeline if manifest.wan_mode in IMAGE_PIPELINE_MODES else WanPipeline
    pipe: Any = pipeline_cls(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler,
                             transformer=modules[0], transformer_2=modules[1] if len(modules) == 2 else None,
                             boundary_ratio=manifest.boundary_ratio,
                             expand_timesteps=manifest.wan_mode == "ti2v")
    if manifest.format == "lora":
        for index, entry in enumerate(manifest.experts):
            pipe.load_lora_weights(str(export_dir / entry.path), adapter_name=entry.name,
                                   load_into_transformer_2=index == 1)
    if vae is not None:
        spatial, temporal = vae.config.scale_factor_spatial, vae.config.scale_factor_temporal
    else:  # latent-only sampling: the compression the architecture's VAE has
        arch = get_architecture(manifest.extras["architecture"])
        spatial, temporal = arch.spatial_factor, arch.temporal_factor
    return StudentPipeline(pipe, manifest, spatial, temporal)


def _qwen_pipeline(export_dir: Path, model_path: str, manifest: ExportManifest, dtype: torch.dtype,
                   load_vae: bool) -> StudentPipeline:
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

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
    # sigmas are passed already shifted: a plain Euler scheduler with shift 1 and no dynamic shifting
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe: Any = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
                             transformer=transformer)
    if manifest.format == "lora":
        with warnings.catch_warnings():  # several adapters on one transformer is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for entry in manifest.experts:
                pipe.load_lora_weights(str(export_dir / entry.path), adapter_name=entry.name)
    spatial = 2 ** len(vae.temperal_downsample) if vae is not None else 8
    return StudentPipeline(pipe, manifest, spatial, 1, experts)


def _generate_wan(student: StudentPipeline, latents: Tensor, cond: Conditioning, image: Any) -> Tensor:
    _, _, frames, height, width = latents.shape
    extra: dict[str, Any] = {}
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
    out = student.pipeline(
        prompt_embeds=cond.embeds, prompt_embeds_mask=mask.to(cond.embeds.device), true_cfg_scale=1.0,
        num_inference_steps=manifest.num_steps, sigmas=scheduler_sigmas(manifest.timesteps),
        latents=pack_latents(latents), height=height * student.spatial_factor, width=width * student.spatial_factor,
        output_type="latent", callback_on_step_end=switch_expert,
    ).images
    return unpack_latents(out, height, width)
