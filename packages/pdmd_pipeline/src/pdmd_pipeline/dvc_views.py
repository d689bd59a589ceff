"""What the tables stage declares to DVC beside its tables: a flat metrics file per benchmark (each arm's headline
metrics) and PNG plots (headline metrics with CIs, training curves), which `dvc metrics show/diff`,
`dvc plots show/diff` and `dvc exp show` compare across revisions and experiments.

The plots are rendered here as PNG images rather than as DVC data plots: `dvc plots show` then writes an HTML
page of plain <img> tags that renders offline (DVC's vega plots load vega from a CDN and stay blank without
internet), the figures are the same matplotlib figures the reports use, and per-arm colours and CI whiskers
need no custom vega templates. `dvc plots diff A B` shows each image of both revisions side by side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline import claims as C

HEADLINE_ROLES = ("diversity", "fidelity", "motion")
CURVE_METRICS = ("generator_loss", "fake_loss")


def headline_metrics(kind: str) -> list[str]:
    """The metrics the paper's claims are judged on for this kind of sample (diversity, fidelity, motion)."""
    return [m for m in (next(iter(C.metrics_for(role, kind)), None) for role in HEADLINE_ROLES) if m]


def metrics_record(results: dict[str, dict[str, Any]], arms: list[str], headline: list[str]) -> dict[str, Any]:
    """{arm: {metric: mean}} for the headline metrics (pooled over seeds as in the results table)."""
    return {arm: {m: round(float(results[arm][m].mean), 6) for m in headline if m in results[arm]}
            for arm in arms if any(m in results[arm] for m in headline)}


def write_metrics(record: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def read_curves(run_dirs: dict[str, list[Path]], metrics_file: str) -> dict[str, dict[str, np.ndarray]]:
    """arm → {"step": steps, metric: values per seed (seeds × steps)} from each run's metrics.jsonl; a resumed
    run logs recomputed steps twice with identical values, so the last record of a step wins."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm, dirs in run_dirs.items():
        per_seed: list[dict[int, dict[str, float]]] = []
        for folder in dirs:
            path = folder / metrics_file
            if not path.is_file():
                continue
            by_step: dict[int, dict[str, float]] = {}
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    by_step[int(rec["step"])] = rec
            per_seed.append(by_step)
        if not per_seed:
            continue
        steps = sorted(set.intersection(*(set(s) for s in per_seed)))
        curves: dict[str, np.ndarray] = {"step": np.array(steps)}
        for metric in CURVE_METRICS:
            if all(metric in s[step] for s in per_seed for step in steps):
                curves[metric] = np.array([[s[step][metric] for step in steps] for s in per_seed], dtype=float)
        out[arm] = curves
    return out


def arm_colors(arms: list[str]) -> dict[str, str]:
    """The same colour for an arm in every figure of a benchmark; teacher references grey."""
    students = [a for a in arms if not a.startswith("teacher_")]
    return {a: ("0.6" if a.startswith("teacher_") else f"C{students.index(a) % 10}") for a in arms}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_headline(results: dict[str, dict[str, Any]], arms: list[str], headline: list[str], path: Path,
                  title: str) -> Path:
    """One panel per headline metric: each arm's mean with its 95 % CI (teacher references in grey)."""
    plt = _plt()
    shown = [m for m in headline if any(m in results[a] for a in arms)]
    fig, axes = plt.subplots(1, len(shown), figsize=(0.6 + 0.55 * len(arms) * len(shown), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        names = [a for a in arms if metric in results[a]]
        res = [results[a][metric] for a in names]
        means = np.array([r.mean for r in res])
        lows = np.array([r.low if np.isfinite(r.low) else r.mean for r in res])
        highs = np.array([r.high if np.isfinite(r.high) else r.mean for r in res])
        colors = arm_colors(arms)
        ax.bar(range(len(names)), means, yerr=[means - lows, highs - means], capsize=3,
               color=[colors[a] for a in names])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{metric} {res[0].direction}", fontsize=9)
    return _save(plt, fig, path, title)


def plot_curves(curves: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> Path:
    """Training losses per arm against the generator iteration: mean over seeds, min-max band."""
    plt = _plt()
    metrics = [m for m in CURVE_METRICS if any(m in c for c in curves.values())]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.2), squeeze=False)
    colors = arm_colors(list(curves))
    for ax, metric in zip(axes[0], metrics, strict=False):
        for arm, c in curves.items():
            if metric not in c:
                continue
            values = c[metric]
            ax.plot(c["step"], values.mean(axis=0), color=colors[arm], label=arm, lw=1.2)
            ax.fill_between(c["step"], values.min(axis=0), values.max(axis=0), color=colors[arm], alpha=0.15)
        ax.set_xlabel("generator iteration")
        ax.set_title(metric, fontsize=9)
    axes[0][0].legend(fontsize=6)
    return _save(plt, fig, path, title)


def group_run_dirs(runs: list[dict[str, Any]], run_dir: Any) -> dict[str, list[Path]]:
    """arm → its seeds' run folders, in the sweep's order."""
    out: dict[str, list[Path]] = defaultdict(list)
    for run in runs:
        out[run["arm"]].append(run_dir(run["arm"], int(run["seed"])))
    return dict(out)


def _save(plt: Any, fig: Any, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
