"""Evaluation context: the sets being evaluated, the networks, and caches shared between metrics.

Pretrained networks are loaded lazily from local weights on first use (``load_*`` in
:mod:`pdmd_eval.backbones`); pass ready-built ones in ``models`` (keys ``lpips``, ``clip``, ``dino``,
``inception``, ``raft``) to override, e.g. random-weight networks in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pdmd_eval.features import FeatureNet, extract, extract_frames, video_motion_features
from pdmd_eval.samples import SampleSet

FD_EXTRACTORS = ("feature_net", "inception", "clip", "dino", "raw")


def _loaders() -> dict[str, Callable[[], Any]]:
    from pdmd_eval import backbones
    from pdmd_eval.functional.motion import RaftFlow
    from pdmd_eval.weights import require_file

    return {
        "lpips": backbones.load_lpips,
        "clip": backbones.load_clip,
        "dino": backbones.load_dino,
        "inception": backbones.load_inception,
        "raft": lambda: RaftFlow(str(require_file("RAFT (small)", "raft/raft_small.pth"))),
    }


@dataclass
class EvalContext:
    samples: SampleSet
    reference: SampleSet | None = None
    real: np.ndarray | None = None
    feature_net: FeatureNet | None = None
    models: dict[str, Any] = field(default_factory=dict)
    fd_extractor: str = "feature_net"
    knn_k: int = 3
    batch_size: int = 32
    confidence: float = 0.95
    progress: bool = True
    _cache: dict[tuple, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fd_extractor not in FD_EXTRACTORS:
            raise ValueError(f"fd_extractor={self.fd_extractor!r} must be one of {FD_EXTRACTORS}")

    def model(self, name: str) -> Any:
        if name not in self.models:
            self.models[name] = _loaders()[name]()
        return self.models[name]

    def require_reference(self, metric: str) -> SampleSet:
        if self.reference is None:
            raise ValueError(f"metric {metric} needs a reference (teacher) sample set: pass reference=/--reference")
        return self.reference

    def require_real(self, metric: str) -> np.ndarray:
        if self.real is None:
            raise ValueError(f"metric {metric} needs real data: pass real= (array in the sample layout)")
        return self.real

    def require_feature_net(self, metric: str) -> FeatureNet:
        if self.feature_net is None:
            raise ValueError(f"metric {metric} needs a feature net: pass feature_net=/--feature-net FILE.pt2")
        return self.feature_net

    def array(self, which: str) -> np.ndarray:
        if which == "samples":
            return self.samples.samples
        if which == "reference":
            return self.require_reference("(reference features)").samples
        return self.require_real("(real features)")

    def extractor(self, name: str) -> tuple[Any, bool]:
        """``(callable, takes_whole_videos)`` for an extractor name."""
        if name == "feature_net":
            net = self.require_feature_net(f"{name} features")
            return net, net.video
        return self.model(name), False

    def features(self, which: str, name: str) -> np.ndarray:
        """Cached ``N×D`` features of ``samples``/``reference``/``real`` with extractor ``name`` (or raw)."""
        key = ("features", which, name)
        if key not in self._cache:
            data = self.array(which)
            if name == "raw":
                self._cache[key] = data.reshape(len(data), -1).astype(np.float64)
            else:
                fn, whole = self.extractor(name)
                self._cache[key] = extract(fn, data, whole, self.batch_size, f"{name} {which}", self.progress)
        return self._cache[key]

    def video_features(self, which: str) -> np.ndarray:
        """FVD-like features: a video feature net's output, else per-frame ``fd_extractor`` features pooled by
        :func:`~pdmd_eval.features.video_motion_features`."""
        key = ("video_features", which, self.fd_extractor)
        if key not in self._cache:
            data = self.array(which)
            if data.ndim != 5:
                raise ValueError(f"FVD needs videos N×T×C×H×W, got shape {data.shape}")
            fn, whole = self.extractor(self.fd_extractor) if self.fd_extractor != "raw" else (None, False)
            if whole:
                self._cache[key] = self.features(which, self.fd_extractor)
            elif fn is None:
                n, t = data.shape[:2]
                self._cache[key] = video_motion_features(data.reshape(n, t, -1).astype(np.float64))
            else:
                frames = extract_frames(fn, data, self.batch_size, f"frames {which}", self.progress)
                self._cache[key] = video_motion_features(frames)
        return self._cache[key]

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]
