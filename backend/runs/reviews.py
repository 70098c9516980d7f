"""Reviews of runs that policies hold: approve and reject a run in ``pending_approval``, and what
each policy decided at each hook (``run_policy_result``, written by the worker).

Who reviews: admin users and the stack's approvers, as for confirming; never API tokens (one
admin with several tokens would otherwise count as several approvers). A reviewer gives one review
per run (a second answers 409); the run moves on when ``run.required_approvals`` distinct
reviewers approved (to ``unconfirmed``, or ``confirmed`` on an auto-apply stack); one rejection
fails it with the reviewer's name and comment. Every review is audited.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.errors import Conflict, Forbidden
from backend.queue import wakeup
from backend.runs import lifecycle as lc
from backend.runs.models import Run, RunApproval, RunPolicyResult
from backend.runs.schemas import (
    ApprovalPublic,
    ApprovalsPublic,
    PolicyResultPublic,
    PolicyResultsPublic,
    RunPublic,
)
from backend.runs.service import _attempt, _public, _transition, load_run
from backend.runs.state import state_of
from backend.stacks.approvers import approver_stacks
from backend.stacks.models import Stack
from backend.timeutil import iso, utcnow


def _approved(session: Session, run_id: str) -> int:
    stmt = select(func.count()).where(RunApproval.run_id == run_id, RunApproval.decision == "approve")
    return int(session.exec(stmt).one())


def _review(session: Session, principal: Principal, run_id: str, decision: str, comment: str) -> Run:
    principal.require(Role.viewer, "reviewing runs")
    if principal.kind != "user":
        # Approvals count people: one admin holding several tokens is still one reviewer.
        raise Forbidden("runs are approved and rejected by people: sign in as a user to review")
    run = load_run(session, principal, run_id, lock=True)
    if not principal.role.at_least(Role.admin) and not approver_stacks(session, principal, {run.stack_id}):
        raise Forbidden(
            f"{'approving' if decision == 'approve' else 'rejecting'} runs requires the admin role "
            "or being an approver of the run's stack"
        )
    if run.status != lc.RunStatus.pending_approval.value:
        raise Conflict(
            f"cannot {decision} a run that is {run.status.replace('_', ' ')}: "
            "only runs waiting for approval are reviewed"
        )
    earlier = session.exec(
        select(RunApproval).where(RunApproval.run_id == run.id, RunApproval.user_id == principal.id)
    ).first()
    if earlier is not None:
        raise Conflict(f"you already {earlier.decision}d this run; approvals must come from different people")
    session.add(
        RunApproval(
            run_id=run.id,
            user_id=principal.id,
            user_label=principal.label,
            decision=decision,
            comment=comment,
            created_at=utcnow(),
        )
    )
    try:
        session.flush()
    except IntegrityError:  # the same person reviewing twice at once
        raise Conflict("you already reviewed this run; approvals must come from different people") from None
    return run


def approve_run(session: Session, principal: Principal, run_id: str, comment: str = "") -> RunPublic:
    run = _review(session, principal, run_id, "approve", comment)
    stack = session.get(Stack, run.stack_id)
    complete = _approved(session, run.id) >= max(1, run.required_approvals or 0)
    new_state = _attempt(
        lc.approve,
        state_of(run),
        utcnow(),
        approvals_complete=complete,
        auto_apply=bool(stack and stack.auto_apply),
    )
    _transition(session, principal, run, "approve", new_state)
    if new_state.status == lc.RunStatus.confirmed:
        wakeup.notify(session, immediate=True)  # a worker picks it up to apply
    return _public(session, principal, run)


def reject_run(session: Session, principal: Principal, run_id: str, comment: str = "") -> RunPublic:
    run = _review(session, principal, run_id, "reject", comment)
    reason = f"rejected by {principal.label}" + (f": {comment}" if comment else "")
    new_state = _attempt(lc.reject, state_of(run), utcnow(), reason[:2000])
    _transition(session, principal, run, "reject", new_state)
    wakeup.notify(session, immediate=True)  # the stack is free for its next run
    return _public(session, principal, run)


def list_approvals(session: Session, principal: Principal, run_id: str) -> ApprovalsPublic:
    principal.require(Role.viewer, "viewing run approvals")
    run = load_run(session, principal, run_id)
    rows = session.exec(
        select(RunApproval).where(RunApproval.run_id == run.id).order_by(col(RunApproval.id))
    ).all()
    data = [
        ApprovalPublic(
            user=r.user_label,
            decision=r.decision,  # type: ignore[arg-type]
            comment=r.comment,
            created_at=iso(r.created_at) or "",
        )
        for r in rows
    ]
    approved = sum(1 for r in rows if r.decision == "approve")
    required = run.required_approvals or 0
    return ApprovalsPublic(data=data, count=len(data), required=required, approved=approved)


def policy_results(session: Session, principal: Principal, run_id: str) -> PolicyResultsPublic:
    principal.require(Role.viewer, "viewing run policy results")
    run = load_run(session, principal, run_id)
    rows = session.exec(
        select(RunPolicyResult).where(RunPolicyResult.run_id == run.id).order_by(col(RunPolicyResult.id))
    ).all()
    data = [
        PolicyResultPublic(
            hook=r.hook,  # type: ignore[arg-type]
            policy_id=r.policy_id,
            policy_name=r.policy_name,
            policy_version=r.policy_version,
            outcome=r.outcome,  # type: ignore[arg-type]
            deny=list(r.deny),
            warn=list(r.warn),
            require_approval=r.require_approval,
            required_approvals=r.required_approvals,
            error=r.error,
            engine=r.engine,
            duration_ms=r.duration_ms,
            triggered=list(r.triggered or []),
            created_at=iso(r.created_at) or "",
        )
        for r in rows
    ]
    return PolicyResultsPublic(data=data, count=len(data))
