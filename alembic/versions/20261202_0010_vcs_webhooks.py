"""VCS webhooks: stack VCS settings and filters, webhook secrets, the delivery log, feedback

``stack`` gains the VCS provider, API base URL and encrypted token Crucible reports with, and
the webhook filters (trigger path globs, skip commit-message patterns, skip actors);
``stack_webhook`` holds each stack's secret (and the previous one during a rotation's grace
period); ``webhook_delivery`` logs every delivery; ``run_vcs`` is what a webhook-made run owes
the VCS (commit status, PR comment) and ``vcs_comment`` the comment kept per pull request.

Revision ID: 20261202_0010
Revises: 20261202_0009
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261202_0010"
down_revision: str | None = "20261202_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString
T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("stack", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vcs_provider", S(length=16), nullable=True))
        batch_op.add_column(sa.Column("vcs_base_url", S(length=2048), nullable=True))
        batch_op.add_column(sa.Column("vcs_token_encrypted", S(length=4096), nullable=True))
        batch_op.add_column(sa.Column("trigger_paths", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column(
                "skip_message_patterns",
                sa.JSON(),
                nullable=False,
                server_default='["[skip ci]", "[ci skip]"]',
            )
        )
        batch_op.add_column(sa.Column("skip_actors", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "stack_webhook",
        sa.Column("stack_id", S(length=40), nullable=False),
        sa.Column("secret_encrypted", S(length=512), nullable=False),
        sa.Column("previous_encrypted", S(length=512), nullable=True),
        sa.Column("previous_valid_until", T(), nullable=True),
        sa.Column("rotated_at", T(), nullable=True),
        sa.Column("created_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["stack_id"], ["stack.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stack_id"),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", S(length=40), nullable=False),
        sa.Column("org_id", S(length=40), nullable=False),
        sa.Column("stack_id", S(length=40), nullable=False),
        sa.Column("provider", S(length=16), nullable=False),
        sa.Column("event", S(length=100), nullable=False),
        sa.Column("delivery_id", S(length=200), nullable=True),
        sa.Column("dedupe_key", S(length=200), nullable=True),
        sa.Column("received_at", T(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("outcome", S(length=16), nullable=False),
        sa.Column("reason", S(length=2000), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("run_id", S(length=40), nullable=True),
        sa.Column("replay_of", S(length=40), nullable=True),
        sa.Column("replayed_by", S(length=254), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("source_ip", S(length=64), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["stack_id"], ["stack.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stack_id", "dedupe_key", name="uq_webhook_delivery_dedupe"),
    )
    op.create_index(
        "ix_webhook_delivery_stack_received", "webhook_delivery", ["stack_id", "received_at"], unique=False
    )
    op.create_index("ix_webhook_delivery_received", "webhook_delivery", ["received_at"], unique=False)
    op.create_table(
        "run_vcs",
        sa.Column("run_id", S(length=40), nullable=False),
        sa.Column("stack_id", S(length=40), nullable=False),
        sa.Column("provider", S(length=16), nullable=False),
        sa.Column("repo", S(length=512), nullable=False),
        sa.Column("sha", S(length=64), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("pr_url", S(length=2048), nullable=True),
        sa.Column("delivery_id", S(length=40), nullable=True),
        sa.Column("synced_status", S(length=20), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", T(), nullable=True),
        sa.Column("lease_until", T(), nullable=True),
        sa.Column("status_result", sa.JSON(), nullable=True),
        sa.Column("comment_result", sa.JSON(), nullable=True),
        sa.Column("created_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stack_id"], ["stack.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index(
        "ix_run_vcs_pending",
        "run_vcs",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text("NOT done"),
        postgresql_where=sa.text("NOT done"),
    )
    op.create_index("ix_run_vcs_pr", "run_vcs", ["stack_id", "repo", "pr_number"], unique=False)
    op.create_table(
        "vcs_comment",
        sa.Column("stack_id", S(length=40), nullable=False),
        sa.Column("repo", S(length=512), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=False),
        sa.Column("comment_id", S(length=64), nullable=False),
        sa.Column("thread_id", S(length=64), nullable=True),
        sa.Column("url", S(length=2048), nullable=True),
        sa.Column("updated_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["stack_id"], ["stack.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stack_id", "repo", "pr_number"),
    )


def downgrade() -> None:
    op.drop_table("vcs_comment")
    op.drop_index("ix_run_vcs_pr", table_name="run_vcs")
    op.drop_index("ix_run_vcs_pending", table_name="run_vcs")
    op.drop_table("run_vcs")
    op.drop_index("ix_webhook_delivery_received", table_name="webhook_delivery")
    op.drop_index("ix_webhook_delivery_stack_received", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_table("stack_webhook")
    with op.batch_alter_table("stack", schema=None) as batch_op:
        for column in (
            "skip_actors",
            "skip_message_patterns",
            "trigger_paths",
            "vcs_token_encrypted",
            "vcs_base_url",
            "vcs_provider",
        ):
            batch_op.drop_column(column)
