"""One benchmark's teacher: data → (feature net) → flow-matching teacher → checkpoint.

Files written under the output folder (default runs/teachers/<benchmark>/): `teacher.pt` (EMA weights, sample
shape and the resolved config), `config.yaml` (the resolved config) and `features.pt2` (digits, moving_digits).
The quality gate (bars, quality-check samples, reports/teachers/<benchmark>.json) lives in the pipeline
package (it needs the evaluation package's metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from pdmd_core.cpu_tier.config import BenchmarkConfig
from pdmd_core.cpu_tier.data import LabelledData, build_dataset
from pdmd_core.cpu_tier.nets import VelocityMLP, VideoMixerVelocity, count_parameters
from pdmd_core.cpu_tier.prompts import TokenTableEncoder

TEACHER_FILE = "teacher.pt"
FEATURES_FILE = "features.pt2"


def build_encoder(config: BenchmarkConfig) -> TokenTableEncoder:
    pe = config.prompt_encoder
    return TokenTableEncoder(pe.dim, pe.max_len, pe.seed)


def build_velocity_net(config: BenchmarkConfig, sample_shape: tuple[int, ...]) -> VelocityMLP | VideoMixerVelocity:
    m = config.model
    if m.arch == "frame_mixer":
        return VideoMixerVelocity(sample_shape, config.prompt_encoder.dim, m.hidden, m.depth, m.time_dim,
                                  m.prediction, m.t_min)
    return VelocityMLP(sample_shape, config.prompt_encoder.dim, m.hidden, m.depth, m.time_dim, m.prediction,
                       m.t_min)


@dataclass
class LoadedTeacher:
    model: VelocityMLP | VideoMixerVelocity
    encoder: TokenTableEncoder
    config: BenchmarkConfig
    sample_shape: tuple[int, ...]


def save_teacher(model: nn.Module, config: BenchmarkConfig, sample_shape: tuple[int, ...], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    path = folder / TEACHER_FILE
    torch.save({"config": resolved, "sample_shape": list(sample_shape), "state_dict": model.state_dict()}, path)
    return path


def load_teacher(path: str | Path) -> LoadedTeacher:
    """Rebuild a saved teacher (eval mode, no grad needed) with its prompt encoder and config."""
    path = Path(path)
    if path.is_dir():
        path = path / TEACHER_FILE
    if not path.exists():
        raise FileNotFoundError(f"no teacher checkpoint at {path}; train one with `pdmd teacher train CONFIG`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    config = BenchmarkConfig.model_validate(blob["config"])
    shape = tuple(int(s) for s in blob["sample_shape"])
    model = build_velocity_net(config, shape)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return LoadedTeacher(model, build_encoder(config), config, shape)


def train_benchmark_feature_net(config: BenchmarkConfig, data: LabelledData, folder: Path,
                                progress: bool = True) -> tuple[nn.Module | None, dict[str, float]]:
    """Train and export the benchmark's feature net (digits, moving_digits); None for point benchmarks."""
    from pdmd_core.cpu_tier import features as fnets

    if config.features is None or data.kind == "points":
        return None, {}
    fc = config.features
    net: nn.Module
    # Seed before building: the initial weights must not depend on how much of the global RNG stream earlier
    # work (data generation, a cached or fresh teacher) happened to consume.
    torch.manual_seed(config.seed)
    if data.kind == "image":
        net = fnets.DigitsFeatureNet(fc.feature_dim, len(data.prompts))
        seconds = fnets.train_feature_net(net, data.to_unit(data.train.x), data.train.labels, fc, config.seed,
                                          progress=progress)
    else:
        net = fnets.VideoFeatureNet(fc.feature_dim, len(data.prompts))
        seconds = fnets.train_feature_net(net, data.to_unit(data.train.x), data.train.labels, fc, config.seed,
                                          velocity=data.train.extras["velocity"], progress=progress)
    test_acc = fnets.accuracy(net, data.to_unit(data.test.x), data.test.labels)
    fnets.export_feature_net(net, data.to_unit(data.test.x[:2]), folder / FEATURES_FILE)
    return net, {"feature_net_seconds": seconds, "feature_net_test_accuracy": test_acc}


@dataclass
class TrainedTeacher:
    """What `train_teacher` produced: the EMA teacher (saved), its encoder, the data and the feature net."""

    model: nn.Module
    encoder: TokenTableEncoder
    data: LabelledData
    feature_net: nn.Module | None
    checkpoint: Path
    stats: dict[str, Any]


def train_teacher(config: BenchmarkConfig, folder: Path, progress: bool = True) -> TrainedTeacher:
    """Build the data, train the feature net (if any) and the flow-matching teacher, save the EMA teacher to
    `folder`. Checking its quality against the benchmark's bar is the pipeline package's job."""
    from pdmd_core.cpu_tier.train import configure_cpu, train_flow_matching

    configure_cpu(config.train.threads)
    start = time.perf_counter()
    data = build_dataset(config.data, config.seed)
    data_seconds = time.perf_counter() - start
    feature_net, feature_stats = train_benchmark_feature_net(config, data, folder, progress)
    encoder = build_encoder(config)
    # Seed the initial weights: torch seeds its default generator differently in every process, so an unseeded
    # build (mog2d, toy1d: no feature net seeded the stream before) gave a different teacher on every run.
    torch.manual_seed(config.seed)
    model = build_velocity_net(config, data.sample_shape)
    result = train_flow_matching(model, data.train, encoder, data.prompts, config.train, config.seed,
                                 progress=progress, description=f"teacher {config.benchmark}")
    checkpoint = save_teacher(result.ema_model, config, data.sample_shape, folder)
    stats = {
        "teacher_train_seconds": result.seconds,
        "teacher_train_cpu_seconds": result.cpu_seconds,
        "data_seconds": data_seconds,
        **feature_stats,
        "final_loss": result.final_loss,
        "parameters": count_parameters(result.ema_model),
        "iterations": config.train.iterations,
        "batch_size": config.train.batch_size,
        "threads": torch.get_num_threads(),
    }
    return TrainedTeacher(result.ema_model, encoder, data, feature_net, checkpoint, stats)
