"""The Phased DMD paper's evaluation protocol as registered metrics, streamed sample by sample (bounded memory,
batched on CUDA when present, resumable through :meth:`EvalContext.per_sample`'s cache).

Table 2 (video; one clip per prompt at seed 42; fidelity against the base model's 40-step outputs as reference):

- ``optical_flow_raft`` ↑ (sample): mean optical-flow magnitude ``|(u, v)|`` in pixels per frame, averaged over
  all pixels and all consecutive frame pairs at the native frame rate. RAFT-large (torchvision,
  ``Raft_Large_Weights.C_T_V2``, trained on FlyingChairs + FlyingThings like VBench's ``raft-things``) on RGB
  frames, 20 iterations, native resolution unless ``ProtocolOptions.flow_max_side`` is set (flow is then
  reported in native pixels). The paper uses UniMatch; RAFT is our substitute, so absolute values differ from
  the paper's, orderings between arms are what to compare.
- ``dynamic_degree_vbench`` ↑ (sample, 0/1; the mean is the rate in [0, 1], the paper prints it in %): VBench's
  definition. Frames are sampled every ``max(1, round(fps / 8))`` frames (16 fps Wan clips → every 2nd frame, 41
  of 81); RAFT flow (20 iterations) between consecutive sampled frames; a pair's score is the mean of its top
  5 % flow magnitudes (``int(0.05·H·W)`` pixels); the threshold is ``6 · min(H, W) / 256`` px (11.25 px at
  480×832) and the clip is dynamic when at least ``round(4 · n_sampled / 16)`` pairs exceed it (10 for 41
  sampled frames). ``extras`` records the thresholds used.
- ``fid_teacher`` ↓ (set): FID with torch-fidelity's Inception (:mod:`pdmd_eval.standard`) between the
  samples' frames and the reference's frames; videos contribute ``ProtocolOptions.fid_frames`` evenly spaced
  frames each (default 16), images themselves. The reference scores 0.
- ``fvd_i3d_teacher`` ↓ (set): FVD with cd-fvd's Kinetics-400 I3D logits, 16 evenly spaced frames per clip.

Table 3 (images; 21 prompts × 8 seeds; within a prompt across seeds, then the mean over prompts):

- ``dino_similarity`` ↓ (prompt): mean pairwise cosine similarity of DINOv3 CLS embeddings (default
  ``facebook/dinov3-vitb16-pretrain-lvd1689m``, images resized to 224×224).
- ``lpips_distance`` ↑ (prompt): mean pairwise LPIPS (AlexNet) distance at native resolution.
- ``clip_similarity`` ↓ (prompt): mean pairwise cosine similarity of CLIP image embeddings (open_clip ViT-B-32,
  LAION-2B).

For videos the image embeddings are the mean over all frames, LPIPS the mean over aligned frames.

Also ``temporal_flickering`` ↑ (sample, VBench's weight-free formula ``(255 - mean |frame_{t+1} - frame_t|) /
255`` over consecutive frames, uint8 pixels). VBench scores it only on clips its static filter keeps and on its
own prompts, so values are not comparable with the paper's Table 4. The other Table 4/5 dimensions (aesthetic,
background / subject consistency, motion smoothness) need VBench's own models and the ``vbench`` package, whose
pins (numpy < 2, transformers 4.33) cannot be installed beside this environment: not provided.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from pdmd_eval.context import EvalContext
from pdmd_eval.functional.diversity import mean_pairwise_cosine
from pdmd_eval.functional.fidelity import frechet_distance
from pdmd_eval.functional.motion import (
    consecutive_pairs,
    to_thwc,
    vbench_dynamic_params,
    vbench_frame_indices,
    vbench_is_dynamic,
)
from pdmd_eval.reader import read_sample, sample_shape
from pdmd_eval.registry import DOWN, UP, MetricResult, metric
from pdmd_eval.samples import group_by_prompt
from pdmd_eval.standard import clip_indices

VISUAL = ("image", "video")


def _keys(s: Any) -> list[Hashable]:
    return [r.key for r in s.records]


def _net_name(model: Any) -> str:
    return str(getattr(model, "name", type(model).__name__))


def _stack_groups(arrays: Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Positions and stacked arrays of equal shape (mixed-resolution sets are batched per shape)."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return [(idx, np.stack([arrays[i] for i in idx])) for idx in groups.values()]


def _map_images(fn: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """``fn`` over images ``C×H×W`` batched per shape; rows in input order."""
    out: list[Any] = [None] * len(images)
    for idx, batch in _stack_groups(images):
        feats = np.asarray(fn(batch), dtype=np.float64)
        for row, i in enumerate(idx):
            out[i] = feats[row]
    return np.stack(out)


def _frame_features(fn: Any, video: np.ndarray, batch_size: int, frames: Sequence[int] | np.ndarray | None = None
                    ) -> np.ndarray:
    """``fn`` over the frames (``T×C×H×W``) of one clip, ``batch_size`` frames at a time."""
    idx = list(range(len(video))) if frames is None else list(frames)
    rows = [np.asarray(fn(video[idx[s : s + batch_size]]), dtype=np.float64) for s in range(0, len(idx), batch_size)]
    return np.concatenate(rows)


# ------------------------------------------------------------------------------------------------ motion
def _raft_pair_stats(ctx: EvalContext, which: str, mode: str) -> list[np.ndarray]:
    """Per video ``2×P``: row 0 the pairs' mean flow magnitudes, row 1 their top-5 % means (input pixels)."""
    raft = ctx.model("raft_large")
    fps = ctx.fps(which)
    what = f"raft_{mode}-{_net_name(raft)}-it{raft.iters}-max{raft.max_side}"

    def fn(s: Any, positions: list[int]) -> list[np.ndarray]:
        out = []
        for p in positions:
            video = to_thwc(read_sample(s, p))
            if mode == "consecutive":
                pairs = consecutive_pairs(len(video))
            else:
                idx = vbench_frame_indices(len(video), fps)
                pairs = list(zip(idx[:-1], idx[1:], strict=True))
            if not pairs:
                raise ValueError(f"{s.records[p].key}: a clip of {len(video)} frame(s) has no frame pair for flow")
            means, tops = raft.pair_stats(video, pairs)
            out.append(np.stack([means, tops]))
        return out

    return ctx.per_sample(which, what, fn)


def _require_video(ctx: EvalContext, name: str) -> None:
    if ctx.samples.kind != "video":
        raise ValueError(f"{name} needs a video sample set, got kind={ctx.samples.kind!r}")


@metric("optical_flow_raft", UP, "sample", ("video",), ("raft_large",))
def optical_flow_raft(ctx: EvalContext) -> MetricResult:
    """Mean RAFT (RGB) optical-flow magnitude per clip, px/frame over consecutive frames (Table 2 "OF")."""
    _require_video(ctx, "optical_flow_raft")
    stats = _raft_pair_stats(ctx, "samples", "consecutive")
    values = [float(s[0].mean()) for s in stats]
    res = MetricResult.from_values("optical_flow_raft", UP, "sample", _keys(ctx.samples), values, ctx.confidence)
    res.extras.update(flow=_net_name(ctx.model("raft_large")), pairs="consecutive",
                      flow_max_side=ctx.model("raft_large").max_side)
    return res


@metric("dynamic_degree_vbench", UP, "sample", ("video",), ("raft_large",))
def dynamic_degree_vbench(ctx: EvalContext) -> MetricResult:
    """VBench dynamic degree (RAFT, ≈8 fps sampling, top-5 % score, scaled thresholds): rate of dynamic clips."""
    _require_video(ctx, "dynamic_degree_vbench")
    s = ctx.samples
    stats = _raft_pair_stats(ctx, "samples", "vbench")
    fps = ctx.fps("samples")
    values, thresholds, counts = [], set(), set()
    for i, st in enumerate(stats):
        t, _, h, w = sample_shape(s, i)
        threshold, count = vbench_dynamic_params(h, w, len(vbench_frame_indices(t, fps)))
        thresholds.add(round(threshold, 4))
        counts.add(count)
        values.append(float(vbench_is_dynamic(st[1], threshold, count)))
    res = MetricResult.from_values("dynamic_degree_vbench", UP, "sample", _keys(s), values, ctx.confidence)
    res.extras.update(threshold_px=sorted(thresholds), min_moving_pairs=sorted(counts), fps=fps,
                      frame_interval=max(1, round(fps / 8)))
    return res


@metric("temporal_flickering", UP, "sample", ("video",))
def temporal_flickering(ctx: EvalContext) -> MetricResult:
    """VBench temporal-flickering formula (255 - mean abs frame difference) / 255 per clip (↑ = less flicker)."""
    _require_video(ctx, "temporal_flickering")

    def fn(s: Any, positions: list[int]) -> list[np.ndarray]:
        out = []
        for p in positions:
            video = read_sample(s, p)
            u8 = video if video.dtype == np.uint8 else np.round(video * 255.0).astype(np.uint8)
            diffs = [np.abs(u8[t + 1].astype(np.float32) - u8[t].astype(np.float32)).mean()
                     for t in range(len(u8) - 1)]
            out.append(np.asarray([(255.0 - float(np.mean(diffs))) / 255.0]))
        return out

    values = [float(v[0]) for v in ctx.per_sample("samples", "temporal_flickering", fn)]
    return MetricResult.from_values("temporal_flickering", UP, "sample", _keys(ctx.samples), values, ctx.confidence)


# ------------------------------------------------------------------------------------------------ fidelity
def _fid_features(ctx: EvalContext, which: str) -> np.ndarray:
    net = ctx.model("fid_inception")
    frames = ctx.protocol.fid_frames
    kind = ctx.sample_set(which).kind

    def fn(s: Any, positions: list[int]) -> list[np.ndarray]:
        if kind == "image":
            feats = _map_images(net, [read_sample(s, p) for p in positions])
            return [feats[i : i + 1] for i in range(len(positions))]
        out = []
        for p in positions:
            video = read_sample(s, p)
            out.append(_frame_features(net, video, ctx.batch_size, clip_indices(len(video), frames)))
        return out

    chunk = ctx.batch_size if kind == "image" else 1
    rows = ctx.per_sample(which, f"fid-{_net_name(net)}-frames{frames}", fn, chunk)
    return np.concatenate(rows)


@metric("fid_teacher", DOWN, "set", VISUAL, ("reference", "fid_inception"))
def fid_teacher(ctx: EvalContext) -> MetricResult:
    """FID (torch-fidelity Inception, 2048-d pool3) to the reference set's images / frames (Table 2 "FID")."""
    ctx.require_reference("fid_teacher")
    a, b = _fid_features(ctx, "samples"), _fid_features(ctx, "reference")
    return MetricResult.scalar("fid_teacher", DOWN, frechet_distance(a, b), features=_net_name(
        ctx.model("fid_inception")), frames_per_video=ctx.protocol.fid_frames, n_samples=len(a), n_reference=len(b))


def _i3d_features(ctx: EvalContext, which: str) -> np.ndarray:
    net = ctx.model("i3d")

    def fn(s: Any, positions: list[int]) -> list[np.ndarray]:
        return [np.asarray(net(read_sample(s, p)[None]), dtype=np.float64)[0] for p in positions]

    return np.stack(ctx.per_sample(which, f"i3d-{_net_name(net)}-frames{getattr(net, 'frames', None)}", fn))


@metric("fvd_i3d_teacher", DOWN, "set", ("video",), ("reference", "i3d"))
def fvd_i3d_teacher(ctx: EvalContext) -> MetricResult:
    """FVD (cd-fvd's Kinetics-400 I3D logits, 16 evenly spaced frames) to the reference clips (Table 2 "FVD")."""
    _require_video(ctx, "fvd_i3d_teacher")
    ctx.require_reference("fvd_i3d_teacher")
    a, b = _i3d_features(ctx, "samples"), _i3d_features(ctx, "reference")
    net = ctx.model("i3d")
    return MetricResult.scalar("fvd_i3d_teacher", DOWN, frechet_distance(a, b), features=_net_name(net),
                               frames_per_clip=getattr(net, "frames", None), n_samples=len(a), n_reference=len(b))


# ------------------------------------------------------------------------------------------------ diversity
def _embeddings(ctx: EvalContext, model_name: str) -> np.ndarray:
    net = ctx.model(model_name)
    kind = ctx.samples.kind

    def fn(s: Any, positions: list[int]) -> list[np.ndarray]:
        if kind == "image":
            return list(_map_images(net, [read_sample(s, p) for p in positions]))
        return [_frame_features(net, read_sample(s, p), ctx.batch_size).mean(axis=0) for p in positions]

    chunk = ctx.batch_size if kind == "image" else 1
    return np.stack(ctx.per_sample("samples", f"embed-{model_name}-{_net_name(net)}", fn, chunk))


def _usable_groups(ctx: EvalContext, name: str) -> tuple[dict[Hashable, list[int]], int]:
    groups = group_by_prompt(ctx.samples)
    usable = {pid: idx for pid, idx in groups.items() if len(idx) >= 2}
    if not usable:
        raise ValueError(f"{name}: every prompt has a single seed; within-prompt diversity needs ≥ 2 seeds")
    return usable, len(groups) - len(usable)


def _similarity(ctx: EvalContext, name: str, model_name: str) -> MetricResult:
    feats = _embeddings(ctx, model_name)
    groups, skipped = _usable_groups(ctx, name)
    values = [mean_pairwise_cosine(feats[idx]) for idx in groups.values()]
    res = MetricResult.from_values(name, DOWN, "prompt", list(groups), values, ctx.confidence)
    res.extras.update(prompts_skipped_single_seed=skipped, backbone=_net_name(ctx.model(model_name)))
    return res


@metric("dino_similarity", DOWN, "prompt", VISUAL, ("dinov3",))
def dino_similarity(ctx: EvalContext) -> MetricResult:
    """Mean pairwise DINOv3 CLS cosine similarity between a prompt's seeds (Table 3 "DINOv3", ↓ = diverse)."""
    return _similarity(ctx, "dino_similarity", "dinov3")


@metric("clip_similarity", DOWN, "prompt", VISUAL, ("clip",))
def clip_similarity(ctx: EvalContext) -> MetricResult:
    """Mean pairwise CLIP image-embedding cosine similarity between a prompt's seeds (↓ = more diverse)."""
    return _similarity(ctx, "clip_similarity", "clip")


def _pair_lpips(lp: Any, a: np.ndarray, b: np.ndarray, batch_size: int) -> float:
    """LPIPS of two images, or the mean over aligned frames of two clips (``batch_size`` frames at a time)."""
    if a.shape != b.shape:
        raise ValueError(f"LPIPS needs equal shapes within a prompt, got {a.shape} and {b.shape}")
    if a.ndim == 3:
        return float(np.asarray(lp(a[None], b[None])).reshape(-1)[0])
    vals = [np.asarray(lp(a[s : s + batch_size], b[s : s + batch_size])).reshape(-1)
            for s in range(0, len(a), batch_size)]
    return float(np.concatenate(vals).mean())


@metric("lpips_distance", UP, "prompt", VISUAL, ("lpips",))
def lpips_distance(ctx: EvalContext) -> MetricResult:
    """Mean pairwise LPIPS distance between a prompt's seeds (Table 3 "LPIPS", ↑ = more diverse)."""
    from pdmd_eval.reader import fingerprint_of

    lp = ctx.model("lpips")
    s = ctx.samples
    groups, skipped = _usable_groups(ctx, "lpips_distance")
    pids = list(groups)
    image = s.kind == "image"

    def fn(positions: list[int]) -> list[np.ndarray]:
        out = []
        for p in positions:
            items = [read_sample(s, i) for i in groups[pids[p]]]  # one prompt's seeds (uint8 from media)
            pairs = list(combinations(range(len(items)), 2))
            if image and len({x.shape for x in items}) == 1:
                stack = np.stack(items)
                ia, ib = (np.asarray(v) for v in zip(*pairs, strict=True))
                d = np.concatenate([np.asarray(lp(stack[ia[k : k + ctx.batch_size]], stack[ib[k : k + ctx.batch_size]]))
                                    .reshape(-1) for k in range(0, len(ia), ctx.batch_size)])
                out.append(np.asarray([d.mean()]))
            else:
                out.append(np.asarray([np.mean([_pair_lpips(lp, items[i], items[j], ctx.batch_size)
                                                for i, j in pairs])]))
        return out

    fp = ctx.cached(("fingerprint", "samples"), lambda: fingerprint_of(s))
    keys = [f"prompt={pid}" for pid in pids]
    values = ctx.cache.compute(fp, f"lpips_pairs-{_net_name(lp)}", keys, fn, 1, ctx.progress)
    res = MetricResult.from_values("lpips_distance", UP, "prompt", pids, [float(v[0]) for v in values],
                                   ctx.confidence)
    res.extras.update(prompts_skipped_single_seed=skipped)
    return res
