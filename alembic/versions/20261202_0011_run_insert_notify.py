"""run insert notify: on PostgreSQL every INSERT into ``run`` wakes idle workers by itself

A statement-level ``AFTER INSERT`` trigger runs ``pg_notify('crucible_runs', '')`` (an
immediate wake-up, ``backend.queue.wakeup.IMMEDIATE``) in the inserting transaction, so the
server delivers it on commit and drops it on rollback, exactly like the ``SELECT pg_notify``
that ``create_run`` used to send as a statement of its own. Enqueueing a run costs one round
trip less, and no code path that inserts runs can forget to wake the workers. SQLite has no
LISTEN/NOTIFY: its wake-ups stay in-process (``wakeup.enqueued``).

Revision ID: 20261202_0011
Revises: 20261202_0010
Create Date: 2026-12-02 07:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261202_0011"
down_revision: str | None = "20261202_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of backend.queue.wakeup.CHANNEL and IMMEDIATE at the time of this migration.
FUNCTION = """
CREATE FUNCTION crucible_run_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('crucible_runs', '');
    RETURN NULL;
END
$$
"""
TRIGGER = (
    "CREATE TRIGGER run_inserted_notify AFTER INSERT ON run "
    "FOR EACH STATEMENT EXECUTE FUNCTION crucible_run_inserted()"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS run_inserted_notify ON run")
    op.execute("DROP FUNCTION IF EXISTS crucible_run_inserted()")
