"""Passwords (salted scrypt), API tokens (only SHA-256 hashes stored) and users."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from maskwright.store.models import ROLES, ApiToken, User

# scrypt cost: ~50 ms per hash on one core; enough to slow offline guessing of a stolen database.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """Salted scrypt hash as ``scrypt$n$r$p$salt_hex$hash_hex``."""
    if not isinstance(password, str) or len(password) < 8:
        raise ValueError("password must be a string of at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=len(hash_hex) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


def token_hash(token: str) -> str:
    """Tokens are 256-bit random, so a plain SHA-256 is enough to keep them unusable if the DB leaks."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Session, user: User, name: str = "login") -> str:
    """Create a token for ``user`` (the caller commits); returns the token, shown once."""
    token = "mw_" + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=token_hash(token), name=name))
    return token


def user_for_token(db: Session, token: str) -> User | None:
    row = db.execute(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).scalar_one_or_none()
    return row.user if row is not None else None


def authenticate(db: Session, username: str, password: str) -> User | None:
    user = db.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        verify_password(password, _DUMMY_HASH)  # same cost whether or not the user exists
        return None
    return user if verify_password(password, user.password_hash) else None


def create_user(db: Session, username: str, password: str, role: str) -> User:
    """Add a user (the caller commits). ``ValueError`` for a bad role, name or password, or a taken name."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    username = (username or "").strip()
    if not username or len(username) > 64:
        raise ValueError(f"username must be 1 to 64 characters, got {username!r}")
    if db.execute(select(User.id).where(User.username == username)).first() is not None:
        raise ValueError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    db.add(user)
    db.flush()
    return user


def ensure_admin(db: Session, password: str | None = None) -> str | None:
    """Create the ``admin`` user when no user exists yet.

    Returns the password when one was generated (to print once), else None.
    """
    if db.execute(select(User.id).limit(1)).first() is not None:
        return None
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    create_user(db, "admin", password, "admin")
    db.commit()
    return password if generated else None


_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * 32}"
