"""CLI: `pdmd reliability report` — inject every fault on a small CPU model and write reports/reliability.md."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Fault injection: checkpoints, non-finite values, configs, determinism, services.",
                        no_args_is_help=True)
    app.add_typer(group, name="reliability", rich_help_panel="Pipeline")

    @group.command("report")
    def report(
        out: Path = typer.Option(Path("reports/reliability.md"), "--out", help="Markdown report to write."),
        work: Path | None = typer.Option(None, "--work", help="Scratch folder (default: a new temp folder)."),
        scenario: list[str] = typer.Option([], "--scenario", "-s", help="Run only these (repeatable)."),
        services: bool = typer.Option(False, "--services/--no-services",
                                      help="Also the MLflow outage, SLURM pre-emption and multi-rank faults (2-task "
                                           "jobs on the local SLURM cluster: kill during a distributed save, time "
                                           "limit, rank-count change, export, pickle payload; ~20 min)."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Inject each fault, write the report; exit 1 if any fault was not handled as required."""
        import tempfile

        import torch

        from pdmd_pipeline.reliability.report import write_report

        torch.set_num_threads(1)
        folder = work or Path(tempfile.mkdtemp(prefix="pdmd-reliability-"))
        flags = " --services" if services else ""
        try:
            outcomes = write_report(out, folder, scenario or None, services, progress,
                                    f"pdmd reliability report{flags}")
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        failed = [o.fault for o in outcomes if not o.ok]
        typer.echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} faults handled as required; wrote {out} "
                   f"(scratch: {folder})")
        if failed:
            typer.echo("not as required: " + "; ".join(failed), err=True)
            raise typer.Exit(1)
