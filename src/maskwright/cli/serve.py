"""``maskwright serve``: the annotation server (FastAPI + Uvicorn) on embedded defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from maskwright.cli.common import user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def serve(
        data: Path = typer.Option(Path("maskwright-data"), "--data", "-d", help="Data folder (SQLite + files)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
        engine: str | None = typer.Option(None, "--engine", "-e", help="Engine name (default: best available)."),
        max_megapixels: float = typer.Option(100.0, "--max-megapixels", help="Largest image accepted on upload."),
    ) -> None:
        """Run the annotation server (SQLite in --data unless MASKWRIGHT_DATABASE_URL is set)."""
        import uvicorn

        from maskwright.server.app import create_app
        from maskwright.server.state import Settings

        if not 0 < port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        if max_megapixels <= 0:
            raise ValueError(f"--max-megapixels must be positive, got {max_megapixels}")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations are routine at each start
        if engine is not None:
            from maskwright.engines.registry import create_engine

            create_engine(engine)  # fail now with a one-line message, not inside the server's startup
        settings = Settings(data_dir=data, engine=engine, max_pixels=int(max_megapixels * 1e6))
        typer.echo(f"maskwright: serving on http://{host}:{port} (data: {data.resolve()})")
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
