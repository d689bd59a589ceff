"""Evaluation context: the sets being evaluated, the networks, and caches shared between metrics.

Pretrained networks are loaded lazily from local weights on first use (``load_*`` in
:mod:`pdmd_eval.backbones` and :mod:`pdmd_eval.standard`) and moved to ``device``; pass ready-built ones in
``models`` (keys of :data:`pdmd_eval.registry.PRETRAINED`) to override, e.g. random-weight networks in tests.

``samples`` / ``reference`` are in-memory :class:`~pdmd_eval.samples.SampleSet` s or lazy
:class:`~pdmd_eval.reader.SampleReader` s. The CPU-tier metrics read ``.samples`` (the whole float32 array);
the paper-protocol metrics (:mod:`pdmd_eval.metrics.protocol`) stream one sample or batch at a time through
:meth:`EvalContext.per_sample`, whose results go to ``cache`` (:class:`~pdmd_eval.cache.FeatureCache`): with a
folder there, a killed evaluation resumes without recomputing finished samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pdmd_eval.cache import FeatureCache, sample_key
from pdmd_eval.features import FeatureNet, extract, extract_frames, video_motion_features
from pdmd_eval.media import DEFAULT_FPS
from pdmd_eval.reader import SampleReader, fingerprint_of
from pdmd_eval.samples import SampleSet

FD_EXTRACTORS = ("feature_net", "inception", "clip", "dino", "raw")
DINOV3_DEFAULT = "facebook/dinov3-vitb16-pretrain-lvd1689m"


@dataclass(frozen=True)
class ProtocolOptions:
    """Settings of the paper-protocol metrics (:mod:`pdmd_eval.metrics.protocol`); defaults are stated there.

    ``raft_iters``: RAFT refinement iterations (VBench: 20). ``flow_max_side``: longer side of the frames RAFT
    sees (None = native resolution). ``pair_batch``: frame pairs per RAFT batch. ``fid_frames``: frames per
    video for FID, evenly spaced (None = all). ``fvd_frames``: frames per clip for I3D, evenly spaced.
    ``dinov3_model``: Hugging Face id of the DINOv3 backbone.
    """

    raft_iters: int = 20
    flow_max_side: int | None = None
    pair_batch: int = 8
    fid_frames: int | None = 16
    fvd_frames: int | None = 16
    dinov3_model: str = DINOV3_DEFAULT


def _loaders(protocol: ProtocolOptions | None = None) -> dict[str, Callable[[], Any]]:
    from pdmd_eval import backbones, standard
    from pdmd_eval.functional.motion import RaftFlow
    from pdmd_eval.weights import require_file

    protocol = protocol or ProtocolOptions()

    def raft_large() -> RaftFlow:
        path = require_file("RAFT (large; torchvision Raft_Large_Weights.C_T_V2)", "raft/raft_large.pth")
        return RaftFlow(str(path), small=False, iters=protocol.raft_iters, max_side=protocol.flow_max_side,
                        pair_batch=protocol.pair_batch)

    return {
        "lpips": backbones.load_lpips,
        "clip": backbones.load_clip,
        "dino": backbones.load_dino,
        "inception": backbones.load_inception,
        "raft": lambda: RaftFlow(str(require_file("RAFT (small)", "raft/raft_small.pth"))),
        "raft_large": raft_large,
        "dinov3": lambda: backbones.load_dino(protocol.dinov3_model),
        "fid_inception": standard.load_fid_inception,
        "i3d": lambda: standard.load_i3d(protocol.fvd_frames),
    }


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EvalContext:
    samples: SampleSet | SampleReader
    reference: SampleSet | SampleReader | None = None
    real: np.ndarray | None = None
    feature_net: FeatureNet | None = None
    models: dict[str, Any] = field(default_factory=dict)
    fd_extractor: str = "feature_net"
    knn_k: int = 3
    batch_size: int = 32
    confidence: float = 0.95
    progress: bool = True
    device: str = "cpu"
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    protocol: ProtocolOptions = field(default_factory=ProtocolOptions)
    _cache: dict[tuple, Any] = field(default_factory=dict)
    _on_device: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.fd_extractor not in FD_EXTRACTORS:
            raise ValueError(f"fd_extractor={self.fd_extractor!r} must be one of {FD_EXTRACTORS}")
        self.device = resolve_device(self.device)

    def model(self, name: str) -> Any:
        """The network ``name`` (loaded on first use), on :attr:`device`."""
        if name not in self.models:
            self.models[name] = _loaders(self.protocol)[name]()
        model = self.models[name]
        if name not in self._on_device and hasattr(model, "to"):
            moved = model.to(self.device)
            if moved is not None:  # torch modules and our wrappers return themselves
                self.models[name] = model = moved
            self._on_device.add(name)
        return model

    def sample_set(self, which: str) -> SampleSet | SampleReader:
        """``samples`` or the ``reference`` set."""
        if which == "samples":
            return self.samples
        if which == "reference":
            return self.require_reference("(reference samples)")
        raise ValueError(f"which={which!r} must be 'samples' or 'reference'")

    def fps(self, which: str) -> float:
        """Frame rate of a video set: the reader's ``fps`` (meta.json), else ``extras['fps']``, else 16."""
        s = self.sample_set(which)
        return float(getattr(s, "fps", None) or s.extras.get("fps", DEFAULT_FPS))

    def per_sample(
        self, which: str, what: str, fn: Callable[[SampleSet | SampleReader, list[int]], list[np.ndarray]],
        chunk: int = 1,
    ) -> list[np.ndarray]:
        """One array per sample of ``which``, in manifest order: ``fn(set, indices)`` computes ``chunk`` samples
        at a time; results are cached under ``what`` (name it after the computation and its settings)."""
        s = self.sample_set(which)
        fp = self.cached(("fingerprint", which), lambda: fingerprint_of(s))
        keys = [sample_key(r.key) for r in s.records]
        return self.cache.compute(fp, what, keys, lambda positions: fn(s, positions), chunk, self.progress)

    def require_reference(self, metric: str) -> SampleSet | SampleReader:
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
