"""The `pdmd` command line.

Commands live next to the code they drive: each module in CORE_COMMAND_MODULES exposes
`register(app: typer.Typer)`, and other installed packages (pdmd_eval) add theirs through the
`pdmd.commands` entry-point group. Heavy imports (torch, mlflow) stay inside the command functions so that
`pdmd --help` is fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import typer

from pdmd_core import __version__

CORE_COMMAND_MODULES = [
    "pdmd_core.engine_commands",
    "pdmd_core.infra.commands",
    "pdmd_core.pipeline.commands",
    "pdmd_core.realscale.commands",
    "pdmd_core.cpu_tier.commands",
    "pdmd_core.reliability.commands",
]

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
    for name in CORE_COMMAND_MODULES:
        importlib.import_module(name).register(app)
    for ep in entry_points(group="pdmd.commands"):
        ep.load()(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
