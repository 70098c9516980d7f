from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, text
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from backend.db import empty_dict, empty_list
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
        # The claim query walks queued runs in order and checks older queued runs of the same
        # stack; partial indexes keep both flat however long the history grows.
        Index(
            "ix_run_queued_order",
            "created_at",
            "id",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_run_queued_stack",
            "stack_id",
            "created_at",
            "id",
            sqlite_where=text("status = 'queued' AND exclusive"),
            postgresql_where=text("status = 'queued' AND exclusive"),
        ),
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
    commit_message: str | None = Field(default=None, max_length=2000)
    trigger: str = Field(default="api", max_length=32)
    created_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    status_timestamps: dict[str, Any] = Field(
        default_factory=empty_dict, sa_column=Column(JSON, nullable=False)
    )
    plan_summary: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    has_changes: bool | None = None
    failure_reason: str | None = Field(default=None, max_length=2000)
    # Temporary env overrides for this run only: {name: value} as encrypted JSON.
    env_overrides_encrypted: str | None = Field(default=None, max_length=200_000)
    env_override_names: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    # Object-store keys and checksums of the plan artifacts and archived phase logs.
    artifacts: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    retriggered_from: str | None = Field(default=None, max_length=40)
    # The finished run whose trigger policy made this one (a chain never revisits a stack).
    triggered_by: str | None = Field(default=None, max_length=40)
    cancel_requested_at: datetime | None = None
    worker_id: str | None = Field(default=None, max_length=100)
    heartbeat_at: datetime | None = None
    # Distinct approvals the run's approval policies asked for (0: none; see RunApproval).
    required_approvals: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RunLogChunk(SQLModel, table=True):
    """Log lines of a phase that is still running (or not yet archived). Lines are appended in
    small batches; once the phase ends they are archived to the object store and deleted here."""

    __tablename__ = "run_log_chunk"
    __table_args__ = (Index("ix_run_log_chunk_run", "run_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=40, ondelete="CASCADE")
    phase: str = Field(max_length=16)
    body: str = Field(sa_column=Column(Text, nullable=False))  # lines joined by "\n"
    line_count: int
    created_at: datetime = Field(default_factory=utcnow)


class RunPolicyResult(SQLModel, table=True):
    """What one policy decided at one hook of a run. The policy's name and version are copied:
    the record stays true after the policy is edited or deleted."""

    __tablename__ = "run_policy_result"
    __table_args__ = (Index("ix_run_policy_result_run", "run_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=40, ondelete="CASCADE")
    hook: str = Field(max_length=16)
    policy_id: str = Field(max_length=40)
    policy_name: str = Field(max_length=100)
    policy_version: int
    outcome: str = Field(max_length=16)  # allow, warn, deny, approval, error
    deny: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    warn: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    require_approval: bool = False
    required_approvals: int = 0
    error: str | None = Field(default=None, max_length=2000)
    engine: str = Field(default="", max_length=32)
    duration_ms: float = 0.0
    # Trigger policies: the runs this decision created on other stacks.
    triggered: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RunApproval(SQLModel, table=True):
    """One person's review of a run waiting in ``pending_approval``: approve or reject."""

    __tablename__ = "run_approval"
    __table_args__ = (UniqueConstraint("run_id", "user_id", name="uq_run_approval_run_user"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=40, ondelete="CASCADE")
    user_id: str = Field(max_length=40)
    user_label: str = Field(max_length=254)
    decision: str = Field(max_length=8)  # approve, reject
    comment: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
