"""Server settings and the long-lived objects shared by requests (database, files, engine, caches)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from maskwright.engines.base import Engine
from maskwright.imageio import DEFAULT_MAX_PIXELS
from maskwright.server.embeddings import EmbeddingService
from maskwright.server.predictions import PredictionCache
from maskwright.store.files import FileStore

if TYPE_CHECKING:
    from maskwright.server.deps import TokenCache

log = logging.getLogger("maskwright.server")


def _token_cache():
    from maskwright.server.deps import TokenCache

    return TokenCache()


@dataclass
class Settings:
    """Server configuration; environment variables fill what is not given.

    ``database_url`` defaults to ``MASKWRIGHT_DATABASE_URL`` or SQLite in ``data_dir``;
    ``admin_password`` to ``MASKWRIGHT_ADMIN_PASSWORD`` (else a one-time password is printed).
    """

    data_dir: Path = Path("maskwright-data")
    database_url: str | None = None
    engine: str | None = None  # registry name; None = best available
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = 200 * 2**20  # per file
    admin_password: str | None = None
    embedding_memory_items: int = 8
    prediction_handles: int = 64
    encoder_threads: int | None = None  # torch/OpenCV threads during worker encodes; None = cores - 1, 0 = no cap
    polygon_tolerance: float = 1.0  # Douglas-Peucker pixels for polygons sent to the browser
    start_worker: bool = True
    web_dir: Path | None = field(default_factory=lambda: Path(__file__).resolve().parents[1] / "web")

    def resolved_database_url(self) -> str:
        from maskwright.store.db import sqlite_url

        return self.database_url or os.environ.get("MASKWRIGHT_DATABASE_URL") or sqlite_url(self.data_dir)

    def resolved_admin_password(self) -> str | None:
        return self.admin_password or os.environ.get("MASKWRIGHT_ADMIN_PASSWORD") or None


@dataclass
class ServerState:
    settings: Settings
    db_engine: DbEngine
    sessions: sessionmaker[Session]
    files: FileStore
    engine: Engine
    engine_is_fallback: bool
    engine_note: str
    embeddings: EmbeddingService
    predictions: PredictionCache
    generated_admin_password: str | None = None
    token_cache: TokenCache = field(default_factory=lambda: _token_cache())
