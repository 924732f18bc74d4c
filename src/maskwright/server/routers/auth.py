"""Login, the current user, and user management (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from maskwright.server.auth import authenticate, create_user, hash_password, issue_token, verify_password
from maskwright.server.deps import AuthUser, current_user, get_db, get_state, require_role
from maskwright.server.schemas import LoginIn, LoginOut, PasswordIn, UserIn, UserOut
from maskwright.server.state import ServerState
from maskwright.store.models import ApiToken, User

router = APIRouter(tags=["auth"])


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role)


@router.post("/auth/login", response_model=LoginOut)
def login(body: LoginIn, db: Session = Depends(get_db)) -> LoginOut:
    user = authenticate(db, body.username, body.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    token = issue_token(db, user)
    db.commit()
    return LoginOut(token=token, user=user_out(user))


@router.post("/auth/logout", status_code=204)
def logout(
    user: AuthUser = Depends(current_user), db: Session = Depends(get_db), state: ServerState = Depends(get_state)
):
    """Revoke every login token of the current user."""
    for tok in db.execute(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.name == "login")).scalars():
        db.delete(tok)
    db.commit()
    state.token_cache.forget_user(user.id)


@router.post("/auth/password", status_code=204)
def change_password(body: PasswordIn, user: AuthUser = Depends(current_user), db: Session = Depends(get_db)):
    """Change the caller's password (e.g. to replace the admin's first-start password)."""
    row = db.get(User, user.id)
    if row is None or not verify_password(body.current_password, row.password_hash):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "current_password is wrong")
    row.password_hash = hash_password(body.new_password)
    db.commit()


@router.get("/auth/me", response_model=UserOut)
def me(user: AuthUser = Depends(current_user)) -> UserOut:
    return user_out(user)


@router.get("/users", response_model=list[UserOut])
def list_users(_: AuthUser = Depends(require_role("admin")), db: Session = Depends(get_db)) -> list[UserOut]:
    return [user_out(u) for u in db.execute(select(User).order_by(User.id)).scalars()]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(body: UserIn, _: AuthUser = Depends(require_role("admin")), db: Session = Depends(get_db)) -> UserOut:
    try:
        user = create_user(db, body.username, body.password, body.role)
        db.commit()
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT if "exists" in str(exc) else 422, str(exc)) from None
    except IntegrityError:  # created concurrently
        db.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} already exists") from None
    return user_out(user)
