"""Request/response models of the state backend (REST and the Terraform protocol)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr


def _printable(value: str) -> str:
    # Tabs and newlines appear in Terraform's Info/Who on some systems; NUL never may
    # (PostgreSQL cannot store it), nor other control characters.
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _lock_id(value: str) -> str:
    value = _printable(value)
    if not value.strip():
        raise ValueError("ID must not be empty")
    return value


LockText = Annotated[StrictStr, AfterValidator(_printable)]


class LockInfo(BaseModel):
    """Terraform's statemgr.LockInfo, as its http backend sends it on LOCK (Go field names)."""

    model_config = ConfigDict(extra="ignore")

    ID: Annotated[StrictStr, Field(max_length=256), AfterValidator(_lock_id)]
    Operation: Annotated[LockText, Field(max_length=256)] = ""
    Info: Annotated[LockText, Field(max_length=4096)] = ""
    Who: Annotated[LockText, Field(max_length=256)] = ""
    Version: Annotated[LockText, Field(max_length=64)] = ""
    Created: Annotated[LockText, Field(max_length=64)] = ""
    Path: Annotated[LockText, Field(max_length=1024)] = ""


class UnlockInfo(BaseModel):
    """An UNLOCK body: the LockInfo of the lock being released, or just its ID (force-unlock
    from newer clients), or nothing at all (force-unlock from older ones)."""

    model_config = ConfigDict(extra="ignore")

    ID: Annotated[StrictStr | None, Field(max_length=256)] = None


class LockPublic(BaseModel):
    ID: str
    Operation: str
    Info: str
    Who: str
    Version: str
    Created: str
    Path: str
    locked_at: str
    age_seconds: float
    token_id: str | None = None
    run_id: str | None = None


class LockStatus(BaseModel):
    locked: bool
    lock: LockPublic | None = None


class ForceUnlockResult(BaseModel):
    """``unlocked`` is false when there was no lock to remove (the call is idempotent)."""

    unlocked: bool
    lock: LockPublic | None = None


class VersionPublic(BaseModel):
    id: str
    stack_id: str
    serial: int
    lineage: str
    sha256: str
    md5: str
    size: int
    state_format: int
    resource_count: int
    instance_count: int
    terraform_version: str | None
    created_by: str
    token_id: str | None
    run_id: str | None
    created_at: str
    forced: bool
    note: str | None
    current: bool


class VersionsPublic(BaseModel):
    data: list[VersionPublic]
    count: int


class StateResources(BaseModel):
    serial: int
    data: list[dict[str, Any]]
    count: int  # instances that match the filters (``data`` is one page of them)
    offset: int
    types: list[str]  # every resource type in the version


class StateOutputs(BaseModel):
    serial: int
    data: list[dict[str, Any]]
    count: int


class StackTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)]
    access: Literal["read", "write"] = "write"


class StackTokenPublic(BaseModel):
    id: str
    stack_id: str
    name: str
    access: str
    prefix: str  # the token's first characters, to recognise it
    created_by: str | None
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None
    run_id: str | None


class StackTokenCreated(StackTokenPublic):
    token: str  # shown only in this response


class StackTokensPublic(BaseModel):
    data: list[StackTokenPublic]
    count: int


TokenPublic = StackTokenPublic  # the name the service signatures use (tokens.create_token, ...)
