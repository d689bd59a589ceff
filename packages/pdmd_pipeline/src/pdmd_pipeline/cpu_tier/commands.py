"""CLI: `pdmd teacher train CONFIG` — train a CPU-tier teacher (pdmd_core) and check it against its quality bar
(report written, exit 1 below the bar, exit 2 for a bad config)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

PANEL = "Pipeline"


def register(app: typer.Typer) -> None:
    teacher = typer.Typer(help="CPU-tier teachers: train from a benchmark config and check their quality.",
                          no_args_is_help=True)
    app.add_typer(teacher, name="teacher", rich_help_panel=PANEL)

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
        from pdmd_core.paths import project_root
        from pdmd_pipeline.cpu_tier.teacher_quality import train_teacher_from_config

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

