"""`pdmd` commands contributed by pdmd_eval (registered through the `pdmd.commands` entry point)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the `pdmd` app."""
