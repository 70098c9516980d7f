from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel, UniqueConstraint

from backend.timeutil import utcnow


class Role(StrEnum):
    viewer = "viewer"
    member = "member"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.viewer: 0, Role.member: 1, Role.admin: 2}


class Organization(SQLModel, table=True):
    __tablename__ = "organization"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "user_account"

    id: str = Field(primary_key=True, max_length=40)
    email: str = Field(max_length=254, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Membership(SQLModel, table=True):
    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "org_id", name="uq_membership_user_org"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="user_account.id", index=True, max_length=40, ondelete="CASCADE")
    org_id: str = Field(foreign_key="organization.id", index=True, max_length=40, ondelete="CASCADE")
    role: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)


class UserSession(SQLModel, table=True):
    """A browser session. Only the SHA-256 of the cookie value is stored."""

    __tablename__ = "user_session"

    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie value
    user_id: str = Field(foreign_key="user_account.id", index=True, max_length=40, ondelete="CASCADE")
    org_id: str = Field(foreign_key="organization.id", max_length=40, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    last_seen_at: datetime = Field(default_factory=utcnow)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)
    # The role a login policy gave this session (None: the membership's role).
    role: str | None = Field(default=None, max_length=16)


class ApiToken(SQLModel, table=True):
    """Service-account token: org-scoped, with its own role; argon2id hash, looked up by prefix."""

    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organization.id", index=True, max_length=40, ondelete="CASCADE")
    name: str = Field(max_length=100)
    role: str = Field(max_length=16)
    prefix: str = Field(max_length=16, unique=True, index=True)
    secret_hash: str = Field(max_length=255)
    created_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
