"""CLI: `pdmd stage <name> [BENCHMARK]` (one per DVC stage), `pdmd launch`, `pdmd pipeline sandbox`,
`pdmd mlflow ui` and `pdmd mlflow replay`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from pdmd_pipeline.infra.commands import mlflow_group

PANEL = "Pipeline"

STAGES = ("data", "teacher", "distill", "sample", "evaluate", "tables")


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
        from pdmd_pipeline import report, stages
        from pdmd_pipeline.executors import JobsFailed
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params

        try:
            params = load_params(params_path)
            params.benchmark(benchmark)
            fn = {"data": stages.stage_data, "teacher": stages.stage_teacher, "distill": stages.stage_distill,
                  "sample": stages.stage_sample, "evaluate": stages.stage_evaluate,
                  "tables": report.stage_tables}[name]
            fn(params, benchmark, Layout(), **kwargs)  # type: ignore[operator]
        except (ParamsError, KeyError, FileNotFoundError, JobsFailed, stages.StageError, RuntimeError,
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

    @stage_app.command("report")
    def report_cmd(params_path: Path = params_opt) -> None:
        """reports/README.md from every benchmark's claim outcomes."""
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params
        from pdmd_pipeline.report import stage_report

        try:
            stage_report(load_params(params_path), Layout())
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
        from pdmd_pipeline import stages
        from pdmd_pipeline.executors import JobsFailed
        from pdmd_pipeline.layout import Layout
        from pdmd_pipeline.params import ParamsError, load_params

        try:
            params = load_params(params_path)
            names = benchmark or list(params.benchmarks)
            for b in names:
                sweep = stages.stage_distill(params, b, Layout(), arms=arms.split(",") if arms else None,
                                             seeds=[int(s) for s in seeds.split(",")] if seeds else None,
                                             executor=executor)
                typer.echo(f"{b}: sweep {sweep['sweep_id']}, {len(sweep['runs'])} runs in {sweep['seconds']:.0f} s")
        except (ParamsError, KeyError, FileNotFoundError, JobsFailed, stages.StageError, RuntimeError,
                ValueError) as err:
            raise _fail(err) from err
        finally:
            _replay_quietly(params_path)

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
        """Open the MLflow UI on the project's tracking store (the local sqlite store by default)."""
        from pdmd_core.paths import project_root
        from pdmd_pipeline.tracking import local_artifact_root, resolve_tracking_uri

        configured = None
        if params_path.is_file():
            import yaml

            configured = (yaml.safe_load(params_path.read_text()) or {}).get("tracking_uri")
        uri = resolve_tracking_uri(configured)
        if uri.startswith("http"):
            typer.echo(f"the tracking URI is a server: open {uri} in a browser")
            return
        from pdmd_pipeline.infra.mlflow_server import _mlflow_executable

        cmd = [_mlflow_executable(), "ui", "--backend-store-uri", uri, "--default-artifact-root",
               local_artifact_root(project_root()).as_uri(), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        typer.echo(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); training runs: #/experiments/<id>/runs")
        os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
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
