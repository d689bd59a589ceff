"""The tables stage (per benchmark: tables, figures, DVC metrics and plots, claim outcomes, budget stability,
MLflow artifacts and the experiment's saved arms view) and the report stage (`reports/README.md`: every claim with
its measured numbers, CIs, paired test and verdict, what changed since the previous verdicts, budget stability, the
Fig. 2 toy).

Aggregation for the tables: per arm and metric, the values of one training seed are averaged (per-sample metrics
within a prompt first, then over prompts; a set-level metric has one value per seed) and the table shows the mean
of the seed means ± the half-width of the 95 % t interval over seeds (`pdmd_eval.stats.clustered_ci`), the same
interval the claims use. Teacher references were trained once: their rows show the value without an interval.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline import claims as C
from pdmd_pipeline import convergence_summary
from pdmd_pipeline.claims import evaluate_claims, paired_by_seed  # noqa: F401  (the report's API, defined there)
from pdmd_pipeline.layout import RUN_METRICS_FILE, Layout
from pdmd_pipeline.params import TEACHER_REFERENCE_PREFIX, PipelineParams
from pdmd_pipeline.units import axis_label, directions, read_units, unit_values

UnitKey = C.UnitKey


def arm_order(params: PipelineParams, benchmark: str, present: set[str]) -> list[str]:
    teachers = [f"{TEACHER_REFERENCE_PREFIX}{s}" for s in params.eval.teacher_steps]
    return [a for a in teachers + params.benchmark(benchmark).arms if a in present]


def metric_results(values: dict[str, dict[str, dict[UnitKey, float]]], dirs: dict[str, str],
                   arms: list[str], confidence: float) -> dict[str, dict[str, Any]]:
    """arm → metric → pdmd_eval MetricResult over training seeds: values = per-seed means (keys = seeds), mean ±
    the clustered t interval; a teacher reference (seed −1) gets its mean and no interval."""
    from pdmd_eval.registry import MetricResult
    from pdmd_eval.stats import clustered_ci

    out: dict[str, dict[str, Any]] = {a: {} for a in arms}
    for metric, per_arm in values.items():
        for arm in arms:
            if arm not in per_arm:
                continue
            by_seed: dict[int, list[float]] = defaultdict(list)
            for (seed, _), value in sorted(per_arm[arm].items(), key=str):
                by_seed[seed].append(value)
            seeds = sorted(by_seed)
            if seeds == [-1]:
                mean, low, high = float(np.mean(by_seed[-1])), float("nan"), float("nan")
            else:
                mean, low, high = clustered_ci([by_seed[s] for s in seeds], confidence)
            seed_means = np.asarray([np.mean(by_seed[s]) for s in seeds])
            out[arm][metric] = MetricResult(metric, dirs[metric], "seed", list(seeds), seed_means, mean, low, high)
    return out


def metric_legend(names: list[str]) -> list[str]:
    """One line per metric: its registry description (or the pipeline's own for the per-prompt FD)."""
    from pdmd_eval.registry import get_metric

    lines = []
    for name in names:
        try:
            metric = get_metric(name)
            lines.append(f"- `{name}` {metric.direction}: {' '.join(metric.description.split())}")
        except KeyError:
            if name == "fd_teacher_prompt":
                lines.append(f"- `{name}` ↓: Fréchet distance to the teacher's samples within each prompt (same "
                             "features as fd_teacher), averaged over prompts.")
    return lines


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


SYMBOL = {"better": ">", "equivalent": "≈", "not_worse": "≥"}


def comparison_lines(o: dict[str, Any]) -> list[str]:
    """One table row per outcome, plus a row for the artefact check of a diversity win."""
    head = f"{o['a']} {SYMBOL[o['relation']]} {o['b']} on {o['metric']}"
    if "mean_a" not in o:
        seeds = f" ({o['n']} seeds)" if "n" in o else ""
        return [f"| {head} | – | – | – | –{seeds} | {o['verdict']} |"]
    lines = [f"| {head} | {_fmt(o['mean_a'])} vs {_fmt(o['mean_b'])} | {_fmt(o['diff'])} "
             f"[{_fmt(o['low'])}, {_fmt(o['high'])}] | ±{_fmt(o['margin'])} | {_fmt(o['p_value'])} "
             f"({o['n']} seeds) | {o['verdict']} |"]
    check = o.get("precision_check")
    if check:
        flag = "loss > δ: flagged" if check["flagged"] else "no loss > δ"
        lines.append(f"| ↳ artefact check: {o['a']} vs {o['b']} on {check['metric']} | {_fmt(check['mean_a'])} vs "
                     f"{_fmt(check['mean_b'])} | {_fmt(check['diff'])} [{_fmt(check['low'])}, {_fmt(check['high'])}] "
                     f"| ±{_fmt(check['margin'])} | {_fmt(check['p_value'])} ({check['n']} seeds) | {flag} |")
    return lines


COMPARISON_HEADER = ("| comparison | mean a vs b | oriented diff [95 % CI, seeds] | margin δ | t-test p (seeds) | "
                     "verdict |\n|---|---|---|---|---|---|")


def claims_markdown(benchmark: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Claims on {benchmark}", "", "Oriented difference: > 0 means the left arm is better. Rules: "
             "reports/README.md.", ""]
    for row in rows:
        lines += [f"## {row['title']}: **{row['verdict']}**", "", f"Paper: {row['paper']}", ""]
        run = [o for o in row["comparisons"] if o["verdict"] != C.NOT_RUN]
        if run:
            lines += [COMPARISON_HEADER, *[line for o in run for line in comparison_lines(o)], ""]
        skipped = [o for o in row["comparisons"] if o["verdict"] == C.NOT_RUN]
        if skipped:
            lines += ["Not run here: " + "; ".join(f"{o['a']} vs {o['b']} ({o['role']})" for o in skipped), ""]
    return "\n".join(lines)


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
    from pdmd_eval.figures import tile, write_png

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
    """What the report states about how the numbers were made: teacher quality, sweep size and time, seeds."""
    from pdmd_pipeline.stages.common import read_json

    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    teacher = read_json(layout.teacher_report(benchmark))
    seeds: dict[str, list[int]] = defaultdict(list)
    for run in sweep["runs"]:
        seeds[run["arm"]].append(int(run["seed"]))
    facts = {"teacher_passed": teacher.get("passed"), "teacher_metrics": teacher.get("metrics", {}),
             "executor": sweep.get("executor"), "sweep_id": sweep.get("sweep_id"), "runs": len(sweep["runs"]),
             "distill_seconds": round(float(sweep.get("seconds", 0.0)), 1), "iterations": params.budget(benchmark),
             "arms": params.benchmark(benchmark).arms, "seeds": {a: sorted(v) for a, v in seeds.items()}}
    conv = layout.convergence(benchmark) / "convergence.json"
    if conv.is_file():
        meta = json.loads(conv.read_text())
        facts["convergence"] = {"runs": len(meta["runs"]), "train_seconds": meta.get("train_seconds"),
                                "budgets": meta["budgets"], "seed": meta["seed"]}
    return facts


def seeds_caption(facts: dict[str, Any]) -> str:
    """'seeds 0–4: dmd, sgts; seeds 0–2: phased_k4_naive' from {arm: seeds}."""
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for arm, seeds in facts.get("seeds", {}).items():
        groups[tuple(seeds)].append(arm)

    def span(seeds: tuple[int, ...]) -> str:
        return f"{seeds[0]}–{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2 \
            else ", ".join(map(str, seeds))

    return "; ".join(f"{len(s)} seeds ({span(s)}): {', '.join(arms)}" for s, arms in
                     sorted(groups.items(), key=lambda kv: -len(kv[0])))


def _figures(params: PipelineParams, benchmark: str, layout: Layout, kind: str, arms: list[str],
             results: dict[str, dict[str, Any]], facts: dict[str, Any]) -> None:
    from pdmd_eval.figures import diversity_fidelity_scatter, motion_bars, sample_grid
    from pdmd_eval.samples import load_sample_set
    from pdmd_pipeline.stages.common import read_json, reference_name

    out = layout.figures(benchmark)
    first = lambda role: next(iter(C.metrics_for(role, kind)), None)  # noqa: E731
    div, fid, mot, prec = first("diversity"), first("fidelity"), first("motion"), first("precision")
    for other, stem in ((fid, "diversity_vs_fidelity"), (prec, "diversity_vs_precision")):
        if not (div and other):
            continue
        pts = {a: (results[a][div], results[a][other]) for a in arms if div in results[a] and other in results[a]}
        if pts:
            d, o = next(iter(pts.values()))
            diversity_fidelity_scatter(pts, out / f"{stem}.png", title=f"{benchmark} (95 % t intervals over seeds)",
                                       xlabel=axis_label(div, d.direction, kind),
                                       ylabel=axis_label(other, o.direction, kind))
    if mot:
        bars = {a: results[a][mot] for a in arms if mot in results[a]}
        if bars:
            first_bar = next(iter(bars.values()))
            motion_bars(bars, out / "motion.png", teacher=reference_name(params),
                        xlabel=axis_label(mot, first_bar.direction, kind))
    if kind != "points":
        info = read_json(layout.data(benchmark) / "info.json")
        grid = {a: load_sample_set(layout.sample_set(benchmark, a, None if a.startswith(TEACHER_REFERENCE_PREFIX)
                                                     else facts["seeds"][a][0])) for a in arms}
        sample_grid(grid, out / "samples.png", prompt_labels=dict(enumerate(info["prompts"])))


def stage_tables(params: PipelineParams, benchmark: str, layout: Layout) -> list[dict[str, Any]]:
    from pdmd_eval.tables import Row, write_tables
    from pdmd_pipeline import dvc_views
    from pdmd_pipeline.stages.common import read_json

    info = read_json(layout.data(benchmark) / "info.json")
    kind = info["kind"]
    units = read_units(layout.eval(benchmark) / "units.jsonl")
    values, dirs = unit_values(units), directions(units)
    arms = arm_order(params, benchmark, {u["arm"] for u in units})
    results = metric_results(values, dirs, arms, params.eval.confidence)
    facts = run_facts(params, benchmark, layout)
    out = layout.report(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    caption = (f"{benchmark}: mean of the training seeds' means ± half-width of the 95 % t interval over seeds "
               f"(teacher rows: one teacher, no interval); {seeds_caption(facts)}")
    table_rows = [Row(a, results[a]) for a in arms]
    write_tables(table_rows, out, "results", caption=caption)
    from pdmd_eval.tables import metric_columns

    md = out / "results.md"
    md.write_text(md.read_text() + "\n" + caption + "\n\n" + "\n".join(metric_legend(metric_columns(table_rows)))
                  + "\n")
    figures = layout.figures(benchmark)  # beside, not inside, reports/<b>/: DVC plots may not nest in an output
    figures.mkdir(parents=True, exist_ok=True)
    _figures(params, benchmark, layout, kind, arms, results, facts)
    headline = dvc_views.headline_metrics(kind)
    dvc_views.write_metrics(dvc_views.metrics_record(results, arms, headline), layout.metrics(benchmark))
    dvc_views.plot_headline(results, arms, headline, figures / "headline_metrics.png",
                            f"{benchmark}: mean and 95 % t interval over training seeds")
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    run_dirs = dvc_views.group_run_dirs(sweep["runs"], lambda a, s: layout.run_dir(benchmark, a, s))
    curves = dvc_views.read_curves(run_dirs, RUN_METRICS_FILE)
    if curves:
        dvc_views.plot_curves(curves, figures / "training_curves.png",
                              f"{benchmark}: training losses (mean, min-max over seeds)")
    rows = evaluate_claims(values, dirs, kind, params.eval.confidence)
    budget = convergence_summary.summarize(params, benchmark, layout, kind, rows)
    if budget is not None:
        convergence_summary.draw(budget, kind, layout.figures(benchmark) / "convergence.png", title=benchmark)
    (out / "claims.json").write_text(json.dumps(rows, indent=2))
    (out / "claims.md").write_text(claims_markdown(benchmark, rows))
    layout.claims(benchmark).parent.mkdir(parents=True, exist_ok=True)
    layout.claims(benchmark).write_text(json.dumps({"benchmark": benchmark, "kind": kind, "claims": rows,
                                                    "facts": facts, "convergence": budget}, indent=2))
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


RULES = (C.__doc__ or "").split("Verdict rules (per sub-claim):", 1)[1].split("Budget stability.", 1)[0].strip()
UNITS = _doc_section("Units and pairing.", "Statistic.")
STATISTIC = _doc_section("Statistic.", "Verdict rules")
BUDGETS = _doc_section("Budget stability.", None)


BEFORE_FILE = "verdicts_before.json"


def _seeds_line(params: PipelineParams) -> str:
    extra = params.extra_seeds
    line = f"training seeds {params.seeds} for every arm"
    if extra.seeds and extra.arms:
        line += f", plus {extra.seeds} for {', '.join(extra.arms)}"
    return line


def _summary_table(per_bench: dict[str, Any], benches: list[str], changed: dict[tuple[str, str], str]) -> list[str]:
    lines = ["| claim | " + " | ".join(benches) + " |", "|---|" + "---|" * len(benches)]
    for claim in C.CLAIMS:
        cells = []
        for b in benches:
            row = next((r for r in per_bench[b]["claims"] if r["claim"] == claim.key), None)
            verdict = row["verdict"] if row else C.NOT_RUN
            was = changed.get((b, claim.key))
            cells.append(verdict if not was else f"{verdict} (new)" if was == "new" else f"{verdict} (was {was})")
        title = f"↳ {claim.title}" if claim.checks else claim.title
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _changes_section(before: dict[str, Any] | None, per_bench: dict[str, Any]) -> list[str]:
    from pdmd_pipeline.changes import verdict_changes

    if before is None:
        return ["No previous verdicts to compare with (reports/verdicts_before.json is missing).", ""]
    changes = verdict_changes(before, {b: d["claims"] for b, d in per_bench.items()})
    lines = [f"Compared with {BEFORE_FILE}: {before.get('description', '')}", ""]
    if not changes:
        return lines + ["No claim changed its verdict.", ""]
    for ch in changes:
        head = f"- **{ch['benchmark']}** · {ch['title']}: "
        head += f"{ch['before']} → **{ch['after']}**" if ch["before"] else f"new, **{ch['after']}**"
        lines.append(head)
        lines += [f"  - {r}" for r in ch["reasons"]]
    return lines + [""]


def _budget_section(benchmark: str, budget: dict[str, Any] | None) -> list[str]:
    if not budget:
        return [f"**{benchmark}**: no convergence stage ran.", ""]
    default, budgets = budget["default_budget"], budget["budgets"]
    plateau = budget["plateau"]
    worst = [(c, arm, metric) for metric, v in plateau["metrics"].items() for arm, c in v["changes"].items()
             if isinstance(c, float) and not np.isnan(c)]
    stable = [r for r in budget["rows"] if all(d == r["directions"].get(str(default)) for b, d in
                                                r["directions"].items() if int(b) >= default)]
    sentence = (f"**{benchmark}**: the default budget ({default} generator iterations) "
                f"{'sits' if plateau['on_plateau'] else 'does not sit'} on a plateau")
    if worst:
        frac, arm, metric = max(worst)
        size = (f"{frac:.0%} of the range between arms" if np.isfinite(frac) else
                "a change although the arms do not differ at the default budget (range 0)")
        sentence += (f": the largest change above it is {arm}'s {metric}, {size} "
                     f"(plateau: ≤ {C.PLATEAU_FRACTION:.0%} for every arm and metric)")
    sentence += (f"; {len(stable)} of {len(budget['rows'])} claim directions at the default budget are the same at "
                 f"every larger budget (one training seed, seed {budget['seed']}). "
                 f"[convergence.png](figures/{benchmark}/convergence.png)")
    head = ("| claim | comparison | " + " | ".join(f"{b} ({b / default:g}×)" for b in budgets)
            + " | verdict at default (all seeds) |")
    lines = [sentence, "", head, "|---|---|" + "---|" * (len(budgets) + 1)]
    for r in budget["rows"]:
        cells = [r["directions"].get(str(b), "–") for b in budgets]
        lines.append(f"| {r['claim']} | {r['a']} {SYMBOL[r['relation']]} {r['b']} on {r['metric']} | "
                     + " | ".join(cells) + f" | {r['verdict_at_default']} |")
    return lines + [""]


def _toy_section(layout: Layout) -> list[str]:
    path = layout.toy1d() / "subinterval.json"
    if not path.is_file():
        return ["The toy1d stage has not run.", ""]
    t = json.loads(path.read_text())
    return [f"Three small models trained from scratch on the 1-D atoms {{−1, 0, 1, 2}} and integrated from t = 1 to "
            f"t = s = {t['s']} ({t['euler_steps']} Euler steps, {t['w1_samples']} samples); W1 = Wasserstein-1 "
            "distance of the endpoints to the true x_s marginal (one run each, no interval).", "",
            "| objective | W1 to the true x_s | velocity field MAE vs the analytic field |", "|---|---|---|",
            f"| standard loss on (0, 1] | {_fmt(t['w1_standard_to_true_x_s'])} | – |",
            f"| Eq. 13 subinterval target on (s, 1] | {_fmt(t['w1_eq13_to_true_x_s'])} | {_fmt(t['field_mae_eq13'])} |",
            f"| naive target ε − x_s on (s, 1] | {_fmt(t['w1_naive_to_true_x_s'])} | {_fmt(t['field_mae_naive'])} |",
            "", "Figure: [toy1d/subinterval.png](toy1d/subinterval.png).", ""]


def stage_report(params: PipelineParams, layout: Layout) -> str:
    """reports/README.md from every benchmark's claim outcomes, the previous verdicts and the toy."""
    from pdmd_pipeline.changes import load_before

    per_bench = {}
    for b in params.benchmarks:
        path = layout.claims(b)
        if path.is_file():
            per_bench[b] = json.loads(path.read_text())
    benches = list(per_bench)
    before = load_before(layout.root / "reports" / BEFORE_FILE)
    changed = {}
    if before is not None:
        from pdmd_pipeline.changes import verdict_changes

        changed = {(c["benchmark"], c["claim"]): c["before"] or "new"
                   for c in verdict_changes(before, {b: d["claims"] for b, d in per_bench.items()})}
    lines = ["# Phased DMD claims, measured by `dvc repro`", "",
             "Generated by `pdmd stage report` from `runs/claims/*.json`; do not edit by hand. "
             f"{_seeds_line(params).capitalize()}; generator iterations per run: "
             + ", ".join(f"{b} {params.budget(b)}" for b in benches)
             + f"; evaluation: every prompt × {params.eval.seeds_per_prompt} sample seeds, the same for every arm; "
             f"teacher reference: {max(params.eval.teacher_steps)}-step teacher.", "",
             "Scale: the CPU tier's small teachers, trained by this pipeline, and short distillation runs. A verdict "
             "says what happens at this scale, not at the paper's. The unit of replication is the training seed: "
             "every interval and test below is computed from per-seed means (95 % t interval over seeds), so it "
             "describes run-to-run variation; the prompts of one seed only sharpen that seed's mean. The budget "
             "section says whether the verdicts describe the methods or the training budget.", "",
             "## Summary", "", "Rows marked ↳ are the coverage checks of the diversity claim above them. "
             "“(was …)”: the verdict under the previous rules (see “What changed”).", ""]
    lines += _summary_table(per_bench, benches, changed)
    lines += ["", "## What changed since the previous verdicts", ""] + _changes_section(before, per_bench)
    lines += ["## Verdict rules (fixed before any result was seen)", "", f"Units and pairing: {UNITS}", "",
              f"Statistic: {STATISTIC}", "", RULES, "",
              f"Budget stability: {BUDGETS}", "",
              f"ALPHA = {C.ALPHA}, MARGIN = {C.MARGIN}, MIN_SEEDS = {C.MIN_SEEDS}, PLATEAU_FRACTION = "
              f"{C.PLATEAU_FRACTION} (pdmd_pipeline.claims).", ""]
    for claim in C.CLAIMS:
        lines += [f"## {claim.title}", "", f"Paper: {claim.paper}", ""]
        for b in benches:
            row = next((r for r in per_bench[b]["claims"] if r["claim"] == claim.key), None)
            if row is None or row["verdict"] == C.NOT_RUN:
                continue
            lines += [f"**{b}** ({per_bench[b]['kind']}): **{row['verdict']}**", "", COMPARISON_HEADER]
            lines += [line for o in row["comparisons"] if o["verdict"] != C.NOT_RUN for line in comparison_lines(o)]
            lines.append("")
    lines += ["## Budget stability: do the verdicts describe the methods or the budget?", "",
              "Direction of each claim's oriented difference at each budget (`a`: the left arm better by more than "
              "δ, `b`: the right arm, `≈`: within ±δ), one training seed, beside the verdict at the default budget "
              "from all seeds.", ""]
    for b in benches:
        lines += _budget_section(b, per_bench[b].get("convergence"))
    lines += ["## The 1-D toy (paper Fig. 2): subinterval target (Eq. 13) vs naive target vs standard loss", ""]
    lines += _toy_section(layout)
    lines += ["## How the numbers were made", "", "| benchmark | teacher passed its bar | runs | seeds per arm | "
              "executor | distill wall time | generator iterations per run | convergence runs (budgets) |",
              "|---|---|---|---|---|---|---|---|"]
    for b in benches:
        f = per_bench[b].get("facts", {})
        conv = f.get("convergence")
        conv_cell = (f"{conv['runs']} ({', '.join(map(str, conv['budgets']))}; {conv['train_seconds']} s)"
                     if conv else "–")
        lines.append(f"| {b} | {f.get('teacher_passed')} | {f.get('runs')} | {seeds_caption(f)} | "
                     f"{f.get('executor')} | {f.get('distill_seconds')} s | {f.get('iterations')} | {conv_cell} |")
    lines += ["", "## Per-benchmark tables", ""]
    lines += [f"- [{b}]({b}/results.md): tables (md/csv/tex), figures, [claims]({b}/claims.md), "
              f"[convergence](figures/{b}/convergence.png)" for b in benches]
    text = "\n".join(lines) + "\n"
    layout.readme().parent.mkdir(parents=True, exist_ok=True)
    layout.readme().write_text(text)
    return text
