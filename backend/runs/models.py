from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, text
from sqlmodel import Field, Index, SQLModel

from backend.runs.lifecycle import RunType
from backend.timeutil import utcnow

# Statuses in which a tracked/destroy run holds its stack (the queue admits one at a time).
HOLDING = ("preparing", "planning", "pending_approval", "unconfirmed", "confirmed", "applying")
EXCLUSIVE_TYPES = (RunType.tracked.value, RunType.destroy.value)


class Run(SQLModel, table=True):
    """A run, and the queue entry for it: the runs table is the queue."""

    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_queue", "status", "created_at"),
        Index("ix_run_stack_created", "stack_id", "created_at"),
        Index("ix_run_org_created", "org_id", "created_at"),
        # The database itself refuses a second active tracked/destroy run on a stack.
        Index(
            "ux_run_stack_active_exclusive",
            "stack_id",
            unique=True,
            sqlite_where=text(f"exclusive AND status IN {HOLDING!r}"),
            postgresql_where=text(f"exclusive AND status IN {HOLDING!r}"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organization.id", max_length=40, ondelete="CASCADE")
    stack_id: str = Field(foreign_key="stack.id", max_length=40, ondelete="CASCADE")
    type: str = Field(max_length=16)
    exclusive: bool  # tracked/destroy: one at a time per stack, FIFO
    status: str = Field(default="queued", max_length=20)
    commit_sha: str | None = Field(default=None, max_length=64)
    branch: str | None = Field(default=None, max_length=255)
    message: str = Field(default="", max_length=1000)
    trigger: str = Field(default="api", max_length=32)
    created_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    status_timestamps: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    plan_summary: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    failure_reason: str | None = Field(default=None, max_length=2000)
    cancel_requested_at: datetime | None = None
    worker_id: str | None = Field(default=None, max_length=100)
    heartbeat_at: datetime | None = None
