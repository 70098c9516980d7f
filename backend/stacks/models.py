from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from backend.db import empty_list
from backend.timeutil import utcnow


class Tool(StrEnum):
    opentofu = "opentofu"
    terraform = "terraform"
    terragrunt = "terragrunt"
    ansible = "ansible"
    pulumi = "pulumi"


class RunnerKind(StrEnum):
    local = "local"
    docker = "docker"


class VcsProvider(StrEnum):
    """Where feedback (commit statuses, PR/MR comments) goes."""

    github = "github"
    gitlab = "gitlab"
    gitea = "gitea"
    bitbucket = "bitbucket"
    azure_devops = "azure_devops"


DEFAULT_SKIP_MESSAGES = ["[skip ci]", "[ci skip]"]


class Stack(SQLModel, table=True):
    __tablename__ = "stack"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_stack_org_name"),
        Index("ix_stack_org_tool_name", "org_id", "tool", "name"),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organization.id", max_length=40, ondelete="CASCADE")
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=2000)
    repository_url: str = Field(max_length=2048)
    branch: str = Field(default="main", max_length=255)
    project_root: str = Field(default="", max_length=1024)
    tool: str = Field(max_length=16)
    tool_version: str | None = Field(default=None, max_length=64)
    runner: str = Field(default="local", max_length=16)
    runner_image: str | None = Field(default=None, max_length=512)
    auto_apply: bool = False
    # Ansible: the playbook to run (default site.yml, else playbook.yml).
    playbook: str | None = Field(default=None, max_length=255)
    # VCS: the provider to report to, its API base (None: the provider's public cloud) and a
    # token (encrypted, write-only).
    vcs_provider: str | None = Field(default=None, max_length=16)
    vcs_base_url: str | None = Field(default=None, max_length=2048)
    vcs_token_encrypted: str | None = Field(default=None, max_length=4096)
    # Webhook filters: globs over changed files (empty: every change), commit-message
    # substrings and actors whose events start no run.
    trigger_paths: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    skip_message_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SKIP_MESSAGES), sa_column=Column(JSON, nullable=False)
    )
    skip_actors: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    created_by: str | None = Field(
        default=None, max_length=254
    )  # the creator's label (email or token:<name>)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StackLabel(SQLModel, table=True):
    """One row per label so that label filters use an index, on SQLite and PostgreSQL alike."""

    __tablename__ = "stack_label"
    __table_args__ = (Index("ix_stack_label_label_stack", "label", "stack_id"),)

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    label: str = Field(primary_key=True, max_length=64)


class StackVariable(SQLModel, table=True):
    """An environment variable injected into the stack's runs. Every value is stored encrypted;
    a secret one is never shown again and is masked in run logs."""

    __tablename__ = "stack_variable"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    name: str = Field(primary_key=True, max_length=128)
    value_encrypted: str = Field(max_length=65536)
    secret: bool = False
    updated_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StackApprover(SQLModel, table=True):
    """A user who may confirm (and, with policies, approve) this stack's runs, whatever their
    org role. Admins confirm every stack's runs."""

    __tablename__ = "stack_approver"

    stack_id: str = Field(foreign_key="stack.id", primary_key=True, max_length=40, ondelete="CASCADE")
    user_id: str = Field(foreign_key="user_account.id", primary_key=True, max_length=40, ondelete="CASCADE")
    added_by: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
