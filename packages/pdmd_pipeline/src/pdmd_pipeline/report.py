"""The tables stage (per benchmark: tables, figures, DVC metrics and plots, claim outcomes, MLflow artifacts and the
experiment's saved arms view) and the report stage (`reports/README.md`: every claim with its measured numbers,
CIs, paired test and verdict).

Aggregation for the tables: per arm, a metric's values are pooled over training seeds at the unit the paired
tests use — (seed, prompt) for per-prompt metrics and for per-sample metrics averaged within a prompt, one value
per seed for set-level metrics (Fréchet distances) — and shown as mean ± half-width of the 95 % bootstrap CI.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline import claims as C
from pdmd_pipeline.layout import RUN_METRICS_FILE, Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams

UnitKey = tuple[int, Hashable]


def read_units(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def unit_values(units: list[dict[str, Any]]) -> dict[str, dict[str, dict[UnitKey, float]]]:
    """metric → arm → {(seed, prompt or 'all'): value}; per-sample/pair values averaged within a prompt."""
    acc: dict[str, dict[str, dict[UnitKey, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for u in units:
        key = u["key"]
        prompt = key[0] if isinstance(key, list) else key
        acc[u["metric"]][u["arm"]][(int(u["seed"]), prompt)].append(float(u["value"]))
    return {m: {a: {k: float(np.mean(v)) for k, v in per.items()} for a, per in arms.items()}
            for m, arms in acc.items()}


def directions(units: list[dict[str, Any]]) -> dict[str, str]:
    return {u["metric"]: u["direction"] for u in units}


def arm_order(params: PipelineParams, benchmark: str, present: set[str]) -> list[str]:
    teachers = [f"{TEACHER_REFERENCE_PREFIX}{s}" for s in params.eval.teacher_steps]
    return [a for a in teachers + params.benchmark(benchmark).arms if a in present]


def metric_results(values: dict[str, dict[str, dict[UnitKey, float]]], dirs: dict[str, str],
                   arms: list[str], confidence: float) -> dict[str, dict[str, Any]]:
    """arm → metric → pdmd_eval MetricResult pooled over seeds."""
    from pdmd_eval.registry import MetricResult

    out: dict[str, dict[str, Any]] = {a: {} for a in arms}
    for metric, per_arm in values.items():
        for arm in arms:
            if arm not in per_arm:
                continue
            keys = sorted(per_arm[arm], key=str)
            vals = [per_arm[arm][k] for k in keys]
            res = MetricResult.from_values(metric, dirs[metric], "unit", list(keys), vals, confidence)
            out[arm][metric] = res
    return out


def paired(values: dict[str, dict[UnitKey, float]], a: str, b: str) -> tuple[list[float], list[float]]:
    """Values of a and b on shared (seed, prompt) units; a teacher reference (seed -1) pairs with every seed."""
    va, vb = values[a], values[b]

    def lookup(v: dict[UnitKey, float], key: UnitKey) -> float | None:
        if key in v:
            return v[key]
        return v.get((-1, key[1]))

    keys = sorted(set(va) | set(vb), key=str)
    xa, xb = [], []
    for key in keys:
        if key[0] < 0:
            continue
        ya, yb = lookup(va, key), lookup(vb, key)
        if ya is not None and yb is not None:
            xa.append(ya)
            xb.append(yb)
    return xa, xb


def evaluate_claims(values: dict[str, dict[str, dict[UnitKey, float]]], dirs: dict[str, str], kind: str,
                    confidence: float) -> list[dict[str, Any]]:
    rows = []
    for claim in C.CLAIMS:
        outcomes: list[dict[str, Any]] = []
        for comp in claim.comparisons:
            metric = C.metric_for(comp.role, kind)
            per_arm = values.get(metric or "", {})
            if metric is None or comp.a not in per_arm or comp.b not in per_arm:
                outcomes.append({"role": comp.role, "metric": metric, "a": comp.a, "b": comp.b,
                                 "relation": comp.relation, "verdict": C.NOT_RUN})
                continue
            xa, xb = paired(per_arm, comp.a, comp.b)
            if len(xa) < 2:
                outcomes.append({"role": comp.role, "metric": metric, "a": comp.a, "b": comp.b,
                                 "relation": comp.relation, "n": len(xa), "verdict": C.INCONCLUSIVE})
                continue
            outcomes.append(C.compare(claim.key, comp, metric, dirs[metric], xa, xb, confidence).as_dict())
        rows.append({"claim": claim.key, "title": claim.title, "paper": claim.paper,
                     "verdict": C.combine([o["verdict"] for o in outcomes]), "comparisons": outcomes})
    return rows


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


SYMBOL = {"better": ">", "equivalent": "≈", "not_worse": "≥"}


def comparison_line(o: dict[str, Any]) -> str:
    head = f"{o['a']} {SYMBOL[o['relation']]} {o['b']} on {o['metric']}"
    if "mean_a" not in o:
        return f"| {head} | – | – | – | – | {o['verdict']} |"
    return (f"| {head} | {_fmt(o['mean_a'])} vs {_fmt(o['mean_b'])} | {_fmt(o['diff'])} "
            f"[{_fmt(o['low'])}, {_fmt(o['high'])}] | ±{_fmt(o['margin'])} | {_fmt(o['p_value'])} (n={o['n']}) "
            f"| {o['verdict']} |")


COMPARISON_HEADER = ("| comparison | mean a vs b | oriented diff [95 % CI] | margin δ | Wilcoxon p | verdict |\n"
                     "|---|---|---|---|---|---|")


def claims_markdown(benchmark: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Claims on {benchmark}", "", "Oriented difference: > 0 means the left arm is better. Rules: "
             "reports/README.md.", ""]
    for row in rows:
        lines += [f"## {row['title']}: **{row['verdict']}**", "", f"Paper: {row['paper']}", ""]
        run = [o for o in row["comparisons"] if o["verdict"] != C.NOT_RUN]
        if run:
            lines += [COMPARISON_HEADER, *[comparison_line(o) for o in run], ""]
        skipped = [o for o in row["comparisons"] if o["verdict"] == C.NOT_RUN]
        if skipped:
            lines += ["Not run here: " + "; ".join(f"{o['a']} vs {o['b']} ({o['role']})" for o in skipped), ""]
    return "\n".join(lines)


def tile(samples: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """N×C×H×W (or N×T×C×H×W: middle frame) → one C×(rows·H)×(cols·W) image, row-major, 1-px gaps."""
    if samples.ndim == 5:
        samples = samples[:, samples.shape[1] // 2]
    n, c, h, w = samples.shape
    out = np.ones((c, rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=samples.dtype)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        out[:, r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = samples[i]
    return out


def run_sample_png(sset: Any, path: Path) -> Path:
    """One run's samples as a PNG: prompts × seeds tiles for images/videos, a scatter per prompt for points."""
    from pdmd_eval.samples import group_by_prompt

    groups = group_by_prompt(sset)
    if sset.kind == "points":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3.5, 3.5))
        for pid, idx in groups.items():
            ax.scatter(sset.samples[idx, 0], sset.samples[idx, 1], s=4, label=str(pid))
        ax.legend(fontsize=6, markerscale=2)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    from pdmd_eval.figures import write_png

    cols = max(len(v) for v in groups.values())
    order = [i for idx in groups.values() for i in idx + [-1] * (cols - len(idx))]
    blank = np.ones_like(sset.samples[:1])
    stacked = np.concatenate([sset.samples[i:i + 1] if i >= 0 else blank for i in order])
    return write_png(tile(stacked, len(groups), cols), path, scale=2)


def _log_run_artifacts(params: PipelineParams, benchmark: str, layout: Layout, results: dict[str, dict[str, Any]],
                       values: dict[str, dict[str, dict[UnitKey, float]]], dirs: dict[str, str]) -> None:
    """Per child run: its sample grid PNG (and a GIF for video), its table rows as CSV."""
    from pdmd_eval.figures import write_gif
    from pdmd_eval.registry import MetricResult
    from pdmd_eval.samples import load_sample_set
    from pdmd_eval.tables import Row, write_csv
    from pdmd_pipeline.stages.common import read_json
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    with tempfile.TemporaryDirectory() as tmp:
        for run in sweep["runs"]:
            arm, seed = run["arm"], int(run["seed"])
            folder = Path(tmp) / f"{arm}_seed{seed}"
            folder.mkdir()
            tracker = Tracker(uri, run["run_key"], default_spool_root(layout.root))
            sset = load_sample_set(layout.sample_set(benchmark, arm, seed))
            tracker.log_artifact(run_sample_png(sset, folder / "samples.png"), "samples")
            if sset.kind == "video":
                tracker.log_artifact(write_gif(sset.samples[0], folder / "sample.gif", scale=4), "samples")
            own = {}
            for metric, per_arm in values.items():
                mine = {k: v for k, v in per_arm.get(arm, {}).items() if k[0] == seed}
                if mine:
                    keys = sorted(mine, key=str)
                    own[metric] = MetricResult.from_values(metric, dirs[metric], "unit", keys,
                                                           [mine[k] for k in keys], params.eval.confidence)
            tracker.log_artifact(write_csv([Row(f"{arm}/seed{seed}", own)], folder / "table_rows.csv"), "tables")
            tracker.flush(force=True)


def run_facts(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    """What the report states about how the numbers were made: teacher quality, sweep size and time."""
    from pdmd_pipeline.stages.common import read_json

    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    teacher = read_json(layout.teacher_report(benchmark))
    return {"teacher_passed": teacher.get("passed"), "teacher_metrics": teacher.get("metrics", {}),
            "executor": sweep.get("executor"), "sweep_id": sweep.get("sweep_id"), "runs": len(sweep["runs"]),
            "distill_seconds": round(float(sweep.get("seconds", 0.0)), 1), "iterations": params.budget(benchmark),
            "arms": params.benchmark(benchmark).arms}


def stage_tables(params: PipelineParams, benchmark: str, layout: Layout) -> list[dict[str, Any]]:
    from pdmd_eval.figures import diversity_fidelity_scatter, motion_bars, sample_grid
    from pdmd_eval.samples import load_sample_set
    from pdmd_eval.tables import Row, write_tables
    from pdmd_pipeline import dvc_views
    from pdmd_pipeline.stages.common import read_json, reference_name

    info = read_json(layout.data(benchmark) / "info.json")
    kind = info["kind"]
    units = read_units(layout.eval(benchmark) / "units.jsonl")
    values, dirs = unit_values(units), directions(units)
    arms = arm_order(params, benchmark, {u["arm"] for u in units})
    results = metric_results(values, dirs, arms, params.eval.confidence)
    out = layout.report(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    figures = layout.figures(benchmark)
    figures.mkdir(parents=True, exist_ok=True)
    write_tables([Row(a, results[a]) for a in arms], out, "results",
                 caption=f"{benchmark}: mean ± 95% CI over (training seed, prompt) units; "
                         f"{len(params.seeds)} seeds per arm")
    div, fid, mot = C.metric_for("diversity", kind), C.metric_for("fidelity", kind), C.metric_for("motion", kind)
    if div and fid:
        pts = {a: (results[a][div], results[a][fid]) for a in arms if div in results[a] and fid in results[a]}
        if pts:
            diversity_fidelity_scatter(pts, figures / "diversity_vs_fidelity.png", title=benchmark)
    if mot:
        bars = {a: results[a][mot] for a in arms if mot in results[a]}
        if bars:
            motion_bars(bars, figures / "motion.png", teacher=reference_name(params))
    if kind != "points":
        first_seed = params.seeds[0]
        grid = {a: load_sample_set(layout.sample_set(benchmark, a, None if a.startswith(TEACHER_REFERENCE_PREFIX)
                                                     else first_seed)) for a in arms}
        sample_grid(grid, figures / "samples.png")
    headline = dvc_views.headline_metrics(kind)
    dvc_views.write_metrics(dvc_views.metrics_record(results, arms, headline), layout.metrics(benchmark))
    dvc_views.plot_headline(results, arms, headline, figures / "headline_metrics.png",
                            f"{benchmark}: mean and 95% CI over (seed, prompt) units")
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    run_dirs = dvc_views.group_run_dirs(sweep["runs"], lambda a, s: layout.run_dir(benchmark, a, s))
    curves = dvc_views.read_curves(run_dirs, RUN_METRICS_FILE)
    if curves:
        dvc_views.plot_curves(curves, figures / "training_curves.png",
                              f"{benchmark}: training losses (mean, min-max over seeds)")
    rows = evaluate_claims(values, dirs, kind, params.eval.confidence)
    (out / "claims.json").write_text(json.dumps(rows, indent=2))
    (out / "claims.md").write_text(claims_markdown(benchmark, rows))
    layout.claims(benchmark).parent.mkdir(parents=True, exist_ok=True)
    layout.claims(benchmark).write_text(json.dumps({"benchmark": benchmark, "kind": kind, "claims": rows,
                                                    "facts": run_facts(params, benchmark, layout)}, indent=2))
    _log_run_artifacts(params, benchmark, layout, results, values, dirs)
    _publish_arms_view(params, benchmark, layout, sweep, [f"eval/{m}" for m in headline],
                       {f"eval/{m}": d for m, d in dirs.items()})
    return rows


def _publish_arms_view(params: PipelineParams, benchmark: str, layout: Layout, sweep: dict[str, Any],
                       headline: list[str], directions: dict[str, str]) -> None:
    """The MLflow experiment's saved runs view for this sweep (arms grouped, headline metrics as columns and
    charts) and its description, through the sweep's spool like every other record."""
    from pdmd_pipeline.dvc_views import CURVE_METRICS
    from pdmd_pipeline.mlflow_views import arms_view_tags
    from pdmd_pipeline.stages.common import experiment_name
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    tracker = Tracker(resolve_tracking_uri(params.tracking_uri, layout.root), sweep["parent_key"],
                      default_spool_root(layout.root))
    tracker.set_experiment_tags(experiment_name(benchmark),
                                arms_view_tags(benchmark, sweep["sweep_id"], headline, list(CURVE_METRICS),
                                               directions))
    tracker.flush(force=True)


def _doc_section(start: str, end: str | None) -> str:
    """A paragraph of the claims module's docstring, which is where the rules are written down once."""
    text = (C.__doc__ or "").split(start, 1)[1]
    return " ".join((text.split(end, 1)[0] if end else text).split())


RULES = (C.__doc__ or "").split("Verdict rules (per sub-claim):", 1)[1].strip()
UNITS = _doc_section("Units and pairing.", "Statistic.")
STATISTIC = _doc_section("Statistic.", "Verdict rules")


def stage_report(params: PipelineParams, layout: Layout) -> str:
    """reports/README.md from every benchmark's claim outcomes."""
    per_bench = {}
    for b in params.benchmarks:
        path = layout.claims(b)
        if path.is_file():
            per_bench[b] = json.loads(path.read_text())
    benches = list(per_bench)
    lines = ["# Phased DMD claims, measured by `dvc repro`", "",
             "Generated by `pdmd stage report` from `runs/claims/*.json`; do not edit by hand. "
             f"Seeds per arm: {params.seeds}; generator iterations per run: "
             + ", ".join(f"{b} {params.budget(b)}" for b in benches)
             + f"; evaluation: every prompt × {params.eval.seeds_per_prompt} sample seeds, the same for every arm; "
             f"teacher reference: {max(params.eval.teacher_steps)}-step teacher.", "",
             "Scale: the CPU tier's small teachers, trained by this pipeline, and short distillation runs. A verdict "
             "says what happens at this scale, not at the paper's. The units of one training seed share one "
             "trained model, so the CIs cover prompt-to-prompt variation more than run-to-run variation; the "
             "per-benchmark tables also show set-level metrics with one value per seed.", "",
             "## Summary", "", "| claim | " + " | ".join(benches) + " |", "|---|" + "---|" * len(benches)]
    for claim in C.CLAIMS:
        cells = []
        for b in benches:
            row = next((r for r in per_bench[b]["claims"] if r["claim"] == claim.key), None)
            cells.append(row["verdict"] if row else C.NOT_RUN)
        lines.append(f"| {claim.title} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdict rules (fixed before any result was seen)", "", f"Units and pairing: {UNITS}", "",
              f"Statistic: {STATISTIC}", "", RULES, "",
              f"ALPHA = {C.ALPHA}, MARGIN = {C.MARGIN}, MIN_UNITS = {C.MIN_UNITS} (pdmd_pipeline.claims).", ""]
    for claim in C.CLAIMS:
        lines += [f"## {claim.title}", "", f"Paper: {claim.paper}", ""]
        for b in benches:
            row = next((r for r in per_bench[b]["claims"] if r["claim"] == claim.key), None)
            if row is None or row["verdict"] == C.NOT_RUN:
                continue
            lines += [f"**{b}** ({per_bench[b]['kind']}): **{row['verdict']}**", "", COMPARISON_HEADER]
            lines += [comparison_line(o) for o in row["comparisons"] if o["verdict"] != C.NOT_RUN]
            lines.append("")
    lines += ["## How the numbers were made", "", "| benchmark | teacher passed its bar | runs (arms × seeds) | "
              "executor | distill wall time | generator iterations per run |", "|---|---|---|---|---|---|"]
    for b in benches:
        f = per_bench[b].get("facts", {})
        lines.append(f"| {b} | {f.get('teacher_passed')} | {f.get('runs')} ({len(f.get('arms', []))} × "
                     f"{len(params.seeds)}) | {f.get('executor')} | {f.get('distill_seconds')} s | "
                     f"{f.get('iterations')} |")
    lines += ["", "## Per-benchmark tables", ""]
    lines += [f"- [{b}]({b}/results.md): tables (md/csv/tex), figures, [claims]({b}/claims.md)" for b in benches]
    text = "\n".join(lines) + "\n"
    layout.readme().parent.mkdir(parents=True, exist_ok=True)
    layout.readme().write_text(text)
    return text
