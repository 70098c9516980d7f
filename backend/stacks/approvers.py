"""Stack approvers: users who may confirm a stack's runs without being admins."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import delete
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Membership, Role, User
from backend.auth.principal import Principal
from backend.errors import FieldError, NotFound
from backend.stacks.models import StackApprover
from backend.stacks.service import load_stack
from backend.timeutil import iso, utcnow


class ApproverPublic(BaseModel):
    user_id: str
    email: str
    added_by: str | None
    created_at: str


class ApproversPublic(BaseModel):
    data: list[ApproverPublic]
    count: int


def approver_stacks(session: Session, principal: Principal, stack_ids: set[str]) -> set[str]:
    """Which of ``stack_ids`` the principal approves (users only; tokens are never approvers)."""
    if principal.kind != "user" or not stack_ids:
        return set()
    rows = session.exec(
        select(StackApprover.stack_id).where(
            StackApprover.user_id == principal.id, col(StackApprover.stack_id).in_(stack_ids)
        )
    ).all()
    return set(rows)


def list_approvers(session: Session, principal: Principal, stack_id: str) -> list[ApproverPublic]:
    principal.require(Role.viewer, "viewing stack approvers")
    load_stack(session, principal, stack_id)
    rows = session.exec(
        select(StackApprover, User.email)
        .join(User, col(User.id) == col(StackApprover.user_id))
        .where(StackApprover.stack_id == stack_id)
        .order_by(col(User.email))
    ).all()
    return [
        ApproverPublic(
            user_id=a.user_id, email=email, added_by=a.added_by, created_at=iso(a.created_at) or ""
        )
        for a, email in rows
    ]


def add_approver(session: Session, principal: Principal, stack_id: str, user_id: str) -> ApproverPublic:
    principal.require(Role.admin, "managing stack approvers")
    load_stack(session, principal, stack_id)
    member = session.exec(
        select(User.email)
        .join(Membership, col(Membership.user_id) == col(User.id))
        .where(User.id == user_id, Membership.org_id == principal.org_id)
    ).first()
    if member is None:
        raise FieldError("user_id", f"user {user_id} is not a member of this organization", where="path")
    existing = session.get(StackApprover, (stack_id, user_id))
    if existing is None:
        existing = StackApprover(
            stack_id=stack_id, user_id=user_id, added_by=principal.label, created_at=utcnow()
        )
        session.add(existing)
        session.flush()
        audit.record(
            session,
            principal,
            "stack.approver_add",
            resource_type="stack",
            resource_id=stack_id,
            after={"user_id": user_id, "email": member},
        )
    return ApproverPublic(
        user_id=user_id, email=member, added_by=existing.added_by, created_at=iso(existing.created_at) or ""
    )


def remove_approver(session: Session, principal: Principal, stack_id: str, user_id: str) -> None:
    principal.require(Role.admin, "managing stack approvers")
    load_stack(session, principal, stack_id)
    if session.get(StackApprover, (stack_id, user_id)) is None:
        raise NotFound(f"user {user_id} is not an approver of stack {stack_id}")
    session.execute(
        delete(StackApprover).where(
            col(StackApprover.stack_id) == stack_id, col(StackApprover.user_id) == user_id
        )
    )
    audit.record(
        session,
        principal,
        "stack.approver_remove",
        resource_type="stack",
        resource_id=stack_id,
        before={"user_id": user_id},
    )
