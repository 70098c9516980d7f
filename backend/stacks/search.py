"""Substring search over a stack's name, description and repository URL, served by a trigram
index on both databases (see migration 20261122_0002): pg_trgm GIN on PostgreSQL, an FTS5
trigram table on SQLite. Case-insensitive; matches may span the joined fields."""

from __future__ import annotations

from sqlalchemy import Select, String, bindparam, text
from sqlmodel import Session, col

from backend.stacks.models import Stack

# Must stay identical to the indexed expression in the migration.
SEARCH_TEXT_SQL = "lower(stack.name || ' ' || stack.description || ' ' || stack.repository_url)"


def like_pattern(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def apply_search(stmt: Select, session: Session, needle: str) -> Select:
    """Narrow a ``select(Stack)`` to stacks whose searched text contains ``needle``."""
    pattern = bindparam("search_pattern", like_pattern(needle.lower()))
    if session.get_bind().dialect.name == "postgresql":
        return stmt.where(text(f"{SEARCH_TEXT_SQL} LIKE :search_pattern ESCAPE '\\'").bindparams(pattern))
    # FTS5 answers LIKE from its trigram index only without an ESCAPE clause; a needle with a
    # literal % or _ (rare) keeps ESCAPE and is answered by scanning the search table instead.
    if any(c in needle for c in "%_\\"):
        sql = "SELECT stack_id FROM stack_search WHERE body LIKE :search_pattern ESCAPE '\\'"
    else:
        pattern = bindparam("search_pattern", f"%{needle.lower()}%")
        sql = "SELECT stack_id FROM stack_search WHERE body LIKE :search_pattern"
    # A join, so SQLite drives from the index hits and looks stacks up by primary key.
    hits = text(sql).bindparams(pattern).columns(stack_id=String).subquery("search_hits")
    return stmt.join(hits, hits.c.stack_id == col(Stack.id))
