"""Run use cases for people and automation: authorize → load → transition → audit, in the
caller's transaction. What workers report lives in execution.py."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.crypto import SecretBox
from backend.errors import Conflict, Forbidden, NotFound
from backend.queue import wakeup
from backend.runs import lifecycle as lc
from backend.runs.models import EXCLUSIVE_TYPES, Run, RunLogChunk
from backend.runs.schemas import RunCreate, RunPublic, summary_of
from backend.runs.state import apply_state, state_of
from backend.stacks.approvers import approver_stacks
from backend.stacks.models import Stack
from backend.stacks.service import load_stack
from backend.state import tokens
from backend.timeutil import iso, new_id, utcnow

MAX_PAGE = 200


@dataclass
class RunQuery:
    stack_id: str | None = None
    statuses: list[str] | None = None
    type: str | None = None
    limit: int = 50
    offset: int = 0


def env_aad(run_id: str) -> str:
    return f"run/{run_id}/env"


def available_actions(run: Run, principal: Principal, approves: bool = False) -> list[str]:
    """``approves``: the principal is an approver of the run's stack."""
    state = state_of(run)
    out: list[str] = []
    member = principal.role.at_least(Role.member)
    reviewer = approves or principal.role.at_least(Role.admin)
    if state.status == lc.RunStatus.unconfirmed and reviewer:
        out.append("confirm")
    if state.status == lc.RunStatus.pending_approval and reviewer and principal.kind == "user":
        out.extend(["approve", "reject"])
    if member and state.status in (lc.RunStatus.unconfirmed, lc.RunStatus.pending_approval):
        out.append("discard")
    if (
        member
        and not state.is_terminal
        and state.status
        not in (
            lc.RunStatus.unconfirmed,
            lc.RunStatus.pending_approval,
        )
    ):
        if state.cancel_requested_at is None or state.status not in lc.EXECUTING:
            out.append("cancel")
        else:
            out.append("force_cancel")
    if member and lc.can_retrigger(state):
        out.append("retrigger")
    if principal.role.at_least(Role.admin) and lc.can_delete(state):
        out.append("delete")
    return out


def to_public(run: Run, stack_name: str, principal: Principal, approves: bool = False) -> RunPublic:
    return RunPublic(
        id=run.id,
        stack_id=run.stack_id,
        stack_name=stack_name,
        type=lc.RunType(run.type),
        status=lc.RunStatus(run.status),
        commit_sha=run.commit_sha,
        commit_message=run.commit_message,
        branch=run.branch,
        message=run.message,
        trigger=run.trigger,
        created_by=run.created_by,
        created_at=iso(run.created_at) or "",
        updated_at=iso(run.updated_at) or "",
        status_timestamps=dict(run.status_timestamps),
        plan_summary=summary_of(run.plan_summary),
        has_changes=run.has_changes,
        failure_reason=run.failure_reason,
        cancel_requested_at=iso(run.cancel_requested_at),
        env_override_names=list(run.env_override_names),
        retriggered_from=run.retriggered_from,
        triggered_by=run.triggered_by,
        has_plan_json="plan_json" in (run.artifacts or {}),
        required_approvals=run.required_approvals or 0,
        actions=available_actions(run, principal, approves),
    )


def load_run(session: Session, principal: Principal, run_id: str, *, lock: bool = False) -> Run:
    stmt = select(Run).where(Run.id == run_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    run = session.exec(stmt).first()
    if run is None or run.org_id != principal.org_id:
        raise NotFound(f"run {run_id} not found")
    return run


def _stack_name(session: Session, stack_id: str) -> str:
    return session.exec(select(Stack.name).where(Stack.id == stack_id)).first() or ""


def _snapshot(run: Run) -> dict:
    return {"status": run.status, "type": run.type, "stack_id": run.stack_id, "commit_sha": run.commit_sha}


def create_run(
    session: Session,
    principal: Principal,
    secrets: SecretBox,
    stack_id: str,
    body: RunCreate,
    *,
    trigger: str = "api",
    retriggered_from: str | None = None,
    triggered_by: str | None = None,
) -> RunPublic:
    principal.require(Role.member, "triggering runs")
    stack = load_stack(session, principal, stack_id)
    now = utcnow()
    state = lc.new_run(body.type, now)
    run = Run(
        id=new_id("run"),
        org_id=stack.org_id,
        stack_id=stack.id,
        type=body.type.value,
        exclusive=body.type.value in EXCLUSIVE_TYPES,
        commit_sha=body.commit,
        branch=body.branch or stack.branch,
        message=body.message,
        trigger=trigger,
        created_by=principal.label,
        created_at=now,
        env_override_names=sorted(body.env),
        retriggered_from=retriggered_from,
        triggered_by=triggered_by,
    )
    if body.env:
        run.env_overrides_encrypted = secrets.encrypt(json.dumps(body.env), env_aad(run.id))
    apply_state(run, state, now)
    session.add(run)
    session.flush()
    audit.record(
        session,
        principal,
        "run.create",
        resource_type="run",
        resource_id=run.id,
        after={
            **_snapshot(run),
            "trigger": trigger,
            "env_overrides": run.env_override_names,
            **({"triggered_by": triggered_by} if triggered_by else {}),
        },
    )
    wakeup.enqueued(session)  # no worker is about to look: wake the idle ones
    return to_public(run, stack.name, principal)


def _public(session: Session, principal: Principal, run: Run) -> RunPublic:
    approves = run.stack_id in approver_stacks(session, principal, {run.stack_id})
    return to_public(run, _stack_name(session, run.stack_id), principal, approves)


def get_run(session: Session, principal: Principal, run_id: str) -> RunPublic:
    principal.require(Role.viewer, "viewing runs")
    return _public(session, principal, load_run(session, principal, run_id))


def list_runs(session: Session, principal: Principal, query: RunQuery) -> tuple[list[RunPublic], int]:
    principal.require(Role.viewer, "listing runs")
    stmt = select(Run).where(Run.org_id == principal.org_id)
    if query.stack_id:
        stmt = stmt.where(Run.stack_id == query.stack_id)
    if query.statuses:
        stmt = stmt.where(col(Run.status).in_(query.statuses))
    if query.type:
        stmt = stmt.where(Run.type == query.type)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(
        stmt.order_by(col(Run.created_at).desc(), col(Run.id).desc()).offset(query.offset).limit(query.limit)
    ).all()
    stack_ids = {r.stack_id for r in rows}
    names = dict(session.exec(select(Stack.id, Stack.name).where(col(Stack.id).in_(stack_ids))).all())
    approved = approver_stacks(session, principal, stack_ids)
    return [to_public(r, names.get(r.stack_id, ""), principal, r.stack_id in approved) for r in rows], int(
        total
    )


def _transition(
    session: Session, principal: Principal, run: Run, action: str, new_state: lc.RunState
) -> None:
    before = _snapshot(run)
    now = utcnow()
    apply_state(run, new_state, now)
    session.add(run)
    if new_state.is_terminal:  # e.g. force-canceled: its worker's state token dies with it
        tokens.revoke_run_tokens(session, run.id)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("the run changed meanwhile; reload and try again") from None
    audit.record(
        session,
        principal,
        f"run.{action}",
        resource_type="run",
        resource_id=run.id,
        before=before,
        after=_snapshot(run),
    )


def confirm_run(session: Session, principal: Principal, run_id: str) -> RunPublic:
    principal.require(Role.viewer, "confirming runs")
    run = load_run(session, principal, run_id, lock=True)
    if not principal.role.at_least(Role.admin) and not approver_stacks(session, principal, {run.stack_id}):
        raise Forbidden("confirming runs requires the admin role or being an approver of the run's stack")
    _transition(session, principal, run, "confirm", _attempt(lc.confirm, state_of(run), utcnow()))
    wakeup.notify(session, immediate=True)  # a worker picks it up to apply
    return _public(session, principal, run)


def discard_run(session: Session, principal: Principal, run_id: str) -> RunPublic:
    principal.require(Role.member, "discarding runs")
    run = load_run(session, principal, run_id, lock=True)
    _transition(session, principal, run, "discard", _attempt(lc.discard, state_of(run), utcnow()))
    wakeup.notify(session, immediate=True)  # the stack is free for its next run
    return _public(session, principal, run)


def cancel_run(session: Session, principal: Principal, run_id: str, *, force: bool = False) -> RunPublic:
    principal.require(Role.member, "canceling runs")
    run = load_run(session, principal, run_id, lock=True)
    new_state = _attempt(lc.cancel, state_of(run), utcnow(), force=force)
    action = "force_cancel" if force else "cancel"
    _transition(session, principal, run, action, new_state)
    if new_state.is_terminal:
        wakeup.notify(session, immediate=True)
    return _public(session, principal, run)


def retrigger_run(session: Session, principal: Principal, secrets: SecretBox, run_id: str) -> RunPublic:
    principal.require(Role.member, "triggering runs")
    run = load_run(session, principal, run_id)
    if not lc.can_retrigger(state_of(run)):
        raise Conflict(f"cannot re-trigger a run that is {run.status.replace('_', ' ')}; wait until it ends")
    env = {}
    if run.env_overrides_encrypted:
        env = json.loads(secrets.decrypt(run.env_overrides_encrypted, env_aad(run.id)))
    body = RunCreate(
        type=lc.RunType(run.type), commit=run.commit_sha, branch=run.branch, message=run.message, env=env
    )
    return create_run(
        session, principal, secrets, run.stack_id, body, trigger="retrigger", retriggered_from=run.id
    )


def delete_run(session: Session, principal: Principal, run_id: str) -> list[str]:
    """Delete a terminal run; returns the object keys the caller removes after commit."""
    principal.require(Role.admin, "deleting runs")
    run = load_run(session, principal, run_id, lock=True)
    if not lc.can_delete(state_of(run)):
        raise Conflict(
            f"cannot delete a run that is {run.status.replace('_', ' ')}; cancel or discard it first"
        )
    keys = [a["key"] for a in _artifact_entries(run.artifacts)]
    before = _snapshot(run)
    session.execute(delete(RunLogChunk).where(col(RunLogChunk.run_id) == run.id))
    session.delete(run)
    session.flush()
    audit.record(session, principal, "run.delete", resource_type="run", resource_id=run_id, before=before)
    return keys


def _artifact_entries(artifacts: dict) -> list[dict]:
    out = []
    for name, value in (artifacts or {}).items():
        if name == "logs":
            out.extend(value.values())
        else:
            out.append(value)
    return [a for a in out if isinstance(a, dict) and "key" in a]


def _attempt(fn, *args, **kwargs) -> lc.RunState:
    try:
        return fn(*args, **kwargs)
    except lc.IllegalTransition as exc:
        raise Conflict(str(exc)) from None
