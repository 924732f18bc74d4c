"""The ``maskwright`` command line (Typer). Each concern adds its commands in its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="maskwright",
    help="SAM-assisted image segmentation for annotation teams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules; each defines ``register(app)``. A module not written yet is skipped.
COMMAND_MODULES = ["segment", "engines", "evaluate", "models", "automask", "serve", "data"]

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"maskwright.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"maskwright.cli.{_name}":
            raise
        continue
    _mod.register(app)
