"""``maskwright models list | pull NAME | path NAME | export-onnx NAME``: SAM weights and ONNX decoders."""

from __future__ import annotations

import typer

from maskwright.cli.common import user_errors


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def register(app: typer.Typer) -> None:
    models = typer.Typer(
        name="models", help="Download and inspect SAM model weights.", no_args_is_help=True, add_completion=False
    )
    app.add_typer(models, name="models")

    @models.command("list")
    @user_errors
    def list_models() -> None:
        """Every catalogued model: downloaded or not, its size, and its approximate CPU cost."""
        from rich.console import Console
        from rich.table import Table

        from maskwright.engines import hub

        table = Table("name", "hub id", "here", "size", "encoder s (2-core CPU)", "memory GB", "cost is")
        for info in sorted(hub.CATALOGUE.values(), key=lambda m: -m.priority):
            path = hub.find_local(info.name)
            here = "yes" if path else "no"
            size = _human_bytes(hub.dir_size_bytes(path)) if path else f"~{info.download_mb} MB to download"
            table.add_row(
                info.name, info.hub_id, here, size, f"~{info.encoder_s:g}", f"~{info.encoder_gb:g}", info.cost_source
            )
        console = Console(width=160)
        console.print(table)
        console.print(
            "encoder seconds: fp32 on a 2-core x86_64 VM; 'measured' = measured in this project "
            "(docs/benchmarks.md), 'estimate' = scaled from model size; memory is always an estimate. "
            "bf16 encoding (CPUs with AVX512-BF16 / AMX, the default there) is ~2x faster. "
            f"Hugging Face cache: {hub.hf_cache_dir()}"
        )

    @models.command("pull")
    @user_errors
    def pull(
        name: str = typer.Argument(..., help="Model name from `maskwright models list`."),
        timeout: float = typer.Option(30.0, "--timeout", help="Network timeout in seconds."),
    ) -> None:
        """Download a model into the Hugging Face cache (respects HF_HOME and HF_HUB_OFFLINE)."""
        from maskwright.engines import hub

        path = hub.pull(name, timeout_s=timeout)
        typer.echo(f"{name}: {path} ({_human_bytes(hub.dir_size_bytes(path))})")

    @models.command("path")
    @user_errors
    def path(name: str = typer.Argument(..., help="Model name.")) -> None:
        """Print the local folder holding a model's weights (exit 2 if it is not here)."""
        from maskwright.engines import hub

        typer.echo(str(hub.resolve_model_dir(name)))

    @models.command("export-onnx")
    @user_errors
    def export_onnx(
        name: str = typer.Argument(..., help="Model name or HF-format model folder."),
        force: bool = typer.Option(False, "--force", help="Export again even when cached."),
    ) -> None:
        """Export the click decoder of a model to ONNX (once; cached under MASKWRIGHT_CACHE)."""
        from maskwright.engines.sam_registry import load_sam_engine

        engine = load_sam_engine(name, decoder="torch")
        try:
            paths = engine.export_onnx(force=force)
        except RuntimeError as exc:  # the exporters' own failure, already summarised
            raise ValueError(f"{name}: {exc}") from None
        for p in paths:
            typer.echo(str(p))
