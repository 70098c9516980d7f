"""VCS integration tables: each stack's webhook secret, the delivery log, the feedback owed to
the VCS for each webhook-made run, and the PR/MR comment that feedback keeps up to date."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, text
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from backend.db import empty_dict
from backend.timeutil import utcnow


class StackWebhook(SQLModel, table=True):
    """A stack's webhook secret. After a rotation the previous secret stays valid until
    ``previous_valid_until``, so providers can be updated without a window of 401s."""

    __tablename__ = "stack_webhook"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    secret_encrypted: str = Field(max_length=512)
    previous_encrypted: str | None = Field(default=None, max_length=512)
    previous_valid_until: datetime | None = None
    rotated_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One delivery a provider made to a stack's endpoint, and what came of it.

    ``dedupe_key`` is the provider's delivery id for deliveries that passed verification (NULL
    for rejected ones and replays): the unique constraint makes a redelivery a no-op, even when
    two copies arrive at once."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("stack_id", "dedupe_key", name="uq_webhook_delivery_dedupe"),
        Index("ix_webhook_delivery_stack_received", "stack_id", "received_at"),
        Index("ix_webhook_delivery_received", "received_at"),  # the retention purge
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organization.id", max_length=40, ondelete="CASCADE")
    stack_id: str = Field(foreign_key="stack.id", max_length=40, ondelete="CASCADE")
    provider: str = Field(max_length=16)
    event: str = Field(default="", max_length=100)
    delivery_id: str | None = Field(default=None, max_length=200)
    dedupe_key: str | None = Field(default=None, max_length=200)
    received_at: datetime = Field(default_factory=utcnow)
    headers: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    # The body as received (verified deliveries only: an unsigned caller cannot fill the log).
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    payload_bytes: int = 0
    outcome: str = Field(max_length=16)  # created, skipped, rejected
    reason: str = Field(default="", max_length=2000)
    status_code: int = 202
    run_id: str | None = Field(default=None, foreign_key="run.id", max_length=40, ondelete="SET NULL")
    replay_of: str | None = Field(default=None, max_length=40)
    replayed_by: str | None = Field(default=None, max_length=254)
    duplicates: int = 0  # redeliveries of the same delivery id, answered without processing
    source_ip: str | None = Field(default=None, max_length=64)


class RunVcs(SQLModel, table=True):
    """Where a webhook-made run came from, and the commit status / PR comment it owes the VCS.

    The feedback dispatcher sends whatever changed since ``synced_status``; ``done`` (with a
    partial index) keeps its scan to the runs that still owe something."""

    __tablename__ = "run_vcs"
    __table_args__ = (
        Index(
            "ix_run_vcs_pending",
            "next_attempt_at",
            sqlite_where=text("NOT done"),
            postgresql_where=text("NOT done"),
        ),
        # A pull request's runs: the newest owns the comment; one per head commit.
        Index("ix_run_vcs_pr", "stack_id", "repo", "pr_number"),
    )

    run_id: str = Field(foreign_key="run.id", primary_key=True, max_length=40, ondelete="CASCADE")
    stack_id: str = Field(foreign_key="stack.id", max_length=40, ondelete="CASCADE")
    provider: str = Field(max_length=16)  # who sent the webhook: github, gitlab, gitea, ...
    repo: str = Field(max_length=512)  # owner/name, GitLab project path, Azure project/repository
    sha: str = Field(max_length=64)
    pr_number: int | None = None
    pr_url: str | None = Field(default=None, max_length=2048)
    delivery_id: str | None = Field(default=None, max_length=40)
    synced_status: str | None = Field(default=None, max_length=20)
    done: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    # The last outcome of each call: {"ok": bool, "error": str|None, "at": iso, "state": ...}.
    status_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    comment_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class VcsComment(SQLModel, table=True):
    """The one comment Crucible keeps on a pull/merge request for a stack, edited in place by
    every re-plan instead of adding another."""

    __tablename__ = "vcs_comment"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    repo: str = Field(primary_key=True, max_length=512)
    pr_number: int = Field(primary_key=True)
    comment_id: str = Field(max_length=64)
    thread_id: str | None = Field(default=None, max_length=64)  # Azure DevOps: the thread
    url: str | None = Field(default=None, max_length=2048)
    updated_at: datetime = Field(default_factory=utcnow)
