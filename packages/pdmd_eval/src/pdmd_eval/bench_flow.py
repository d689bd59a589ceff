"""Benchmark: how well the Farneback setting reads a known translation, and how fast.

    python -m pdmd_eval.bench_flow [--frames 8]

Prints, per frame size and true speed d (px/frame), the measured mean flow magnitude of a blurred random
texture panned by d px/frame, its relative error, and the time per frame pair. These are the figures behind
the accuracy statement in :mod:`pdmd_eval.functional.motion`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pdmd_eval.functional.motion import mean_flow_magnitude


def panned_texture(d: int, frames: int, size: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((3 * size, 3 * size + d * frames)).astype(np.float32), (0, 0), 1.5)
    big = (big - big.min()) / (big.max() - big.min())
    return np.stack([big[size : 2 * size, size + d * t : 2 * size + d * t] for t in range(frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    print(f"{'size':>5} {'d':>3} {'measured':>9} {'rel.err':>8} {'ms/pair':>8}")
    for size in (16, 32, 64, 128):
        for d in (0, 1, 2, 3, 4, 6):
            video = panned_texture(d, args.frames, size)
            start = time.perf_counter()
            value = mean_flow_magnitude(video)
            ms = 1000 * (time.perf_counter() - start) / (args.frames - 1)
            err = abs(value - d) / d if d else float("nan")
            print(f"{size:>5} {d:>3} {value:>9.3f} {err:>8.3f} {ms:>8.2f}")


if __name__ == "__main__":
    main()
