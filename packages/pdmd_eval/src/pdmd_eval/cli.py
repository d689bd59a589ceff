"""`pdmd` commands contributed by pdmd_eval (registered through the `pdmd.commands` entry point).

    pdmd eval SAMPLES [--reference TEACHER_SAMPLES] [--metrics featnet_similarity,fd_teacher | table2 | table3]
              [--feature-net NET.pt2] [--real REAL_SAMPLES] [--fd-extractor feature_net] [--device auto]
              [--cache-dir DIR | --no-cache] [--raft-iters 20] [--flow-max-side PX] [--fid-frames 16] --out DIR
    pdmd tables DIR_OR_RESULTS_JSON... --out DIR [--stem table] [--baseline LABEL]
    pdmd metrics [--kind image]

Sample sets of either layout (media files or the float32 array) are opened lazily. Per-sample results of the
paper-protocol metrics are cached under ``OUT/cache`` (default): run the same command again after a crash or a
kill and it continues where it stopped. ``results.json`` records what was computed and what was reused.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pdmd_eval.context import DINOV3_DEFAULT

PANEL = "Evaluation"

RESULTS_FILE = "results.json"


def _split(metrics: str | None) -> list[str] | None:
    if metrics is None:
        return None
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    return names or None


def eval_command(
    samples: Path = typer.Argument(..., help="Sample-set folder (samples.safetensors, manifest.jsonl, meta.json)."),
    reference: Path | None = typer.Option(None, "--reference", help="Teacher sample set on the same prompts/seeds."),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated metric names (see `pdmd metrics`); default: all that apply."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for results.json and the eval table."),
    feature_net: Path | None = typer.Option(None, "--feature-net", help="torch.export .pt2 feature net."),
    real: Path | None = typer.Option(None, "--real", help="Real data as a sample-set folder."),
    fd_extractor: str = typer.Option(
        "feature_net", help="Features for FD/precision/recall: feature_net|inception|clip|dino|raw."
    ),
    knn_k: int = typer.Option(3, help="k for k-NN precision/recall."),
    batch_size: int = typer.Option(32, help="Batch size for feature networks."),
    label: str | None = typer.Option(None, help="Row label in tables (default: the manifest's method)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    device: str = typer.Option("auto", help="cpu | cuda | auto (CUDA when present)."),
    cache_dir: Path | None = typer.Option(None, help="Per-sample result cache (default OUT/cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep per-sample results in memory only."),
    raft_iters: int = typer.Option(20, help="RAFT iterations (optical_flow_raft, dynamic_degree_vbench)."),
    flow_max_side: int | None = typer.Option(None, help="Resize frames for RAFT to this longer side (default native)."),
    fid_frames: int = typer.Option(16, help="Frames per video for FID, evenly spaced (0 = all)."),
    fvd_frames: int = typer.Option(16, help="Frames per clip for I3D FVD, evenly spaced (0 = all)."),
    dinov3_model: str = typer.Option(DINOV3_DEFAULT, help="Hugging Face id of the DINOv3 model."),
) -> None:
    """Evaluate a sample set; writes OUT/results.json and OUT/eval.{md,csv,tex}."""
    from pdmd_eval.cache import FeatureCache
    from pdmd_eval.context import ProtocolOptions
    from pdmd_eval.evaluate import evaluate, save_results
    from pdmd_eval.features import load_feature_net
    from pdmd_eval.reader import open_sample_set
    from pdmd_eval.tables import Row, to_markdown, write_tables

    sample_set = open_sample_set(samples)
    protocol = ProtocolOptions(raft_iters=raft_iters, flow_max_side=flow_max_side, fid_frames=fid_frames or None,
                               fvd_frames=fvd_frames or None, dinov3_model=dinov3_model)
    cache = FeatureCache(None if no_cache else (cache_dir or out / "cache"))
    results = evaluate(
        sample_set,
        reference=open_sample_set(reference) if reference else None,
        metrics=_split(metrics),
        feature_net=load_feature_net(feature_net) if feature_net else None,
        real=open_sample_set(real) if real else None,
        fd_extractor=fd_extractor,
        knn_k=knn_k,
        batch_size=batch_size,
        progress=progress,
        device=device,
        cache=cache,
        protocol=protocol,
    )
    row_label = label or sample_set.method
    save_results(
        results, out / RESULTS_FILE, label=row_label, samples=str(samples),
        reference=str(reference) if reference else None, feature_net=str(feature_net) if feature_net else None,
        kind=sample_set.kind, benchmark=sample_set.benchmark, n=len(sample_set), storage=sample_set.storage,
        protocol=protocol.__dict__, cache=str(cache.root) if cache.root else None, cache_stats=cache.stats,
    )
    rows = [Row(row_label, results)]
    write_tables(rows, out, "eval")
    typer.echo(to_markdown(rows))


def _results_path(path: Path) -> Path:
    return path / RESULTS_FILE if path.is_dir() else path


def tables_command(
    results: list[Path] = typer.Argument(..., help="results.json files or the folders of `pdmd eval --out`."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    stem: str = typer.Option("table", help="File stem: STEM.md, STEM.csv, STEM.tex."),
    metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated subset and order of columns."),
    baseline: str | None = typer.Option(
        None, help="Label of the arm to compare others against (writes STEM_vs_BASELINE.md with p-values)."
    ),
    digits: int = typer.Option(3, help="Decimals in cells."),
    caption: str = typer.Option("", help="LaTeX caption."),
) -> None:
    """Merge several arms' results into Markdown/CSV/LaTeX tables (mean ± CI, ↑/↓ headers)."""
    from pdmd_eval.evaluate import compare, load_results
    from pdmd_eval.tables import Row, to_markdown, write_tables

    wanted = _split(metrics)
    rows = []
    for path in results:
        info, res = load_results(_results_path(path))
        if wanted is not None:
            missing = [m for m in wanted if m not in res]
            if missing:
                raise typer.BadParameter(f"{path} lacks metrics {missing}; it has {sorted(res)}")
            res = {m: res[m] for m in wanted}
        rows.append(Row(str(info.get("label") or path.stem), res))
    paths = write_tables(rows, out, stem, digits, caption)
    typer.echo(to_markdown(rows, digits))
    if baseline is not None:
        base = next((r for r in rows if r.label == baseline), None)
        if base is None:
            raise typer.BadParameter(f"--baseline {baseline!r} is not one of {[r.label for r in rows]}")
        lines = ["| arm | metric | n | mean diff | 95% CI | Wilcoxon p | paired t p |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            if row is base:
                continue
            for name, arm_res in row.results.items():
                if name not in base.results or arm_res.unit == "set":
                    continue
                c = compare(arm_res, base.results[name])
                lines.append(
                    f"| {row.label} | {name} {arm_res.direction} | {c.n} | {c.mean_diff:+.{digits}f} | "
                    f"[{c.diff_low:+.{digits}f}, {c.diff_high:+.{digits}f}] | {c.wilcoxon_p:.3g} | {c.ttest_p:.3g} |"
                )
        cmp_path = out / f"{stem}_vs_{baseline}.md"
        cmp_path.write_text("\n".join(lines) + "\n")
        paths["comparison"] = cmp_path
        typer.echo("\n".join(lines))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def metrics_command(kind: str | None = typer.Option(None, help="Only metrics for image|video|points.")) -> None:
    """List the registered metrics with direction, unit and needs."""
    from pdmd_eval.registry import available_metrics

    for m in available_metrics(kind):
        needs = ",".join(m.needs) or "-"
        typer.echo(f"{m.name:20s} {m.direction} unit={m.unit:6s} kinds={','.join(m.kinds):18s} needs={needs}")
        typer.echo(f"    {m.description.splitlines()[0] if m.description else ''}")


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the `pdmd` app."""
    app.command("eval", rich_help_panel=PANEL)(eval_command)
    app.command("tables", rich_help_panel=PANEL)(tables_command)
    app.command("metrics", rich_help_panel=PANEL)(metrics_command)
