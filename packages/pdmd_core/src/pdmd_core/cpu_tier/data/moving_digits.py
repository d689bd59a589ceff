"""Short videos of one handwritten digit translating at a constant velocity (no bounces).

Each clip draws a speed from a two-component distribution (slow / fast, the fast part is what few-step
students tend to lose) and a uniform direction; the start is drawn so the whole path stays inside the frame.
Frames are rendered with bilinear splatting at sub-pixel positions, so each frame's intensity centroid moves by
exactly the clip's ground-truth velocity (kept per clip in `extras["velocity"]`, pixels per frame).
"""

from __future__ import annotations

import numpy as np
import torch

from pdmd_core.cpu_tier.data.base import LabelledData, Split, split_indices
from pdmd_core.cpu_tier.data.digits import load_digit_images

DIGIT_SIZE = 8


def moving_prompt(digit: int) -> str:
    return f"a handwritten {digit} moving"


def max_speed(size: int, frames: int) -> float:
    """The fastest axis-aligned speed whose whole path fits in the frame."""
    return (size - DIGIT_SIZE) / (frames - 1)


def sample_velocities(n: int, slow: tuple[float, float], fast: tuple[float, float], fast_fraction: float,
                      rng: np.random.Generator) -> np.ndarray:
    """(n, 2) velocities (vx, vy) in pixels/frame: speed from the slow/fast mixture, direction uniform."""
    is_fast = rng.random(n) < fast_fraction
    speed = np.where(is_fast, rng.uniform(*fast, n), rng.uniform(*slow, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)


def sample_starts(velocities: np.ndarray, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) top-left starts (x, y) such that every frame's digit lies inside [0, size)."""
    room = size - DIGIT_SIZE
    travel = velocities * (frames - 1)
    low = np.maximum(0.0, -travel)
    high = np.minimum(room, room - travel)
    return low + rng.random(velocities.shape) * (high - low)


def render_clip(digit: np.ndarray, start: np.ndarray, velocity: np.ndarray, size: int, frames: int) -> np.ndarray:
    """(frames, size, size) clip; digit (8, 8) in [0, 1] splatted bilinearly at start + k·velocity."""
    clip = np.zeros((frames, size + 1, size + 1), dtype=np.float32)
    for k in range(frames):
        x, y = start + k * velocity
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                clip[k, iy + dy:iy + dy + DIGIT_SIZE, ix + dx:ix + dx + DIGIT_SIZE] += wy * wx * digit
    # The extra row/column only ever receives zero weight (positions stay <= size - 8).
    return np.clip(clip[:, :size, :size], 0.0, 1.0)


def render_clips(digits: torch.Tensor, velocities: np.ndarray, starts: np.ndarray, size: int,
                 frames: int) -> torch.Tensor:
    """(n, frames, 1, size, size) clips in [0, 1]."""
    out = np.stack([render_clip(d[0].numpy(), s, v, size, frames)
                    for d, s, v in zip(digits, starts, velocities, strict=True)])
    return torch.from_numpy(out).unsqueeze(2)


def make_moving_digits(config, seed: int) -> LabelledData:  # type: ignore[no-untyped-def]
    limit = max_speed(config.size, config.frames)
    if max(config.slow_speed[1], config.fast_speed[1]) > limit + 1e-9:
        raise ValueError(f"moving_digits speeds up to {max(config.slow_speed[1], config.fast_speed[1])} px/frame "
                         f"do not fit a {config.size}px frame over {config.frames} frames; max is {limit:.3f}")
    images, labels = load_digit_images()
    # Clips of a split only use digits of the same split of the digits benchmark.
    digit_splits = split_indices(len(images), config.val_fraction, config.test_fraction, seed)
    rng = np.random.default_rng(seed)
    counts = (config.num_clips, round(config.num_clips * config.val_fraction),
              round(config.num_clips * config.test_fraction))
    splits = []
    for pool, n in zip(digit_splits, counts, strict=True):
        pick = pool[torch.from_numpy(rng.integers(len(pool), size=n))]
        velocities = sample_velocities(n, config.slow_speed, config.fast_speed, config.fast_fraction, rng)
        starts = sample_starts(velocities, config.size, config.frames, rng)
        clips = render_clips(images[pick], velocities, starts, config.size, config.frames)
        velocity = torch.from_numpy(velocities).float()
        splits.append(Split(clips * 2 - 1, labels[pick], {"velocity": velocity, "speed": velocity.norm(dim=1)}))
    meta = {"frames": config.frames, "size": config.size, "slow_speed": list(config.slow_speed),
            "fast_speed": list(config.fast_speed), "fast_fraction": config.fast_fraction}
    return LabelledData("moving_digits", "video", [moving_prompt(d) for d in range(10)], train=splits[0],
                        val=splits[1], test=splits[2], meta=meta)
