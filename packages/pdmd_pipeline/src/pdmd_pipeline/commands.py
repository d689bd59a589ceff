"""CLI: `pdmd stage <name> [BENCHMARK]` (one per DVC stage), `pdmd launch`, `pdmd pipeline sandbox`,
`pdmd mlflow ui` and `pdmd mlflow replay`."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import typer

from pdmd_pipeline.infra.commands import mlflow_group

PANEL = "Pipeline"

# `pdmd stage <name>` → the function it runs. dvc.yaml's code deps of a stage are the import closure of that
# function's module (scripts/stage_code_deps.py), so each stage lives in a module importing only what it runs.
STAGE_FUNCTIONS = {
    "data": "pdmd_pipeline.stages.data:stage_data",
    "teacher": "pdmd_pipeline.stages.teacher:stage_teacher",
    "teacher_check": "pdmd_pipeline.stages.teacher_check:stage_teacher_check",
    "distill": "pdmd_pipeline.stages.distill:stage_distill",
    "sample": "pdmd_pipeline.stages.sample:stage_sample",
    "evaluate": "pdmd_pipeline.stages.evaluate:stage_evaluate",
    "convergence": "pdmd_pipeline.convergence:stage_convergence",
    "toy1d": "pdmd_pipeline.stages.toy1d:stage_toy1d",
    "tables": "pdmd_pipeline.report:stage_tables",
    "report": "pdmd_pipeline.report:stage_report",
}
# per-benchmark stages (`pdmd stage <name> BENCHMARK`); toy1d and report take no benchmark
STAGES = ("data", "teacher", "teacher_check", "distill", "sample", "evaluate", "convergence", "tables")


def stage_function(name: str) -> Any:
    module, _, attr = STAGE_FUNCTIONS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(1)


def register(app: typer.Typer) -> None:
    stage_app = typer.Typer(help="Pipeline stages (what dvc.yaml runs); each reads the params file.",
                            no_args_is_help=True)
    pipeline_app = typer.Typer(help="Run the whole pipeline.", no_args_is_help=True)
    app.add_typer(stage_app, name="stage", rich_help_panel=PANEL)
    app.add_typer(pipeline_app, name="pipeline", rich_help_panel=PANEL)
    mlflow_app = mlflow_group(app)
    params_opt = typer.Option(Path("params.yaml"), "--params", "-p", help="Pipeline params file.")

    def _run_stage(name: str, benchmark: str, params_path: Path, **kwargs: object) -> None:
        from pdmd_pipeline.executors import JobsFailed
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params
        from pdmd_pipeline.stages.common import StageError

        try:
            params = load_params(params_path)
            params.benchmark(benchmark)
            stage_function(name)(params, benchmark, Layout(), **kwargs)
        except (ParamsError, KeyError, FileNotFoundError, JobsFailed, StageError, RuntimeError,
                ValueError) as err:
            raise _fail(err) from err
        finally:
            _replay_quietly(params_path)

    def _make(name: str) -> None:
        def command(benchmark: str = typer.Argument(..., help="Benchmark name (a key of `benchmarks`)."),
                    params_path: Path = params_opt) -> None:
            _run_stage(name, benchmark, params_path)

        command.__doc__ = f"The `{name}` stage for one benchmark."
        stage_app.command(name)(command)

    for name in STAGES:
        _make(name)

    @stage_app.command("toy1d")
    def toy1d_cmd(params_path: Path = params_opt) -> None:
        """The paper's Fig. 2 toy: reports/toy1d/subinterval.{json,png} (params `toy1d`)."""
        from pdmd_core.config import ConfigError
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params
        from pdmd_pipeline.stages.common import StageError
        from pdmd_pipeline.stages.toy1d import stage_toy1d

        try:
            report = stage_toy1d(load_params(params_path), Layout())
        except (ParamsError, ConfigError, StageError) as err:
            raise _fail(err) from err
        typer.echo(json.dumps({k: v for k, v in report.items() if k.startswith("w1")}))

    @stage_app.command("report")
    def report_cmd(params_path: Path = params_opt) -> None:
        """reports/README.md from every benchmark's claim outcomes."""
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params

        try:
            stage_function("report")(load_params(params_path), Layout())
        except ParamsError as err:
            raise _fail(err) from err

    @app.command("launch", rich_help_panel=PANEL)
    def launch(
        benchmark: list[str] = typer.Option(None, "--benchmark", "-b", help="Benchmarks (default: all)."),
        arms: str = typer.Option(None, help="Comma-separated arms (default: the benchmark's arms)."),
        seeds: str = typer.Option(None, help="Comma-separated seeds (default: the params file's)."),
        executor: str = typer.Option(None, help="local | slurm (default: the params file's)."),
        params_path: Path = params_opt,
    ) -> None:
        """The distill stage outside DVC: submit arm × seed jobs locally or to SLURM and wait for them."""
        from pdmd_pipeline.executors import JobsFailed
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params
        from pdmd_pipeline.stages.common import StageError
        from pdmd_pipeline.stages.distill import stage_distill

        try:
            params = load_params(params_path)
            names = benchmark or list(params.benchmarks)
            for b in names:
                sweep = stage_distill(params, b, Layout(), arms=arms.split(",") if arms else None,
                                             seeds=[int(s) for s in seeds.split(",")] if seeds else None,
                                             executor=executor)
                typer.echo(f"{b}: sweep {sweep['sweep_id']}, {len(sweep['runs'])} runs in {sweep['seconds']:.0f} s")
        except (ParamsError, KeyError, FileNotFoundError, JobsFailed, StageError, RuntimeError,
                ValueError) as err:
            raise _fail(err) from err
        finally:
            _replay_quietly(params_path)

    @app.command("compare", rich_help_panel=PANEL)
    def compare(
        sweep: str = typer.Option(None, help="A sweep id (tag `sweep`; printed by `pdmd launch`, in sweep.json)."),
        benchmark: str = typer.Option(None, "--benchmark", "-b", help="The latest sweep of this benchmark."),
        study: str = typer.Option(None, help="Every arm run of this MLflow experiment (e.g. a real-scale study)."),
        all_metrics: bool = typer.Option(False, "--all", help="Every eval/* metric, not only the headline ones."),
        uri: str = typer.Option(None, "--tracking-uri", help="Tracking URI (default: params / env / local store)."),
        ui: str = typer.Option(None, help="MLflow UI address for the links (default: the server, or "
                                          "http://127.0.0.1:5000 as `pdmd mlflow ui` serves a local store)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        params_path: Path = params_opt,
    ) -> None:
        """Arms side by side: eval metrics with 95% CIs over seeds, and the MLflow compare-view address."""
        from rich.console import Console

        from pdmd_pipeline.compare import CompareError, client_for, render, select_runs, summarize
        from pdmd_pipeline.mlflow_views import compare_url, ui_address
        from pdmd_pipeline.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(uri or _configured_uri(params_path))
        try:
            client = client_for(tracking_uri)
            title, runs = select_runs(client, sweep, benchmark, study)
            cmp = summarize(client, title, runs, all_metrics=all_metrics)
        except CompareError as err:
            raise _fail(err) from err
        address = ui or ui_address(tracking_uri)
        if as_json:
            typer.echo(json.dumps({"title": cmp.title, "arms": {
                a: {"seeds": cmp.seeds[a], **{m: {"mean": r.mean, "low": r.low, "high": r.high, "n": len(r.values)}
                                              for m, r in cmp.results[a].items()}} for a in cmp.arms},
                "directions": cmp.directions, "run_ids": cmp.run_ids,
                "compare_url": compare_url(address, cmp.experiment_ids, cmp.run_ids)}, indent=2))
            return
        table, lines = render(cmp, address)
        console = Console(width=max(120, 24 * (len(cmp.metrics) + 1)))
        console.print(table)
        for line in lines:
            console.print(line, soft_wrap=True)

    @pipeline_app.command("sandbox")
    def sandbox(
        preset: Path = typer.Option(Path("experiments/presets/smoke.yaml"), help="Params file to run."),
        folder: Path = typer.Option(None, "--dir", help="Where to build it (default: a new temp folder)."),
        executor: str = typer.Option(None, help="Override `executor` (local | slurm)."),
        tracking_uri: str = typer.Option(None, help="Override `tracking_uri`."),
    ) -> None:
        """`dvc repro` of a preset in a fresh git + DVC repository (the project's own dvc.lock stays untouched).

        A study preset (top-level `study`, e.g. experiments/presets/realscale_smoke.yaml) runs the real-scale study
        pipeline. A loopback `tracking_uri` (http://127.0.0.1:PORT) nobody serves yet gets an MLflow server for the
        duration (its store in the sandbox's .pdmd/mlflow), stopped afterwards."""
        from pdmd_pipeline.sandbox import make_sandbox, mlflow_for, repro, tracking_uri_of

        overrides = {k: v for k, v in {"executor": executor, "tracking_uri": tracking_uri}.items() if v}
        root = make_sandbox(preset, folder, overrides)
        typer.echo(f"sandbox: {root}")
        uri = tracking_uri_of(root)
        with mlflow_for(uri, root) as started:
            if started:
                typer.echo(f"MLflow server for this sandbox: {uri} (store {root / '.pdmd' / 'mlflow'})")
            result = repro(root)
        typer.echo(f"dvc repro: exit {result.returncode} in {result.seconds:.0f} s; report: {root / 'reports'}")
        if result.returncode:
            typer.echo(result.output[-4000:], err=True)
            raise typer.Exit(result.returncode)

    @mlflow_app.command("ui")
    def mlflow_ui(port: int = typer.Option(5000, help="Port on 127.0.0.1."),
                  params_path: Path = params_opt) -> None:
        """Open the MLflow UI on the project's tracking store (the local sqlite store by default); prints the
        address of each benchmark's arms view (runs grouped by arm, headline metrics as columns and charts)."""
        from pdmd_pipeline.tracking import local_artifact_root, resolve_tracking_uri

        uri = resolve_tracking_uri(_configured_uri(params_path))
        ui = f"http://127.0.0.1:{port}"
        if uri.startswith("http"):
            ui = uri
        for line in first_screens(uri, ui):
            typer.echo(line)
        if uri.startswith("http"):
            typer.echo(f"the tracking URI is a server: open {uri} in a browser")
            return
        from pdmd_pipeline.infra.mlflow_server import _mlflow_executable

        cmd = [_mlflow_executable(), "ui", "--backend-store-uri", uri, "--default-artifact-root",
               local_artifact_root().as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        typer.echo(f"MLflow UI on {ui} (store {uri})")
        os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.execvp(cmd[0], cmd)

    @mlflow_app.command("replay")
    def mlflow_replay(uri: str = typer.Option(None, help="Tracking URI (default: params / env / local store)."),
                      params_path: Path = params_opt) -> None:
        """Deliver every spooled MLflow record that has not reached the tracking server yet."""
        from pdmd_pipeline.tracking import replay, spools

        configured = uri or _configured_uri(params_path)
        counts = replay(configured)
        pending = sum(max(0, s.pending()) for s in spools())
        typer.echo(json.dumps({**counts, "records_pending": pending}))
        if counts["pending"]:
            raise typer.Exit(1)


def first_screens(uri: str, ui: str) -> list[str]:
    """One line per pdmd experiment in the store: its arms view's address (what to open first)."""
    from pdmd_pipeline.mlflow_views import runs_url

    try:
        from pdmd_pipeline.compare import client_for

        experiments = [e for e in client_for(uri).search_experiments() if e.name.startswith("pdmd/")]
    except Exception as err:  # noqa: BLE001 - an empty or unreachable store still gets its UI
        return [f"(no experiments listed: {type(err).__name__})"]
    lines = []
    for exp in sorted(experiments, key=lambda e: e.name):
        lines += [f"{exp.name}: arms table {runs_url(ui, exp.experiment_id)}",
                  f"{exp.name}: arms charts {runs_url(ui, exp.experiment_id, charts=True)}"]
    return lines


def _configured_uri(params_path: Path) -> str | None:
    if not params_path.is_file():
        return None
    import yaml

    value = (yaml.safe_load(params_path.read_text()) or {}).get("tracking_uri")
    return str(value) if value else None


def _replay_quietly(params_path: Path) -> None:
    """Deliver whatever earlier outages left in the spool (never fails the stage)."""
    try:
        from pdmd_pipeline.tracking import replay, spools

        if any(s.pending() > 0 for s in spools()):
            replay(_configured_uri(params_path))
    except Exception as err:  # noqa: BLE001 - tracking must never fail a stage; the spool keeps the records
        typer.echo(f"warning: MLflow replay deferred ({type(err).__name__}: {err})", err=True)
