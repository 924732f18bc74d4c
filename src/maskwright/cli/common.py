"""Shared CLI helpers: one-line errors with exit code 2, option parsing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import typer

from maskwright.engines.registry import EngineUnavailableError


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return an Exit(2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def user_errors(func: Callable) -> Callable:
    """Turn expected user errors into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, EngineUnavailableError, PermissionError) as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def parse_floats(text: str, n: int, what: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(v) for v in parts[:n]]
    except ValueError:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` or ``X,Y,pos|neg`` -> (x, y, label)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise ValueError(f"--point must be X,Y or X,Y,pos|neg, got {text!r}")
    x, y = parse_floats(",".join(parts[:2]), 2, "--point")
    label = 1
    if len(parts) == 3:
        tag = parts[2].strip().lower()
        if tag not in ("pos", "neg", "1", "0", "+", "-"):
            raise ValueError(f"--point label must be pos or neg, got {parts[2]!r}")
        label = 1 if tag in ("pos", "1", "+") else 0
    return x, y, label
