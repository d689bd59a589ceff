"""CLI commands for the environment and the local services: `pdmd env`, `pdmd cluster`, `pdmd mlflow`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

PANEL = "Services"


def mlflow_group(app: typer.Typer) -> typer.Typer:
    """The `pdmd mlflow` group, created by whichever pipeline module registers first (server and UI commands)."""
    for group in app.registered_groups:
        if group.name == "mlflow" and group.typer_instance is not None:
            return group.typer_instance
    group_app = typer.Typer(help="MLflow: the local tracking server, the UI, spool replay.", no_args_is_help=True)
    app.add_typer(group_app, name="mlflow", rich_help_panel=PANEL)
    return group_app


def register(app: typer.Typer) -> None:
    cluster = typer.Typer(help="A real single-node SLURM cluster on this machine (needs root).",
                          no_args_is_help=True)
    app.add_typer(cluster, name="cluster", rich_help_panel=PANEL)
    mlflow_app = mlflow_group(app)

    @app.command("env", rich_help_panel=PANEL)
    def env_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """Versions, device, threads, and whether SLURM and an MLflow server are reachable."""
        from pdmd_pipeline.infra.envinfo import collect

        info: dict[str, Any] = collect()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="pdmd environment", show_header=False)
        table.add_row("python", str(info["python"]))
        for name, ver in info["packages"].items():
            table.add_row(name, ver)
        for key, val in info["compute"].items():
            table.add_row(key, str(val))
        for name, state in info["services"].items():
            table.add_row(name, ", ".join(f"{k}={v}" for k, v in state.items()))
        Console().print(table)

    @cluster.command("start")
    def cluster_start() -> None:
        """Start munged, MariaDB, slurmdbd, slurmctld and slurmd; wait until the node is idle."""
        from pdmd_pipeline.infra import slurm_cluster

        try:
            started = slurm_cluster.start()
        except slurm_cluster.ClusterError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        typer.echo(f"started: {', '.join(started) or 'nothing (already running)'}; "
                   f"node {slurm_cluster.node_state()}")

    @cluster.command("stop")
    def cluster_stop() -> None:
        """Stop exactly the daemons `pdmd cluster start` started."""
        from pdmd_pipeline.infra import slurm_cluster

        stopped = slurm_cluster.stop()
        typer.echo(f"stopped: {', '.join(stopped) or 'nothing'}")

    @cluster.command("status")
    def cluster_status() -> None:
        """Daemons, their pids, and the node state."""
        from pdmd_pipeline.infra import slurm_cluster

        typer.echo(json.dumps(slurm_cluster.status(), indent=2))

    @mlflow_app.command("start")
    def mlflow_start(
        port: int = typer.Option(5005, help="Port on 127.0.0.1."),
        root: Path = typer.Option(None, help="Store folder (default .pdmd/mlflow in the project)."),
    ) -> None:
        """Start the tracking server; prints its URL (use it as MLFLOW_TRACKING_URI)."""
        from pdmd_pipeline.infra import mlflow_server

        try:
            info = mlflow_server.start(root=root, port=port)
        except mlflow_server.MlflowServerError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        typer.echo(info.url)

    @mlflow_app.command("stop")
    def mlflow_stop(root: Path = typer.Option(None, help="Store folder of the server to stop.")) -> None:
        """Stop the tracking server started for this project."""
        from pdmd_pipeline.infra import mlflow_server

        typer.echo("stopped" if mlflow_server.stop(root) else "no server was running")

    @mlflow_app.command("status")
    def mlflow_status(root: Path = typer.Option(None, help="Store folder.")) -> None:
        """Whether the project's tracking server is up, and where."""
        from pdmd_pipeline.infra import mlflow_server

        typer.echo(json.dumps(mlflow_server.status(root), indent=2))
