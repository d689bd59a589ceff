"""CLI of the distillation engine: `pdmd train CONFIG` and `pdmd bench step`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got '{item}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks that print and save figures.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML run config"),
        run_dir: Path | None = typer.Option(None, "--run-dir", help="default: runs/<config name>"),
        overrides: list[str] = typer.Option([], "--set", help="override KEY=VALUE (dotted keys allowed)"),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="validate; print roles, parameter counts and memory plan (no weights)"),
    ) -> None:
        """Distil a student with the method of CONFIG (resumes from the run dir's latest checkpoint)."""
        from pdmd_core.config import ConfigError, load_config

        try:
            cfg = load_config(config, _parse_overrides(overrides))
        except ConfigError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(2) from None
        if cfg.model is None:
            typer.echo(f"invalid config {config}: missing `model: {{kind: ...}}` section", err=True)
            raise typer.Exit(2)
        if dry_run:  # no weights: the model is built on the meta device, CUDA is never touched
            from pdmd_core.dry_run import DryRunError, build_dry_run_bundle, describe_run

            try:
                meta_bundle = build_dry_run_bundle(cfg)
            except DryRunError as err:
                typer.echo(str(err), err=True)
                raise typer.Exit(2) from None
            typer.echo(json.dumps(describe_run(cfg, meta_bundle), indent=2, default=str))
            return
        from pdmd_core.models.registry import build_model

        bundle = build_model(cfg.model.kind, cfg.model.params, cfg.device)
        import yaml

        from pdmd_core.trainer import Trainer

        folder = run_dir or Path("runs") / config.stem
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        log = (folder / "metrics.jsonl").open("a")

        def write_metrics(step: int, phase: int, metrics: dict[str, float]) -> None:
            log.write(json.dumps({"step": step, "phase": phase, **metrics}) + "\n")
            log.flush()

        try:
            Trainer(cfg, bundle, folder, hooks=[write_metrics]).fit()
        finally:
            log.close()
        typer.echo(f"done: {folder}")

    @bench.command("step")
    def bench_step_cmd(
        device: str = typer.Option("cpu", help="cpu or cuda"),
        dim: int = typer.Option(256, help="sample dimension of the MLP velocity net"),
        hidden: int = typer.Option(512, help="hidden width"),
        depth: int = typer.Option(3, help="residual blocks"),
        batch_size: int = typer.Option(128),
        ttur_ratio: int = typer.Option(5),
        repeats: int = typer.Option(5, help="timed generator iterations per method (after 2 warm-up)"),
        threads: int = typer.Option(1, help="torch CPU threads"),
        out: Path = typer.Option(Path("reports/bench/step_cost.json")),
    ) -> None:
        """Wall time, peak activation memory and overhead per generator iteration of each method."""
        from pdmd_core.bench_step import BenchSpec, run_bench

        spec = BenchSpec(device=device, dim=dim, hidden=hidden, depth=depth, batch_size=batch_size,
                         ttur_ratio=ttur_ratio, repeats=repeats, threads=threads)
        result = run_bench(spec)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        typer.echo(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
        typer.echo(f"wrote {out}")
