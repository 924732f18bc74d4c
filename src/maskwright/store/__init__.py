"""Persistence: ORM models, sessions and migrations (SQLite default, PostgreSQL by URL), file storage."""

from maskwright.store.db import make_engine, migrate, session_factory, sqlite_url
from maskwright.store.files import FileStore
from maskwright.store.models import (
    Annotation,
    ApiToken,
    Base,
    Image,
    InteractionEvent,
    Label,
    Project,
    User,
)

__all__ = [
    "Annotation",
    "ApiToken",
    "Base",
    "FileStore",
    "Image",
    "InteractionEvent",
    "Label",
    "Project",
    "User",
    "make_engine",
    "migrate",
    "session_factory",
    "sqlite_url",
]
