"""FastAPI dependencies: the shared state, a database session per request, the current user, roles.

The cheap dependencies are ``async`` on purpose: a sync dependency costs a hop through the thread pool,
which on a busy CPU adds milliseconds to every click. Token checks are cached briefly in memory for the
same reason (logout clears the cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from maskwright.server.auth import token_hash, user_for_token
from maskwright.server.state import ServerState

TOKEN_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class AuthUser:
    """The authenticated caller (a plain record, usable outside any database session)."""

    id: int
    username: str
    role: str


class TokenCache:
    """``token hash -> (AuthUser, expiry)``; bounded, short-lived."""

    def __init__(self, max_items: int = 1024) -> None:
        self.max_items = max_items
        self._items: dict[str, tuple[AuthUser, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> AuthUser | None:
        item = self._items.get(key)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    def put(self, key: str, user: AuthUser) -> None:
        with self._lock:
            if len(self._items) >= self.max_items:
                self._items.clear()
            self._items[key] = (user, time.monotonic() + TOKEN_CACHE_SECONDS)

    def forget_user(self, user_id: int) -> None:
        with self._lock:
            for key in [k for k, (u, _) in self._items.items() if u.id == user_id]:
                del self._items[key]


async def get_state(request: Request) -> ServerState:
    return request.app.state.mw


async def get_db(state: ServerState = Depends(get_state)) -> AsyncIterator[Session]:
    db = state.sessions()  # no I/O until first use, which happens in the (threaded) endpoint
    try:
        yield db
    finally:
        db.close()


def _lookup(state: ServerState, token: str) -> AuthUser | None:
    with state.sessions() as db:
        user = user_for_token(db, token)
        return None if user is None else AuthUser(user.id, user.username, user.role)


async def current_user(request: Request, state: ServerState = Depends(get_state)) -> AuthUser:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing token: send 'Authorization: Bearer <token>' (get one from POST /api/auth/login)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = token_hash(token)
    user = state.token_cache.get(key)
    if user is None:
        user = await run_in_threadpool(_lookup, state, token)
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        state.token_cache.put(key, user)
    return user


def require_role(*roles: str) -> Callable:
    """Dependency allowing only users whose role is in ``roles``."""

    async def check(user: AuthUser = Depends(current_user)) -> AuthUser:
        if user.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {user.role!r} may not do this; needs one of: {', '.join(roles)}"
            )
        return user

    return check


def not_found(what: str, ident: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident} not found")
