"""Run request/response models."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from backend.runs.lifecycle import RunStatus, RunType
from backend.stacks.schemas import Branch

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
MAX_ENV_VALUE = 32_768
RESERVED_ENV_PREFIXES = ("CRUCIBLE_",)


def env_name(name: str) -> str:
    if not ENV_NAME_RE.match(name):
        raise ValueError(
            f"{name[:64]!r} is not an environment variable name: letters, digits and '_', "
            "not starting with a digit"
        )
    if name.upper().startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(f"{name!r}: names starting with CRUCIBLE_ are reserved for Crucible itself")
    return name


def _env(values: dict[str, str]) -> dict[str, str]:
    for name, value in values.items():
        env_name(name)
        if "\x00" in value:
            raise ValueError(f"the value of {name} must not contain NUL characters")
        if len(value) > MAX_ENV_VALUE:
            raise ValueError(f"the value of {name} is longer than {MAX_ENV_VALUE} characters")
    return values


def _commit(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not SHA_RE.match(value):
        raise ValueError("commit must be a commit id: 7 to 64 hexadecimal characters")
    return value.lower()


def _message(value: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ValueError("message must not contain control characters")
    return value.strip()


Commit = Annotated[str | None, Field(max_length=64), AfterValidator(_commit)]
Env = Annotated[dict[Annotated[str, Field(max_length=128)], str], Field(max_length=100), AfterValidator(_env)]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: RunType = RunType.tracked
    commit: Commit = None
    branch: Branch | None = Field(default=None, description="Default: the stack's branch")
    message: Annotated[str, Field(max_length=1000), AfterValidator(_message)] = ""
    env: Env = Field(default_factory=dict, description="Temporary env overrides for this run only")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(
        default=False, description="Kill a run that did not stop after a graceful cancel (after 10 s)"
    )


class PlanSummary(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool-specific counts (Ansible: ok, failed, ...)

    add: int = 0
    change: int = 0
    destroy: int = 0


class RunPublic(BaseModel):
    id: str
    stack_id: str
    stack_name: str
    type: RunType
    status: RunStatus
    commit_sha: str | None
    commit_message: str | None
    branch: str | None
    message: str
    trigger: str
    created_by: str | None
    created_at: str
    updated_at: str
    status_timestamps: dict[str, str]
    plan_summary: PlanSummary | None
    has_changes: bool | None
    failure_reason: str | None
    cancel_requested_at: str | None
    env_override_names: list[str]
    retriggered_from: str | None
    triggered_by: str | None = None  # the finished run whose trigger policy made this one
    has_plan_json: bool
    # How many distinct approvals the run's approval policies asked for (0: none).
    required_approvals: int = 0
    # What the caller may do now: confirm, approve, reject, discard, cancel, force_cancel,
    # retrigger, delete.
    actions: list[str]


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class RunQueryParams(BaseModel):
    stack_id: str | None = None
    status: list[RunStatus] | None = None
    type: RunType | None = None
    limit: int = 50
    offset: int = 0


def summary_of(raw: dict[str, Any] | None) -> PlanSummary | None:
    return None if raw is None else PlanSummary(**raw)


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Annotated[str, Field(max_length=1000), AfterValidator(_message)] = ""


class ApprovalPublic(BaseModel):
    user: str
    decision: Literal["approve", "reject"]
    comment: str
    created_at: str


class ApprovalsPublic(BaseModel):
    data: list[ApprovalPublic]
    count: int
    required: int  # distinct approvals the approval policies asked for
    approved: int  # distinct approvals given so far


class PolicyResultPublic(BaseModel):
    hook: Literal["pre_plan", "post_plan", "approval", "pre_apply", "trigger"]
    policy_id: str
    policy_name: str
    policy_version: int
    outcome: Literal["allow", "warn", "deny", "approval", "error", "trigger"]
    deny: list[str]
    warn: list[str]
    require_approval: bool
    required_approvals: int
    error: str | None
    engine: str
    duration_ms: float
    triggered: list[str] = Field(default_factory=list, description="trigger policies: the runs made")
    created_at: str


class PolicyResultsPublic(BaseModel):
    data: list[PolicyResultPublic]
    count: int
