"""The pipeline's params file (root `params.yaml`, presets in `experiments/presets/`), validated with pydantic.

Shape (every key documented in params.yaml itself):

    executor: local | slurm          slurm_profile: slurm/profiles/<name>.yaml
    local_parallel: 2                torch_threads: 1          tracking_uri: null
    seeds: [0, 1, 2]                 iterations: 300           # generator iterations per run, all arms
    extra_seeds: {seeds: [3, 4], arms: [...]}                   # more training seeds for some arms
    eval: {seeds_per_prompt, teacher_steps, confidence}
    convergence: {arms, seed, multiples}                        # the convergence stage (budget multiples)
    toy1d: {config, overrides}                                  # the Fig. 2 toy stage
    distill: {...}                   # DistillConfig fields shared by every arm and benchmark
    arms: {name: {...}}              # DistillConfig overrides that make an arm (method, phases, ablation)
    benchmarks: {name: {config, teacher, enforce_bar, arms, distill}}

`resolve_run_config` builds one arm × seed's validated DistillConfig: shared `distill` < benchmark `distill` < arm
overrides < {seed, iterations per phase, model}; it travels as that object to the job and the trainer. The
iteration budget is the same for every arm: a K-phase arm gets `iterations / K` generator iterations per phase
(K must divide it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdmd_core.config import DistillConfig

PARAMS_FILE = "params.yaml"
TEACHER_REFERENCE_PREFIX = "teacher_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalParams(_Strict):
    seeds_per_prompt: int = Field(16, ge=2, description="sample seeds per prompt (diversity needs >= 2)")
    teacher_steps: list[int] = Field(default_factory=lambda: [4, 40],
                                     description="teacher references sampled at these step counts")
    confidence: float = Field(0.95, gt=0, lt=1)
    sample_seed_offset: int = Field(10_000, ge=0, description="sample seeds are offset + 0..seeds_per_prompt-1")

    @field_validator("teacher_steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v or any(s < 1 for s in v):
            raise ValueError(f"teacher_steps must be a non-empty list of step counts >= 1, got {v}")
        return v


class BenchmarkParams(_Strict):
    config: str = Field(description="benchmark config of the CPU tier, e.g. experiments/benchmarks/digits.yaml")
    # Required (no defaults) because dvc.yaml tracks them as params and DVC fails on absent keys.
    teacher: dict[str, Any] = Field(description="overrides of the benchmark config ({} for none)")
    enforce_bar: bool = Field(description="fail the teacher stage when the teacher misses its quality bar")
    arms: list[str] = Field(description="arm names (keys of `arms`) run on this benchmark")
    distill: dict[str, Any] = Field(default_factory=dict, description="DistillConfig overrides for this benchmark")
    iterations: int | None = Field(None, ge=1, description="per-benchmark generator budget (default: top level)")


class ExtraSeeds(_Strict):
    seeds: list[int] = Field(default_factory=list, description="training seeds added to `seeds` for `arms`")
    arms: list[str] = Field(default_factory=list, description="the arms that run the extra seeds")


HEADLINE_ARMS = ["dmd", "dmd_full", "sgts", "phased_k2_sgts", "phased_k4"]


class ConvergenceParams(_Strict):
    arms: list[str] | None = Field(None, description="arms trained at several budgets (those a benchmark runs); "
                                                   "null: the headline arms HEADLINE_ARMS that are defined")
    seed: int = Field(0, description="the one training seed of the convergence runs")
    multiples: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0],
                                   description="budgets as multiples of the benchmark's generator budget")

    @field_validator("multiples")
    @classmethod
    def _multiples(cls, v: list[float]) -> list[float]:
        if not v or any(m <= 0 for m in v) or 1.0 not in v:
            raise ValueError(f"multiples must be positive and include 1 (the default budget), got {v}")
        return sorted(set(v))


class Toy1dParams(_Strict):
    config: str = Field("experiments/benchmarks/toy1d.yaml", description="toy1d benchmark config (Fig. 2)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="overrides of that config ({} for none)")


class PipelineParams(_Strict):
    executor: Literal["local", "slurm"] = "local"
    slurm_profile: str = "slurm/profiles/local.yaml"
    local_parallel: int = Field(2, ge=1, description="jobs run at once by the local executor")
    torch_threads: int = Field(1, ge=1, description="torch threads in each job")
    tracking_uri: str | None = Field(None, description="MLflow URI; null: $MLFLOW_TRACKING_URI or the local store")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    iterations: int = Field(300, ge=1, description="generator iterations per run (the same for every arm)")
    extra_seeds: ExtraSeeds = Field(default_factory=lambda: ExtraSeeds.model_validate({}))
    eval: EvalParams = Field(default_factory=lambda: EvalParams.model_validate({}))
    convergence: ConvergenceParams = Field(default_factory=lambda: ConvergenceParams.model_validate({}))
    toy1d: Toy1dParams = Field(default_factory=lambda: Toy1dParams.model_validate({}))
    distill: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]]
    benchmarks: dict[str, BenchmarkParams]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {v}")
        return v

    @model_validator(mode="after")
    def _arms_known(self) -> PipelineParams:
        for name, bench in self.benchmarks.items():
            unknown = [a for a in bench.arms if a not in self.arms]
            if unknown:
                raise ValueError(f"benchmarks.{name}.arms lists {unknown}, which are not defined under `arms` "
                                 f"(defined: {sorted(self.arms)})")
        for key, arms in (("extra_seeds.arms", self.extra_seeds.arms),
                          ("convergence.arms", self.convergence.arms or [])):
            unknown = [a for a in arms if a not in self.arms]
            if unknown:
                raise ValueError(f"{key} lists {unknown}, which are not defined under `arms` "
                                 f"(defined: {sorted(self.arms)})")
        repeated = sorted(set(self.extra_seeds.seeds) & set(self.seeds))
        if repeated or len(set(self.extra_seeds.seeds)) != len(self.extra_seeds.seeds):
            raise ValueError(f"extra_seeds.seeds {self.extra_seeds.seeds} must be distinct and not in seeds "
                             f"{self.seeds}")
        for arm in self.arms:
            if arm.startswith(TEACHER_REFERENCE_PREFIX):
                raise ValueError(f"arm name {arm!r} is reserved: names starting with "
                                 f"{TEACHER_REFERENCE_PREFIX!r} denote teacher references")
        return self

    def benchmark(self, name: str) -> BenchmarkParams:
        if name not in self.benchmarks:
            raise KeyError(f"benchmark {name!r} is not in the params file; defined: {sorted(self.benchmarks)}")
        return self.benchmarks[name]

    def budget(self, benchmark: str) -> int:
        own = self.benchmark(benchmark).iterations
        return own if own is not None else self.iterations

    def seeds_for(self, arm: str) -> list[int]:
        """Training seeds of one arm: `seeds`, plus `extra_seeds.seeds` when the arm is in `extra_seeds.arms`."""
        return self.seeds + (self.extra_seeds.seeds if arm in self.extra_seeds.arms else [])

    def all_seeds(self) -> list[int]:
        return self.seeds + self.extra_seeds.seeds

    def convergence_arms(self, benchmark: str) -> list[str]:
        arms = self.convergence.arms if self.convergence.arms is not None else HEADLINE_ARMS
        return [a for a in arms if a in self.benchmark(benchmark).arms]

    def convergence_budgets(self, benchmark: str) -> list[int]:
        """Generator budgets of the convergence runs: each multiple × the benchmark's budget, rounded to a multiple
        of every convergence arm's phase count (a K-phase arm splits its budget evenly over K phases)."""
        import math

        step = 1
        for arm in self.convergence_arms(benchmark):
            cfg = resolve_run_config(self, benchmark, arm, self.convergence.seed, model={"kind": "validation-only"})
            step = math.lcm(step, cfg.num_phases)
        budget = self.budget(benchmark)
        return sorted({max(step, round(m * budget / step) * step) for m in self.convergence.multiples})


class ParamsError(ValueError):
    """The params file failed validation; the message names the bad key and value."""


def load_params(path: str | Path = PARAMS_FILE) -> PipelineParams:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"params file {path}: top level must be a mapping, got {type(data).__name__}")
    try:
        params = PipelineParams.model_validate(data)
    except ValidationError as err:
        from pdmd_core.config import format_validation_error

        raise ParamsError(format_validation_error(err, str(path), kind="params file")) from None
    _validate_arm_configs(params, path)
    return params


def _validate_arm_configs(params: PipelineParams, path: Path) -> None:
    """Every benchmark × arm run config must validate when the params are loaded, before any stage looks for its
    inputs, so a bad arm value is reported as itself and not hidden behind a missing teacher."""
    from pdmd_core.config import ConfigError

    for name, bench in params.benchmarks.items():
        for arm in bench.arms:
            try:
                resolve_run_config(params, name, arm, params.seeds[0], model={"kind": "validation-only"})
            except ConfigError as err:
                raise ParamsError(f"params file {path}: {err}") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins; nested mappings merge key by key (dotted keys are set as paths)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if "." in key:
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_run_config(params: PipelineParams, benchmark: str, arm: str, seed: int,
                       model: dict[str, Any], budget: int | None = None) -> DistillConfig:
    """The DistillConfig of one arm × seed, validated (raises the config's own error on a bad field). `budget`
    (default: the benchmark's) is the run's total generator iterations, split evenly over its phases."""
    from pdmd_core.config import config_from_dict

    bench = params.benchmark(benchmark)
    if arm not in params.arms:
        raise KeyError(f"arm {arm!r} is not defined; defined arms: {sorted(params.arms)}")
    merged = deep_merge(deep_merge(params.distill, bench.distill), params.arms[arm])
    merged["seed"] = seed
    merged["model"] = model
    cfg = config_from_dict(merged, source=f"{benchmark}/{arm}")
    phases = cfg.num_phases
    budget = budget if budget is not None else params.budget(benchmark)
    if budget % phases:
        raise ParamsError(f"iterations={budget} for benchmark {benchmark!r} is not divisible by the {phases} "
                          f"phases of arm {arm!r}: every arm must get the same generator budget")
    # an int budget per phase replaces whatever the merged dict said (always valid: budget // phases >= 1)
    return cfg.model_copy(update={"iterations": budget // phases})


def arm_tags(cfg: DistillConfig) -> dict[str, str]:
    """The tags that let MLflow's compare view line up arms: method, phases, sgts, steps, ablation fields."""
    sgts = cfg.method == "sgts" or (cfg.method == "phased" and cfg.in_phase == "sgts"
                                    and any(b - a > 1 for a, b in zip(cfg.phase_step_bounds(),
                                                                      cfg.phase_step_bounds()[1:], strict=False)))
    return {
        "method": cfg.method,
        "phases": str(cfg.num_phases),
        "sgts": str(sgts).lower(),
        "steps": str(cfg.num_steps),
        "seed": str(cfg.seed),
        "fake_target": cfg.fake_target,
        "renoise_interval": cfg.renoise_interval,
        "fixed_dmd_t": "none" if cfg.fixed_dmd_t is None else str(cfg.fixed_dmd_t),
    }
