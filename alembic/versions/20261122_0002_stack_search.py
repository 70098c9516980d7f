"""stack search: trigram indexes so substring search does not scan every stack

PostgreSQL: a pg_trgm GIN index on the searched text (skipped, with a warning, when the
extension cannot be created by this database user: search then still works, unindexed).
SQLite: an FTS5 table with the trigram tokenizer, kept in step by triggers.

Revision ID: 20261122_0002
Revises: 20261122_0001
Create Date: 2026-11-22 12:30:00
"""

from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from alembic import op

revision: str = "20261122_0002"
down_revision: str | None = "20261122_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must stay identical to backend/stacks/search.py SEARCH_TEXT_SQL.
SEARCH_TEXT = "lower(name || ' ' || description || ' ' || repository_url)"
SQLITE_BODY = "{t}.name || ' ' || {t}.description || ' ' || {t}.repository_url"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DBAPIError as exc:
            import logging

            logging.getLogger("alembic").warning("pg_trgm unavailable, stack search stays unindexed: %s", exc)
            return
        op.execute(f"CREATE INDEX ix_stack_search_trgm ON stack USING gin (({SEARCH_TEXT}) gin_trgm_ops)")
        return
    op.execute("CREATE VIRTUAL TABLE stack_search USING fts5(stack_id UNINDEXED, body, tokenize='trigram')")
    op.execute(
        f"INSERT INTO stack_search (stack_id, body) SELECT id, {SQLITE_BODY.format(t='stack')} FROM stack"
    )
    op.execute(
        "CREATE TRIGGER stack_search_insert AFTER INSERT ON stack BEGIN "
        f"INSERT INTO stack_search (stack_id, body) VALUES (new.id, {SQLITE_BODY.format(t='new')}); END"
    )
    op.execute(
        "CREATE TRIGGER stack_search_update AFTER UPDATE OF name, description, repository_url ON stack BEGIN "
        "DELETE FROM stack_search WHERE stack_id = old.id; "
        f"INSERT INTO stack_search (stack_id, body) VALUES (new.id, {SQLITE_BODY.format(t='new')}); END"
    )
    op.execute(
        "CREATE TRIGGER stack_search_delete AFTER DELETE ON stack BEGIN "
        "DELETE FROM stack_search WHERE stack_id = old.id; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_stack_search_trgm")
        return
    for name in ("stack_search_insert", "stack_search_update", "stack_search_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS stack_search")
