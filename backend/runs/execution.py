"""What workers ask of and report to the control plane: claim a job, report each step, heartbeat.

These are system calls made by a worker, not by people: no role checks, no audit entries (the
run's status timestamps record every step). Every report names the worker; a report from a
worker that no longer owns the run (it was reaped, or force-canceled) is ignored, so a slow or
revived worker can never overwrite what happened meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlmodel import Session, col, select

from backend.crypto import SecretBox
from backend.policies import enforcement
from backend.queue import service as queue
from backend.queue import wakeup
from backend.runs import lifecycle as lc
from backend.runs.models import Run
from backend.runs.service import env_aad
from backend.runs.state import apply_state, state_of
from backend.stacks.models import Stack, StackVariable
from backend.stacks.variables import variable_aad
from backend.state import tokens


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to execute one phase of a run."""

    run_id: str
    phase: str  # "plan" (clone → plan) or "apply" (clone at the planned commit → apply)
    run_type: str
    stack_id: str
    stack_name: str
    repository_url: str
    branch: str
    commit_sha: str | None
    project_root: str
    tool: str
    tool_version: str | None
    runner: str
    runner_image: str | None
    playbook: str | None
    env: dict[str, str]
    secrets: list[str]  # values to mask in every log line
    artifacts: dict[str, Any] = field(default_factory=dict)
    # OpenTofu/Terraform: the address of this stack's state in Crucible's state backend, which
    # the env's TF_HTTP_* variables point at; the job runner adds a backend override file.
    state_address: str | None = None


# Tools whose state lives in Crucible's state backend (backend.state): the http backend.
STATE_BACKEND_TOOLS = frozenset({"opentofu", "terraform"})


@dataclass(frozen=True)
class StateBackend:
    """How a run reaches the state backend: the URL runners use for this server, the hasher its
    short-lived run tokens are made with, and how long a phase may take (the run timeout)."""

    url: str
    hasher: PasswordHasher
    token_seconds: float

    def address(self, stack_id: str) -> str:
        return f"{self.url.rstrip('/')}/api/v1/state/{stack_id}"


def _state_env(session: Session, backend: StateBackend, run: Run) -> dict[str, str]:
    """The TF_HTTP_* variables of Terraform's http backend, with a token for this phase only
    (plan-only runs get one that can read and lock but not write)."""
    _token_id, secret = tokens.issue_run_token(
        session, backend.hasher, run, timeout_seconds=backend.token_seconds
    )
    address = backend.address(run.stack_id)
    return {
        "TF_HTTP_ADDRESS": address,
        "TF_HTTP_LOCK_ADDRESS": address,
        "TF_HTTP_UNLOCK_ADDRESS": address,
        "TF_HTTP_USERNAME": run.stack_id,
        "TF_HTTP_PASSWORD": secret,
    }


def _job(session: Session, box: SecretBox, run: Run, phase: str, state: StateBackend | None) -> Job:
    stack = session.get(Stack, run.stack_id)
    assert stack is not None  # runs cascade with their stack
    env: dict[str, str] = {}
    secrets: list[str] = []
    for var in session.exec(select(StackVariable).where(StackVariable.stack_id == stack.id)).all():
        value = box.decrypt(var.value_encrypted, variable_aad(stack.id, var.name))
        env[var.name] = value
        if var.secret:
            secrets.append(value)
    if run.env_overrides_encrypted:
        overrides = json.loads(box.decrypt(run.env_overrides_encrypted, env_aad(run.id)))
        for name, value in overrides.items():
            if name in env and env[name] in secrets:
                secrets.append(value)  # overriding a secret keeps it secret
            env[name] = value
    state_address = None
    if state is not None and stack.tool in STATE_BACKEND_TOOLS:
        state_env = _state_env(session, state, run)  # Crucible's own wins over a stack variable
        env.update(state_env)
        secrets.append(state_env["TF_HTTP_PASSWORD"])
        state_address = state_env["TF_HTTP_ADDRESS"]
    return Job(
        run_id=run.id,
        phase=phase,
        run_type=run.type,
        stack_id=stack.id,
        stack_name=stack.name,
        repository_url=stack.repository_url,
        branch=run.branch or stack.branch,
        commit_sha=run.commit_sha,
        project_root=stack.project_root,
        tool=stack.tool,
        tool_version=stack.tool_version,
        runner=stack.runner,
        runner_image=stack.runner_image,
        playbook=stack.playbook,
        env=env,
        secrets=secrets,
        artifacts=dict(run.artifacts or {}),
        state_address=state_address,
    )


def claim(
    session: Session,
    box: SecretBox,
    worker_id: str,
    now: datetime,
    proposed_cap: int,
    state: StateBackend | None = None,
) -> Job | None:
    """The next job: a confirmed run to apply first (it holds its stack), else a queued run."""
    run = queue.claim_next(session, worker_id, now, proposed_cap)  # one round trip on PostgreSQL
    if run is None:
        return None
    if run.status == lc.RunStatus.applying.value:
        return _job(session, box, run, "apply", state)
    try:
        return _job(session, box, run, "plan", state)
    except Exception as exc:  # a variable that no longer decrypts: fail the run, not the worker
        apply_state(run, lc.fail(state_of(run), now, f"cannot prepare the run's variables: {exc}"), now)
        session.add(run)
        wakeup.notify(session, immediate=True)  # this worker reports nothing claimed: wake the others
        return None


# The phase a claimed run is in, by the status the claim gave it.
_PHASES = {lc.RunStatus.applying.value: "apply", lc.RunStatus.preparing.value: "plan"}


def job_for(
    session: Session, box: SecretBox, run_id: str, now: datetime, state: StateBackend | None = None
) -> Job | None:
    """The job of a run already claimed (``backend.queue.async_claim``): apply for an applying
    run, plan for a preparing one. None if the run is no longer in either (canceled meanwhile),
    or if its job cannot be built (a variable that no longer decrypts): then the run fails with
    the reason, since the claim has committed and nobody else will work on it."""
    run = session.get(Run, run_id)
    if run is None or run.status not in _PHASES:
        return None
    try:
        return _job(session, box, run, _PHASES[run.status], state)
    except Exception as exc:
        apply_state(run, lc.fail(state_of(run), now, f"cannot prepare the run's variables: {exc}"), now)
        session.add(run)
        wakeup.notify(session, immediate=True)  # this worker reports nothing claimed: wake the others
        return None


def _owned(session: Session, run_id: str, worker_id: str) -> Run | None:
    stmt = select(Run).where(Run.id == run_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    run = session.exec(stmt).first()
    if run is None or run.worker_id != worker_id or state_of(run).is_terminal:
        return None
    return run


def _save(session: Session, run: Run, new_state: lc.RunState, now: datetime) -> str:
    apply_state(run, new_state, now)
    run.heartbeat_at = now
    session.add(run)
    if new_state.is_terminal or run.worker_id is None:  # the phase is over: so are its tokens
        tokens.revoke_run_tokens(session, run.id)
    if new_state.is_terminal or new_state.status == lc.RunStatus.confirmed:
        wakeup.notify(session)  # the stack is free, or the run is ready to apply
    return new_state.status.value


# ---------------------------------------------------------------------------- reports
#
# Each report is one lifecycle step. ``_STEPS`` holds the steps the hot path of a run takes; the
# ORM functions below call them on the run's real state, and ``report`` turns the same step into
# data for the one-statement PostgreSQL report (``backend.queue.async_claim.REPORT_SQL``).

Step = Callable[[lc.RunState, bool], lc.RunState]  # (state, the stack auto-applies) → new state


def _start_planning_step(now: datetime) -> Step:
    return lambda state, _auto: lc.start_planning(state, now)


def _finish_planning_step(now: datetime, has_changes: bool, needs_approval: bool = False) -> Step:
    return lambda state, auto: lc.finish_planning(
        state, now, has_changes=has_changes, needs_approval=needs_approval, auto_apply=auto
    )


def _finish_applying_step(now: datetime) -> Step:
    return lambda state, _auto: lc.finish_applying(state, now)


def _fail_step(now: datetime, reason: str) -> Step:
    return lambda state, _auto: lc.fail(state, now, reason[:2000])


# A report that leaves the run waiting for people releases it: whoever applies claims it again.
_RELEASES = frozenset({"finish_planning"})
# The stack is free, or the run is ready to apply: wake the queue (as ``_save`` does).
WAKE_STATUSES = tuple(sorted({s.value for s in lc.TERMINAL} | {lc.RunStatus.confirmed.value}))


@dataclass(frozen=True)
class Report:
    """One worker report as data, for a single UPDATE: the statuses the run may be in, where the
    lifecycle sends it from there (by run type, and ``<type>:auto`` when the stack auto-applies:
    read in the statement itself, as the ORM path reads it in its transaction), the columns it
    sets, and the statuses at which the worker lets go of the run."""

    now: datetime  # the report's time: the new status's timestamp
    expected: tuple[str, ...]
    targets: dict[str, str]
    columns: dict[str, Any]
    releases: tuple[str, ...] = ()


def report(
    name: str, step: Step, now: datetime, expected: tuple[lc.RunStatus, ...], **columns: Any
) -> Report:
    """Read ``step`` off the lifecycle for every run type and auto-apply flag. It must lead from
    every expected status to the same place and change nothing but the status, one timestamp and
    (for a failure) the reason, which is what the SQL report writes; otherwise this raises."""
    targets: dict[str, str] = {}
    for run_type in lc.RunType:
        for auto in (False, True):
            found = set()
            for status in expected:
                before = lc.RunState(type=run_type, status=status, timestamps={})
                after = step(before, auto)
                if set(after.timestamps) != {after.status} or after.timestamps[after.status] != now:
                    raise RuntimeError(f"lifecycle step {name} no longer stamps exactly its new status")
                reason = after.failure_reason
                if replace(after, status=status, timestamps={}, failure_reason=None) != before:
                    raise RuntimeError(f"lifecycle step {name} changes more than the SQL report writes")
                if reason is not None:
                    columns["failure_reason"] = reason
                found.add(after.status.value)
            if len(found) != 1:
                raise RuntimeError(f"lifecycle step {name} leads to {sorted(found)} from {expected}")
            targets[run_type.value + (":auto" if auto else "")] = found.pop()
    releases = ()
    if name in _RELEASES:
        releases = tuple(sorted({t for t in targets.values() if lc.RunStatus(t) not in lc.TERMINAL}))
    return Report(now, tuple(s.value for s in expected), targets, columns, releases)


def start_planning_report(now: datetime, commit_sha: str, commit_message: str) -> Report:
    return report(
        "start_planning",
        _start_planning_step(now),
        now,
        (lc.RunStatus.preparing,),
        commit_sha=commit_sha,
        commit_message=commit_message[:2000],
    )


def finish_planning_report(
    now: datetime,
    *,
    summary: dict[str, int],
    has_changes: bool,
    artifacts: dict[str, Any],
    required_approvals: int = 0,
) -> Report:
    return report(
        "finish_planning",
        _finish_planning_step(now, has_changes, required_approvals > 0),
        now,
        (lc.RunStatus.planning,),
        plan_summary=summary,
        has_changes=has_changes,
        artifacts=artifacts,
        required_approvals=required_approvals,
    )


def finish_applying_report(now: datetime) -> Report:
    return report("finish_applying", _finish_applying_step(now), now, (lc.RunStatus.applying,))


def fail_report(now: datetime, reason: str) -> Report:
    return report("fail", _fail_step(now, reason), now, tuple(lc.EXECUTING))


def start_planning(
    session: Session, run_id: str, worker_id: str, now: datetime, commit_sha: str, commit_message: str
) -> str | None:
    run = _owned(session, run_id, worker_id)
    if run is None:
        return None
    run.commit_sha = commit_sha
    run.commit_message = commit_message[:2000]
    return _save(session, run, _start_planning_step(now)(state_of(run), False), now)


def finish_planning(
    session: Session,
    run_id: str,
    worker_id: str,
    now: datetime,
    *,
    summary: dict[str, int],
    has_changes: bool,
    artifacts: dict[str, Any],
    required_approvals: int = 0,
) -> str | None:
    """``required_approvals`` > 0: the approval policies hold a run that would apply."""
    run = _owned(session, run_id, worker_id)
    if run is None:
        return None
    stack = session.get(Stack, run.stack_id)
    run.plan_summary = summary
    run.has_changes = has_changes
    run.artifacts = {**(run.artifacts or {}), **artifacts}
    run.required_approvals = required_approvals
    step = _finish_planning_step(now, has_changes, required_approvals > 0)
    new_state = step(state_of(run), bool(stack and stack.auto_apply))
    if not new_state.is_terminal:
        run.worker_id = None  # this worker is done; whoever applies claims it again
    return _save(session, run, new_state, now)


def record_policy_results(
    session: Session, run_id: str, worker_id: str, hook: str, outcomes: list[enforcement.Outcome]
) -> bool:
    """Store what a hook's policies decided; False (nothing stored) if the run is no longer
    this worker's."""
    if _owned(session, run_id, worker_id) is None:
        return False
    enforcement.record(session, run_id, hook, outcomes)
    return True


MAX_TRIGGER_CHAIN = 20  # runs in one chain of trigger policies, the first included


def _trigger_one(session: Session, box: SecretBox, run: Run, source: str, policy: str, stack_id: str) -> str:
    """A tracked run on ``stack_id``, made by the trigger policy ``policy`` (audited as such)."""
    from backend.auth.models import Role
    from backend.auth.principal import Principal
    from backend.runs.schemas import RunCreate
    from backend.runs.service import create_run

    principal = Principal("system", "trigger-policy", f"trigger policy {policy}", run.org_id, Role.admin)
    message = f"triggered by policy {policy} after run {run.id} of {source}"[:1000]
    body = RunCreate(type=lc.RunType.tracked, message=message)
    return create_run(session, principal, box, stack_id, body, trigger="policy", triggered_by=run.id).id


def trigger_runs(session: Session, box: SecretBox, run_id: str, outcomes: list[enforcement.Outcome]) -> None:
    """Act on what the trigger policies decided after ``run_id`` finished, and store it: one
    tracked run on each stack they name (by id or name, in the run's organization), unless the
    stack is already in this chain of triggered runs (no loops), was named by an earlier policy,
    or the chain is already MAX_TRIGGER_CHAIN runs long. What is not triggered, and why, is added
    to the policy's warnings. A run that did not finish (canceled meanwhile) triggers nothing."""
    run = session.get(Run, run_id)
    if run is None:
        return
    chain, cursor, depth = {run.stack_id}, run, 1
    while cursor.triggered_by and depth < MAX_TRIGGER_CHAIN + 1:
        cursor = session.get(Run, cursor.triggered_by)
        if cursor is None:
            break
        chain.add(cursor.stack_id)
        depth += 1
    stacks = session.exec(select(Stack).where(Stack.org_id == run.org_id)).all()
    by_key = {s.id: s for s in stacks} | {s.name.lower(): s for s in stacks}
    source = session.get(Stack, run.stack_id)
    source_name = source.name if source else run.stack_id
    finished = run.status == lc.RunStatus.finished.value
    triggered: dict[str, list[str]] = {}
    taken: set[str] = set()
    noted: list[enforcement.Outcome] = []
    for o in outcomes:
        made, notes = [], []
        for target in o.trigger if o.error is None else []:
            stack = by_key.get(target) or by_key.get(target.lower())
            if stack is None:
                notes.append(f"no stack {target!r} in this organization: not triggered")
            elif not finished:
                notes.append(f"the run ended {run.status}: {stack.name} not triggered")
            elif stack.id in chain:
                notes.append(f"{stack.name} is already in this chain of runs: not triggered again")
            elif stack.id in taken:
                continue  # another policy named it: one run is enough
            elif depth >= MAX_TRIGGER_CHAIN:
                notes.append(f"the chain has {depth} runs, the most allowed: {stack.name} not triggered")
            else:
                made.append(_trigger_one(session, box, run, source_name, o.check.name, stack.id))
                taken.add(stack.id)
        triggered[o.check.policy_id] = made
        noted.append(replace(o, warn=enforcement.clip([*o.warn, *notes])) if notes else o)
    enforcement.record(session, run.id, enforcement.TRIGGER, noted, triggered)


def finish_applying(session: Session, run_id: str, worker_id: str, now: datetime) -> str | None:
    run = _owned(session, run_id, worker_id)
    if run is None:
        return None
    return _save(session, run, _finish_applying_step(now)(state_of(run), False), now)


def fail(session: Session, run_id: str, worker_id: str, now: datetime, reason: str) -> str | None:
    run = _owned(session, run_id, worker_id)
    if run is None:
        return None
    return _save(session, run, _fail_step(now, reason)(state_of(run), False), now)


def mark_canceled(session: Session, run_id: str, worker_id: str, now: datetime) -> str | None:
    run = _owned(session, run_id, worker_id)
    if run is None:
        return None
    state = state_of(run)
    if state.cancel_requested_at is None:  # stopped without a request: say so rather than lie
        return _save(session, run, lc.fail(state, now, "the run was stopped by its worker"), now)
    return _save(session, run, lc.mark_canceled(state, now), now)


def heartbeat(session: Session, worker_id: str, run_ids: list[str], now: datetime) -> set[str]:
    """Heartbeat the runs this worker executes; returns the ids it must stop (cancel requested,
    or the run ended without it: force-canceled, reaped, deleted)."""
    if not run_ids:
        return set()
    queue.heartbeat(session, worker_id, run_ids, now)
    rows = session.exec(
        select(Run.id, Run.status, Run.cancel_requested_at, Run.worker_id).where(col(Run.id).in_(run_ids))
    ).all()
    found = {r[0] for r in rows}
    stop = set(run_ids) - found
    terminal = {s.value for s in lc.TERMINAL}
    for run_id, status, cancel_at, owner in rows:
        if cancel_at is not None or status in terminal or owner != worker_id:
            stop.add(run_id)
    return stop


def reap(session: Session, now: datetime, timeout: timedelta) -> list[tuple[str, str | None]]:
    """Fail runs whose worker stopped heartbeating; returns (run id, worker id) pairs."""
    stale = queue.reap_stale(session, now, timeout)
    for run in stale:
        tokens.revoke_run_tokens(session, run.id)
    if stale:
        wakeup.notify(session)
    return [(r.id, r.worker_id) for r in stale]


def fail_runs_of_dead_workers(session: Session, now: datetime, dead: set[str]) -> list[str]:
    """Start-up reconciliation: runs held by worker ids known to be gone fail at once."""
    if not dead:
        return []
    runs = session.exec(
        select(Run).where(col(Run.worker_id).in_(dead), col(Run.status).in_(queue.EXECUTING))
    ).all()
    for run in runs:
        reason = f"worker {run.worker_id} stopped (the server restarted) while the run was {run.status}"
        apply_state(run, lc.fail(state_of(run), now, reason), now)
        session.add(run)
        tokens.revoke_run_tokens(session, run.id)
    if runs:
        wakeup.notify(session)
    return [r.id for r in runs]


def worker_ids_in_flight(session: Session) -> set[str]:
    rows = session.exec(
        select(Run.worker_id).where(col(Run.status).in_(queue.EXECUTING), col(Run.worker_id).is_not(None))
    ).all()
    return {r for r in rows if r}
