"""The prompts stage of a study (one job per model): the base model, cached prompt embeddings, I2V first frames.

- base: `weights` is a local diffusers folder (its fingerprint is recorded and becomes the runs' `teacher_md5`
  tag), or `tiny` — a random tiny model of the config's `tiny-*` architecture written under the stage's output
  (smoke studies: the released classes, random weights, numbers meaningless by construction).
- the training and evaluation prompts are encoded with the pipeline's own text encoder (`text_cache`), the
  negative prompt as the CFG null; training never loads a text encoder.
- I2V: the training prompts' first frames are VAE-encoded into the conditions the trainer feeds the transformer,
  one table per training resolution (all entries of a resolution mixture); the evaluation images stay files
  (the stock I2V pipeline encodes them itself).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import TINY, StudyParams, base_config

TRAIN_CACHE, EVAL_CACHE, TRAIN_FRAMES, INFO = "train.safetensors", "eval.safetensors", "train_frames.safetensors", \
    "info.json"
SMALL_FILE = 4 << 20  # files up to this size are hashed whole; larger ones by size and first/last MiB


class StudyError(RuntimeError):
    """A stage cannot run: its message names the missing input or the bad value."""


def read_prompt_file(path: Path, limit: int | None = None) -> list[str]:
    if not path.is_file():
        raise StudyError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise StudyError(f"prompt file {path} holds no prompts (one per line)")
    return prompts[:limit] if limit else prompts


def weights_fingerprint(folder: Path) -> str:
    """md5 over every file's relative path and size, small files' content and large files' first and last MiB:
    identifies a checkpoint folder without reading 100 GB of weights."""
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}:{size}\n".encode())
        with open(path, "rb") as fh:
            if size <= SMALL_FILE:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                digest.update(fh.read())
    return digest.hexdigest()


@dataclass(frozen=True)
class PromptsJob:
    model: str
    family: str
    architecture: str
    mode: str
    weights: str
    out: str
    train_prompts: list[str]
    eval_prompts: list[str]
    train_pairs: dict[str, str] | None = None
    resolutions: list[tuple[int, int, int]] = field(default_factory=list)
    max_sequence_length: int | None = None
    negative_prompt: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1


def _dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _text_pipeline(family: str, base: str, dtype: str) -> Any:
    from diffusers import QwenImagePipeline, WanPipeline

    if family == "wan":
        return WanPipeline.from_pretrained(base, transformer=None, transformer_2=None, vae=None, dtype=_dtype(dtype))
    return QwenImagePipeline.from_pretrained(base, transformer=None, vae=None, dtype=_dtype(dtype))


def run_prompts_job(job: PromptsJob) -> dict[str, Any]:
    """Build or check the base model, cache the prompt embeddings (and I2V first frames); returns info.json."""
    import torch

    from pdmd_core.realscale.text_cache import encode_prompts, save_prompt_embeddings

    torch.set_num_threads(job.threads)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    if job.weights == TINY:
        from pdmd_core.realscale.tiny import save_tiny_base

        base = save_tiny_base(job.architecture, [*job.train_prompts, *job.eval_prompts], out / "base")
    else:
        base = Path(job.weights)
        if not base.is_dir():
            raise StudyError(f"models.{job.model}.weights = {job.weights!r} is not a folder: download the diffusers "
                             f"checkpoint (`hf download <repo> --local-dir DIR`) and set weights: DIR")
    pipe = _text_pipeline(job.family, str(base), job.dtype).to(job.device)
    for prompts, name in ((job.train_prompts, TRAIN_CACHE), (job.eval_prompts, EVAL_CACHE)):
        cache = encode_prompts(pipe, job.family, prompts, max_sequence_length=job.max_sequence_length,
                               negative_prompt=job.negative_prompt, progress=False)
        save_prompt_embeddings(cache, out / name)
    del pipe
    if job.mode in ("i2v", "ti2v"):
        from diffusers import AutoencoderKLWan

        from pdmd_core.realscale.vae import save_i2v_cache

        vae = AutoencoderKLWan.from_pretrained(str(base), subfolder="vae").to(job.device).eval()
        save_i2v_cache(vae, job.train_prompts, job.train_pairs or {}, job.resolutions, job.mode,
                       str(out / TRAIN_FRAMES))
    info = {"model": job.model, "architecture": job.architecture, "weights": job.weights, "tiny": job.weights == TINY,
            "base": str(base), "fingerprint": weights_fingerprint(Path(base)),
            "train_prompts": len(job.train_prompts), "eval_prompts": job.eval_prompts}
    (out / INFO).write_text(json.dumps(info, indent=2))
    return info


def training_resolutions(model_section: dict[str, Any]) -> list[tuple[int, int, int]]:
    if model_section.get("resolutions"):
        return [(int(f), int(h), int(w)) for f, h, w, _ in model_section["resolutions"]]
    if model_section.get("resolution"):
        f, h, w = model_section["resolution"]
        return [(int(f), int(h), int(w))]
    raise StudyError("the run config's model section has neither resolution nor resolutions")


def prompts_job(study: StudyParams, model: str, layout: StudyLayout) -> PromptsJob:
    from pdmd_core.realscale.architectures import get_architecture
    from pdmd_core.realscale.vae import read_image_pairs

    params = study.model(model)
    section = base_config(study, model, layout.root).get("model", {})
    arch = get_architecture(str(section["architecture"]))
    if params.weights == TINY and not str(section["architecture"]).startswith("tiny-"):
        raise StudyError(f"models.{model}.weights = 'tiny' needs a tiny-* architecture, the config has "
                         f"{section['architecture']!r} (set distill.model.architecture)")
    weights = params.weights if params.weights == TINY else str((layout.root / params.weights).resolve())
    pairs = read_image_pairs(layout.root / params.train_images) if params.train_images else None
    return PromptsJob(model, arch.family, str(section["architecture"]), arch.mode, weights,
                      str(layout.prompts(model)), read_prompt_file(layout.root / params.train_prompts),
                      read_prompt_file(layout.root / params.eval.prompts, params.eval.max_prompts), pairs,
                      training_resolutions(section), params.text.max_sequence_length, params.text.negative_prompt,
                      study.device, study.dtype, study.torch_threads)


def read_info(layout: StudyLayout, model: str) -> dict[str, Any]:
    path = layout.prompts(model) / INFO
    if not path.is_file():
        raise StudyError(f"{path} is missing: run the prompts stage first (dvc repro ... prompts@{model})")
    return dict(json.loads(path.read_text()))


def model_paths(layout: StudyLayout, model: str) -> dict[str, str]:
    """The model-section files a run config needs, from the prompts stage's output."""
    info = read_info(layout, model)
    folder = layout.prompts(model)
    paths = {"model_path": str(Path(info["base"]) if not info["tiny"] else folder / "base"),
             "prompt_cache": str(folder / TRAIN_CACHE)}
    if (folder / TRAIN_FRAMES).is_file():
        paths["i2v_cache"] = str(folder / TRAIN_FRAMES)
    return paths


def stage_prompts(study: StudyParams, model: str, layout: StudyLayout) -> dict[str, Any]:
    from pdmd_pipeline.executors import ExecutorSettings, run_jobs

    job = prompts_job(study, model, layout)
    settings = ExecutorSettings(kind=study.executor, local_parallel=1, slurm_profile=study.profiles.prompts,
                                job_name=f"prompts {model}")
    [info] = run_jobs(run_prompts_job, [job], [f"prompts-{model}"], settings, layout.prompts(model) / "logs")
    return dict(info)
