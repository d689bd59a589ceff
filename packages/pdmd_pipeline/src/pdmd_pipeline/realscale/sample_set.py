"""`pdmd sample`: exported student + stock diffusers pipeline -> a pdmd_eval sample set (and the latents). Each
(prompt, seed) is drawn by `pipelines.sample_seed`, as the study's sample stage draws it: the seed's initial noise
and, for a re-noise student, the seed's own re-noise stream (`pdmd_core.sample_noise`)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from pdmd_core.realscale.architectures import get_architecture, latent_shape
from pdmd_core.realscale.export import ExportManifest
from pdmd_core.realscale.pipelines import IMAGE_PIPELINE_MODES, load_student_pipeline, sample_seed
from pdmd_core.realscale.text_cache import CachedPromptEncoder
from pdmd_core.realscale.vae import load_rgb, one_frame_as_image


def sample_to_set(export: Path, model_path: str, prompt_cache: Path, out: Path, resolution: tuple[int, int, int],
                  seeds: list[int], prompt_ids: list[int] | None, method: str, device: str = "cpu",
                  dtype: torch.dtype = torch.float32, images: dict[str, str] | None = None) -> int:
    """`images` (prompt -> first-frame file, `vae.read_image_pairs`) is required by I2V / TI2V students."""
    from safetensors.torch import save_file

    from pdmd_eval.samples import SampleRecord, SampleSet, save_sample_set

    manifest = ExportManifest.read(export)
    arch = get_architecture(manifest.extras["architecture"])
    shape = latent_shape(arch, *resolution)
    encoder = CachedPromptEncoder(CachedPromptEncoder.from_file(prompt_cache).cache, device, dtype)
    rows = prompt_ids if prompt_ids is not None else list(range(len(encoder.prompts)))
    needs_image = manifest.family == "wan" and manifest.wan_mode in IMAGE_PIPELINE_MODES
    images = images or {}
    if needs_image:
        missing = [encoder.prompts[r] for r in rows if encoder.prompts[r] not in images]
        if missing:
            raise ValueError(f"this {manifest.wan_mode} student needs a first-frame image per prompt (--images); "
                             f"{len(missing)} prompt(s) have none, e.g. {missing[0]!r}")
    student = load_student_pipeline(export, model_path, dtype=dtype, device=device)
    pixels, latents, records = [], [], []
    for row in tqdm(rows, desc="sampling prompts"):
        cond = encoder.encode_indices(torch.tensor([row]))
        image = load_rgb(images[encoder.prompts[row]], *resolution[1:]) if needs_image else None
        for seed in seeds:
            latent = sample_seed(student, cond, shape, seed, device, dtype, image)
            latents.append(latent.float().cpu())
            pixels.append(one_frame_as_image(student.decode(latent)).float().cpu())
            records.append(SampleRecord(method, row, encoder.prompts[row], seed, manifest.num_steps,
                                        manifest.num_steps, str(export)))
    samples = torch.cat(pixels).numpy()
    kind = "image" if samples.ndim == 4 else "video"
    save_sample_set(SampleSet(samples, records, kind, manifest.extras.get("architecture", ""),
                              {"export": str(export), "timesteps": manifest.timesteps}), out)
    save_file({"latents": torch.cat(latents).contiguous()}, str(Path(out) / "latents.safetensors"))
    return len(records)
