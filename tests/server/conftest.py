"""Server test fixtures: a throwaway PostgreSQL cluster, a fresh database per test (SQLite or
PostgreSQL), and a running app with an admin token.

The PostgreSQL cluster is created by the test run in a temp directory, listening on 127.0.0.1 on a free
port, and stopped at session end. As root, PostgreSQL refuses to start, so the binaries run as the
``postgres`` user (``runuser``). Tests parametrised over ``backend`` skip the ``postgres`` case, with the
reason, only when the binaries are missing.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

PG_BIN = Path(os.environ.get("MASKWRIGHT_PG_BIN", "/usr/lib/postgresql/15/bin"))
ADMIN_PASSWORD = "admin-test-password"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL ``postgresql+psycopg://postgres@127.0.0.1:PORT`` of a throwaway cluster."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (install postgresql-15 or set MASKWRIGHT_PG_BIN)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    root = Path(tempfile.mkdtemp(prefix="maskwright-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)]),
        check=True,
        capture_output=True,
    )
    opts = f"-k {root} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend, tmp_path, request) -> str:
    """A fresh, empty database of the requested backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    import psycopg

    base = request.getfixturevalue("postgres_server")
    name = f"mw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def synthetic_photo(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A small RGB image with a bright disc on a textured background (distinct per seed)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 < (min(h, w) // 4) ** 2
    img[disc] = (200 + seed % 50, 80, 40)
    return img


@dataclass
class Server:
    """A running app (TestClient) with the admin's auth header."""

    client: object
    admin: dict
    settings: object
    app: object

    @property
    def state(self):
        return self.app.state.mw

    def login(self, username: str, password: str) -> dict:
        r = self.client.post("/api/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def add_user(self, username: str, role: str) -> dict:
        password = f"{username}-password"
        r = self.client.post(
            "/api/users", json={"username": username, "password": password, "role": role}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return self.login(username, password)

    def project(self, name: str = "demo", labels=(("cat", "#ff0000"), ("dog", "#00ff00"))) -> dict:
        body = {"name": name, "labels": [{"name": n, "color": c} for n, c in labels]}
        r = self.client.post("/api/projects", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return r.json()

    def upload(self, pid: int, files: list[tuple[str, bytes]], headers: dict | None = None):
        return self.client.post(
            f"/api/projects/{pid}/images", files=[("files", f) for f in files], headers=headers or self.admin
        )


def make_settings(data_dir: Path, database_url: str, **kw):
    from maskwright.server.state import Settings

    # encoder_threads=0: no process-wide torch/OpenCV thread cap while the worker encodes (other tests run here).
    kw.setdefault("encoder_threads", 0)
    return Settings(data_dir=data_dir, database_url=database_url, engine="classic", admin_password=ADMIN_PASSWORD, **kw)


def start_server(settings):
    from fastapi.testclient import TestClient

    from maskwright.server.app import create_app

    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    r = client.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return Server(client, {"Authorization": f"Bearer {r.json()['token']}"}, settings, app)


@pytest.fixture
def server(tmp_path, database_url):
    srv = start_server(make_settings(tmp_path / "data", database_url))
    try:
        yield srv
    finally:
        srv.client.__exit__(None, None, None)
