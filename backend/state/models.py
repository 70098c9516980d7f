"""Terraform state backend tables: versions, the per-stack head, locks and stack tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from backend.timeutil import utcnow


class TokenAccess(StrEnum):
    read = "read"  # GET only
    plan = "plan"  # GET + LOCK/UNLOCK (proposed and drift runs)
    write = "write"  # everything the protocol offers

    def can_lock(self) -> bool:
        return self in (TokenAccess.plan, TokenAccess.write)

    def can_write(self) -> bool:
        return self is TokenAccess.write


class StateVersion(SQLModel, table=True):
    """One immutable state snapshot. The bytes live in the object store under object_key."""

    __tablename__ = "state_version"
    __table_args__ = (UniqueConstraint("stack_id", "serial", name="uq_state_version_stack_serial"),)

    id: str = Field(primary_key=True, max_length=40)
    stack_id: str = Field(foreign_key="stack.id", max_length=40, ondelete="CASCADE")
    serial: int = Field(sa_column=Column(BigInteger, nullable=False))
    lineage: str = Field(max_length=255)
    sha256: str = Field(max_length=64)
    md5: str = Field(max_length=32)  # hex
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    state_format: int  # the state's own "version" field (3 or 4)
    resource_count: int
    instance_count: int
    terraform_version: str | None = Field(default=None, max_length=64)
    object_key: str = Field(max_length=512)
    created_by: str = Field(max_length=254)
    token_id: str | None = Field(default=None, max_length=40)
    run_id: str | None = Field(default=None, foreign_key="run.id", max_length=40, ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    forced: bool = False
    note: str | None = Field(default=None, max_length=500)


class StateHead(SQLModel, table=True):
    """Per stack: which version is current. Writers lock this row (FOR UPDATE) so that writes to
    one stack are serialized on PostgreSQL; SQLite's BEGIN IMMEDIATE serializes them anyway."""

    __tablename__ = "state_head"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    current_version_id: str | None = Field(default=None, max_length=40)
    # The highest serial ever stored: after a deletion new states must go above it, because
    # (stack_id, serial) stays unique across the kept history.
    max_serial: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    updated_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None
    deleted_by: str | None = Field(default=None, max_length=254)


class StateLock(SQLModel, table=True):
    """The state lock, as Terraform's LockInfo describes it (fields stored as sent)."""

    __tablename__ = "state_lock"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    lock_id: str = Field(max_length=256)
    operation: str = Field(default="", max_length=256)
    info: str = Field(default="", max_length=4096)
    who: str = Field(default="", max_length=256)
    version: str = Field(default="", max_length=64)
    created: str = Field(default="", max_length=64)
    path: str = Field(default="", max_length=1024)
    locked_at: datetime = Field(default_factory=utcnow)
    token_id: str | None = Field(default=None, max_length=40)
    run_id: str | None = Field(default=None, max_length=40)


class StateToken(SQLModel, table=True):
    """A credential for one stack's state endpoint (HTTP basic password). argon2id hash only;
    looked up by prefix. Run tokens (run_id set) expire with the run's phase."""

    __tablename__ = "state_token"
    __table_args__ = (Index("ix_state_token_stack_created", "stack_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    stack_id: str = Field(foreign_key="stack.id", max_length=40, ondelete="CASCADE")
    name: str = Field(max_length=100)
    access: str = Field(max_length=8)
    prefix: str = Field(max_length=16, unique=True, index=True)
    secret_hash: str = Field(max_length=255)
    created_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    run_id: str | None = Field(
        default=None, foreign_key="run.id", max_length=40, ondelete="CASCADE", index=True
    )
