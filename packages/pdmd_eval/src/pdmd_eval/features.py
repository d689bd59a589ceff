"""Feature extraction plumbing: batching with progress, video pooling, and ``.pt2`` feature nets.

An *extractor* is any callable mapping a float tensor batch in [0, 1] (``N×C×H×W`` or, for video nets,
``N×T×C×H×W``) to an ``N×D`` feature tensor. CPU-tier feature nets are ``torch.export`` programs whose forward
returns ``(features N×D, logits N×K)``; :class:`FeatureNet` wraps one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Extractor = Callable[[Any], Any]


class FeatureNet:
    """A loaded ``.pt2`` program (or any module) returning ``(features, logits)``.

    ``video=True`` means the net takes ``N×T×C×H×W`` batches (a video classifier); image nets applied to videos
    are run frame by frame by :func:`extract`.
    """

    def __init__(self, module: Any, name: str = "feature_net", video: bool = False):
        self.module, self.name, self.video = module, name, video

    def _forward(self, batch: Any) -> tuple[Any, Any]:
        import torch

        try:
            with torch.no_grad():
                out = self.module(batch)
        except (AssertionError, RuntimeError, ValueError) as err:
            # exported programs guard their static input dims; say which shape was refused
            raise ValueError(f"feature net {self.name} rejected input of shape {tuple(batch.shape)}: {err}") from err
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ValueError(f"{self.name}: forward must return (features, logits), got {type(out).__name__}")
        return out[0], out[1]

    def features(self, batch: Any) -> Any:
        return self._forward(batch)[0]

    def logits(self, batch: Any) -> Any:
        return self._forward(batch)[1]

    def __call__(self, batch: Any) -> Any:
        return self.features(batch)


def load_feature_net(path: str | Path, video: bool | None = None) -> FeatureNet:
    """Load a ``torch.export`` ``.pt2`` file. ``video=None`` infers it from the example input's rank (5 = video)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature net {p} does not exist (expected a torch.export .pt2 file)")
    program = torch.export.load(str(p))
    if video is None:
        specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == specs[0].arg.name)
        video = len(node.meta["val"].shape) == 5
    return FeatureNet(program.module(), name=p.stem, video=video)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def map_batches(
    fn: Callable[[Any], Any], samples: np.ndarray, batch_size: int = 32, desc: str = "features", progress: bool = True
) -> np.ndarray:
    """Apply ``fn`` to ``samples`` in batches (numpy in, numpy out) with a tqdm progress bar."""
    import torch
    from tqdm.auto import tqdm

    outs = []
    for sl in tqdm(_batches(len(samples), batch_size), desc=desc, disable=not progress, leave=False):
        with torch.no_grad():
            out = fn(torch.from_numpy(np.ascontiguousarray(samples[sl])))
        outs.append(out.detach().to(torch.float32).cpu().numpy())
    return np.concatenate(outs, axis=0)


def extract(
    extractor: Extractor,
    samples: np.ndarray,
    video_input: bool = False,
    batch_size: int = 32,
    desc: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Features ``N×D`` of images ``N×C×H×W`` or videos ``N×T×C×H×W``.

    Videos go to the extractor whole when ``video_input`` (a video net); otherwise frames are embedded one by
    one and mean-pooled over time (a documented, simple video descriptor for image extractors).
    """
    if samples.ndim == 5 and not video_input:
        n, t = samples.shape[:2]
        frames = samples.reshape(n * t, *samples.shape[2:])
        feats = map_batches(extractor, frames, batch_size, desc, progress)
        return feats.reshape(n, t, -1).mean(axis=1)
    if samples.ndim == 4 and video_input:
        raise ValueError(f"a video feature net needs N×T×C×H×W samples, got shape {samples.shape}")
    return map_batches(extractor, samples, batch_size, desc, progress)


def video_motion_features(frame_feats: np.ndarray) -> np.ndarray:
    """Default FVD-like descriptor from per-frame features ``N×T×D``: ``[mean_t f, mean_t |f_{t+1} - f_t|]``.

    Used when no video feature net is given: the first half captures appearance, the second temporal change,
    so a frozen video and a moving one with the same frames differ.
    """
    if frame_feats.ndim != 3 or frame_feats.shape[1] < 2:
        raise ValueError(f"need N×T×D frame features with T ≥ 2, got shape {frame_feats.shape}")
    change = np.abs(np.diff(frame_feats, axis=1)).mean(axis=1)
    return np.concatenate([frame_feats.mean(axis=1), change], axis=1)


def extract_frames(
    extractor: Extractor, videos: np.ndarray, batch_size: int = 32, desc: str = "frames", progress: bool = True
) -> np.ndarray:
    """Per-frame features ``N×T×D`` of videos ``N×T×C×H×W`` with an image extractor."""
    n, t = videos.shape[:2]
    feats = map_batches(extractor, videos.reshape(n * t, *videos.shape[2:]), batch_size, desc, progress)
    return feats.reshape(n, t, -1)
