"""Figures (matplotlib, Agg backend): diversity-vs-fidelity scatter, motion bars vs teacher, sample grids,
video strips and GIFs (written with PIL; imageio is not a dependency)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pdmd_eval.registry import MetricResult
    from pdmd_eval.samples import SampleSet


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(res: MetricResult) -> list[list[float]] | None:
    if np.isnan(res.low) or np.isnan(res.high):
        return None
    return [[res.mean - res.low], [res.high - res.mean]]


def diversity_fidelity_scatter(
    points: dict[str, tuple[MetricResult, MetricResult]], path: str | Path, title: str = ""
) -> Path:
    """One marker per arm: x = diversity metric, y = fidelity metric, with CI error bars."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for label, (div, fid) in points.items():
        ax.errorbar(div.mean, fid.mean, xerr=_err(div), yerr=_err(fid), fmt="o", capsize=3, label=label)
    first_div, first_fid = next(iter(points.values()))
    ax.set_xlabel(f"{first_div.name} {first_div.direction}")
    ax.set_ylabel(f"{first_fid.name} {first_fid.direction}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def motion_bars(results: dict[str, MetricResult], path: str | Path, teacher: str | None = None) -> Path:
    """Bars of a motion metric per arm with CI whiskers; the teacher's mean as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(results), 3.2))
    labels = list(results)
    means = [results[k].mean for k in labels]
    errs = np.array([_err(results[k]) or [[0.0], [0.0]] for k in labels])[:, :, 0].T
    ax.bar(labels, means, yerr=errs, capsize=4, color=["C1" if k == teacher else "C0" for k in labels])
    if teacher is not None:
        ax.axhline(results[teacher].mean, ls="--", c="k", lw=1, label=f"{teacher}")
        ax.legend(fontsize=8)
    first = results[labels[0]]
    ax.set_ylabel(f"{first.name} {first.direction}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _image(sample: np.ndarray) -> np.ndarray:
    """C×H×W (or T×C×H×W → middle frame) in [0, 1] → H×W×3 for imshow."""
    if sample.ndim == 4:
        sample = sample[len(sample) // 2]
    img = np.transpose(sample, (1, 2, 0))
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def sample_grid(
    arms: dict[str, SampleSet],
    path: str | Path,
    prompt_ids: Sequence[Hashable] | None = None,
    seeds: Sequence[int] | None = None,
) -> Path:
    """Rows = (prompt, arm), columns = seeds: the same prompts and seeds side by side for every arm.

    Defaults: the first 4 prompts and the first 6 seeds of the first arm. Missing (prompt, seed) cells are blank.
    Videos show their middle frame (use :func:`video_strip` for time).
    """
    plt = _plt()
    first = next(iter(arms.values()))
    if prompt_ids is None:
        prompt_ids = list(dict.fromkeys(r.prompt_id for r in first.records))[:4]
    seeds = list(seeds) if seeds is not None else sorted({r.seed for r in first.records})[:6]
    lookups: dict[str, dict[tuple, int]] = {n: {r.key: i for i, r in enumerate(s.records)} for n, s in arms.items()}
    nrows, ncols = len(prompt_ids) * len(arms), len(seeds)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols + 1.2, 1.3 * nrows), squeeze=False)
    for p, pid in enumerate(prompt_ids):
        for a, (name, sset) in enumerate(arms.items()):
            r = p * len(arms) + a
            for c, seed in enumerate(seeds):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                idx = lookups[name].get((pid, seed))
                if idx is not None:
                    ax.imshow(np.clip(_image(sset.samples[idx]), 0, 1), interpolation="nearest")
                if r == 0:
                    ax.set_title(f"seed {seed}", fontsize=7)
            axes[r, 0].set_ylabel(f"{name}\n{pid}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def video_strip(video: np.ndarray, path: str | Path, n_frames: int = 8) -> Path:
    """Evenly spaced frames of a ``T×C×H×W`` video in one row."""
    plt = _plt()
    idx = np.linspace(0, len(video) - 1, min(n_frames, len(video))).round().astype(int)
    fig, axes = plt.subplots(1, len(idx), figsize=(1.2 * len(idx), 1.4), squeeze=False)
    for ax, t in zip(axes[0], idx, strict=True):
        ax.imshow(np.clip(_image(video[t]), 0, 1), interpolation="nearest")
        ax.set_title(f"t={t}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _pil_frame(frame: np.ndarray, scale: int) -> Any:
    from PIL import Image

    img = (np.clip(_image(frame), 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(img)
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST) if scale > 1 else pil


def write_gif(video: np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    """``T×C×H×W`` video in [0, 1] → looping GIF (PIL)."""
    frames = [_pil_frame(f, scale) for f in video]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def write_png(image: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    _pil_frame(image, scale).save(path)
    return Path(path)


def write_previews(sample_set: SampleSet, folder: str | Path, scale: int = 1) -> Path:
    """``<prompt_id>_s<seed>.png`` per image or ``.gif`` per video."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for sample, rec in zip(sample_set.samples, sample_set.records, strict=True):
        stem = f"{rec.prompt_id}_s{rec.seed}"
        if sample_set.kind == "video":
            write_gif(sample, out / f"{stem}.gif", scale=scale)
        else:
            write_png(sample, out / f"{stem}.png", scale=scale)
    return out
