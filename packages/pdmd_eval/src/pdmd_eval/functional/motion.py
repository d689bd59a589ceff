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
Frames are converted to 8-bit grey (luma weights of ``cv2.COLOR_RGB2GRAY``) before flow.

Dynamic degree (VBench-style, binary per video): a frame pair's score is the mean of its top 5 % flow
magnitudes; it counts as moving when the score exceeds ``6 px × min(H, W) / 256`` (VBench's threshold scaled to
the resolution); the video is dynamic when at least a quarter of its pairs move (VBench: 4 of 16). The set's
rate is the mean of the per-video 0/1 values.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _to_grey_uint8(video: np.ndarray) -> np.ndarray:
    import cv2

    arr = np.asarray(video)
    if arr.ndim == 4:
        channels = arr.shape[-1]
        if channels not in (1, 3, 4):
            raise ValueError(f"video of shape {arr.shape}: last axis must be channels (1, 3 or 4) for T×H×W×C")
    elif arr.ndim != 3:
        raise ValueError(f"video must be T×H×W or T×H×W×C, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"video has {arr.shape[0]} frame(s); optical flow needs at least 2")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(f"float video values must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = np.round(arr * 255.0).astype(np.uint8)
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


class RaftFlow:
    """RAFT optical flow from torchvision with local weights (no download).

    ``weights_path`` is a torchvision RAFT state dict (e.g. ``raft_small_C_T_V2-01064c6d.pth``); resolve it with
    :func:`pdmd_eval.weights.require_file`. ``weights_path=None`` builds random weights: only for testing the
    mechanics, never for reported numbers. Frames are resized to a multiple of 8 with a short side of at least
    ``min_side`` (≥ 128: torchvision's RAFT correlation pyramid needs 1/8-resolution maps of at least 16 px)
    and the flow is scaled back to the input's pixel units.
    """

    MIN_SIDE = 128

    def __init__(self, weights_path: str | None, small: bool = True, iters: int = 12, min_side: int = 128):
        import torch
        from torchvision.models.optical_flow import raft_large, raft_small

        if min_side < self.MIN_SIDE:
            raise ValueError(f"min_side={min_side}: RAFT needs frames of at least {self.MIN_SIDE} px per side")
        self.model = (raft_small if small else raft_large)(weights=None)
        if weights_path is not None:
            self.model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.model.eval()
        self.iters, self.min_side = iters, min_side

    def __call__(self, video: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        grey = _to_grey_uint8(video).astype(np.float32) / 255.0
        t, h, w = grey.shape
        scale = max(1.0, self.min_side / min(h, w))
        hh, ww = (int(np.ceil(h * scale / 8) * 8), int(np.ceil(w * scale / 8) * 8))
        frames = torch.from_numpy(grey)[:, None].expand(-1, 3, -1, -1)
        frames = F.interpolate(frames, size=(hh, ww), mode="bilinear", align_corners=False) * 2.0 - 1.0
        with torch.no_grad():
            flow = self.model(frames[:-1].contiguous(), frames[1:].contiguous(), num_flow_updates=self.iters)[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        flow[:, 0] *= w / ww
        flow[:, 1] *= h / hh
        return flow.permute(0, 2, 3, 1).numpy()


def mean_flow_magnitude_with(video: np.ndarray, flow_fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean per-pixel flow magnitude with any flow function returning ``(T-1)×H×W×2``."""
    return float(flow_magnitude_maps(flow_fn(video)).mean())
