"""The params file of a real-scale study (`experiments/realscale/params.yaml`, or a preset such as
`experiments/presets/realscale_smoke.yaml`), validated with pydantic when the study loads.

    study: NAME                     report_dir: reports/realscale        MLflow experiment `pdmd-study/NAME`
    executor: slurm | local         profiles: {prompts, distill, export, sample, evaluate}: slurm/profiles/*.yaml
    tracking_uri: null              device: cuda      dtype: bfloat16     torch_threads: 8
    sets_per_sample_job: 1          # sample sets per sample job
    seeds: [0, 1, 2]                iterations: 800   # generator updates per run, the same for every arm
    arms: {name: {...}}             # DistillConfig overrides on each model's base config (its Phased preset)
    models: {name: {label, task, config, weights, distill, arms, train_prompts, train_images, text, eval,
                    distill_profile}}
    evaluation: {teacher: {steps, cfg}, backbones, dino, confidence, batch_size}
    tables: {table2: {t2v, i2v}, table3: {wan2.1, wan2.2, qwen}, table6: {t2v}}   # paper column -> model

`resolve_run_config` builds one model × arm × seed's validated DistillConfig: the model's base config <
`models.M.distill` < `arms.A` < {seed, device, iterations per phase, model paths}. Budget parity: `iterations` is
set once for the whole study — a K-phase arm trains `iterations / K` generator iterations in each phase, so every
arm gets the same number of generator updates (and, with one TTUR ratio, of fake-score updates). Neither a model
nor an arm may set `iterations`; K must divide it. Every model × arm is resolved when the study loads, so a bad
value fails before any job is submitted, naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdmd_core.config import DistillConfig
from pdmd_pipeline.params import ParamsError, deep_merge


def _distinct_seeds(v: list[int]) -> list[int]:
    if not v or len(set(v)) != len(v):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {v}")
    return v


Seeds = Annotated[list[int], AfterValidator(_distinct_seeds)]

STUDY_PARAMS = "experiments/realscale/params.yaml"
TASKS = ("t2v", "i2v", "t2i")
TINY = "tiny"  # `weights: tiny`: a random tiny base model built by the prompts stage (smoke studies, tests)
TEACHER_PREFIX = "teacher_"
ARM_LABELS = {"phased_k2_sgts": "Phased DMD", "sgts": "DMD2 (SGTS)", "phased_k4": "4-step/4-phase",
              "dmd_full": "Vanilla 4-step DMD"}
BUDGET_KEYS = ("iterations",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MIN_VIDEO_FRAMES = 9  # pdmd_eval.standard.I3D_MIN_FRAMES (not imported: loading params stays light)


class EvalSet(_Strict):
    prompts: str = Field(description="text file, one prompt per line (experiments/realscale/prompts/*.txt)")
    images: str | None = Field(None, description='I2V: JSONL of {"prompt": ..., "image": PATH} (first frames)')
    resolution: tuple[int, int, int] = Field(description="[frames, height, width] in pixels (frames 1: images)")
    seeds: Seeds = Field(description="sample seeds per prompt (paper: 0-7 for diversity, 42 for motion)")
    max_prompts: int | None = Field(None, ge=1, description="use the first N prompts (None: all)")
    fps: float = Field(16.0, gt=0, description="frame rate written into the MP4s (Wan2.1/2.2 A14B: 16; the VBench "
                                               "dynamic degree samples frames at ≈ 8 fps from it)")


class TextParams(_Strict):
    max_sequence_length: int | None = Field(None, ge=1, description="Wan default 512, Qwen-Image 1024")
    negative_prompt: str = Field("", description="the null prompt of CFG (teacher in training and sampling)")


class ModelParams(_Strict):
    label: str = Field(description="the model's name in the tables, e.g. Wan2.2-T2V-A14B")
    task: Literal["t2v", "i2v", "t2i"]
    config: str = Field(description="base run config: the model's Phased DMD preset (experiments/realscale/*.yaml)")
    weights: str = Field(description="diffusers folder of the base model (or hub id), or 'tiny' for a random tiny "
                                     "model of the config's tiny-* architecture")
    distill: dict[str, Any] = Field(description="DistillConfig overrides for this model ({} for none)")
    arms: list[str] = Field(description="arms (keys of `arms`) trained on this model")
    train_prompts: str = Field(description="training prompts, one per line")
    train_images: str | None = Field(description="I2V: JSONL pairs of the training prompts' first frames (or null)")
    text: TextParams
    eval: EvalSet
    distill_profile: str | None = Field(description="this model's distributed SLURM profile (null: profiles.distill)")

    @model_validator(mode="after")
    def _task(self) -> ModelParams:
        if self.task == "i2v" and (self.train_images is None or self.eval.images is None):
            raise ValueError("an i2v model needs train_images and eval.images (JSONL prompt/image pairs)")
        if (self.task == "t2i") != (self.eval.resolution[0] == 1):
            raise ValueError(f"task {self.task!r} with eval.resolution {list(self.eval.resolution)}: t2i samples "
                             f"images (frames 1), t2v/i2v videos (frames > 1)")
        if self.task != "t2i" and self.eval.resolution[0] < MIN_VIDEO_FRAMES:
            raise ValueError(f"eval.resolution {list(self.eval.resolution)}: FVD's I3D needs clips of at least "
                             f"{MIN_VIDEO_FRAMES} frames")
        return self


class TeacherParams(_Strict):
    steps: int = Field(40, ge=1, description="the base model's sampling steps (paper: 40)")
    cfg: float = Field(4.0, ge=1.0, description="its CFG scale (paper: 4; Qwen-Image's true_cfg_scale)")


class EvaluationParams(_Strict):
    teacher: TeacherParams
    backbones: Literal["pretrained", "random"] = Field(
        "pretrained", description="metric networks: local pretrained weights, or the same architectures with "
                                  "random weights (smoke studies only: numbers meaningless by construction)")
    dino: str = Field("facebook/dinov3-vitb16-pretrain-lvd1689m", description="DINO repo id (pretrained backbones)")
    confidence: float = Field(0.95, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    # the paper protocol's settings (pdmd_eval.context.ProtocolOptions; defaults = the protocol's)
    raft_iters: int = Field(20, ge=1, description="RAFT refinement iterations (VBench: 20)")
    flow_max_side: int | None = Field(None, ge=128, description="longer side RAFT sees (None: native)")
    fid_frames: int | None = Field(16, ge=1, description="frames per video for FID, evenly spaced (None: all)")
    fvd_frames: int = Field(16, ge=9, description="frames per clip for I3D (FVD), evenly spaced; I3D needs ≥ 9")


class Profiles(_Strict):
    prompts: str = "slurm/profiles/gpu_example.yaml"
    distill: str = "slurm/profiles/realscale_8xh100.yaml"
    export: str = "slurm/profiles/gpu_example.yaml"
    sample: str = "slurm/profiles/gpu_example.yaml"
    evaluate: str = "slurm/profiles/gpu_example.yaml"


class Table2(_Strict):
    t2v: str | None = None
    i2v: str | None = None


class Table3(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    wan21: str | None = Field(None, alias="wan2.1")
    wan22: str | None = Field(None, alias="wan2.2")
    qwen: str | None = None


class Table6(_Strict):
    t2v: str | None = None


class TablesParams(_Strict):
    table2: Table2 = Field(default_factory=lambda: Table2.model_validate({}))
    table3: Table3 = Field(default_factory=lambda: Table3.model_validate({}))
    table6: Table6 = Field(default_factory=lambda: Table6.model_validate({}))


class StudyParams(_Strict):
    # Keys that experiments/realscale/dvc.yaml tracks as params are required (DVC fails on absent keys).
    study: str = Field(description="study name: MLflow experiment pdmd-study/<study>, run keys")
    report_dir: str = Field(description="where the tables stage writes the report, e.g. reports/realscale")
    executor: Literal["local", "slurm"]
    profiles: Profiles
    tracking_uri: str | None = Field(None, description="MLflow URI; null: $MLFLOW_TRACKING_URI or the local store")
    device: str = Field(description="device of every job: cuda (cpu for smoke studies)")
    dtype: Literal["float32", "bfloat16"] = Field(description="sampling and text-encoding dtype")
    torch_threads: int = Field(1, ge=1)
    sets_per_sample_job: int = Field(1, ge=1, description="sample sets per sample job (1: one GPU job per set; "
                                                          "more: fewer process start-ups, e.g. on CPU)")
    seeds: Seeds = Field(description="training seeds of every arm")
    iterations: int = Field(ge=1, description="generator iterations per run, the same for every arm")
    arms: dict[str, dict[str, Any]]
    models: dict[str, ModelParams]
    evaluation: EvaluationParams
    tables: TablesParams

    @field_validator("study")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"study must be a name of letters, digits, '_', '.', '-', got {v!r}")
        return v

    @model_validator(mode="after")
    def _references(self) -> StudyParams:
        for name, model in self.models.items():
            unknown = [a for a in model.arms if a not in self.arms]
            if unknown:
                raise ValueError(f"models.{name}.arms lists {unknown}, not defined under `arms` ({sorted(self.arms)})")
        for arm in self.arms:
            if arm.startswith(TEACHER_PREFIX):
                raise ValueError(f"arm name {arm!r} is reserved (names starting with {TEACHER_PREFIX!r} are teachers)")
        wanted = {"table2.t2v": (self.tables.table2.t2v, "t2v"), "table2.i2v": (self.tables.table2.i2v, "i2v"),
                  "table6.t2v": (self.tables.table6.t2v, "t2v"), "table3.wan2.1": (self.tables.table3.wan21, "t2i"),
                  "table3.wan2.2": (self.tables.table3.wan22, "t2i"), "table3.qwen": (self.tables.table3.qwen, "t2i")}
        for key, (chosen, task) in wanted.items():
            if chosen is None:
                continue
            if chosen not in self.models:
                raise ValueError(f"tables.{key} = {chosen!r} is not a model of the study ({sorted(self.models)})")
            if self.models[chosen].task != task:
                raise ValueError(f"tables.{key} = {chosen!r} is a {self.models[chosen].task} model; that column "
                                 f"needs a {task} model")
        return self

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise KeyError(f"model {name!r} is not in the study; models: {sorted(self.models)}")
        return self.models[name]

    def teacher_name(self) -> str:
        return f"{TEACHER_PREFIX}{self.evaluation.teacher.steps}"


def load_study(path: str | Path = STUDY_PARAMS, root: Path | None = None) -> StudyParams:
    """Read and validate a study; every model × arm run config is resolved too (budget parity included)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"study params file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"study params file {path}: top level must be a mapping, got {type(data).__name__}")
    try:
        study = StudyParams.model_validate(data)
    except ValidationError as err:
        from pdmd_core.config import format_validation_error

        raise ParamsError(format_validation_error(err, str(path), kind="study params file")) from None
    root = root or Path.cwd()
    for name in study.models:
        for arm in study.models[name].arms:
            try:
                resolve_run_config(study, name, arm, study.seeds[0], root=root)
            except (ValueError, FileNotFoundError) as err:
                raise ParamsError(f"study params file {path}: {err}") from None
    return study


def _reject_budget_keys(where: str, overrides: dict[str, Any]) -> None:
    for key in BUDGET_KEYS:
        if key in overrides:
            raise ParamsError(f"{where} sets {key!r} = {overrides[key]!r}: the generator budget is set once for the "
                              f"whole study (`iterations`), so that every arm gets the same number of updates")


def base_config(study: StudyParams, model: str, root: Path) -> dict[str, Any]:
    params = study.model(model)
    path = root / params.config
    if not path.is_file():
        raise FileNotFoundError(f"models.{model}.config = {params.config!r}: no such file under {root}")
    raw = yaml.safe_load(path.read_text()) or {}
    _reject_budget_keys(f"models.{model}.distill", params.distill)
    return deep_merge(raw, params.distill)


def resolve_run_config(study: StudyParams, model: str, arm: str, seed: int, root: Path | None = None,
                       paths: dict[str, str] | None = None) -> DistillConfig:
    """The validated DistillConfig of one model × arm × seed; `paths` fills the model section's files
    (model_path, prompt_cache, i2v_cache) from the prompts stage (placeholders when validating)."""
    from pdmd_core.config import config_from_dict

    root = root or Path.cwd()
    if arm not in study.arms:
        raise KeyError(f"arm {arm!r} is not defined; arms: {sorted(study.arms)}")
    _reject_budget_keys(f"arms.{arm}", study.arms[arm])
    merged = deep_merge(base_config(study, model, root), study.arms[arm])
    # the base config's own per-phase iterations give way to the study's budget (split over phases below)
    merged.update(seed=seed, device=study.device, iterations=study.iterations)
    merged["model"] = {**merged.get("model", {}), **(paths or {})}
    cfg = config_from_dict(merged, source=f"study {study.study}: {model}/{arm}")
    phases = cfg.num_phases
    if study.iterations % phases:
        raise ParamsError(f"iterations = {study.iterations} is not divisible by the {phases} phases of arm {arm!r} "
                          f"(model {model!r}): every arm must get the same generator budget")
    cfg = cfg.model_copy(update={"iterations": study.iterations // phases})
    return cfg


def generator_budget(cfg: DistillConfig) -> int:
    """Generator updates of a run: the sum over its phases."""
    return sum(cfg.iterations_for_phase(k) for k in range(cfg.num_phases))


def model_architecture(study: StudyParams, model: str, root: Path) -> str:
    raw = base_config(study, model, root).get("model", {})
    if "architecture" not in raw:
        raise ValueError(f"models.{model}: the run config has no model.architecture")
    return str(raw["architecture"])
