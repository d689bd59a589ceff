"""The tables stage of a study: the paper's Tables 2, 3 and 6 in its layout with its published numbers as a
reference row beside ours, the sampling speed-up over the teacher, the claims (`pdmd_pipeline.claims`, the rules
of reports/README.md), figures, the report's README.md, and each run's samples as MLflow artifacts.

Cells: mean ± half-width of the 95 % seed-clustered Student-t interval (the training seed is the unit of
replication; per-sample values averaged within a prompt first, then over each seed's prompts), as the CPU tier's
tables (`units.unit_values`, `report.metric_results`); the teacher reference has no training seed: its mean.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from pdmd_pipeline import claims as C
from pdmd_pipeline.report import COMPARISON_HEADER, RULES, STATISTIC, comparison_lines
from pdmd_pipeline.study import paper
from pdmd_pipeline.study.distill import experiment_name, read_sweep
from pdmd_pipeline.study.evaluation import METRICS, UNITS, group
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import ARM_LABELS, TINY, StudyParams
from pdmd_pipeline.study.prompts import read_info
from pdmd_pipeline.study.sampling import SETS, TIMING, read_samples
from pdmd_pipeline.units import directions, read_units, unit_values

Values = dict[str, dict[str, dict[tuple[int, Any], float]]]
NOT_RUN = "not run"
FIGURES = "figures"
# Claim variants: which metric plays each claim role, per task group (one verdict per variant).
_T2I, _VIDEO = METRICS["t2i"], METRICS["video"]
VARIANTS = {
    "t2i": [("DINOv3", {"diversity": _T2I["dino"]}), ("LPIPS", {"diversity": _T2I["lpips"]}),
            ("CLIP", {"diversity": _T2I["clip"]})],
    "video": [("optical flow, FID", {"motion": _VIDEO["of"], "fidelity": _VIDEO["fid"]}),
              ("dynamic degree, FVD", {"motion": _VIDEO["dd"], "fidelity": _VIDEO["fvd"]})],
}


def teacher_label(study: StudyParams) -> str:
    t = study.evaluation.teacher
    return f"Base ({t.steps} steps, CFG {t.cfg:g})"


def meaningless(study: StudyParams) -> bool:
    return study.evaluation.backbones == "random" or any(m.weights == TINY for m in study.models.values())


def banner(study: StudyParams) -> list[str]:
    if not meaningless(study):
        return []
    return ["> **Numbers meaningless by construction.** Random weights: "
            + ", ".join(f"`{name}` (random tiny base model)" for name, m in study.models.items() if m.weights == TINY)
            + ("; metric backbones (DINOv3, CLIP, LPIPS, RAFT-large, FID Inception, I3D) with random weights (built "
               "in the job, nothing downloaded; cd-fvd's I3D at its own random init gives logits that barely differ "
               "between clips, so FVD is ≈ 0)" if study.evaluation.backbones == "random" else "")
            + ". This report shows the layout and that every stage runs end to end; it says nothing about the "
              "methods.", ""]


# ---------------------------------------------------------------------------------------------- cells
def model_values(layout: StudyLayout, model: str) -> tuple[Values, dict[str, str]]:
    path = layout.eval(model) / UNITS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the evaluate stage first (evaluate@{model})")
    units = read_units(path)
    return unit_values(units), directions(units)


def cell(values: Values, dirs: dict[str, str], arm: str, metric: str, confidence: float,
         scale: float = 1.0, digits: int = 3) -> str:
    """mean ± half-width of the seed-clustered interval (`pdmd_eval.stats.clustered_ci`, the CPU tier's tables):
    prompts of one training seed are not independent. A teacher reference (no training seed) or a single seed:
    the mean alone."""
    from collections import defaultdict

    from pdmd_eval.stats import clustered_ci

    per = values.get(metric, {}).get(arm)
    if not per:
        return NOT_RUN
    by_seed: dict[int, list[float]] = defaultdict(list)
    for (seed, _), value in sorted(per.items(), key=str):
        by_seed[seed].append(value * scale)
    if len(by_seed) < 2:
        return f"{statistics.fmean(v for vs in by_seed.values() for v in vs):.{digits}f}"
    mean, low, high = clustered_ci([by_seed[s] for s in sorted(by_seed)], confidence)
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _paper(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class Cells:
    """Our cell for (model, arm, metric), with each model's unit values read once."""

    def __init__(self, study: StudyParams, layout: StudyLayout) -> None:
        self.study, self.layout = study, layout
        self._cache: dict[str, tuple[Values, dict[str, str]]] = {}

    def values(self, model: str) -> tuple[Values, dict[str, str]]:
        if model not in self._cache:
            self._cache[model] = model_values(self.layout, model)
        return self._cache[model]

    def __call__(self, model: str | None, arm: str, metric: str, scale: float = 1.0, digits: int = 3) -> str:
        if model is None or (arm != "teacher" and arm not in self.study.model(model).arms):
            return NOT_RUN
        values, dirs = self.values(model)
        key = self.study.teacher_name() if arm == "teacher" else arm
        return cell(values, dirs, key, metric, self.study.evaluation.confidence, scale, digits)


def _row_label(study: StudyParams, arm: str) -> str:
    return teacher_label(study) if arm == "teacher" else ARM_LABELS.get(arm, arm)


def _column_note(study: StudyParams, layout: StudyLayout, name: str, model: str | None) -> str:
    if model is None:
        return f"{name}: not run in this study"
    m = study.model(model)
    info = read_info(layout, model)
    weights = "random tiny base model" if m.weights == TINY else f"weights {m.weights}"
    prompts = len(info["eval_prompts"])
    return (f"{name}: model `{model}` ({m.label}; {info['architecture']}, {weights}), {prompts} prompt(s) × "
            f"{len(m.eval.seeds)} sample seed(s) at {'×'.join(map(str, m.eval.resolution))}, "
            f"{len(study.seeds)} training seed(s) per arm")


# ---------------------------------------------------------------------------------------------- tables
def table3(study: StudyParams, layout: StudyLayout, cells: Cells) -> str:
    cols = {"wan2.1": study.tables.table3.wan21, "wan2.2": study.tables.table3.wan22, "qwen": study.tables.table3.qwen}
    m = METRICS["t2i"]
    head = ["Method", "", *[f"{paper.TABLE3_COLUMNS[c].split('-')[0]} {name}" for c in cols
                            for name in ("DINOv3 ↓", "LPIPS ↑", "CLIP ↓")]]
    lines = ["# Table 3: diversity (T2I)", "", *banner(study),
             "Within-prompt diversity across sample seeds: mean pairwise DINOv3 cosine similarity (↓), mean pairwise "
             "LPIPS distance (↑) and, beside the paper's two, mean pairwise CLIP cosine similarity (↓). "
             "Paper rows: its Table 3 (21 short prompts × 8 seeds; no CLIP column).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in ("teacher", "dmd_full", "sgts", "phased_k2_sgts"):
        ref = paper.TABLE3.get(arm, {})
        lines.append("| " + " | ".join([_row_label(study, arm), "paper", *[
            v for c in cols for v in (_paper(ref.get(c, (None, None))[0], 3), _paper(ref.get(c, (None, None))[1], 3),
                                      "–")]]) + " |")
        lines.append("| " + " | ".join(["", "this study", *[
            cells(model, arm, m[k]) for model in cols.values() for k in ("dino", "lpips", "clip")]]) + " |")
    lines += ["", *[f"- {_column_note(study, layout, paper.TABLE3_COLUMNS[c], model)}" for c, model in cols.items()],
              "", CELLS_NOTE]
    return "\n".join(lines) + "\n"


def _video_cells(cells: Cells, model: str | None, arm: str) -> list[str]:
    m = METRICS["video"]
    return [cells(model, arm, m["of"], digits=2), cells(model, arm, m["dd"], scale=100.0, digits=1),
            cells(model, arm, m["fid"], digits=2), cells(model, arm, m["fvd"], digits=2)]


def _paper_video(values: tuple[float, float, float, float] | None) -> list[str]:
    if values is None:
        return ["–"] * 4
    of, dd, fid, fvd = values
    return [f"{of:.2f}", f"{dd:.2f}", f"{fid:.2f}", f"{fvd:.1f}"]


CELLS_NOTE = ("Cells: mean ± half-width of the 95 % seed-clustered t interval (the training seed is the unit: each "
              "seed's prompts averaged first; FID / FVD have one value per seed); the base model, which has no "
              "training seed: its mean.")
VIDEO_NOTE = ("Optical flow: mean RAFT-large (RGB) flow magnitude in pixels per frame (paper: UniMatch); dynamic "
              "degree: VBench's rule, share of videos classified dynamic, in %; FID (torch-fidelity's Inception, 16 "
              "frames per video) / FVD (cd-fvd's I3D, 16 frames per clip) against the base model's own outputs on "
              "the same prompts and noise (the base scores 0). " + CELLS_NOTE)


def table2(study: StudyParams, layout: StudyLayout, cells: Cells) -> str:
    cols = {"t2v": study.tables.table2.t2v, "i2v": study.tables.table2.i2v}
    head = ["Method", "", *[f"{c.upper()} {n}" for c in cols for n in ("OF ↑", "DD % ↑", "FID ↓", "FVD ↓")]]
    lines = ["# Table 2: motion and fidelity to the base model (video)", "", *banner(study),
             "Paper rows: its Table 2 (Wan2.2-A14B, 4 steps / 2 phases; 220 prompts, seed 42).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in ("teacher", "sgts", "phased_k2_sgts"):
        ref = paper.TABLE2.get(arm, {})
        lines.append("| " + " | ".join([_row_label(study, arm), "paper",
                                        *[v for c in cols for v in _paper_video(ref.get(c))]]) + " |")
        lines.append("| " + " | ".join(["", "this study",
                                        *[v for model in cols.values() for v in _video_cells(cells, model, arm)]])
                     + " |")
    lines += ["", *[f"- {_column_note(study, layout, c.upper(), model)}" for c, model in cols.items()], "", VIDEO_NOTE]
    return "\n".join(lines) + "\n"


def table6(study: StudyParams, layout: StudyLayout, cells: Cells) -> str:
    model = study.tables.table6.t2v
    labels = {"teacher": teacher_label(study), "sgts": ARM_LABELS["sgts"],
              "phased_k2_sgts": "4-step/2-phase (with SGTS inside phases)", "phased_k4": "4-step/4-phase (no SGTS)"}
    lines = ["# Table 6: number of phases (T2V)", "", *banner(study),
             "Paper rows: its Table 6 (App. C.1); the base model and DMD2 rows from its Table 2 (T2V), the same "
             "evaluation (Table 6's 2-phase row is Table 2's Phased DMD T2V row).", "",
             "| Method | | OF ↑ | DD % ↑ | FID ↓ | FVD ↓ |", "|---|---|---|---|---|---|"]
    for arm, label in labels.items():
        lines.append("| " + " | ".join([label, "paper", *_paper_video(paper.TABLE6.get(arm))]) + " |")
        lines.append("| " + " | ".join(["", "this study", *_video_cells(cells, model, arm)]) + " |")
    lines += ["", f"- {_column_note(study, layout, 'T2V', model)}", "", VIDEO_NOTE]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- speed-up
def speed_rows(study: StudyParams, layout: StudyLayout) -> list[dict[str, Any]]:
    rows = []
    for model in study.models:
        sets = json.loads((layout.samples(model) / SETS).read_text())
        by_method: dict[str, list[dict[str, Any]]] = {}
        for entry in sets:
            timing = json.loads((layout.root / entry["set"] / TIMING).read_text())
            by_method.setdefault(entry["method"], []).append(timing)
        teacher = by_method[study.teacher_name()][0]
        t_wall = teacher["median_denoise_seconds"]
        for method, timings in by_method.items():
            wall = statistics.median(t["median_denoise_seconds"] for t in timings)
            nfe = timings[0]["nfe"]
            rows.append({"model": model, "method": method, "steps": timings[0]["steps"], "nfe": nfe,
                         "device": timings[0]["device"], "median_denoise_seconds": wall,
                         "median_decode_seconds": statistics.median(t["median_decode_seconds"] for t in timings),
                         "nfe_speedup": teacher["nfe"] / nfe, "wall_speedup": t_wall / wall if wall > 0 else None})
    return rows


def speed_markdown(study: StudyParams, rows: list[dict[str, Any]]) -> str:
    lines = ["# Sampling speed-up over the teacher", "",
             f"Wall time per sample of the denoising loop (median over samples; the VAE decode, the same for every "
             f"method, beside it), the stock diffusers pipelines; teacher: {study.evaluation.teacher.steps} steps "
             f"with CFG {study.evaluation.teacher.cfg:g} (two transformer calls per step), students: their steps at "
             f"CFG 1. Students: median over training seeds.", "",
             "| model | method | device | steps | NFE | denoise s/sample | decode s/sample | NFE speed-up | "
             "wall speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = teacher_label(study) if r["method"] == study.teacher_name() else ARM_LABELS.get(r["method"],
                                                                                                r["method"])
        wall = "–" if r["wall_speedup"] is None else f"{r['wall_speedup']:.1f}×"
        lines.append(f"| {r['model']} | {label} | {r['device']} | {r['steps']} | {r['nfe']} | "
                     f"{r['median_denoise_seconds']:.4f} | {r['median_decode_seconds']:.4f} | "
                     f"{r['nfe_speedup']:.0f}× | {wall} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- claims
def study_claims(values: Values, dirs: dict[str, str], roles: dict[str, str], kind: str, teacher: str,
                 confidence: float) -> list[dict[str, Any]]:
    """Every paper claim (`claims.CLAIMS`) through the CPU tier's `claims.evaluate_claims` (same pairing on
    (training seed, prompt), seed-clustered intervals and verdict rules), with `roles` mapping claim roles to this
    model's metrics (roles not measured here, e.g. coverage, are not run); the study's teacher reference stands in
    for `claims.TEACHER`. Claims with nothing run are left out."""
    table: dict[str, dict[str, tuple[str, ...]]] = {c.role: {} for claim in C.CLAIMS for c in claim.comparisons}
    for role, metric in roles.items():
        table[role] = {kind: (metric,)}
    renamed = {m: {(C.TEACHER if arm == teacher else arm): v for arm, v in per.items()} for m, per in values.items()}
    rows = C.evaluate_claims(renamed, dirs, kind, confidence, roles=table)
    for row in rows:
        for o in row["comparisons"]:
            o["a"], o["b"] = (teacher if x == C.TEACHER else x for x in (o["a"], o["b"]))
    return [r for r in rows if r["verdict"] != C.NOT_RUN]


def all_claims(study: StudyParams, cells: Cells) -> list[dict[str, Any]]:
    out = []
    for model, params in study.models.items():
        values, dirs = cells.values(model)
        for variant, roles in VARIANTS[group(params.task)]:
            kind = "image" if params.task == "t2i" else "video"
            for row in study_claims(values, dirs, roles, kind, study.teacher_name(), study.evaluation.confidence):
                out.append({"model": model, "metrics": variant, **row})
    return out


def claims_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for claim in C.CLAIMS:
        mine = [r for r in rows if r["claim"] == claim.key]
        if not mine:
            continue
        lines += [f"### {claim.title}", "", f"Paper: {claim.paper}", ""]
        for row in mine:
            lines += [f"**{row['model']}** ({row['metrics']}): **{row['verdict']}**", "", COMPARISON_HEADER]
            lines += [line for o in row["comparisons"] if o["verdict"] != C.NOT_RUN for line in comparison_lines(o)]
            lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------- figures, MLflow
def sample_figures(study: StudyParams, layout: StudyLayout) -> list[str]:
    from pdmd_eval.figures import sample_grid

    written = []
    for model, params in study.models.items():
        sets = {teacher_label(study): read_samples(layout.sample_set(model, study.teacher_name(), None))}
        for arm in params.arms:
            sets[ARM_LABELS.get(arm, arm)] = read_samples(layout.sample_set(model, arm, study.seeds[0]))
        path = layout.report() / FIGURES / f"samples_{model}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_grid(sets, path)
        written.append(f"{FIGURES}/{path.name}")
    return written


def log_run_artifacts(study: StudyParams, layout: StudyLayout) -> None:
    """Per child run: its sample grid (PNG) and, for videos, its first video as a GIF and every video as MP4."""
    from pdmd_eval.figures import write_gif
    from pdmd_pipeline.report import run_sample_png
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    uri = resolve_tracking_uri(study.tracking_uri, layout.root)
    with tempfile.TemporaryDirectory() as tmp:
        for model in study.models:
            for run in read_sweep(layout, model)["runs"]:
                arm, seed = str(run["arm"]), int(run["seed"])
                folder = Path(tmp) / f"{model}_{arm}_seed{seed}"
                folder.mkdir()
                sset = read_samples(layout.sample_set(model, arm, seed))
                tracker = Tracker(uri, str(run["run_key"]), default_spool_root(layout.root))
                tracker.log_artifact(run_sample_png(sset, folder / "samples.png"), "samples")
                if sset.kind == "video":
                    first = sset.read(0)  # uint8 T×C×H×W from the set's first MP4
                    tracker.log_artifact(write_gif(first.astype("float32") / 255.0, folder / "sample.gif", scale=4),
                                         "samples")
                    for mp4 in sorted((sset.folder / "media").glob("*.mp4")):  # the videos themselves
                        tracker.log_artifact(mp4, "samples/videos")
                tracker.flush(force=True)


# ---------------------------------------------------------------------------------------------- README
def setup_lines(study: StudyParams, layout: StudyLayout) -> list[str]:
    lines = ["| model | task | base | arms | training seeds | generator updates per run | evaluation | "
             "distill wall |", "|---|---|---|---|---|---|---|---|"]
    for model, m in study.models.items():
        info = read_info(layout, model)
        sweep = read_sweep(layout, model)
        base = f"{info['architecture']} ({'random tiny' if m.weights == TINY else m.weights})"
        lines.append(f"| {model} | {m.task} | {base} | {', '.join(m.arms)} | {study.seeds} | {study.iterations} | "
                     f"{len(info['eval_prompts'])} prompts × seeds {m.eval.seeds} at "
                     f"{'×'.join(map(str, m.eval.resolution))} | {sweep['seconds']:.0f} s |")
    return lines


def readme(study: StudyParams, layout: StudyLayout, claims: list[dict[str, Any]], speed: list[dict[str, Any]],
           figures: list[str]) -> str:
    from pdmd_pipeline.tracking import resolve_tracking_uri

    t = study.evaluation.teacher
    lines = [f"# Study `{study.study}`: Phased DMD vs DMD2 (SGTS) on diffusers Wan / Qwen-Image models", "",
             *banner(study),
             "Generated by `dvc repro experiments/realscale/dvc.yaml` (stage `tables`, `pdmd study tables`); do not "
             "edit by hand. Each arm is trained on the same base model, prompts, seeds and generator budget "
             f"({study.iterations} generator updates per run: a K-phase arm trains {study.iterations}/K per phase), "
             "exported, and sampled by the stock diffusers pipeline — students at their 4 steps with CFG 1 (a DMD2 "
             f"student with its own re-noise steps), the base model at {t.steps} steps with CFG {t.cfg:g} — from the "
             "same initial noise per (prompt, seed).", "",
             "## Tables", "",
             "- [Table 2](table2.md): motion and FID / FVD against the base model (T2V, I2V)",
             "- [Table 3](table3.md): diversity within a prompt (DINOv3 ↓, LPIPS ↑, CLIP ↓)",
             "- [Table 6](table6.md): 4 phases vs 2 phases + SGTS (T2V)",
             "- [Sampling speed-up](speed.md): NFE and wall time per sample against the teacher", "",
             "Samples (first training seed; videos: middle frame), teacher and every arm on the same prompts and "
             "noise:", "", *[f"![samples]({name})" for name in figures], "",
             "## Setup", "", *setup_lines(study, layout), "",
             "## Sampling speed-up (summary)", "",
             "| model | method | NFE speed-up | wall speed-up |", "|---|---|---|---|"]
    for r in speed:
        if r["method"] != study.teacher_name():
            wall = "–" if r["wall_speedup"] is None else f"{r['wall_speedup']:.1f}×"
            lines.append(f"| {r['model']} | {ARM_LABELS.get(r['method'], r['method'])} | {r['nfe_speedup']:.0f}× | "
                         f"{wall} ({r['device']}) |")
    lines += ["", "## Claims", "",
              "Each paper claim on each model it applies to, once per metric that plays its role, with the CPU "
              "tier's statistic and verdict rules (`pdmd_pipeline.claims`, reports/README.md): differences paired "
              "on (training seed, prompt), oriented so that > 0 favours the left arm, averaged per training seed; "
              "the training seed is the unit of replication. Set-level metrics (FID, FVD) have one unit per "
              "seed.", "", STATISTIC, "",
              *(["With random weights the verdicts below exercise the rules on numbers that mean nothing; they are "
                 "not evidence for or against the paper.", ""] if meaningless(study) else []),
              *claims_markdown(claims),
              "### Verdict rules", "", RULES, "",
              f"ALPHA = {C.ALPHA}, MARGIN = {C.MARGIN}, MIN_SEEDS = {C.MIN_SEEDS}.", "",
              "## MLflow", "",
              f"Experiment `{experiment_name(study)}` at `{resolve_tracking_uri(study.tracking_uri, layout.root)}`: a "
              "parent run per model's distill sweep, a child run `<model>/<arm>/seed<k>` per arm × seed with the CPU "
              "tier's tags (method, phases, sgts, steps, seed, arm, git_sha, dvc_data_md5 = the training prompt "
              "cache, teacher_md5 = the base weights' fingerprint, sweep, SLURM ids), its training metrics, `eval/*` "
              "means and its samples (PNG grid; for videos a GIF and every MP4) as artifacts."]
    return "\n".join(lines) + "\n"


def stage_tables(study: StudyParams, layout: StudyLayout) -> dict[str, Any]:
    out = layout.report()
    out.mkdir(parents=True, exist_ok=True)
    cells = Cells(study, layout)
    (out / "table2.md").write_text(table2(study, layout, cells))
    (out / "table3.md").write_text(table3(study, layout, cells))
    (out / "table6.md").write_text(table6(study, layout, cells))
    speed = speed_rows(study, layout)
    (out / "speed.md").write_text(speed_markdown(study, speed))
    claims = all_claims(study, cells)
    (out / "claims.json").write_text(json.dumps(claims, indent=2))
    figures = sample_figures(study, layout)
    (out / "README.md").write_text(readme(study, layout, claims, speed, figures))
    log_run_artifacts(study, layout)
    return {"claims": len(claims), "speed": speed}
