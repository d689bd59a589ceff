"""CLI: `pdmd study <stage> MODEL` (one per DVC stage of experiments/realscale/dvc.yaml) and `pdmd study tables`."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

STUDY_PARAMS = "experiments/realscale/params.yaml"  # (study.params imports torch; --help stays fast)

MODEL_STAGES = ("prompts", "distill", "export", "sample", "evaluate")
# The function each stage of experiments/realscale/dvc.yaml runs (scripts/stage_code_deps.py derives the stage's
# code deps from it, as from pdmd_pipeline.commands.STAGE_FUNCTIONS for the CPU study).
STUDY_STAGE_FUNCTIONS = {
    "prompts": "pdmd_pipeline.study.prompts:stage_prompts",
    "distill": "pdmd_pipeline.study.distill:stage_distill",
    "export": "pdmd_pipeline.study.export:stage_export",
    "sample": "pdmd_pipeline.study.sampling:stage_sample",
    "evaluate": "pdmd_pipeline.study.evaluation:stage_evaluate",
    "tables": "pdmd_pipeline.study.tables:stage_tables",
}
# What every study stage command runs before its function (params loading and validation, the layout).
STUDY_COMMON_MODULES = ("pdmd_pipeline.study.params", "pdmd_pipeline.study.layout")


def register(app: typer.Typer, panel: str) -> None:
    study_app = typer.Typer(help="Real-scale study stages (what experiments/realscale/dvc.yaml runs).",
                            no_args_is_help=True)
    app.add_typer(study_app, name="study", rich_help_panel=panel)
    params_opt = typer.Option(Path(STUDY_PARAMS), "--params", "-p", help="Study params file.")

    def _run(stage: str, model: str | None, params_path: Path) -> None:
        from pdmd_core.config import ConfigError
        from pdmd_pipeline.commands import _replay_quietly
        from pdmd_pipeline.executors import JobsFailed
        from pdmd_pipeline.params import ParamsError
        from pdmd_pipeline.study import prompts
        from pdmd_pipeline.study.layout import StudyLayout
        from pdmd_pipeline.study.params import load_study

        try:
            study = load_study(params_path)
            layout = StudyLayout(report_dir=study.report_dir)
            module, name = STUDY_STAGE_FUNCTIONS[stage].split(":")
            fn = getattr(importlib.import_module(module), name)
            if model is None:
                fn(study, layout)
                return
            study.model(model)
            fn(study, model, layout)
        except (ParamsError, ConfigError, KeyError, FileNotFoundError, JobsFailed, prompts.StudyError, RuntimeError,
                ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        finally:
            _replay_quietly(params_path)

    def _make(stage: str) -> None:
        def command(model: str = typer.Argument(..., help="A key of `models` in the study params."),
                    params_path: Path = params_opt) -> None:
            _run(stage, model, params_path)

        command.__doc__ = f"The study's `{stage}` stage for one model."
        study_app.command(stage)(command)

    for stage in MODEL_STAGES:
        _make(stage)

    @study_app.command("tables")
    def tables_cmd(params_path: Path = params_opt) -> None:
        """Tables 2, 3, 6, the speed-up, the claims and the report README (`report_dir`)."""
        _run("tables", None, params_path)

