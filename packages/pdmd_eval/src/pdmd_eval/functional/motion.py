"""Motion: optical-flow magnitude per video, VBench-style dynamic degree, ratio to the teacher.

Videos here are ``T×H×W`` (grey) or ``T×H×W×C`` (C in 1, 3, 4), float in [0, 1] or uint8. Sample sets store
``T×C×H×W``; :func:`to_thwc` converts.

Farneback parameters (:data:`FARNEBACK_PARAMS`): OpenCV's classic setting, pyramid scale 0.5, 3 levels,
window 15, 3 iterations, polynomial neighbourhood 5 with sigma 1.2, no Gaussian window. Measured with
``python -m pdmd_eval.bench_flow`` on a blurred random texture panned by d px/frame: on 16×16 frames it reads
1.00 / 2.03 / 3.06 / 4.13 for d = 1..4, on 32×32 within 1 % for d = 1..4, on 64×64 and 128×128 within 0.5 %
for d = 1..6. Limitation: on frames of 32 px or less, d = 6 under-reads badly (3.4 at 16 px, 2.5 at 32 px;
the 3-level pyramid runs out of room), so keep per-frame motion below ~size/8 there. Identical frames read
~0.003 px. Smaller windows (9) under-read at d ≥ 3 on 16 px.
The mean runs over all pixels, so on sparse content (a digit on a black background) the static background
dilutes it below the object's speed; compare arms with each other or with the teacher, not with the speed.
Farneback frames are converted to 8-bit grey (luma weights of ``cv2.COLOR_RGB2GRAY``) before flow.

RAFT (:class:`RaftFlow`) runs on the RGB frames. VBench's exact dynamic-degree protocol (frame sampling to
≈ 8 fps, 20 RAFT iterations, top-5 % score, resolution-scaled threshold, count scaled by the sampled frames) is
in :func:`vbench_frame_indices`, :func:`vbench_dynamic_params`, :func:`top_fraction_mean` and
:func:`vbench_is_dynamic`, used by the ``dynamic_degree_vbench`` metric (:mod:`pdmd_eval.metrics.protocol`).

Dynamic degree of the CPU tier (``dynamic_degree``, Farneback; VBench-style, binary per video): a frame pair's
score is the mean of its top 5 % flow magnitudes; it counts as moving when the score exceeds
``6 px × min(H, W) / 256`` (VBench's threshold scaled to the resolution); the video is dynamic when at least a
quarter of its pairs move (VBench: 4 of 16). The set's rate is the mean of the per-video 0/1 values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

FARNEBACK_PARAMS: dict[str, Any] = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
)
TOP_FRACTION = 0.05
THRESHOLD_PX_AT_256 = 6.0
MOVING_PAIR_FRACTION = 0.25


def to_thwc(video_tchw: np.ndarray) -> np.ndarray:
    """``T×C×H×W`` (sample-set layout) → ``T×H×W×C``."""
    if video_tchw.ndim != 4:
        raise ValueError(f"expected a T×C×H×W video, got shape {video_tchw.shape}")
    return np.transpose(video_tchw, (0, 2, 3, 1))


def _frames_uint8(arr: np.ndarray) -> np.ndarray:
    """At least 2 frames (flow needs a pair); float values in [0, 1] quantised to uint8, uint8 kept."""
    if arr.shape[0] < 2:
        raise ValueError(f"video has {arr.shape[0]} frame(s); optical flow needs at least 2")
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"float video values must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
    return np.round(arr * 255.0).astype(np.uint8)


def _to_grey_uint8(video: np.ndarray) -> np.ndarray:
    import cv2

    arr = np.asarray(video)
    if arr.ndim == 4:
        channels = arr.shape[-1]
        if channels not in (1, 3, 4):
            raise ValueError(f"video of shape {arr.shape}: last axis must be channels (1, 3 or 4) for T×H×W×C")
    elif arr.ndim != 3:
        raise ValueError(f"video must be T×H×W or T×H×W×C, got shape {arr.shape}")
    arr = _frames_uint8(arr)
    if arr.ndim == 3:
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    code = cv2.COLOR_RGB2GRAY if arr.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), code) for f in arr])


def farneback_flows(video: np.ndarray) -> np.ndarray:
    """Dense Farneback flow between consecutive frames: ``(T-1)×H×W×2`` in pixels per frame."""
    import cv2

    grey = _to_grey_uint8(video)
    p = FARNEBACK_PARAMS
    args = (p["pyr_scale"], p["levels"], p["winsize"], p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
    out = np.zeros((*grey.shape[1:], 2), np.float32)  # output buffer; not read without OPTFLOW_USE_INITIAL_FLOW
    pairs = range(len(grey) - 1)
    return np.stack([cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], out.copy(), *args) for i in pairs])


def flow_magnitude_maps(flows: np.ndarray) -> np.ndarray:
    """Per-pixel magnitudes ``(T-1)×H×W`` of a ``(T-1)×H×W×2`` flow."""
    return np.linalg.norm(flows, axis=-1)


def mean_flow_magnitude(video: np.ndarray) -> float:
    """Mean per-pixel Farneback flow magnitude in pixels per frame (over all pixels and frame pairs)."""
    return float(flow_magnitude_maps(farneback_flows(video)).mean())


def is_dynamic(magnitudes: np.ndarray) -> bool:
    """VBench-style binary dynamic decision from ``(T-1)×H×W`` magnitude maps (see module docstring)."""
    pairs, h, w = magnitudes.shape
    flat = np.sort(magnitudes.reshape(pairs, -1), axis=1)
    top = max(1, int(round(TOP_FRACTION * h * w)))
    scores = flat[:, -top:].mean(axis=1)
    threshold = THRESHOLD_PX_AT_256 * min(h, w) / 256.0
    needed = max(1, int(round(MOVING_PAIR_FRACTION * pairs)))
    return int((scores > threshold).sum()) >= needed


def dynamic_degree(video: np.ndarray, flow_fn: Callable[[np.ndarray], np.ndarray] = farneback_flows) -> float:
    """1.0 if the video is dynamic, else 0.0 (average over videos for the VBench rate)."""
    return float(is_dynamic(flow_magnitude_maps(flow_fn(video))))


def _to_rgb_uint8(video: np.ndarray) -> np.ndarray:
    """``T×H×W`` / ``T×H×W×C`` (C in 1, 3, 4; uint8 or float in [0, 1]) → ``T×H×W×3`` uint8 RGB."""
    arr = np.asarray(video)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"video must be T×H×W or T×H×W×C with C in (1, 3, 4), got shape {np.shape(video)}")
    arr = _frames_uint8(arr)
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def consecutive_pairs(frames: int, stride: int = 1) -> list[tuple[int, int]]:
    """Frame pairs ``(i, i + stride)`` over a clip."""
    return [(i, i + stride) for i in range(0, frames - stride)]


def vbench_frame_indices(frames: int, fps: float) -> list[int]:
    """VBench dynamic degree's frame sampling: every ``max(1, round(fps / 8))``-th frame (≈ 8 fps)."""
    interval = max(1, round(fps / 8))
    return list(range(0, frames, interval))


def vbench_dynamic_params(height: int, width: int, sampled_frames: int) -> tuple[float, int]:
    """VBench's ``(threshold px, count)``: ``6 · min(H, W) / 256`` and ``round(4 · sampled_frames / 16)``
    (Python rounding, as VBench)."""
    return 6.0 * min(height, width) / 256.0, round(4 * (sampled_frames / 16.0))


def top_fraction_mean(magnitudes: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest ``int(fraction · n)`` values of one magnitude map (at least one value)."""
    flat = np.asarray(magnitudes, dtype=np.float64).reshape(-1)
    k = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def vbench_is_dynamic(pair_scores: np.ndarray, threshold: float, count: int) -> bool:
    """VBench's decision: at least ``count`` frame pairs whose top-5 % mean magnitude exceeds ``threshold``."""
    return int((np.asarray(pair_scores) > threshold).sum()) >= count


class RaftFlow:
    """RAFT optical flow (torchvision) on RGB frames, batched over frame pairs, on any device.

    ``weights_path`` is a torchvision RAFT state dict (``raft_small`` / ``raft_large``); resolve it with
    :func:`pdmd_eval.weights.require_file`. ``weights_path=None`` builds random weights: only for testing the
    mechanics, never for reported numbers. Frames keep their colour (grey is repeated to RGB) and go in as
    ``2·x/255 - 1``. Working resolution: the native one by default; ``max_side`` scales the longer side down to
    it (for speed); then the size is rounded up to a multiple of 8 and the short side raised to ``min_side``
    (≥ 128: torchvision's correlation pyramid needs 1/8-resolution maps of at least 16 px). Flows are reported in
    the input's pixel units (scaled back per axis).
    """

    MIN_SIDE = 128

    def __init__(self, weights_path: str | None, small: bool = True, iters: int = 12, min_side: int = 128,
                 max_side: int | None = None, pair_batch: int = 8, device: str = "cpu"):
        import torch
        from torchvision.models.optical_flow import raft_large, raft_small

        if min_side < self.MIN_SIDE:
            raise ValueError(f"min_side={min_side}: RAFT needs frames of at least {self.MIN_SIDE} px per side")
        self.model = (raft_small if small else raft_large)(weights=None)
        if weights_path is not None:
            self.model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.model.eval().to(device)
        self.iters, self.min_side, self.max_side, self.pair_batch = iters, min_side, max_side, pair_batch
        weights = "random" if weights_path is None else str(weights_path).rsplit("/", 1)[-1]
        self.name = f"raft_{'small' if small else 'large'}-{weights}"

    def to(self, device: str) -> RaftFlow:
        self.model.to(device)
        return self

    def working_size(self, h: int, w: int) -> tuple[int, int]:
        scale = 1.0
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        scale = max(scale, self.min_side / min(h, w))
        return int(np.ceil(h * scale / 8) * 8), int(np.ceil(w * scale / 8) * 8)

    def pair_flows(self, video: np.ndarray, pairs: list[tuple[int, int]] | None = None) -> Iterator[Any]:
        """Yield flow batches ``B×2×hh×ww`` (torch, on the model's device, in input pixel units at the working
        resolution) for ``pairs`` (default consecutive frames), ``pair_batch`` pairs at a time."""
        import torch
        import torch.nn.functional as F

        rgb = _to_rgb_uint8(video)
        t, h, w, _ = rgb.shape
        pairs = consecutive_pairs(t) if pairs is None else pairs
        hh, ww = self.working_size(h, w)
        device = next(self.model.parameters()).device
        frames = torch.from_numpy(np.ascontiguousarray(rgb))

        def load(idx: list[int]) -> Any:
            x = frames[idx].to(device).permute(0, 3, 1, 2).to(torch.float32)
            if (hh, ww) != (h, w):
                x = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False, antialias=hh < h)
            return (x / 255.0 * 2.0 - 1.0).contiguous()

        for start in range(0, len(pairs), self.pair_batch):
            chunk = pairs[start : start + self.pair_batch]
            with torch.no_grad():
                flow = self.model(load([a for a, _ in chunk]), load([b for _, b in chunk]),
                                  num_flow_updates=self.iters)[-1]
            flow[:, 0] *= w / ww
            flow[:, 1] *= h / hh
            yield flow

    def pair_stats(self, video: np.ndarray, pairs: list[tuple[int, int]] | None = None,
                   top_fraction: float = TOP_FRACTION) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: mean flow magnitude and mean of the top ``top_fraction`` magnitudes (VBench's score), in
        input pixels, reduced on the device (no full-resolution flow is kept)."""
        import torch

        means, tops = [], []
        for flow in self.pair_flows(video, pairs):
            mag = torch.linalg.vector_norm(flow, dim=1).flatten(1)
            k = max(1, int(mag.shape[1] * top_fraction))
            means.append(mag.mean(dim=1).double().cpu().numpy())
            tops.append(torch.topk(mag, k, dim=1).values.mean(dim=1).double().cpu().numpy())
        return np.concatenate(means), np.concatenate(tops)

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """Consecutive-pair flows ``(T-1)×H×W×2`` at the input resolution (numpy; memory ∝ the clip)."""
        import torch.nn.functional as F

        h, w = np.asarray(video).shape[1:3]
        outs = []
        for flow in self.pair_flows(video):
            if tuple(flow.shape[-2:]) != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            outs.append(flow.permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(outs)


def mean_flow_magnitude_with(video: np.ndarray, flow_fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean per-pixel flow magnitude with any flow function returning ``(T-1)×H×W×2``."""
    return float(flow_magnitude_maps(flow_fn(video)).mean())
