"""Metric registry: every metric declares its name, direction (↑ higher is better, ↓ lower is better), the
sample kinds it applies to, what it needs, and the unit its values are reported over.

Units: ``prompt`` (one value per prompt, e.g. within-prompt diversity), ``sample`` (one per sample, e.g.
flow magnitude, classifier hit), ``pair`` (one per (prompt, seed) matched with the reference), ``set``
(a single number, e.g. Fréchet distance: no CI, ``low``/``high`` are NaN).

Needs: ``reference`` (teacher sample set, same prompts/seeds), ``real`` (real data), ``feature_net`` (a
``.pt2`` net), and pretrained models ``lpips``, ``clip``, ``dino`` (DINOv2 default), ``inception`` (torchvision,
CPU tier), ``raft`` (RAFT-small), and for the paper protocol ``raft_large``, ``dinov3``, ``fid_inception``
(torch-fidelity's FID network) and ``i3d`` (cd-fvd's Kinetics-400 I3D).

Presets (:data:`PRESETS`, usable wherever metric names are given, e.g. ``pdmd eval --metrics table2``):
``table2`` = the paper's Table 2 columns (motion and fidelity to the base model's outputs) and ``table3`` = its
Table 3 columns (within-prompt diversity), plus the CLIP similarity the study reports beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pdmd_eval.stats import bootstrap_ci

if TYPE_CHECKING:
    from pdmd_eval.context import EvalContext

UP, DOWN = "↑", "↓"
UNITS = ("prompt", "sample", "pair", "set")
PRETRAINED = ("lpips", "clip", "dino", "inception", "raft", "raft_large", "dinov3", "fid_inception", "i3d")
PRESETS: dict[str, tuple[str, ...]] = {
    "table2": ("optical_flow_raft", "dynamic_degree_vbench", "fid_teacher", "fvd_i3d_teacher"),
    "table3": ("dino_similarity", "lpips_distance", "clip_similarity"),
}
NEEDS = ("reference", "real", "feature_net", *PRETRAINED)


@dataclass
class MetricResult:
    """Per-unit values (keyed by prompt_id or (prompt_id, seed)) and their mean with a bootstrap CI."""

    name: str
    direction: str
    unit: str
    keys: list[Hashable]
    values: np.ndarray
    mean: float
    low: float
    high: float
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(
        cls, name: str, direction: str, unit: str, keys: Sequence[Hashable], values: Any, confidence: float = 0.95
    ) -> MetricResult:
        arr = np.asarray(values, dtype=np.float64)
        mean, low, high = bootstrap_ci(arr, confidence)
        return cls(name, direction, unit, list(keys), arr, mean, low, high)

    @classmethod
    def scalar(cls, name: str, direction: str, value: float, **extras: Any) -> MetricResult:
        return cls(name, direction, "set", [], np.asarray([value]), float(value), float("nan"), float("nan"), extras)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "unit": self.unit,
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "keys": [list(k) if isinstance(k, tuple) else k for k in self.keys],
            "values": self.values.tolist(),
            "extras": self.extras,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricResult:
        keys = [tuple(k) if isinstance(k, list) else k for k in data["keys"]]
        return cls(
            data["name"], data["direction"], data["unit"], keys, np.asarray(data["values"], dtype=np.float64),
            float(data["mean"]), float(data["low"]), float(data["high"]), dict(data.get("extras", {})),
        )


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str
    unit: str
    kinds: tuple[str, ...]
    needs: tuple[str, ...]
    description: str
    compute: Callable[[EvalContext], MetricResult]
    uses_fd_extractor: bool = False  # image/video features come from EvalContext.fd_extractor

    def __post_init__(self) -> None:
        if self.direction not in (UP, DOWN):
            raise ValueError(f"metric {self.name}: direction {self.direction!r} must be {UP!r} or {DOWN!r}")
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name}: unit {self.unit!r} must be one of {UNITS}")
        bad = [n for n in self.needs if n not in NEEDS]
        if bad:
            raise ValueError(f"metric {self.name}: unknown needs {bad}; allowed {NEEDS}")


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in REGISTRY:
        raise ValueError(f"metric {metric.name!r} is already registered")
    REGISTRY[metric.name] = metric
    return metric


def metric(
    name: str,
    direction: str,
    unit: str,
    kinds: tuple[str, ...],
    needs: tuple[str, ...] = (),
    description: str = "",
    uses_fd_extractor: bool = False,
) -> Callable[[Callable[[EvalContext], MetricResult]], Callable[[EvalContext], MetricResult]]:
    """Decorator registering ``fn(ctx) -> MetricResult`` as a metric."""

    def wrap(fn: Callable[[EvalContext], MetricResult]) -> Callable[[EvalContext], MetricResult]:
        doc = description or (fn.__doc__ or "").strip()
        register(Metric(name, direction, unit, kinds, needs, doc, fn, uses_fd_extractor))
        return fn

    return wrap


def get_metric(name: str) -> Metric:
    import pdmd_eval.metrics  # noqa: F401  (registers the built-in metrics)

    if name not in REGISTRY:
        raise KeyError(f"unknown metric {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name]


def expand_metric_names(names: Sequence[str]) -> list[str]:
    """Metric names with presets (``table2``, ``table3``) replaced by their members, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for member in PRESETS.get(name, (name,)):
            if member not in out:
                out.append(member)
    return out


def available_metrics(kind: str | None = None) -> list[Metric]:
    import pdmd_eval.metrics  # noqa: F401

    return [m for m in REGISTRY.values() if kind is None or kind in m.kinds]
