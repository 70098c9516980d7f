"""Policy tables: policies, their immutable versions, label rules and stack attachments."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from backend.db import empty_list
from backend.timeutil import utcnow


class PolicyType(StrEnum):
    """Where a policy is evaluated and which of its results count there (docs/policies.md)."""

    pre_plan = "pre_plan"
    post_plan = "post_plan"
    pre_apply = "pre_apply"
    approval = "approval"
    trigger = "trigger"
    login = "login"
    validation = "validation"


class Policy(SQLModel, table=True):
    """The current version of a policy, plus how it is attached (``applies_to_all``, labels).

    ``body``/``type``/``enabled``/``description`` always equal the row of ``policy_version``
    numbered ``version``: every change to one of them writes a new version first."""

    __tablename__ = "policy"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_policy_org_name"),
        Index("ix_policy_org_type", "org_id", "type"),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organization.id", max_length=40, ondelete="CASCADE")
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=2000)
    type: str = Field(max_length=16)
    body: str = Field(sa_column=Column(Text, nullable=False))
    enabled: bool = True
    applies_to_all: bool = False
    version: int = 1
    created_by: str | None = Field(default=None, max_length=254)
    updated_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PolicyVersion(SQLModel, table=True):
    """One saved state of a policy's evaluated fields; never changed after it is written."""

    __tablename__ = "policy_version"  # the primary key (policy_id, version) keeps numbers unique

    policy_id: str = Field(foreign_key="policy.id", primary_key=True, max_length=40, ondelete="CASCADE")
    version: int = Field(primary_key=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", max_length=2000)
    type: str = Field(max_length=16)
    enabled: bool = True
    changed_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)


class PolicyLabel(SQLModel, table=True):
    """The policy applies to every stack of its organization that has this label."""

    __tablename__ = "policy_label"
    __table_args__ = (Index("ix_policy_label_label_policy", "label", "policy_id"),)

    policy_id: str = Field(foreign_key="policy.id", primary_key=True, max_length=40, ondelete="CASCADE")
    label: str = Field(primary_key=True, max_length=64)


class StackPolicy(SQLModel, table=True):
    """A policy attached to one stack by hand."""

    __tablename__ = "stack_policy"
    __table_args__ = (Index("ix_stack_policy_policy", "policy_id"),)

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    policy_id: str = Field(foreign_key="policy.id", primary_key=True, max_length=40, ondelete="CASCADE")
    attached_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)


class StackValidation(SQLModel, table=True):
    """What one validation policy decided about a stack's current state, the last time it was
    evaluated (on demand or on the schedule). One row per stack and policy: a new evaluation
    replaces the old."""

    __tablename__ = "stack_validation"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    policy_id: str = Field(foreign_key="policy.id", primary_key=True, max_length=40, ondelete="CASCADE")
    policy_name: str = Field(max_length=100)
    policy_version: int
    state_serial: int | None = None  # the state version evaluated (None: the stack has no state)
    outcome: str = Field(max_length=16)  # allow, warn, deny, error
    deny: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    warn: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, max_length=2000)
    engine: str = Field(default="", max_length=32)
    duration_ms: float = 0.0
    trigger: str = Field(default="manual", max_length=16)  # manual, schedule
    evaluated_by: str | None = Field(default=None, max_length=254)
    evaluated_at: datetime = Field(default_factory=utcnow)
