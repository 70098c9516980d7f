"""trigger, login and validation policies: triggered runs, a session's role, stack validations

``run.triggered_by`` is the finished run whose trigger policy created a run (chains never
revisit a stack) and ``run_policy_result.triggered`` the runs a trigger decision created;
``user_session.role`` is the role a login policy gave a session (NULL: the membership's);
``stack_validation`` keeps the latest decision of each validation policy about a stack's
current state.

Revision ID: 20261202_0009
Revises: 20261202_0008
Create Date: 2026-12-02 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261202_0009"
down_revision: str | None = "20261202_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("triggered_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
    with op.batch_alter_table("run_policy_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("triggered", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    op.create_table(
        "stack_validation",
        sa.Column("stack_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("policy_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("policy_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("state_serial", sa.Integer(), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("deny", sa.JSON(), nullable=False),
        sa.Column("warn", sa.JSON(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("trigger", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("evaluated_by", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("evaluated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["policy_id"], ["policy.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stack_id"], ["stack.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stack_id", "policy_id"),
    )


def downgrade() -> None:
    op.drop_table("stack_validation")
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.drop_column("role")
    with op.batch_alter_table("run_policy_result", schema=None) as batch_op:
        batch_op.drop_column("triggered")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("triggered_by")
