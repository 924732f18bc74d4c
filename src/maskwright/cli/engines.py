"""``maskwright engines``: every engine and whether it runs here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def engines() -> None:
        """List engines and whether each is usable on this machine."""
        from rich.console import Console
        from rich.table import Table

        from maskwright.engines.registry import available_engines, best_available, family_errors

        table = Table("engine", "family", "usable here", "notes")
        for spec, ok, reason in available_engines():
            table.add_row(spec.name, spec.family, "yes" if ok else "no", spec.description if ok else reason)
        console = Console()
        console.print(table)
        for mod, err in family_errors().items():
            console.print(f"[yellow]engine family {mod} not loaded: {err}[/yellow]")
        console.print(f"default engine: [bold]{best_available()}[/bold]")
