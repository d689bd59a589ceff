"""CLI: `pdmd toy1d CONFIG` (the Fig. 2 subinterval toy: figure + reports/toy1d/subinterval.json).

`pdmd teacher train` (training with the quality gate) is the pipeline package's."""

from __future__ import annotations

import json
from pathlib import Path

import typer

PANEL = "Engine"


def register(app: typer.Typer) -> None:
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

    @app.command("toy1d", rich_help_panel=PANEL)
    def toy1d(
        config: Path = typer.Argument(Path("experiments/benchmarks/toy1d.yaml"), help="toy1d benchmark config."),
        out_dir: Path = typer.Option(Path("reports/toy1d"), "--out", help="Folder for the figure and JSON."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Fig. 2 toy: standard loss vs Eq. 13 vs the naive target on (s, 1]; writes subinterval.json/.png."""
        _toy1d(config, out_dir, progress)
