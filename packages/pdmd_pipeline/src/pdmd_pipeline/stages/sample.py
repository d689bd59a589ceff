"""The `sample` stage: every arm × seed's student and the teacher references on one evaluation grid (the same
prompts and noise for every arm), written as pdmd_eval sample sets under runs/samples/<b>/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams
from pdmd_pipeline.stages.common import (
    eval_grid,
    read_json,
    shared_distill_config,
    to_unit,
)
from pdmd_pipeline.stages.teacher_files import MODEL_KIND, teacher_checkpoint


def grid_noise(shape: tuple[int, ...], seeds: list[int]) -> Any:
    """One noise tensor per sample seed, identical for every arm, prompt and the teacher (the paper's protocol)."""
    import torch

    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def renoise_source(row_seeds: list[int]) -> Any:
    """The fresh noise a re-noise (DMD2) student draws between its steps, each grid row from its sample seed's own
    re-noise stream (`pdmd_core.sample_noise`: independent of the row's starting noise, the same for every arm and
    prompt, as the starting noise is). Called with the batch shape at each step."""
    import torch

    from pdmd_core.sample_noise import renoise_generator

    generators = [renoise_generator(s) for s in row_seeds]

    def draw(shape: Any) -> Any:
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators])

    return draw


def _records(method: str, info: dict[str, Any], prompt_ids: list[int], seeds: list[int], steps: int, nfe: int,
             checkpoint: str) -> list[Any]:
    from pdmd_eval.samples import SampleRecord

    return [SampleRecord(method, p, info["prompts"][p], s, steps, nfe, checkpoint)
            for p in prompt_ids for s in seeds]


def _conditions(encoder: Any, info: dict[str, Any], prompt_ids: list[int], n_seeds: int) -> tuple[Any, Any]:
    import torch

    table = encoder.encode(list(info["prompts"]))
    ids = torch.tensor([p for p in prompt_ids for _ in range(n_seeds)])
    return table.index(ids), encoder.null(len(ids))


def _save(samples: Any, records: list[Any], info: dict[str, Any], folder: Path) -> Path:
    from pdmd_eval.samples import SampleSet, save_sample_set

    arr = to_unit(info["kind"], samples).numpy().astype("float32")
    return save_sample_set(SampleSet(arr, records, info["kind"], info["benchmark"], dict(info["meta"])), folder)


@dataclass(frozen=True)
class EvalGrid:
    """The evaluation grid of a benchmark: the same noise and prompts for every arm and the teacher."""

    info: dict[str, Any]
    prompt_ids: list[int]
    seeds: list[int]
    z: Any
    cond: Any
    null: Any


def eval_inputs(params: PipelineParams, benchmark: str, layout: Layout) -> tuple[EvalGrid, Any]:
    """(grid, teacher) for sampling: every prompt × the evaluation sample seeds."""
    from pdmd_core.cpu_tier.teacher import load_teacher

    info = read_json(layout.data(benchmark) / "info.json")
    prompt_ids, seeds = eval_grid(info, params)
    shape = tuple(info["sample_shape"])
    z = grid_noise(shape, seeds).repeat(len(prompt_ids), *([1] * len(shape)))
    teacher = load_teacher(teacher_checkpoint(layout, benchmark))
    cond, null = _conditions(teacher.encoder, info, prompt_ids, len(seeds))
    return EvalGrid(info, prompt_ids, seeds, z, cond, null), teacher


def sample_teacher_references(params: PipelineParams, benchmark: str, grid: EvalGrid, teacher: Any,
                              folder: Callable[[str], Path]) -> list[str]:
    """The teacher at every `eval.teacher_steps` count on the grid, saved to `folder(name)`. The references use the
    teacher exactly as distillation saw it: same CFG (scale, form, rescale) and shift."""
    import torch

    from pdmd_core.sampling import euler_sample, uniform_timesteps

    shared = shared_distill_config(params, benchmark)
    tcfg = shared.teacher_cfg
    written = []
    for steps in params.eval.teacher_steps:
        with torch.no_grad():
            x = euler_sample(teacher.model, grid.z, uniform_timesteps(steps, shared.shift), grid.cond, grid.null,
                             tcfg.scale, tcfg.form, tcfg.rescale)
        nfe = steps * (1 if tcfg.scale == 1.0 and tcfg.form == "standard" else 2)
        name = f"{TEACHER_REFERENCE_PREFIX}{steps}"
        records = _records(name, grid.info, grid.prompt_ids, grid.seeds, steps, nfe, "teacher")
        written.append(str(_save(x, records, grid.info, folder(name))))
    return written


def sample_student(checkpoint: Path, bundle: Any, grid: EvalGrid, arm: str, label: str, folder: Path) -> Path:
    """The student of `checkpoint` on the grid, saved as a sample set (records name `label` as the checkpoint)."""
    import torch

    from pdmd_core.student import Student

    student = Student.from_checkpoint(checkpoint, bundle=bundle)
    row_seeds = [s for _ in grid.prompt_ids for s in grid.seeds]  # the grid's row order: prompt-major
    noise = renoise_source(row_seeds) if student.transport != "euler" else None
    with torch.no_grad():
        x = student.sample(grid.z, grid.cond, noise_source=noise)
    steps = len(student.timesteps) - 1
    return _save(x, _records(arm, grid.info, grid.prompt_ids, grid.seeds, steps, steps, label), grid.info, folder)


def stage_sample(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from pdmd_core.models.registry import build_model

    torch.set_num_threads(params.torch_threads)
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    grid, teacher = eval_inputs(params, benchmark, layout)
    written = sample_teacher_references(params, benchmark, grid, teacher,
                                        lambda name: layout.sample_set(benchmark, name, None))
    bundle = build_model(MODEL_KIND, {"teacher": str(teacher_checkpoint(layout, benchmark))})
    for run in tqdm(sweep["runs"], desc=f"sample {benchmark}", unit="run"):
        folder = layout.sample_set(benchmark, run["arm"], run["seed"])
        sample_student(layout.root / run["checkpoint"], bundle, grid, run["arm"], run["checkpoint"], folder)
        written.append(str(folder))
    return {"sample_sets": written}
