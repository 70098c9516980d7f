"""One Alembic history for SQLite and PostgreSQL: up from nothing, down to nothing, and in step
with the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import backend.models  # noqa: F401  (registers every table)
from alembic import command
from backend.config import load_settings
from backend.db import UNMODELLED_PREFIX, alembic_config, include_object, make_engine, migrate

APP_TABLES = set(SQLModel.metadata.tables)


@pytest.fixture
def migration_settings(empty_db_url, tmp_path):
    return load_settings(database_url=empty_db_url, data_dir=tmp_path / "data", secret_key="k" * 40)


@pytest.fixture
def engine(migration_settings):
    eng = make_engine(migration_settings.sqlalchemy_url)
    yield eng
    eng.dispose()


def _tables(engine) -> set[str]:
    return {t for t in inspect(engine).get_table_names() if not t.startswith(UNMODELLED_PREFIX)}


def _search_objects(engine) -> set[str]:
    """The trigram search index: an FTS5 table on SQLite, a GIN index on PostgreSQL."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE indexname = 'ix_stack_search_trgm'")
            )
        else:
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE name = 'stack_search'"))
        return {r[0] for r in rows}


def _current(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _head(settings) -> str:
    return ScriptDirectory.from_config(alembic_config(settings.sqlalchemy_url)).get_current_head()


def _triggers(engine) -> set[str]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        else:
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return {r[0] for r in rows}


def test_every_model_is_registered():
    assert {
        "organization",
        "user_account",
        "membership",
        "user_session",
        "api_token",
        "stack",
        "stack_label",
        "audit_event",
    } <= APP_TABLES


def test_history_is_linear_with_one_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert all(not r.is_merge_point for r in revisions)


def test_upgrade_downgrade_upgrade(migration_settings, engine):
    assert _tables(engine) == set()
    migrate(migration_settings)
    assert _current(engine) == _head(migration_settings)
    assert _tables(engine) == APP_TABLES | {"alembic_version"}
    assert _triggers(engine)  # the audit log is append-only in the database itself
    assert _search_objects(engine)

    migrate(migration_settings)  # at head already: a no-op, not an error
    assert _current(engine) == _head(migration_settings)

    command.downgrade(alembic_config(migration_settings.sqlalchemy_url), "base")
    assert _current(engine) is None
    assert _tables(engine) == {"alembic_version"}
    assert _triggers(engine) == set()
    assert _search_objects(engine) == set()
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            functions = conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'crucible%'"))
            assert list(functions) == []

    migrate(migration_settings)
    assert _current(engine) == _head(migration_settings)
    assert _tables(engine) == APP_TABLES | {"alembic_version"}


def test_models_match_the_migrated_schema(migration_settings, engine):
    migrate(migration_settings)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": include_object,
                "render_as_batch": conn.dialect.name == "sqlite",
            },
        )
        diffs = compare_metadata(context, SQLModel.metadata)
    assert diffs == [], "models and migrations disagree; generate a migration:\n" + "\n".join(map(str, diffs))
