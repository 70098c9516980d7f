"""Database engine, sessions and migrations (one Alembic history for SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, text

from backend.config import Settings

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
READONLY_OPTION = "crucible_readonly"


def empty_dict() -> dict:
    """``default_factory`` for table models' JSON columns, instead of ``dict``.

    SQLModel builds a table model through pydantic's ``get_default``, which asks
    ``inspect.signature`` of every default factory on every construction; for the builtins
    ``dict`` and ``list`` that parses a text signature (~0.1-0.2 ms each, about half the cost of
    creating a Run). For a Python function the answer is immediate."""
    return {}


def empty_list() -> list:
    """``default_factory`` for table models' JSON list columns (see ``empty_dict``)."""
    return []


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Let SQLAlchemy/pysqlite stop issuing its own BEGIN; we emit BEGIN IMMEDIATE
            # so that writers serialize at the start of a transaction, not at first write.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            # Readers take no lock (WAL); writers take the write lock up front.
            readonly = conn.get_execution_options().get(READONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def session_scope(engine: Engine, readonly: bool = False) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back everything on any error.

    ``readonly`` opens a deferred transaction on SQLite, so concurrent readers do not queue
    behind each other for the write lock (a write inside it still works, upgrading the lock).
    """
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# Search indexes that migrations manage outside the models (see backend/stacks/search.py).
UNMODELLED_PREFIX = "stack_search"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic autogenerate filter: ignore the search index objects the models don't declare."""
    return not (name or "").startswith((UNMODELLED_PREFIX, "ix_" + UNMODELLED_PREFIX))


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    if settings.is_sqlite:
        settings.ensure_data_dir()
    command.upgrade(alembic_config(settings.sqlalchemy_url), revision)


def check_database(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
