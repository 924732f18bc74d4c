"""FastAPI dependencies: the shared state, a database session per request, the current user, roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from maskwright.server.auth import user_for_token
from maskwright.server.state import ServerState
from maskwright.store.models import User


def get_state(request: Request) -> ServerState:
    return request.app.state.mw


def get_db(state: ServerState = Depends(get_state)) -> Iterator[Session]:
    db = state.sessions()
    try:
        yield db
    finally:
        db.close()


def current_user(request: Request, db: Session = Depends(get_db)) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing token: send 'Authorization: Bearer <token>' (get one from POST /api/auth/login)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = user_for_token(db, token.strip())
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


def require_role(*roles: str) -> Callable[[User], User]:
    """Dependency allowing only users whose role is in ``roles``."""

    def check(user: User = Depends(current_user)) -> User:
        if user.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {user.role!r} may not do this; needs one of: {', '.join(roles)}"
            )
        return user

    return check


def not_found(what: str, ident: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident} not found")
