"""Validated configuration of one distillation run (pydantic v2, YAML).

API:
- `DistillConfig`: the whole run. Every model forbids unknown keys, so a typo fails with the key's name.
- `load_config(path, overrides=None) -> DistillConfig`: read YAML, deep-merge `overrides` (nested dict, or
  dotted keys such as {"optim.lr_fake": 1e-5}), validate.
- `non_finite: {policy: stop | skip, max_skipped}`: what a NaN/Inf loss or gradient does (pdmd_core.trainer);
  default stop. Resume-insensitive, like `checkpoint`, `device` and `model`.
- `DistillConfig.timestep_schedule()` -> t_0 = 1 > ... > t_N = 0; `.phase_step_bounds()` -> step indices
  [0, b_1, ..., N] of the K phases (K = 1 for dmd / dmd_full / sgts); `.iterations_for_phase(k)`.

The five DMD wiring decisions that codebases silently disagree on (shared/spec/anchors.md §8) are explicit:
1. teacher CFG form      -> `teacher_cfg.form`   (default `standard`: v_u + w (v_c − v_u)); fake score: no CFG.
2. normaliser            -> `generator_gradient` (default `dmd_weight`: Eq. 10 weight w_{t|s}; `normalizer`:
                            DMD's per-sample 1 / mean|x̂_gen − x̂_real|).
3. update ratio          -> `ttur_ratio`         (default 5 fake updates per generator update).
4. multi-step input      -> `transport`          (default `euler`: backward simulation with Euler steps;
                            `renoise`: x̂_0 + fresh noise as in DMD2). Always data-free backward simulation.
5. critic target         -> `fake_target`        (default `subinterval`: Eq. 11 with the Eq. 13 weight;
                            `naive`: noise − x_s, the biased ablation).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdmd_core.guidance import CFGForm
from pdmd_core.schedules import partition_steps, uniform_timesteps, validate_timesteps

Method = Literal["dmd", "dmd_full", "sgts", "phased"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TeacherCFG(_Strict):
    """Classifier-free guidance of the teacher (the 'real' score). The fake score never uses CFG."""

    scale: float = Field(1.0, description="guidance scale w; standard 1.0 / offset 0.0 mean no guidance")
    form: CFGForm = Field(CFGForm.STANDARD, description="standard: v_u + w·Δ; offset: v_c + w·Δ (Self-Forcing); "
                          "true_cfg: standard, each latent token rescaled to the conditional norm (Qwen-Image)")
    rescale: float = Field(0.0, ge=0.0, le=1.0, description="norm rescale φ in [0, 1]; 0 disables it")

    @model_validator(mode="after")
    def _rescale_form(self) -> TeacherCFG:
        if self.form is CFGForm.TRUE_CFG and self.rescale:
            raise ValueError(f"teacher_cfg.rescale = {self.rescale}: form 'true_cfg' already rescales every token to "
                             f"the conditional norm; set rescale: 0")
        return self


class GeneratorSpec(_Strict):
    """How generator experts are parameterised: full copies of the teacher, or LoRA adapters on one backbone."""

    kind: Literal["full", "lora"] = "full"
    rank: int = Field(64, ge=1, description="LoRA rank (paper: 64)")
    alpha: int = Field(8, gt=0, description="LoRA alpha (paper: 8)")
    target_modules: list[str] | None = Field(
        None, description="module names for LoRA; None uses the model bundle's lora_target_modules")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class OptimSpec(_Strict):
    lr_generator: float = Field(1e-4, gt=0)
    lr_fake: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = Field((0.0, 0.999), description="AdamW betas (paper, DMD2, Self-Forcing)")
    weight_decay: float = Field(0.0, ge=0)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(10.0, description="max global grad norm per role; None disables")
    ema_decay: float | None = Field(None, description="generator EMA decay (e.g. 0.99); None disables")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must each be in [0, 1), got {v}")
        return v

    @field_validator("grad_clip")
    @classmethod
    def _clip(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {v}")
        return v

    @field_validator("ema_decay")
    @classmethod
    def _ema(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {v}")
        return v


class NonFiniteSpec(_Strict):
    """What a NaN/Inf loss or gradient does: stop the run (default) or skip that update and count it."""

    policy: Literal["stop", "skip"] = Field(
        "stop", description="stop: raise NonFiniteError naming role, phase and step; skip: drop the update")
    max_skipped: int = Field(
        10, ge=0, description="policy skip: stop once more than this many updates were skipped in the run")


class CheckpointSpec(_Strict):
    every: int = Field(100, ge=1, description="generator iterations between checkpoints (and at phase ends)")
    keep_last: int = Field(3, ge=1, description="checkpoints kept on disk")
    async_save: bool = Field(False, description="distributed (DCP) checkpoints between phase ends are written in "
                                                "the background and committed when the next save starts")


class ModelSpec(BaseModel):
    """`model: {kind: NAME, ...}`: every key other than `kind` is passed to the registered builder."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            params = dict(data.pop("params", {}) or {})
            kind = data.pop("kind", None)
            params.update(data)
            return {"kind": kind, "params": params}
        return data


class DistillConfig(_Strict):
    # ---- method and schedule
    method: Method = Field("phased", description="dmd (1 step) | dmd_full | sgts | phased")
    num_steps: int = Field(4, ge=1, description="student sampling steps N (dmd requires 1)")
    shift: float = Field(1.0, gt=0, description="timestep shift: shift·t / (1 + (shift − 1)·t)")
    timesteps: list[float] | None = Field(
        None, description="explicit t_0 = 1 > ... > t_N = 0 (overrides num_steps' uniform shifted schedule)")
    phases: int | None = Field(None, ge=1, description="K phases of equal length (phased only); N % K == 0")
    phase_boundaries: list[int] | None = Field(
        None, description="explicit step indices [0, b_1, ..., N] of the phases (phased only)")
    in_phase: Literal["backprop", "sgts"] = Field(
        "backprop", description="multi-step phase: backprop through its steps, or SGTS exit jumping to its end")
    transport: Literal["euler", "renoise"] = Field(
        "euler", description="anchors §8 multi-step input: backward simulation by Euler or x̂_0 + fresh noise")
    renoise_interval: Literal["nested", "disjoint"] = Field(
        "nested", description="phase k re-noises on (t_k, 1] (paper) or (t_k, t_{k−1}] (ablation)")
    renoise_t_range: tuple[float, float] = Field(
        (0.02, 0.98), description="bounds of re-noise t in the model's timestep space (after the shift), as DMD2 "
        "clamps its timestep to 0.02/0.98 of T; intersected with each phase's (lo, hi], u then uniform between the "
        "unshifted ends")
    fixed_dmd_t: float | None = Field(
        None, description="generator's DMD t fixed to this value (ablation: 0.357 vs 0.882); fake unaffected")
    moe_boundary: float | None = Field(None, description="MoE teacher boundary; None takes the bundle's")
    moe_boundary_clamp: bool = Field(
        False, description="phases starting above the MoE boundary re-noise only on (boundary, 1] (Wan2.2)")
    # ---- the critic (fake score)
    fake_target: Literal["subinterval", "naive"] = Field(
        "subinterval", description="anchors §8 critic target: Eq. 11 + Eq. 13 weight, or naive noise − x_s")
    loss_clamp: float = Field(10.0, gt=0, description="Eq. 13 clamp: weight min(1, clamp·σ²_{t|s})")
    clamp_last_phase: bool = Field(
        False, description="also apply the Eq. 13 weight when s = 0 (paper silent; standard DMD does not)")
    ttur_ratio: int = Field(5, ge=1, description="anchors §8 update ratio: fake updates per generator update")
    # ---- the generator gradient
    generator_gradient: Literal["dmd_weight", "normalizer"] = Field(
        "dmd_weight", description="anchors §8 normaliser: Eq. 10 w_{t|s}, or DMD's per-sample mean-abs")
    teacher_cfg: TeacherCFG = Field(default_factory=lambda: TeacherCFG.model_validate({}))
    generator: GeneratorSpec = Field(default_factory=lambda: GeneratorSpec.model_validate({}))
    optim: OptimSpec = Field(default_factory=lambda: OptimSpec.model_validate({}))
    # ---- loop
    iterations: int | list[int] = Field(
        100, description="generator iterations per phase (one int for all phases, or one per phase)")
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    device: str = "cpu"
    checkpoint: CheckpointSpec = Field(default_factory=lambda: CheckpointSpec.model_validate({}))
    non_finite: NonFiniteSpec = Field(default_factory=lambda: NonFiniteSpec.model_validate({}))
    dmd_t_bins: int = Field(4, ge=1, description="t-bins for the per-bin DMD-gradient-norm metric")
    model: ModelSpec | None = Field(None, description="model bundle: {kind: NAME, ...builder params}")

    @field_validator("timesteps")
    @classmethod
    def _timesteps(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            validate_timesteps(v)
        return v

    @field_validator("renoise_t_range")
    @classmethod
    def _t_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"renoise_t_range must satisfy 0 <= lo < hi <= 1, got {v}")
        return v

    @field_validator("fixed_dmd_t", "moe_boundary")
    @classmethod
    def _open_unit(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1) or null, got {v}")
        return v

    @field_validator("iterations")
    @classmethod
    def _iters(cls, v: int | list[int]) -> int | list[int]:
        values = [v] if isinstance(v, int) else v
        if not values or any(i < 0 for i in values):
            raise ValueError(f"iterations must be >= 0 (one int or a non-empty list), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        if self.timesteps is not None and len(self.timesteps) != self.num_steps + 1:
            raise ValueError(f"timesteps has {len(self.timesteps)} values; num_steps={self.num_steps} "
                             f"needs {self.num_steps + 1} (t_0 = 1 ... t_N = 0)")
        if self.method == "dmd" and self.num_steps != 1:
            raise ValueError(f"method 'dmd' is one-step: num_steps must be 1, got {self.num_steps}")
        if self.method != "phased" and (self.phases not in (None, 1) or self.phase_boundaries is not None):
            raise ValueError(f"phases/phase_boundaries are only for method 'phased', got method '{self.method}' "
                             f"with phases={self.phases}, phase_boundaries={self.phase_boundaries}")
        if self.phases is not None and self.phase_boundaries is not None:
            raise ValueError("give either phases (K) or phase_boundaries, not both")
        bounds = self.phase_step_bounds()  # raises with the bad value if the partition is invalid
        if isinstance(self.iterations, list) and len(self.iterations) != len(bounds) - 1:
            raise ValueError(f"iterations lists {len(self.iterations)} values but there are "
                             f"{len(bounds) - 1} phases")
        return self

    # ---- derived quantities
    def timestep_schedule(self) -> list[float]:
        return list(self.timesteps) if self.timesteps is not None else uniform_timesteps(self.num_steps, self.shift)

    def phase_step_bounds(self) -> list[int]:
        if self.method != "phased":
            return [0, self.num_steps]
        return partition_steps(self.num_steps, self.phases if self.phase_boundaries is None
                               else self.phase_boundaries)

    @property
    def num_phases(self) -> int:
        return len(self.phase_step_bounds()) - 1

    def iterations_for_phase(self, phase: int) -> int:
        return self.iterations if isinstance(self.iterations, int) else self.iterations[phase]


class ConfigError(ValueError):
    """A config failed validation; the message names each bad field, its value and what is allowed."""


def format_validation_error(err: ValidationError, source: str, kind: str = "config") -> str:
    """One line per error naming the field, its value and what is allowed; `kind` names what was read."""
    lines = [f"invalid {kind} {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if not loc:  # cross-field check: its message names the fields and values
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}' (not a field of this section)")
        else:
            lines.append(f"  {loc} = {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if "." in key:
            _set_dotted(out, key, value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None,
                     source: str = "<dict>") -> DistillConfig:
    merged = _deep_merge(data, overrides or {})
    try:
        return DistillConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Load and validate a YAML run config; raises ConfigError naming every bad key/value."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: top level must be a mapping, got {type(data).__name__}")
    return config_from_dict(data, overrides, str(path))
