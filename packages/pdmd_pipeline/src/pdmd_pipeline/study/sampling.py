"""The sample stage of a study (one DVC stage per model): the stock diffusers pipelines on the evaluation prompts,
the base model at `evaluation.teacher` steps and CFG (the reference, `teacher_<steps>`) and every exported student
at its N steps and CFG 1, one job per sample set (a SLURM array on GPU nodes). Every sample of every set starts
from the same noise (`noise.initial_noise(shape, seed)` for each evaluation seed); a student's sample is drawn by
`pipelines.sample_seed`, as `pdmd sample` draws it, so a re-noise (DMD2) student's fresh noise comes from the seed's
own re-noise stream, independent of its initial noise (`pdmd_core.sample_noise`). Each set records the wall
time of every sample (denoising, including the initial noise draw, and VAE decoding separately, `timing.json`),
from which the report computes the speed-up.

Sample sets are pdmd_eval media sample sets (uint8 PNG / MP4, streamed; `SampleSink`), read lazily by the
evaluate stage; a killed sample job resumes where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_pipeline.study.distill import read_sweep
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import StudyParams
from pdmd_pipeline.study.prompts import EVAL_CACHE, model_paths, read_info

TIMING = "timing.json"     # the summary (medians) and every sample's times
TIMINGS = "timing.jsonl"   # appended per sample while sampling (resume)
SETS = "sets.json"


# ---------------------------------------------------------------------------------------------- pdmd_eval I/O
class SampleSink:
    """Streams one sample set to disk as a pdmd_eval media sample set (`pdmd_eval.writer.SampleSetWriter`):
    each sample is quantised to uint8 and written as it is made (images as PNG, videos as lossless MP4), so a
    sampler holds one sample at a time. A killed job resumes: `done(prompt_id, seed)` says what is already
    there, and the per-sample wall times are appended to `timing.jsonl` beside the samples."""

    def __init__(self, folder: Path, kind: str, benchmark: str, extras: dict[str, Any], fps: float) -> None:
        from pdmd_eval.writer import SampleSetWriter

        self.folder = Path(folder)
        self.writer = SampleSetWriter(self.folder, kind, benchmark, extras, fps=fps, resume=True)
        self.timings = _read_timings(self.folder)
        self._timing_fh = open(self.folder / TIMINGS, "a")

    def done(self, prompt_id: int, seed: int) -> bool:
        return self.writer.has(prompt_id, seed) and any(
            t["prompt_id"] == prompt_id and t["seed"] == seed for t in self.timings)

    def add(self, pixels: Any, method: str, prompt_id: int, prompt: str, seed: int, steps: int, nfe: int,
            checkpoint: str, timing: dict[str, float]) -> None:
        """`pixels`: one sample in [0, 1], (3, H, W) or (T, 3, H, W)."""
        from pdmd_eval.samples import SampleRecord

        if not self.writer.has(prompt_id, seed):
            self.writer.append(SampleRecord(method, prompt_id, prompt, seed, steps, nfe, checkpoint),
                               pixels.float().clamp(0, 1).cpu())
        row = {"prompt_id": prompt_id, "seed": seed, **timing}
        self._timing_fh.write(json.dumps(row) + "\n")
        self._timing_fh.flush()
        self.timings.append(row)

    def close(self) -> Path:
        self.writer.close()
        self._timing_fh.close()
        return self.folder


def _read_timings(folder: Path) -> list[dict[str, Any]]:
    path = folder / TIMINGS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_samples(folder: Path) -> Any:
    """A sample set written by `SampleSink`, opened lazily (`pdmd_eval.reader.open_sample_set`)."""
    from pdmd_eval.reader import open_sample_set

    return open_sample_set(folder)


# ---------------------------------------------------------------------------------------------- one sample set
@dataclass(frozen=True)
class SampleJob:
    model: str
    architecture: str
    method: str                       # an arm, or teacher_<steps>
    out: str
    base: str
    eval_cache: str
    resolution: tuple[int, int, int]
    seeds: list[int]
    export: str | None = None         # None: the base model (teacher reference)
    images: dict[str, str] | None = None
    teacher_steps: int = 40
    teacher_cfg: float = 4.0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    fps: float = 16.0


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_sample_job(job: SampleJob) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from pdmd_core.realscale.architectures import get_architecture, latent_shape
    from pdmd_core.realscale.pipelines import load_student_pipeline, load_teacher_pipeline, sample_seed
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.realscale.vae import load_rgb, one_frame_as_image
    from pdmd_core.sample_noise import initial_noise

    torch.set_num_threads(job.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[job.dtype]
    arch = get_architecture(job.architecture)
    frames, height, width = job.resolution
    shape = latent_shape(arch, frames, height, width)
    encoder = CachedPromptEncoder(CachedPromptEncoder.from_file(job.eval_cache).cache, job.device, dtype)
    if job.export is None:
        teacher = load_teacher_pipeline(job.base, job.architecture, dtype=dtype, device=job.device)
        steps, nfe, decode = job.teacher_steps, teacher.nfe(job.teacher_steps, job.teacher_cfg), teacher.decode

        def generate(cond: Any, image: Any, seed: int) -> Any:
            z = initial_noise(shape, seed).to(job.device, dtype)
            return teacher.generate(z, cond, encoder.null(1), job.teacher_steps, job.teacher_cfg, image)
    else:
        student = load_student_pipeline(job.export, job.base, dtype=dtype, device=job.device)
        steps = nfe = student.manifest.num_steps
        decode = student.decode

        def generate(cond: Any, image: Any, seed: int) -> Any:
            return sample_seed(student, cond, shape, seed, job.device, dtype, image)
    kind = "image" if frames == 1 else "video"
    sink = SampleSink(Path(job.out), kind, job.model, {"architecture": job.architecture,
                                                       "resolution": list(job.resolution), "method": job.method},
                      job.fps)
    bar = tqdm(total=len(encoder.prompts) * len(job.seeds), desc=f"sample {job.model} {job.method}")
    for row, prompt in enumerate(encoder.prompts):
        cond = encoder.encode_indices(torch.tensor([row]))
        image = load_rgb(job.images[prompt], height, width) if job.images is not None else None
        for seed in job.seeds:
            bar.update()
            if sink.done(row, seed):
                continue
            _sync(job.device)
            start = time.perf_counter()
            with torch.no_grad():
                latent = generate(cond, image, seed)
            _sync(job.device)
            denoised = time.perf_counter()
            pixels = one_frame_as_image(decode(latent))  # a 1-frame Wan sample is an image
            _sync(job.device)
            timing = {"denoise_seconds": denoised - start, "decode_seconds": time.perf_counter() - denoised}
            sink.add(pixels[0], job.method, row, prompt, seed, steps, nfe, job.export or job.base, timing)
    bar.close()
    folder = sink.close()
    timings = sink.timings
    summary = {"method": job.method, "steps": steps, "nfe": nfe, "device": job.device, "dtype": job.dtype,
               "samples": len(timings),
               "median_denoise_seconds": statistics.median(t["denoise_seconds"] for t in timings),
               "median_decode_seconds": statistics.median(t["decode_seconds"] for t in timings)}
    (folder / TIMING).write_text(json.dumps({**summary, "per_sample": timings}, indent=2))
    return summary


def run_sample_jobs(jobs: list[SampleJob]) -> list[dict[str, Any]]:
    """Several sample sets in one process (one job of the array)."""
    return [run_sample_job(job) for job in jobs]


# ---------------------------------------------------------------------------------------------- the stage
def eval_images(study: StudyParams, model: str, layout: StudyLayout) -> dict[str, str] | None:
    from pdmd_core.realscale.vae import read_image_pairs

    path = study.model(model).eval.images
    return None if path is None else read_image_pairs(layout.root / path)


def sample_jobs(study: StudyParams, model: str, layout: StudyLayout) -> list[SampleJob]:
    params = study.model(model)
    info = read_info(layout, model)
    base = model_paths(layout, model)["model_path"]
    common = dict(model=model, architecture=str(info["architecture"]), base=base,
                  eval_cache=str(layout.prompts(model) / EVAL_CACHE), resolution=tuple(params.eval.resolution),
                  seeds=list(params.eval.seeds), images=eval_images(study, model, layout),
                  teacher_steps=study.evaluation.teacher.steps, teacher_cfg=study.evaluation.teacher.cfg,
                  device=study.device, dtype=study.dtype, threads=study.torch_threads, fps=params.eval.fps)
    teacher = study.teacher_name()
    jobs = [SampleJob(method=teacher, out=str(layout.sample_set(model, teacher, None)), **common)]  # type: ignore[arg-type]
    for run in read_sweep(layout, model)["runs"]:
        arm, seed = str(run["arm"]), int(run["seed"])
        export = layout.export(model, arm, seed)
        if not (export / "pdmd_export.json").is_file():
            raise FileNotFoundError(f"{export} holds no export: run the export stage first (export@{model})")
        jobs.append(SampleJob(method=arm, out=str(layout.sample_set(model, arm, seed)), export=str(export),
                              **common))  # type: ignore[arg-type]
    return jobs


def stage_sample(study: StudyParams, model: str, layout: StudyLayout) -> list[dict[str, Any]]:
    from pdmd_pipeline.executors import ExecutorSettings, run_jobs

    jobs = sample_jobs(study, model, layout)
    size = study.sets_per_sample_job
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    names = ["sample-" + "+".join(Path(j.out).relative_to(layout.samples(model)).as_posix().replace("/", "-")
                                  for j in chunk) for chunk in chunks]
    settings = ExecutorSettings(kind=study.executor, local_parallel=1, slurm_profile=study.profiles.sample,
                                job_name=f"sample {model}")
    summaries = [s for chunk in run_jobs(run_sample_jobs, chunks, names, settings, layout.samples(model) / "logs")
                 for s in chunk]
    rows = [{"set": layout.rel(Path(j.out)), **s} for j, s in zip(jobs, summaries, strict=True)]
    (layout.samples(model) / SETS).write_text(json.dumps(rows, indent=2))
    return rows
