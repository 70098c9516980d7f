"""Stack variables: environment variables injected into every run of the stack.

Values are stored encrypted (AES-256-GCM, bound to stack and name). A secret variable's value
is write-only: the API never returns it, the audit log records only that it changed, and the
runner masks it as *** in every log line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.crypto import SecretBox
from backend.errors import FieldError, NotFound
from backend.runs.schemas import MAX_ENV_VALUE, env_name
from backend.stacks.models import StackVariable
from backend.stacks.service import load_stack
from backend.timeutil import iso, utcnow

MAX_VARIABLES = 200


def variable_aad(stack_id: str, name: str) -> str:
    return f"stack/{stack_id}/var/{name}"


class VariableWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=MAX_ENV_VALUE)
    secret: bool = False

    @field_validator("value")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("value must not contain NUL characters")
        return value


class VariablePublic(BaseModel):
    name: str
    value: str | None  # None for secrets: never shown again
    secret: bool
    updated_by: str | None
    updated_at: str


class VariablesPublic(BaseModel):
    data: list[VariablePublic]
    count: int


def _public(box: SecretBox, var: StackVariable) -> VariablePublic:
    value = None if var.secret else box.decrypt(var.value_encrypted, variable_aad(var.stack_id, var.name))
    return VariablePublic(
        name=var.name,
        value=value,
        secret=var.secret,
        updated_by=var.updated_by,
        updated_at=iso(var.updated_at) or "",
    )


def _check_name(name: str) -> str:
    try:
        return env_name(name)
    except ValueError as exc:
        raise FieldError("name", str(exc), where="path") from None


def list_variables(
    session: Session, principal: Principal, box: SecretBox, stack_id: str
) -> list[VariablePublic]:
    principal.require(Role.viewer, "viewing stack variables")
    load_stack(session, principal, stack_id)
    rows = session.exec(
        select(StackVariable).where(StackVariable.stack_id == stack_id).order_by(col(StackVariable.name))
    ).all()
    return [_public(box, v) for v in rows]


def put_variable(
    session: Session, principal: Principal, box: SecretBox, stack_id: str, name: str, body: VariableWrite
) -> VariablePublic:
    principal.require(Role.member, "editing stack variables")
    load_stack(session, principal, stack_id)
    name = _check_name(name)
    var = session.get(StackVariable, (stack_id, name))
    now = utcnow()
    if var is None:
        count = len(session.exec(select(StackVariable.name).where(StackVariable.stack_id == stack_id)).all())
        if count >= MAX_VARIABLES:
            raise FieldError("name", f"a stack can have at most {MAX_VARIABLES} variables")
        var = StackVariable(stack_id=stack_id, name=name, value_encrypted="", created_at=now)
        before = None
    else:
        if var.secret and not body.secret:
            raise FieldError(
                "secret", "a secret variable stays secret; delete it and create it again to make it plain"
            )
        before = {"name": name, "secret": var.secret}
        if not var.secret:
            before["value"] = box.decrypt(var.value_encrypted, variable_aad(stack_id, name))
    var.value_encrypted = box.encrypt(body.value, variable_aad(stack_id, name))
    var.secret = body.secret
    var.updated_by = principal.label
    var.updated_at = now
    session.add(var)
    session.flush()
    after: dict = {"name": name, "secret": body.secret}
    if not body.secret:
        after["value"] = body.value
    audit.record(
        session,
        principal,
        "stack.variable_set",
        resource_type="stack",
        resource_id=stack_id,
        before=before,
        after=after,
    )
    return _public(box, var)


def delete_variable(session: Session, principal: Principal, stack_id: str, name: str) -> None:
    principal.require(Role.member, "editing stack variables")
    load_stack(session, principal, stack_id)
    var = session.get(StackVariable, (stack_id, name))
    if var is None:
        raise NotFound(f"variable {name} not found on stack {stack_id}")
    session.delete(var)
    session.flush()
    audit.record(
        session,
        principal,
        "stack.variable_delete",
        resource_type="stack",
        resource_id=stack_id,
        before={"name": name, "secret": var.secret},
    )
