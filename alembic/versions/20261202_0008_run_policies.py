"""run policies: what each policy decided at each hook of a run, approvals, the count required

``run_policy_result`` keeps one row per policy evaluated at a run's hook (pre_plan, post_plan,
approval, pre_apply) with the policy's name and version copied, so it stays true after edits;
``run_approval`` keeps each person's approve/reject of a run in ``pending_approval`` (one per
person); ``run.required_approvals`` is how many distinct approvals the approval policies asked for.

Revision ID: 20261202_0008
Revises: 20261201_0007
Create Date: 2026-12-02 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261202_0008"
down_revision: str | None = "20261201_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("required_approvals", sa.Integer(), nullable=False, server_default="0"))

    op.create_table(
        "run_policy_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("hook", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("policy_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("policy_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("deny", sa.JSON(), nullable=False),
        sa.Column("warn", sa.JSON(), nullable=False),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("run_policy_result", schema=None) as batch_op:
        batch_op.create_index("ix_run_policy_result_run", ["run_id", "id"], unique=False)

    op.create_table(
        "run_approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_label", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("comment", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "user_id", name="uq_run_approval_run_user"),
    )


def downgrade() -> None:
    op.drop_table("run_approval")
    with op.batch_alter_table("run_policy_result", schema=None) as batch_op:
        batch_op.drop_index("ix_run_policy_result_run")
    op.drop_table("run_policy_result")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("required_approvals")
