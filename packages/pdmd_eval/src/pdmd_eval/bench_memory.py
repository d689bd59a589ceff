"""Benchmark: peak memory and time of writing and evaluating media video sample sets.

    python -m pdmd_eval.bench_memory [--cases tiny,real] [--folder DIR] [--raft-iters 4] [--flow-max-side 256]

Cases: ``tiny`` = 20 clips of 17×60×104 (10 prompts × 2 seeds), ``real`` = 4 clips of 81×480×832 (Wan2.2 A14B's
main resolution; 2 prompts × 2 seeds). Content: a smooth random colour texture panned by 2 px/frame, uint8,
written with :class:`~pdmd_eval.writer.SampleSetWriter` (lossless H.264 RGB, 16 fps).

Each case runs two fresh subprocesses, so their peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is
their own: ``write`` (generate and encode clip by clip) and ``eval`` (``optical_flow_raft``,
``dynamic_degree_vbench``, ``dino_similarity``, ``temporal_flickering`` on the lazy reader). ``baseline`` is the
RSS of the eval process after imports and network construction, before reading samples. Networks have random
weights of the real architectures: RAFT-small (torchvision) with ``--raft-iters`` iterations on frames scaled
to ``--flow-max-side`` (CPU speed; the paper protocol uses RAFT-large, 20 iterations, native size on a GPU) and
DINOv3 ViT-S/16 at 224 px on every frame. For comparison the table lists what the old float32 array layout
would have to hold in memory for the same set.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {"tiny": (20, 17, 60, 104), "real": (4, 81, 480, 832)}
SPEED = 2  # px per frame


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def panned_clip(frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """``T×3×H×W`` uint8: a blurred random colour texture panned left by :data:`SPEED` px per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h, w + SPEED * frames, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), max(1.0, min(h, w) / 64))
    tex = np.round((blurred - blurred.min()) / (blurred.max() - blurred.min()) * 255).astype(np.uint8)
    tex = np.ascontiguousarray(tex.transpose(2, 0, 1))  # 3×H×W', uint8 before cropping: the clip is built in uint8
    return np.stack([tex[:, :, SPEED * t : SPEED * t + w] for t in range(frames)])


def write_case(case: str, folder: Path) -> dict:
    from pdmd_eval.samples import SampleRecord
    from pdmd_eval.writer import SampleSetWriter

    n, t, h, w = CASES[case]
    start = time.perf_counter()
    with SampleSetWriter(folder, "video", benchmark=f"bench-{case}", fps=16) as writer:
        for i in range(n):
            rec = SampleRecord("bench", i // 2, f"prompt {i // 2}", i % 2, 4, 4, "random")
            writer.append(rec, panned_clip(t, h, w, seed=i))
    size = sum(p.stat().st_size for p in (folder / "media").iterdir())
    return {"write_s": time.perf_counter() - start, "write_peak_rss_mb": _rss_mb(), "files_mb": size / 2**20}


def eval_case(folder: Path, raft_iters: int, flow_max_side: int | None) -> dict:
    import torch
    import transformers as tf

    from pdmd_eval.backbones import DinoEmbedder
    from pdmd_eval.evaluate import evaluate
    from pdmd_eval.functional.motion import RaftFlow
    from pdmd_eval.reader import open_sample_set

    torch.manual_seed(0)
    raft = RaftFlow(None, small=True, iters=raft_iters, max_side=flow_max_side)
    cfg = tf.DINOv3ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                             patch_size=16, image_size=224)
    dino = DinoEmbedder(tf.DINOv3ViTModel(cfg), image_size=224)
    reader = open_sample_set(folder)
    baseline = _current_rss_mb()
    start = time.perf_counter()
    res = evaluate(reader, metrics=["optical_flow_raft", "dynamic_degree_vbench", "dino_similarity",
                                    "temporal_flickering"],
                   models={"raft_large": raft, "dinov3": dino}, batch_size=16, device="auto", progress=True)
    return {"eval_s": time.perf_counter() - start, "eval_baseline_rss_mb": baseline, "eval_peak_rss_mb": _rss_mb(),
            "means": {k: round(v.mean, 4) for k, v in res.items()}}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "pdmd_eval.bench_memory", *args], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", default="tiny,real")
    parser.add_argument("--folder", type=Path, default=None, help="Where to write the sets (default: a temp dir).")
    parser.add_argument("--raft-iters", type=int, default=4)
    parser.add_argument("--flow-max-side", type=int, default=256)
    parser.add_argument("--stage", choices=["write", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "write":
        print(json.dumps(write_case(args.case, args.folder)))
        return
    if args.stage == "eval":
        print(json.dumps(eval_case(args.folder, args.raft_iters, args.flow_max_side or None)))
        return
    root = args.folder or Path(tempfile.mkdtemp(prefix="pdmd_bench_"))
    rows = []
    for case in args.cases.split(","):
        folder = root / case
        w = _child(["--stage", "write", "--case", case, "--folder", str(folder)])
        e = _child(["--stage", "eval", "--folder", str(folder), "--raft-iters", str(args.raft_iters),
                    "--flow-max-side", str(args.flow_max_side)])
        n, t, h, wd = CASES[case]
        rows.append({"case": case, "clips": f"{n}×{t}×{h}×{wd}", "float32_array_mb": n * t * 3 * h * wd * 4 / 2**20,
                     **w, **e})
    print(f"sets in {root}; RAFT-small {args.raft_iters} it, longer side ≤ {args.flow_max_side}; DINOv3 ViT-S/16")
    head = ("case", "clips", "files MB", "float32 MB", "write s", "write peak MB", "eval s", "eval base MB",
            "eval peak MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['case']} | {r['clips']} | {r['files_mb']:.0f} | {r['float32_array_mb']:.0f} | "
              f"{r['write_s']:.1f} | {r['write_peak_rss_mb']:.0f} | {r['eval_s']:.1f} | "
              f"{r['eval_baseline_rss_mb']:.0f} | {r['eval_peak_rss_mb']:.0f} |")
    for r in rows:
        print(f"{r['case']}: {r['means']}")


if __name__ == "__main__":
    main()
