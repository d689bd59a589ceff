"""Figures (matplotlib, Agg backend): diversity-vs-fidelity scatter, motion bars vs teacher, sample grids (one
screen: arms as columns, a few prompts as rows), metric-vs-budget curves, video strips and GIFs (written with PIL;
imageio is not a dependency)."""

from __future__ import annotations

import textwrap
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
    points: dict[str, tuple[MetricResult, MetricResult]], path: str | Path, title: str = "",
    xlabel: str | None = None, ylabel: str | None = None,
) -> Path:
    """One marker per arm: x = diversity metric, y = fidelity metric, with CI error bars (axis labels default to
    ``name direction``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    markers = "osD^v<>ph*X"
    for i, (label, (div, fid)) in enumerate(points.items()):
        ax.errorbar(div.mean, fid.mean, xerr=_err(div), yerr=_err(fid), fmt=markers[i % len(markers)], capsize=3,
                    label=label, color=f"C{i % 10}")
    first_div, first_fid = next(iter(points.values()))
    ax.set_xlabel(textwrap.fill(xlabel or f"{first_div.name} {first_div.direction}", 60), fontsize=9)
    ax.set_ylabel(textwrap.fill(ylabel or f"{first_fid.name} {first_fid.direction}", 40), fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def motion_bars(results: dict[str, MetricResult], path: str | Path, teacher: str | None = None,
                xlabel: str | None = None) -> Path:
    """Horizontal bars of a motion metric per arm (labels on the y axis, one line each, so they never overlap),
    CI whiskers, the teacher's mean as a dashed line."""
    plt = _plt()
    labels = list(results)
    fig, ax = plt.subplots(figsize=(5.5, 0.9 + 0.38 * len(labels)))
    means = [results[k].mean for k in labels]
    errs = np.array([_err(results[k]) or [[0.0], [0.0]] for k in labels])[:, :, 0].T
    y = np.arange(len(labels))
    ax.barh(y, means, xerr=errs, capsize=3, color=["C1" if k == teacher else "C0" for k in labels])
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # first arm on top
    if teacher is not None:
        ax.axvline(results[teacher].mean, ls="--", c="k", lw=1, label=f"{teacher}")
        ax.legend(fontsize=8, loc="lower right")
    first = results[labels[0]]
    ax.set_xlabel(xlabel or f"{first.name} {first.direction}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def convergence_curves(
    panels: dict[str, dict[str, dict[int, float]]],
    path: str | Path,
    references: dict[str, dict[str, float]] | None = None,
    default: int | None = None,
    title: str = "",
) -> Path:
    """Metric vs generator iterations: one panel per metric (``panels[title][arm] = {iterations: value}``), one
    line per arm, horizontal reference lines (``references[title][name] = value``, e.g. the teacher), a dotted
    vertical line at the ``default`` budget. Log-2 x axis with a tick at every budget."""
    plt = _plt()
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.5), squeeze=False)
    arms = list(dict.fromkeys(arm for curves in panels.values() for arm in curves))
    for ax, (name, curves) in zip(axes.flat, panels.items(), strict=False):
        budgets: set[int] = set()
        for arm, curve in curves.items():
            xs = sorted(curve)
            budgets.update(xs)
            ax.plot(xs, [curve[x] for x in xs], marker="o", ms=3, lw=1.2, label=arm, color=f"C{arms.index(arm) % 10}")
        for i, (ref, value) in enumerate((references or {}).get(name, {}).items()):
            ax.axhline(value, ls=("--", ":", "-.")[i % 3], c="k", lw=0.9, label=ref)
        if default is not None:
            ax.axvline(default, ls=":", c="grey", lw=1)
        ax.set_xscale("log", base=2)
        ticks = sorted(budgets)
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_title(textwrap.fill(name, 48), fontsize=8.5)
        ax.set_xlabel("generator iterations", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _image(sample: np.ndarray) -> np.ndarray:
    """C×H×W (or T×C×H×W → middle frame) in [0, 1] → H×W×3 for imshow."""
    if sample.ndim == 4:
        sample = sample[len(sample) // 2]
    img = np.transpose(sample, (1, 2, 0))
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def tile(samples: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """N×C×H×W (or N×T×C×H×W: middle frame) → one C×(rows·H)×(cols·W) image, row-major, 1-px white gaps."""
    if samples.ndim == 5:
        samples = samples[:, samples.shape[1] // 2]
    n, c, h, w = samples.shape
    out = np.ones((c, rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=samples.dtype)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        out[:, r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = samples[i]
    return out


def sample_grid(
    arms: dict[str, SampleSet],
    path: str | Path,
    prompt_ids: Sequence[Hashable] | None = None,
    seeds: Sequence[int] | None = None,
    prompt_labels: dict[Hashable, str] | None = None,
) -> Path:
    """One screen: columns = arms, rows = prompts, each cell the same sample seeds of that arm and prompt as a
    2-column mosaic (blank where a seed is missing). Videos show their middle frame (:func:`video_strip` for time).

    Defaults: the first 4 prompts and the first 4 seeds of the first arm.
    """
    plt = _plt()
    first = next(iter(arms.values()))
    if prompt_ids is None:
        prompt_ids = list(dict.fromkeys(r.prompt_id for r in first.records))[:4]
    seeds = list(seeds) if seeds is not None else sorted({r.seed for r in first.records})[:4]
    lookups: dict[str, dict[tuple, int]] = {n: {r.key: i for i, r in enumerate(s.records)} for n, s in arms.items()}
    mosaic_cols = min(2, len(seeds))
    mosaic_rows = -(-len(seeds) // mosaic_cols)
    nrows, ncols = len(prompt_ids), len(arms)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.05 * ncols + 0.9, 1.05 * nrows + 0.5), squeeze=False)
    for r, pid in enumerate(prompt_ids):
        for c, (name, sset) in enumerate(arms.items()):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            blank = np.ones_like(sset.samples[0])
            cells = [sset.samples[i] if (i := lookups[name].get((pid, seed))) is not None else blank for seed in seeds]
            image = tile(np.stack(cells), mosaic_rows, mosaic_cols)
            ax.imshow(np.clip(_image(image), 0, 1), interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=6.5)
            if c == 0:
                ax.set_ylabel(textwrap.fill((prompt_labels or {}).get(pid, str(pid)), 12), fontsize=6.5)
    fig.suptitle(f"sample seeds {', '.join(map(str, seeds))} (same noise in every column)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
