"""The CPU-tier teacher's quality gate: bars checked with pdmd_eval's metrics on the teacher that pdmd_core trained.

`check_saved_teacher` loads a saved teacher (the `teacher` stage's folder), runs the benchmark's check, writes
the check's samples as a pdmd_eval sample set and the report reports/teachers/<benchmark>.json (the DVC
`teacher_check` stage, separate from training so that an edit of the metric math never retrains a teacher).
`train_teacher_from_config` (`pdmd teacher train`) trains, saves and checks in one go.

Bars: toy1d endpoint W1 to the data ≤ 0.05; mog2d ≥ 24 of 25 modes covered; digits classifier accuracy ≥ 0.95
and FD ≤ 3× the real-vs-real FD; moving_digits mean optical-flow magnitude within 10 % of the real clips'.
Each check returns the measured numbers, the bar and whether it passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pdmd_core.cpu_tier.config import BenchmarkConfig
from pdmd_core.cpu_tier.data.base import LabelledData
from pdmd_core.cpu_tier.generate import sample_prompts
from pdmd_core.protocols import PromptEncoder

TOY1D_MAX_W1 = 0.05
MOG2D_MIN_MODES = 24
DIGITS_MIN_ACCURACY = 0.95
DIGITS_MAX_FD_RATIO = 3.0
MOVING_MAX_SPEED_ERROR = 0.10


@dataclass
class QualityReport:
    metrics: dict[str, float]
    bar: dict[str, Any]
    passed: bool
    samples: Tensor | None = field(default=None, repr=False)
    labels: Tensor | None = field(default=None, repr=False)


def _sample(model: nn.Module, encoder: PromptEncoder, data: LabelledData, labels: Tensor,
            config: BenchmarkConfig) -> Tensor:
    q = config.quality
    return sample_prompts(model, encoder, data.prompts, labels, data.sample_shape, q.steps, q.cfg_scale, q.seed)


def check_toy1d(model: nn.Module, encoder: PromptEncoder, data: LabelledData,
                config: BenchmarkConfig) -> QualityReport:
    from scipy.stats import wasserstein_distance

    labels = torch.zeros(config.quality.num_samples, dtype=torch.long)
    samples = _sample(model, encoder, data, labels, config)
    w1 = float(wasserstein_distance(samples[:, 0].numpy(), data.test.x[:, 0].numpy()))
    return QualityReport({"w1_to_data": w1}, {"w1_to_data_max": TOY1D_MAX_W1}, w1 <= TOY1D_MAX_W1,
                         samples, labels)


def check_mog2d(model: nn.Module, encoder: PromptEncoder, data: LabelledData,
                config: BenchmarkConfig) -> QualityReport:
    from pdmd_eval.functional import modes

    n = config.quality.num_samples
    labels = torch.arange(n) % len(data.prompts)
    samples = _sample(model, encoder, data, labels, config)
    points, ids = samples.numpy(), labels.numpy()
    mixture = modes.mixture_from_extras(data.meta)
    covered = sum(modes.modes_covered(points[ids == p], p, mixture) * len(mixture.modes_of(p))
                  for p in range(len(data.prompts)))
    metrics = {
        "modes_covered": float(round(covered)),
        "modes_total": float(len(mixture.centers)),
        "mode_balance": float(np.mean([modes.mode_balance(points[ids == p], p, mixture)
                                       for p in range(len(data.prompts))])),
        "near_mode": float(modes.near_mode(points, mixture).mean()),
        "mode_adherence": float(modes.mode_adherence(points, list(ids), mixture).mean()),
    }
    return QualityReport(metrics, {"modes_covered_min": MOG2D_MIN_MODES},
                         metrics["modes_covered"] >= MOG2D_MIN_MODES, samples, labels)


@torch.no_grad()
def _features_logits(net: nn.Module, x_unit: Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = zip(*(net(x_unit[i:i + batch]) for i in range(0, len(x_unit), batch)), strict=True)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def check_digits(model: nn.Module, encoder: PromptEncoder, data: LabelledData, config: BenchmarkConfig,
                 feature_net: nn.Module) -> QualityReport:
    """FD and accuracy in the feature net's space; generated and real sets have the train split's size and
    class make-up, and both are compared with the held-out test split."""
    from pdmd_eval.functional.fidelity import frechet_distance

    labels = data.train.labels
    samples = _sample(model, encoder, data, labels, config)
    gen_feats, gen_logits = _features_logits(feature_net, data.to_unit(samples))
    train_feats, _ = _features_logits(feature_net, data.to_unit(data.train.x))
    test_feats, _ = _features_logits(feature_net, data.to_unit(data.test.x))
    fd = frechet_distance(gen_feats, test_feats)
    fd_real = frechet_distance(train_feats, test_feats)
    acc = float((gen_logits.argmax(axis=1) == labels.numpy()).mean())
    metrics = {"accuracy": acc, "fd": fd, "fd_real_vs_real": fd_real, "fd_ratio": fd / fd_real}
    passed = acc >= DIGITS_MIN_ACCURACY and fd <= DIGITS_MAX_FD_RATIO * fd_real
    return QualityReport(metrics, {"accuracy_min": DIGITS_MIN_ACCURACY, "fd_ratio_max": DIGITS_MAX_FD_RATIO},
                         passed, samples, labels)


def mean_flow(videos_unit: Tensor) -> float:
    """Mean over clips of pdmd_eval's per-video mean Farneback flow magnitude (px/frame); videos N×T×1×H×W."""
    from pdmd_eval.functional.motion import mean_flow_magnitude

    return float(np.mean([mean_flow_magnitude(v[:, 0].numpy()) for v in videos_unit]))


def check_moving_digits(model: nn.Module, encoder: PromptEncoder, data: LabelledData, config: BenchmarkConfig,
                        feature_net: nn.Module | None = None) -> QualityReport:
    labels = data.test.labels
    samples = _sample(model, encoder, data, labels, config)
    gen_flow = mean_flow(data.to_unit(samples))
    real_flow = mean_flow(data.to_unit(data.test.x))
    error = abs(gen_flow / real_flow - 1)
    metrics = {"mean_flow": gen_flow, "mean_flow_real": real_flow, "relative_speed_error": error,
               "mean_gt_speed_real": float(data.test.extras["speed"].mean())}
    if feature_net is not None:
        from pdmd_eval.functional.fidelity import frechet_distance

        gen_feats, gen_logits = _features_logits(feature_net, data.to_unit(samples))
        test_feats, _ = _features_logits(feature_net, data.to_unit(data.test.x))
        val_feats, _ = _features_logits(feature_net, data.to_unit(data.val.x))
        metrics["fvd_like"] = frechet_distance(gen_feats, test_feats)
        metrics["fvd_like_real_vs_real"] = frechet_distance(val_feats, test_feats)
        metrics["accuracy"] = float((gen_logits.argmax(axis=1) == labels.numpy()).mean())
    return QualityReport(metrics, {"relative_speed_error_max": MOVING_MAX_SPEED_ERROR},
                         error <= MOVING_MAX_SPEED_ERROR, samples, labels)


def run_quality(model: nn.Module, encoder: PromptEncoder, data: LabelledData, config: BenchmarkConfig,
                feature_net: nn.Module | None) -> QualityReport:
    name = config.benchmark
    if name == "toy1d":
        return check_toy1d(model, encoder, data, config)
    if name == "mog2d":
        return check_mog2d(model, encoder, data, config)
    if name == "digits":
        if feature_net is None:
            raise ValueError("the digits quality check needs a feature net: add a `features:` section to the config")
        return check_digits(model, encoder, data, config, feature_net)
    if name == "moving_digits":
        return check_moving_digits(model, encoder, data, config, feature_net)
    raise ValueError(f"no quality check for benchmark {name!r}")


def save_quality_samples(report: QualityReport, data: LabelledData, config: BenchmarkConfig, checkpoint: Path,
                         folder: Path) -> Path:
    """The quality-check samples as a pdmd_eval sample set (seed = the sample's index in the check)."""
    from pdmd_eval.samples import SampleRecord, SampleSet, save_sample_set

    assert report.samples is not None and report.labels is not None
    q = config.quality
    nfe = q.steps * (1 if q.cfg_scale == 1.0 else 2)
    records = [SampleRecord("teacher", int(p), data.prompts[int(p)], i, q.steps, nfe, str(checkpoint))
               for i, p in enumerate(report.labels.tolist())]
    arr = data.to_unit(report.samples).numpy().astype("float32")
    return save_sample_set(SampleSet(arr, records, data.kind, data.name, dict(data.meta)), folder)


def write_report(config: BenchmarkConfig, quality: QualityReport, stats: dict[str, Any], checkpoint: Path,
                 root: Path) -> dict[str, Any]:
    """reports/teachers/<benchmark>.json: passed, the measured metrics and their bar, training stats."""
    report = {
        "benchmark": config.benchmark,
        "passed": quality.passed,
        "metrics": quality.metrics,
        "bar": quality.bar,
        **stats,
        "sampling": {"steps": config.quality.steps, "cfg_scale": config.quality.cfg_scale,
                     "num_samples": int(len(quality.samples)) if quality.samples is not None else 0},
        "checkpoint": str(checkpoint),
    }
    out = root / "reports" / "teachers" / f"{config.benchmark}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    report["report_path"] = str(out)
    return report


def train_teacher_from_config(config: BenchmarkConfig, root: Path, output_dir: Path | None = None,
                              progress: bool = True) -> dict[str, Any]:
    """Train, save and check one benchmark's teacher; returns the report dict (also written as JSON)."""
    from pdmd_core.cpu_tier.teacher import train_teacher

    folder = output_dir or config.resolved_output_dir(root)
    teacher = train_teacher(config, folder, progress)
    quality = run_quality(teacher.model, teacher.encoder, teacher.data, config, teacher.feature_net)
    save_quality_samples(quality, teacher.data, config, teacher.checkpoint, folder / "samples")
    return write_report(config, quality, teacher.stats, teacher.checkpoint, root)


def check_saved_teacher(config: BenchmarkConfig, teacher_dir: Path, root: Path, samples_dir: Path,
                        stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The quality check of a teacher saved by `train_teacher` in `teacher_dir` (teacher.pt and, for image and
    video benchmarks, the exported feature net features.pt2); the data are rebuilt from the config's seed."""
    from pdmd_core.cpu_tier.data import build_dataset
    from pdmd_core.cpu_tier.teacher import FEATURES_FILE, TEACHER_FILE, load_teacher
    from pdmd_core.cpu_tier.train import configure_cpu

    configure_cpu(config.train.threads)
    checkpoint = teacher_dir / TEACHER_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no teacher at {checkpoint}: train it first (dvc repro teacher@{config.benchmark})")
    teacher = load_teacher(checkpoint)
    data = build_dataset(config.data, config.seed)
    features = teacher_dir / FEATURES_FILE
    feature_net = torch.export.load(str(features)).module() if features.is_file() else None
    quality = run_quality(teacher.model, teacher.encoder, data, config, feature_net)
    save_quality_samples(quality, data, config, checkpoint, samples_dir)
    return write_report(config, quality, stats or {}, checkpoint, root)
