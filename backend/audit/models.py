from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Index, SQLModel

from backend.timeutil import utcnow


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained record of one mutation (triggers forbid UPDATE/DELETE)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_org_id", "org_id", "id"),
        Index("ix_audit_org_category_id", "org_id", "category", "id"),
        Index("ix_audit_org_actor_id", "org_id", "actor", "id"),
        Index("ix_audit_org_at", "org_id", "at"),
        Index("ix_audit_org_resource_id", "org_id", "resource_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str | None = Field(default=None, max_length=40)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=254)  # email or "token:<name>" or "system"
    actor_id: str | None = Field(default=None, max_length=40)
    actor_type: str = Field(max_length=16)  # user | token | system
    action: str = Field(max_length=64)  # e.g. stack.create
    category: str = Field(max_length=32)  # e.g. stack
    resource_type: str | None = Field(default=None, max_length=32)
    resource_id: str | None = Field(default=None, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
