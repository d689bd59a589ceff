"""CLI: `pdmd teacher train CONFIG` (train + quality report, non-zero exit below the bar) and
`pdmd toy1d CONFIG` (the Fig. 2 subinterval toy: figure + reports/toy1d/subinterval.json)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    teacher = typer.Typer(help="CPU-tier teachers: train from a benchmark config and check their quality.",
                          no_args_is_help=True)
    app.add_typer(teacher, name="teacher")

    @teacher.command("train")
    def teacher_train(
        config: Path = typer.Argument(..., help="Benchmark config, e.g. experiments/benchmarks/digits.yaml."),
        output_dir: Path | None = typer.Option(None, "--output-dir", "-o",
                                               help="Checkpoint folder (default: the config's output_dir or "
                                                    "runs/teachers/<benchmark>)."),
        iterations: int | None = typer.Option(None, help="Override train.iterations."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Train a teacher, save it, write reports/teachers/<benchmark>.json; exit 1 if below its quality bar."""
        from pydantic import ValidationError

        from pdmd_core.config import ConfigError, format_validation_error
        from pdmd_core.cpu_tier.config import load_config
        from pdmd_core.cpu_tier.teacher import train_teacher_from_config
        from pdmd_core.paths import project_root

        try:
            cfg = load_config(config)
            if iterations is not None:
                cfg.train.iterations = iterations
        except ValidationError as err:
            typer.echo(f"error: {format_validation_error(err, '--iterations')}", err=True)
            raise typer.Exit(2) from None
        except ConfigError as err:  # exit 2 = bad config (1 = teacher below its quality bar)
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        root = project_root()
        out = None if output_dir is None else (output_dir if output_dir.is_absolute() else root / output_dir)
        report = train_teacher_from_config(cfg, root, out, progress)
        typer.echo(json.dumps({k: report[k] for k in ("benchmark", "passed", "metrics", "bar",
                                                        "teacher_train_seconds", "checkpoint", "report_path")},
                              indent=2))
        if not report["passed"]:
            typer.echo(f"error: the {report['benchmark']} teacher is below its quality bar {report['bar']}: "
                       f"measured {report['metrics']} (see {report['report_path']})", err=True)
            raise typer.Exit(1)

    def _toy1d(config: Path, out_dir: Path, progress: bool) -> None:
        import torch

        from pdmd_core.config import ConfigError
        from pdmd_core.cpu_tier.config import load_config
        from pdmd_core.cpu_tier.subinterval_toy import plot_subinterval_toy, run_subinterval_toy
        from pdmd_core.cpu_tier.train import configure_cpu
        from pdmd_core.paths import project_root

        try:
            cfg = load_config(config)
        except ConfigError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        if cfg.benchmark != "toy1d" or cfg.subinterval is None:
            typer.echo(f"error: {config} must be a toy1d config with a `subinterval:` section "
                       f"(got benchmark {cfg.benchmark!r})", err=True)
            raise typer.Exit(2)
        configure_cpu(cfg.train.threads)
        torch.manual_seed(cfg.seed)
        result = run_subinterval_toy(cfg.data.atoms, cfg.subinterval, cfg.seed, progress)  # type: ignore[union-attr]
        folder = out_dir if out_dir.is_absolute() else project_root() / out_dir
        folder.mkdir(parents=True, exist_ok=True)
        figure = folder / "subinterval.png"
        plot_subinterval_toy(result, str(figure), cfg.subinterval.s)
        report = {**result.report, "figure": str(figure.relative_to(folder)), "config": str(config)}
        (folder / "subinterval.json").write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(json.dumps(report, indent=2))

    @app.command("toy1d")
    def toy1d(
        config: Path = typer.Argument(Path("experiments/benchmarks/toy1d.yaml"), help="toy1d benchmark config."),
        out_dir: Path = typer.Option(Path("reports/toy1d"), "--out", help="Folder for the figure and JSON."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Fig. 2 toy: standard loss vs Eq. 13 vs the naive target on (s, 1]; writes subinterval.json/.png."""
        _toy1d(config, out_dir, progress)

    @teacher.command("toy1d")
    def teacher_toy1d(
        config: Path = typer.Argument(Path("experiments/benchmarks/toy1d.yaml")),
        out_dir: Path = typer.Option(Path("reports/toy1d"), "--out"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Same as `pdmd toy1d`."""
        _toy1d(config, out_dir, progress)
