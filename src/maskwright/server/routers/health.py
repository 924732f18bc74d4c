"""Health: the one endpoint (with login) that needs no token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from maskwright import __version__
from maskwright.server.deps import get_state
from maskwright.server.schemas import Health
from maskwright.server.state import ServerState

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(state: ServerState = Depends(get_state)) -> Health:
    return Health(
        status="ok",
        version=__version__,
        engine=state.engine.name,
        engine_is_fallback=state.engine_is_fallback,
        engine_note=state.engine_note,
        database=state.db_engine.dialect.name,
    )
