"""``maskwright import / export / user add / serve`` against a data folder (SQLite)."""

from __future__ import annotations

import functools
import json
import zipfile

import numpy as np
from typer.testing import CliRunner

from maskwright.cli import app
from maskwright.masks import rle_encode

from .conftest import png_bytes, synthetic_photo

runner = CliRunner()


def invoke(*args: str, env: dict | None = None, database_url: str = ""):
    return runner.invoke(app, list(args), env={"MASKWRIGHT_DATABASE_URL": database_url, **(env or {})})


def test_import_export_and_user_add(tmp_path, database_url):
    """The same commands on SQLite (in --data) and PostgreSQL (MASKWRIGHT_DATABASE_URL)."""
    data = str(tmp_path / "data")
    url = database_url if database_url.startswith("postgresql") else ""
    run = functools.partial(invoke, database_url=url)

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.png").write_bytes(png_bytes(synthetic_photo(1)))
    (photos / "sub" / "b.jpg").write_bytes(png_bytes(synthetic_photo(2), "JPEG"))
    (photos / "readme.txt").write_text("not an image")

    r = run("import", str(photos), "--project", "walk", "--data", data)
    assert r.exit_code == 0, r.output
    assert "2 images" in r.output

    ring = np.zeros((96, 128), bool)
    ring[10:50, 10:60] = True
    ring[20:30, 20:30] = False
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 96},
                   {"id": 2, "file_name": "c.png", "width": 128, "height": 96}],
        "categories": [{"id": 3, "name": "ring"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": rle_encode(ring)},
                        {"id": 2, "image_id": 2, "category_id": 3, "segmentation": rle_encode(ring)}],
    }  # fmt: skip
    coco_dir = tmp_path / "coco"
    (coco_dir / "images").mkdir(parents=True)
    (coco_dir / "images" / "c.png").write_bytes(png_bytes(synthetic_photo(3)))  # found next to the JSON
    (coco_dir / "ann.json").write_text(json.dumps(coco))
    r = run("import", str(coco_dir / "ann.json"), "--project", "walk", "--data", data)
    assert r.exit_code == 0, r.output
    assert "1 new images, 2 annotations on 2 images" in r.output

    out = tmp_path / "out" / "walk.json"
    r = run("export", "--project", "walk", "--format", "coco", "--out", str(out), "--data", data)
    assert r.exit_code == 0, r.output
    exported = json.loads(out.read_text())
    assert sorted(im["file_name"] for im in exported["images"]) == ["a.png", "b.jpg", "c.png"]
    assert [a["segmentation"]["counts"] for a in exported["annotations"]] == [rle_encode(ring)["counts"]] * 2

    r = run("export", "--project", "walk", "--format", "png", "--out", str(tmp_path / "m.zip"), "--data", data)
    assert r.exit_code == 0 and "instance/a.png" in zipfile.ZipFile(tmp_path / "m.zip").namelist()
    r = run("export", "--project", "nope", "--format", "coco", "--out", str(out), "--data", data)
    assert r.exit_code == 2 and "no project named 'nope'" in r.output
    r = run("export", "--project", "walk", "--format", "voc", "--out", str(out), "--data", data)
    assert r.exit_code == 2 and "format must be one of" in r.output

    r = run("user", "add", "maria", "--role", "reviewer", "--data", data, env={"MASKWRIGHT_USER_PASSWORD": "s3cret-pw"})
    assert r.exit_code == 0 and "reviewer" in r.output, r.output
    r = run("user", "add", "maria", "--role", "reviewer", "--data", data, env={"MASKWRIGHT_USER_PASSWORD": "s3cret-pw"})
    assert r.exit_code == 2 and "already exists" in r.output
    r = run("user", "add", "bob", "--role", "boss", "--password", "12345678", "--data", data)
    assert r.exit_code == 2 and "role must be one of" in r.output

    from maskwright.server.auth import authenticate
    from maskwright.store import make_engine, session_factory, sqlite_url

    with session_factory(make_engine(url or sqlite_url(data)))() as db:
        assert authenticate(db, "maria", "s3cret-pw").role == "reviewer"
        assert authenticate(db, "maria", "wrong-password") is None


def test_import_with_a_corrupt_file_adds_nothing(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(png_bytes(synthetic_photo(1)))
    (photos / "b.png").write_bytes(b"\x89PNG broken")
    r = invoke("import", str(photos), "--project", "p", "--data", str(tmp_path / "data"))
    assert r.exit_code == 2 and "b.png is not a readable image" in r.output
    assert not (tmp_path / "data" / "images").exists()


def test_serve_rejects_bad_options(tmp_path):
    r = invoke("serve", "--port", "70000", "--data", str(tmp_path))
    assert r.exit_code == 2 and "--port" in r.output
    r = invoke("serve", "--engine", "no-such-engine", "--data", str(tmp_path))
    assert r.exit_code == 2 and "unknown engine" in r.output
