"""Benchmark configs (experiments/benchmarks/*.yaml), validated with pydantic; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdmd_core.config import ConfigError, format_validation_error


class _Strict(BaseModel):
    # validate_assignment: CLI overrides assigned after loading get the same checks as YAML values.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Toy1dData(_Strict):
    kind: Literal["toy1d"] = "toy1d"
    atoms: list[float] = Field(default_factory=lambda: [-1.0, 0.0, 1.0, 2.0])
    num_points: int = Field(20000, gt=0)


class Mog2dData(_Strict):
    kind: Literal["mog2d"] = "mog2d"
    grid: int = Field(5, ge=2)
    spacing: float = Field(1.0, gt=0)
    std: float = Field(0.08, gt=0)
    num_points: int = Field(50000, gt=0)


class DigitsData(_Strict):
    kind: Literal["digits"] = "digits"
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class MovingDigitsData(_Strict):
    kind: Literal["moving_digits"] = "moving_digits"
    frames: int = Field(8, ge=2)
    size: int = Field(16, ge=9)
    num_clips: int = Field(6000, gt=0)
    slow_speed: tuple[float, float] = (0.0, 0.4)
    fast_speed: tuple[float, float] = (0.7, 1.1)
    fast_fraction: float = Field(0.5, ge=0, le=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


DataConfig = Annotated[Toy1dData | Mog2dData | DigitsData | MovingDigitsData, Field(discriminator="kind")]


class PromptEncoderConfig(_Strict):
    dim: int = Field(32, gt=0)
    max_len: int = Field(8, gt=0)
    seed: int = 0


class ModelConfig(_Strict):
    arch: Literal["mlp", "frame_mixer"] = "mlp"
    hidden: int = Field(256, gt=0)
    depth: int = Field(3, ge=1)
    time_dim: int = Field(64, gt=0)
    prediction: Literal["velocity", "x0"] = "velocity"
    t_min: float = Field(0.05, gt=0, lt=1)


class TrainConfig(_Strict):
    iterations: int = Field(6000, gt=0)
    batch_size: int = Field(256, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    cond_dropout: float = Field(0.1, ge=0, le=1)
    threads: int = Field(1, ge=1)


class QualityConfig(_Strict):
    steps: int = Field(50, ge=1)
    cfg_scale: float = 1.5
    num_samples: int = Field(2000, gt=0)
    seed: int = 1234


class FeatureNetConfig(_Strict):
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-3, gt=0)
    feature_dim: int = Field(64, gt=0)


class SubintervalConfig(_Strict):
    """Fig. 2 toy: three from-scratch MLPs (standard, Eq. 13 and naive target on (s, 1])."""

    s: float = Field(0.5, gt=0, lt=1)
    hidden: int = Field(512, gt=0)
    depth: int = Field(4, ge=1)
    iterations: int = Field(3000, gt=0)
    batch_size: int = Field(512, gt=0)
    lr: float = Field(1e-3, gt=0)
    euler_steps: int = Field(100, ge=2)
    trajectories: int = Field(200, gt=0)
    w1_samples: int = Field(20000, gt=0)
    clamp: float = Field(10.0, gt=0)


class BenchmarkConfig(_Strict):
    seed: int = 0
    data: DataConfig
    prompt_encoder: PromptEncoderConfig = Field(default_factory=lambda: PromptEncoderConfig.model_validate({}))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig.model_validate({}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate({}))
    quality: QualityConfig = Field(default_factory=lambda: QualityConfig.model_validate({}))
    features: FeatureNetConfig | None = None
    subinterval: SubintervalConfig | None = None
    output_dir: str | None = None

    @property
    def benchmark(self) -> str:
        return self.data.kind

    def resolved_output_dir(self, root: Path) -> Path:
        """Where checkpoints go: `output_dir` if given (relative to the project root), else runs/teachers/<name>."""
        out = Path(self.output_dir) if self.output_dir else Path("runs") / "teachers" / self.benchmark
        return out if out.is_absolute() else root / out


def load_config(path: str | Path) -> BenchmarkConfig:
    """Load and validate a benchmark config; raises ConfigError naming every bad key/value."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"benchmark config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"benchmark config {path} must be a YAML mapping, got {type(raw).__name__}")
    try:
        return BenchmarkConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
