"""``maskwright import``, ``maskwright export`` and ``maskwright user add``: the server's store from the shell.

They use the same data folder and database as ``maskwright serve`` (``--data``, or
``MASKWRIGHT_DATABASE_URL``), migrating it first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from maskwright.cli.common import user_errors

DATA_OPTION = typer.Option(Path("maskwright-data"), "--data", "-d", help="Data folder of the server.")


def open_store(data: Path):
    """(session factory, file store) of the server's data, migrated to the current schema."""
    from maskwright.store import FileStore, make_engine, migrate, session_factory, sqlite_url

    data.mkdir(parents=True, exist_ok=True)
    engine = make_engine(os.environ.get("MASKWRIGHT_DATABASE_URL") or sqlite_url(data))
    migrate(engine)
    return session_factory(engine), FileStore(data)


def find_project(db, name: str, create: bool):
    from sqlalchemy import select

    from maskwright.store import Project

    project = db.execute(select(Project).where(Project.name == name)).scalar_one_or_none()
    if project is None:
        if not create:
            raise ValueError(f"no project named {name!r}")
        project = Project(name=name)
        db.add(project)
        db.flush()
    return project


def image_files(folder: Path) -> list[Path]:
    from maskwright.exchange.images import IMAGE_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def register(app: typer.Typer) -> None:
    @app.command("import")
    @user_errors
    def import_(
        source: Path = typer.Argument(..., help="A folder of images, or a COCO instances JSON file."),
        project: str = typer.Option(..., "--project", help="Project name (created if missing)."),
        images: Path | None = typer.Option(None, "--images", help="Folder of the COCO file's images."),
        data: Path = DATA_OPTION,
        max_megapixels: float = typer.Option(100.0, "--max-megapixels", help="Largest image accepted."),
    ) -> None:
        """Add a folder of images to a project, or a COCO file's images and annotations (all or nothing)."""
        from sqlalchemy import select

        from maskwright.exchange import add_images, check_image, import_coco
        from maskwright.store import Image

        if not source.exists():
            raise FileNotFoundError(f"not found: {source}")
        max_pixels = int(max_megapixels * 1e6)
        sessions, files = open_store(data)
        with sessions() as db:
            proj = find_project(db, project, create=True)
            if source.is_dir():
                paths = image_files(source)
                if not paths:
                    raise ValueError(f"no image files in {source}")
                checked = [check_image(p.read_bytes(), p.name, max_pixels) for p in paths]
                added = add_images(db, files, proj, checked)
                db.commit()
                typer.echo(f"{project}: {len(added)} images from {source}")
                return
            try:
                coco = json.loads(source.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{source} is not a JSON file: {exc}") from None
            if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
                raise ValueError(f"{source} is not a COCO instances file (no 'images' list)")
            # Images not in the project yet are looked for next to the COCO file.
            have = set(db.execute(select(Image.file_name).where(Image.project_id == proj.id)).scalars())
            folders = [images] if images else [source.parent / "images", source.parent]
            checked = []
            for im in coco["images"]:
                name = str(im.get("file_name", "")).replace("\\", "/")
                base = name.split("/")[-1]
                if base in have:
                    continue
                found = next((f / c for f in folders for c in (name, base) if (f / c).is_file()), None)
                if found is not None:
                    checked.append(check_image(found.read_bytes(), base, max_pixels))
                    have.add(base)
            add_images(db, files, proj, checked)
            result = import_coco(db, proj.id, coco)
            db.commit()
        typer.echo(
            f"{project}: {len(checked)} new images, {result.annotations} annotations on {result.images_matched} "
            f"images; {len(result.images_missing)} images not found; new labels: {result.labels_created or 'none'}"
        )

    @app.command()
    @user_errors
    def export(
        project: str = typer.Option(..., "--project", help="Project name."),
        format: str = typer.Option(
            "coco", "--format", "-f", help="coco | coco-polygons | yolo | png (= png-instance) | png-semantic | events"
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (.json for COCO, .zip otherwise)."),
        data: Path = DATA_OPTION,
    ) -> None:
        """Export a project's annotations."""
        from maskwright.exchange import export_project, normalise_format

        fmt = normalise_format(format)
        sessions, files = open_store(data)
        with sessions() as db:
            proj = find_project(db, project, create=False)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")
            with tmp.open("wb") as f:
                export_project(db, files, proj.id, fmt, f)
            tmp.replace(out)
        typer.echo(f"{project}: {fmt} export -> {out}")

    user_app = typer.Typer(help="Manage the server's users.", no_args_is_help=True)
    app.add_typer(user_app, name="user")

    @user_app.command("add")
    @user_errors
    def user_add(
        username: str = typer.Argument(..., help="Login name."),
        role: str = typer.Option("annotator", "--role", "-r", help="admin | annotator | reviewer"),
        password: str | None = typer.Option(
            None, "--password", help="Password (default: MASKWRIGHT_USER_PASSWORD, else asked for)."
        ),
        data: Path = DATA_OPTION,
    ) -> None:
        """Add a user who can log in to the server."""
        from maskwright.server.auth import create_user

        password = password or os.environ.get("MASKWRIGHT_USER_PASSWORD")
        if password is None:
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        sessions, _ = open_store(data)
        with sessions() as db:
            user = create_user(db, username, password, role)
            db.commit()
        typer.echo(f"user {user.username!r} ({user.role}) added")
