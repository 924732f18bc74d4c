"""Store: migrations match the models on both backends; content-addressed file storage."""

from __future__ import annotations

import pytest

from maskwright.store import Base, FileStore, make_engine, migrate
from maskwright.store.db import current_revision
from maskwright.store.files import display_name


def test_migrations_create_exactly_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from maskwright.store.db import alembic_config

    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: the server migrates at every start
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert current_revision(engine) == head
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ (add an Alembic revision): {diff}"
    engine.dispose()


def test_file_store_paths_come_from_hashes_only(tmp_path):
    files = FileStore(tmp_path)
    sha, new = files.put_image(b"\x89PNG fake bytes", "PNG")
    assert new and files.put_image(b"\x89PNG fake bytes", "PNG") == (sha, False)
    path = files.image_path(sha, "PNG")
    assert path.parent.parent == tmp_path / "images" and path.name == f"{sha}.png"
    assert files.read_image(sha, "PNG") == b"\x89PNG fake bytes"
    with pytest.raises(ValueError, match="64 lowercase hex"):
        files.image_path("../../etc/passwd", "PNG")
    files.put_embedding(sha, "sam/../x", "1", b"emb")
    assert files.get_embedding(sha, "sam/../x", "1") == b"emb"
    assert tmp_path in files.embedding_path(sha, "sam/../x", "1").resolve().parents
    assert files.get_embedding(sha, "classic", "1") is None
    assert display_name("..\\..\\windows\\evil.jpg") == "evil.jpg"
    assert display_name("a/b/../c.png") == "c.png" and display_name("") == "image"


def test_passwords_are_salted_and_tokens_hashed(tmp_path):
    from maskwright.server.auth import create_user, hash_password, issue_token, user_for_token, verify_password
    from maskwright.store import ApiToken, session_factory

    a, b = hash_password("same-password"), hash_password("same-password")
    assert a != b and a.startswith("scrypt$") and verify_password("same-password", a)
    assert not verify_password("other-password", a) and not verify_password("x", "garbage")
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    with session_factory(engine)() as db:
        user = create_user(db, "ann", "annotator-pw", "annotator")
        token = issue_token(db, user)
        db.commit()
        stored = db.query(ApiToken).one()
        assert token not in stored.token_hash and len(stored.token_hash) == 64
        assert user_for_token(db, token).username == "ann" and user_for_token(db, token + "x") is None
