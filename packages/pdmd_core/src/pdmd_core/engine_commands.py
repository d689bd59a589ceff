"""CLI of the distillation engine: `pdmd train CONFIG` and `pdmd bench step`.

`pdmd train` rejects a bad run before writing anything (exit 2, one message naming the field, the value and what
is allowed): config validation, building the model (a missing teacher/weights path is named as `model.<param>`),
the trainer's phase checks (e.g. `fixed_dmd_t` outside a phase's re-noise interval) and, when the run dir holds a
checkpoint, that checkpoint's config must match. Only then are the run dir, config.yaml and metrics.jsonl written.
A run stopped by the non-finite guard exits 3 with the guard's message (role, phase, step); its checkpoints stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

PANEL = "Engine"


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got '{item}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _build_bundle(cfg: Any) -> Any:
    """The config's model bundle; a builder's error names the `model.<param>` whose path or value it rejects."""
    from pdmd_core.models.registry import build_model

    kind, params = cfg.model.kind, cfg.model.params
    try:
        return build_model(kind, params, cfg.device)
    except (ValueError, TypeError, OSError) as err:
        culprits = [f"model.{k} = {v!r}" for k, v in params.items() if isinstance(v, str) and v and v in str(err)]
        where = culprits[0] if culprits else f"model.kind = {kind!r}"
        raise type(err)(f"{where}: {err}") from None


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks that print and save figures.", no_args_is_help=True)
    app.add_typer(bench, name="bench", rich_help_panel=PANEL)

    @app.command("train", rich_help_panel=PANEL)
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
        import yaml

        from pdmd_core.callbacks import MetricsJsonl
        from pdmd_core.checkpoint import UnsafeCheckpointError
        from pdmd_core.trainer import NonFiniteError, Trainer

        folder = run_dir or Path("runs") / config.stem
        # everything that can reject the run happens before the first write: building the model (missing
        # weights/teacher paths), the trainer's phase checks and a resume checkpoint's config
        try:
            trainer = Trainer(cfg, _build_bundle(cfg), folder, callbacks=[MetricsJsonl(folder / "metrics.jsonl")])
            trainer.resume()
        except UnsafeCheckpointError as err:  # a crafted checkpoint: nothing of it ran, nothing is written
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except (ValueError, TypeError, OSError) as err:
            typer.echo(f"invalid config {config}: {err}", err=True)
            raise typer.Exit(2) from None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        try:
            trainer.fit()
        except NonFiniteError as err:  # the message names role, phase and step; checkpoints on disk are good
            typer.echo(f"stopped: {err}; resume from {trainer.checkpoint_dir} after fixing the cause", err=True)
            raise typer.Exit(3) from None
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
