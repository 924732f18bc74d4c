"""Browser fixtures: a real ``maskwright serve`` subprocess (classic engine, temp SQLite data folder, free
port on 127.0.0.1) and Debian's Chromium driven by Python Playwright, headless.

Everything skips, with the reason, only when /usr/bin/chromium or Playwright is absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path(os.environ.get("MASKWRIGHT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ADMIN_PASSWORD = "browser-test-password"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    password: str
    data_dir: Path

    def token(self) -> str:
        r = httpx.post(f"{self.base_url}/api/auth/login", json={"username": "admin", "password": self.password})
        r.raise_for_status()
        return r.json()["token"]

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.base_url}/api{path}", headers=headers, timeout=60, **kwargs)


def start_server(data_dir: Path, engine: str = "classic") -> tuple[subprocess.Popen, str]:
    """Start ``maskwright serve`` and wait until /api/health answers; returns (process, base URL)."""
    port = free_port()
    env = dict(os.environ, MASKWRIGHT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    cmd = [sys.executable, "-m", "maskwright.cli", "serve", "--data", str(data_dir), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--engine", engine]
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"maskwright serve exited with {proc.returncode}: {(data_dir / 'server.log').read_text()}"
            )
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"maskwright serve did not answer within 90 s: {(data_dir / 'server.log').read_text()}")


@pytest.fixture(scope="session")
def live_server():
    data_dir = Path(tempfile.mkdtemp(prefix="maskwright-browser-"))
    proc, base = start_server(data_dir)
    try:
        yield LiveServer(base, ADMIN_PASSWORD, data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (make system-deps installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.set_default_timeout(30000)
    yield page
    context.close()
    assert not page.errors, f"JavaScript errors in the page: {page.errors}"
