"""The `pdmd` command line: one command, contributed to by every installed pdmd package.

Each package lists `register(app: typer.Typer)` functions under the `pdmd.commands` entry-point group (this engine
package: training and the real-scale adapters; the evaluation package: metrics and tables; the pipeline package:
stages, services, real-scale jobs, fault injection), so a GPU node with only pdmd-core installed gets the engine's
commands and nothing that needs DVC, SLURM or MLflow. Commands are grouped by panel in `pdmd --help` (Engine,
Real scale, Evaluation, Pipeline, Services). Heavy imports (torch, diffusers) stay inside the command functions so
that `pdmd --help` is fast.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from pdmd_core import __version__

COMMANDS_GROUP = "pdmd.commands"

app = typer.Typer(
    name="pdmd",
    help="Phased DMD: few-step distillation of diffusion / flow-matching models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"pdmd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Phased DMD: few-step distillation of diffusion / flow-matching models."""


def _register_all() -> None:
    # Sorted by entry-point name, so `pdmd --help` lists commands in the same order on every install.
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
