"""Stack use cases: authorize → load → mutate → audit, all in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.crypto import SecretBox
from backend.errors import Conflict, FieldError, NotFound
from backend.stacks.models import Stack, StackLabel
from backend.stacks.schemas import NON_NULLABLE, StackCreate, StackPublic, StackUpdate
from backend.stacks.search import apply_search
from backend.text import require_text
from backend.timeutil import iso, new_id, utcnow

MAX_PAGE = 200


@dataclass
class StackQuery:
    q: str | None = None
    tool: str | None = None
    label: str | None = None
    limit: int = 50
    offset: int = 0


def labels_of(session: Session, stack_ids: list[str]) -> dict[str, list[str]]:
    """Each stack's labels, sorted (one query for all of them)."""
    out: dict[str, list[str]] = {sid: [] for sid in stack_ids}
    if not stack_ids:
        return out
    rows = session.exec(
        select(StackLabel.stack_id, StackLabel.label)
        .where(col(StackLabel.stack_id).in_(stack_ids))
        .order_by(col(StackLabel.label))
    ).all()
    for stack_id, label in rows:
        out[stack_id].append(label)
    return out


def to_public(stack: Stack, labels: list[str]) -> StackPublic:
    return StackPublic(
        id=stack.id,
        name=stack.name,
        description=stack.description,
        repository_url=stack.repository_url,
        branch=stack.branch,
        project_root=stack.project_root,
        tool=stack.tool,
        tool_version=stack.tool_version,
        runner=stack.runner,  # type: ignore[arg-type]
        runner_image=stack.runner_image,
        playbook=stack.playbook,
        auto_apply=stack.auto_apply,
        labels=labels,
        vcs_provider=stack.vcs_provider,  # type: ignore[arg-type]
        vcs_base_url=stack.vcs_base_url,
        vcs_token_set=stack.vcs_token_encrypted is not None,
        trigger_paths=list(stack.trigger_paths or []),
        skip_message_patterns=list(stack.skip_message_patterns or []),
        skip_actors=list(stack.skip_actors or []),
        created_by=stack.created_by,
        created_at=iso(stack.created_at) or "",
        updated_at=iso(stack.updated_at) or "",
    )


def _snapshot(stack: Stack, labels: list[str]) -> dict[str, Any]:
    doc = to_public(stack, labels).model_dump(mode="json")
    for key in ("created_at", "updated_at", "created_by"):
        doc.pop(key, None)
    return doc


def token_aad(stack_id: str) -> str:
    return f"stack/{stack_id}/vcs_token"


def _set_token(stack: Stack, token: str | None, secrets: SecretBox | None) -> None:
    if token is None:
        stack.vcs_token_encrypted = None
        return
    if secrets is None:
        raise RuntimeError("a VCS token needs the secret box to be stored encrypted")
    stack.vcs_token_encrypted = secrets.encrypt(token, token_aad(stack.id))


def load_stack(session: Session, principal: Principal, stack_id: str) -> Stack:
    stack = session.get(Stack, stack_id)
    # Another org's stack is indistinguishable from a missing one.
    if stack is None or stack.org_id != principal.org_id:
        raise NotFound(f"stack {stack_id} not found")
    return stack


def _name_taken(session: Session, org_id: str, name: str, except_id: str | None = None) -> bool:
    stmt = select(Stack.id).where(Stack.org_id == org_id, func.lower(Stack.name) == name.lower())
    if except_id:
        stmt = stmt.where(Stack.id != except_id)
    return session.exec(stmt).first() is not None


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a stack named {name!r} already exists in this organization") from None


def list_stacks(session: Session, principal: Principal, query: StackQuery) -> tuple[list[StackPublic], int]:
    principal.require(Role.viewer, "listing stacks")
    for field in ("q", "label"):
        value = getattr(query, field)
        if value is not None:
            require_text(field, value)
    stmt = select(Stack).where(Stack.org_id == principal.org_id)
    if query.q and query.q.strip():
        stmt = apply_search(stmt, session, query.q.strip())
    if query.tool:
        stmt = stmt.where(Stack.tool == query.tool)
    if query.label:
        # A join driven by the (label, stack_id) index; (stack_id, label) is the primary key,
        # so a stack matches at most once.
        stmt = stmt.join(StackLabel, col(StackLabel.stack_id) == col(Stack.id)).where(
            col(StackLabel.label) == query.label
        )
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    page = session.exec(stmt.order_by(col(Stack.name)).offset(query.offset).limit(query.limit)).all()
    labels = labels_of(session, [s.id for s in page])
    return [to_public(s, labels[s.id]) for s in page], int(total)


def all_labels(session: Session, principal: Principal) -> list[str]:
    principal.require(Role.viewer, "listing stacks")
    rows = session.exec(
        select(StackLabel.label)
        .join(Stack, col(Stack.id) == col(StackLabel.stack_id))
        .where(Stack.org_id == principal.org_id)
        .distinct()
        .order_by(col(StackLabel.label))
        .limit(500)
    ).all()
    return list(rows)


def count_stacks(session: Session, principal: Principal) -> int:
    principal.require(Role.viewer, "listing stacks")
    return int(session.exec(select(func.count()).where(Stack.org_id == principal.org_id)).one())


def count_by_tool(session: Session, principal: Principal) -> dict[str, int]:
    principal.require(Role.viewer, "listing stacks")
    rows = session.exec(
        select(Stack.tool, func.count()).where(Stack.org_id == principal.org_id).group_by(col(Stack.tool))
    ).all()
    return {tool: int(n) for tool, n in rows}


def get_stack(session: Session, principal: Principal, stack_id: str) -> StackPublic:
    principal.require(Role.viewer, "viewing stacks")
    stack = load_stack(session, principal, stack_id)
    return to_public(stack, labels_of(session, [stack.id])[stack.id])


def create_stack(
    session: Session, principal: Principal, body: StackCreate, secrets: SecretBox | None = None
) -> StackPublic:
    principal.require(Role.member, "creating stacks")
    if _name_taken(session, principal.org_id, body.name):
        raise FieldError("name", f"a stack named {body.name!r} already exists in this organization")
    now = utcnow()
    data = body.model_dump(exclude={"labels", "vcs_token"})
    stack = Stack(
        id=new_id("stk"),
        org_id=principal.org_id,
        created_by=principal.label,
        created_at=now,
        updated_at=now,
        **data,
    )
    if body.vcs_token:
        _set_token(stack, body.vcs_token, secrets)
    session.add(stack)
    _flush(session, body.name)
    for label in body.labels:
        session.add(StackLabel(stack_id=stack.id, label=label))
    session.flush()
    audit.record(
        session,
        principal,
        "stack.create",
        resource_type="stack",
        resource_id=stack.id,
        after=_snapshot(stack, body.labels),
    )
    return to_public(stack, body.labels)


def update_stack(
    session: Session,
    principal: Principal,
    stack_id: str,
    body: StackUpdate,
    secrets: SecretBox | None = None,
) -> StackPublic:
    principal.require(Role.member, "editing stacks")
    stack = load_stack(session, principal, stack_id)
    labels = labels_of(session, [stack.id])[stack.id]
    before = _snapshot(stack, labels)
    changes = body.model_dump(exclude_unset=True)
    for key in NON_NULLABLE:
        if key in changes and changes[key] is None:
            raise FieldError(key, f"{key} cannot be null; leave it out to keep the current value")
    if "name" in changes and _name_taken(session, principal.org_id, changes["name"], stack.id):
        raise FieldError("name", f"a stack named {changes['name']!r} already exists in this organization")
    new_labels = changes.pop("labels", None)
    token_change = "vcs_token" in changes
    new_token = changes.pop("vcs_token", None)
    had_token = stack.vcs_token_encrypted is not None
    moved = [k for k in ("vcs_provider", "vcs_base_url") if k in changes and changes[k] != getattr(stack, k)]
    if moved and had_token and not token_change:
        # The stored token only ever goes where it was given for: pointing it elsewhere (to
        # a host that would collect it) takes the token again.
        raise FieldError(
            "vcs_token",
            f"changing {' and '.join(moved)} needs the token again: send vcs_token (or null to remove it)",
        )
    for key, value in changes.items():
        setattr(stack, key, value)
    if token_change:
        _set_token(stack, new_token, secrets)
    if new_labels is not None and new_labels != labels:
        session.execute(delete(StackLabel).where(col(StackLabel.stack_id) == stack.id))
        for label in new_labels:
            session.add(StackLabel(stack_id=stack.id, label=label))
        labels = new_labels
    after = _snapshot(stack, labels)
    if token_change and new_token is not None:
        # A new token replaces the old one unseen: the audit says it changed, never what it is.
        before["vcs_token"] = "(set)" if had_token else "(not set)"
        after["vcs_token"] = "(new token)"
    if after != before:
        stack.updated_at = utcnow()
        session.add(stack)
        _flush(session, stack.name)
        changed = {k for k in after if after[k] != before.get(k)}
        audit.record(
            session,
            principal,
            "stack.update",
            resource_type="stack",
            resource_id=stack.id,
            before={k: before[k] for k in sorted(changed)},
            after={k: after[k] for k in sorted(changed)},
        )
    return to_public(stack, labels)


def delete_stack(session: Session, principal: Principal, stack_id: str) -> None:
    principal.require(Role.admin, "deleting stacks")
    stack = load_stack(session, principal, stack_id)
    labels = labels_of(session, [stack.id])[stack.id]
    before = _snapshot(stack, labels)
    session.execute(delete(StackLabel).where(col(StackLabel.stack_id) == stack.id))
    session.delete(stack)
    session.flush()
    audit.record(
        session, principal, "stack.delete", resource_type="stack", resource_id=stack_id, before=before
    )
