"""The FastAPI application: ``create_app(Settings)``; the database is migrated on start.

Routers live in ``server/routers`` (one per resource) under ``/api``; the web UI (``maskwright/web``)
is served at ``/`` when it has an ``index.html``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from maskwright import __version__
from maskwright.server.embeddings import EmbeddingService
from maskwright.server.predictions import PredictionCache
from maskwright.server.routers import annotations, auth, automask, events, exchange, health, images, predict, projects
from maskwright.server.state import ServerState, Settings
from maskwright.store.db import make_engine, migrate, session_factory
from maskwright.store.files import FileStore

log = logging.getLogger("maskwright.server")


def pick_engine(name: str | None):
    """(engine, is_fallback, note) for ``name`` or the best engine available here."""
    from maskwright.engines.registry import best_available, create_engine

    chosen = name or best_available()
    engine = create_engine(chosen)
    fallback = engine.name == "classic" and name is None
    if fallback:
        note = "no SAM weights found: using the weight-free 'classic' engine (see `maskwright engines`)"
    elif engine.name == "classic":
        note = "the weight-free 'classic' engine was requested"
    else:
        note = f"engine {engine.describe()}"
    return engine, fallback, note


def build_state(settings: Settings) -> ServerState:
    """Open the database (migrating it), the file store and the engine; does not start the worker."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_engine = make_engine(settings.resolved_database_url())
    migrate(db_engine)
    files = FileStore(settings.data_dir)
    engine, fallback, note = pick_engine(settings.engine)
    return ServerState(
        settings=settings,
        db_engine=db_engine,
        sessions=session_factory(db_engine),
        files=files,
        engine=engine,
        engine_is_fallback=fallback,
        engine_note=note,
        embeddings=EmbeddingService(engine, files, settings.embedding_memory_items, settings.encoder_threads),
        predictions=PredictionCache(settings.prediction_handles),
    )


def _one_sentence(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The annotation server app. State is built at startup (lifespan), so importing is cheap."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from maskwright.server.auth import ensure_admin

        state = build_state(settings)
        with state.sessions() as db:
            state.generated_admin_password = ensure_admin(db, settings.resolved_admin_password())
        if state.generated_admin_password:
            # Printed once: only its hash is stored.
            print(
                f"\n  maskwright: created user 'admin' with one-time password: {state.generated_admin_password}\n"
                "  (it is shown only now; change it with POST /api/auth/password, or set MASKWRIGHT_ADMIN_PASSWORD)\n",
                flush=True,
            )
        log.warning("engine: %s%s", state.engine.name, f" ({state.engine_note})" if state.engine_is_fallback else "")
        log.info("database: %s; data: %s", state.db_engine.url.render_as_string(), settings.data_dir.resolve())
        if settings.start_worker:
            state.embeddings.start()
        app.state.mw = state
        try:
            yield
        finally:
            state.embeddings.stop()
            state.db_engine.dispose()

    app = FastAPI(
        title="maskwright",
        version=__version__,
        description="SAM-assisted image segmentation annotation server (see docs/api.md).",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_sentence(exc)}, status_code=422)

    for module in (health, auth, projects, images, predict, annotations, events, automask, exchange):
        app.include_router(module.router, prefix="/api")

    web = settings.web_dir
    if web is not None and (web / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    return app
