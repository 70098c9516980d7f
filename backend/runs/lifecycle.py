"""The run lifecycle: every legal transition, and nothing about HTTP or SQL.

A service loads a run, calls one of these functions, and saves the returned state in the same
transaction. An illegal transition raises ``IllegalTransition`` (HTTP 409) and changes nothing:
the functions never mutate their input.

    queued → preparing → planning → (pending_approval) → unconfirmed → confirmed → applying → finished
    terminal: finished, failed, discarded, canceled

Plan-only types (proposed, drift) finish after planning. Auto-apply stacks skip ``unconfirmed``.
A plan without changes finishes at once: there is nothing to confirm or apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum


class RunStatus(StrEnum):
    queued = "queued"
    preparing = "preparing"
    planning = "planning"
    pending_approval = "pending_approval"
    unconfirmed = "unconfirmed"
    confirmed = "confirmed"
    applying = "applying"
    finished = "finished"
    failed = "failed"
    discarded = "discarded"
    canceled = "canceled"


class RunType(StrEnum):
    tracked = "tracked"  # plan → confirm → apply
    proposed = "proposed"  # plan only (pull requests)
    destroy = "destroy"  # destroy plan → confirm → apply
    drift = "drift"  # plan only, flags changes


TERMINAL = frozenset({RunStatus.finished, RunStatus.failed, RunStatus.discarded, RunStatus.canceled})
PLAN_ONLY = frozenset({RunType.proposed, RunType.drift})
# States in which a worker process is executing something for the run.
EXECUTING = frozenset({RunStatus.preparing, RunStatus.planning, RunStatus.applying})
# After a graceful cancel, a forced one (kill) is allowed once this much time has passed.
FORCE_CANCEL_COOL_OFF = timedelta(seconds=10)


class IllegalTransition(Exception):
    """The requested action is not allowed in the run's current state (HTTP 409)."""


@dataclass(frozen=True)
class RunState:
    type: RunType
    status: RunStatus = RunStatus.queued
    # When the run first entered each status.
    timestamps: dict[RunStatus, datetime] = field(default_factory=dict)
    cancel_requested_at: datetime | None = None
    failure_reason: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


def new_run(run_type: RunType, now: datetime) -> RunState:
    return RunState(type=run_type, status=RunStatus.queued, timestamps={RunStatus.queued: now})


def _to(state: RunState, status: RunStatus, now: datetime, **changes) -> RunState:
    stamps = dict(state.timestamps)
    stamps.setdefault(status, now)
    return replace(state, status=status, timestamps=stamps, **changes)


def _require(state: RunState, action: str, *allowed: RunStatus) -> None:
    if state.status not in allowed:
        raise IllegalTransition(f"cannot {action} a run that is {state.status.value.replace('_', ' ')}")


# ---------------------------------------------------------------- worker-driven steps


def start_preparing(state: RunState, now: datetime) -> RunState:
    """A worker claimed the run: clone the workspace, inject variables."""
    _require(state, "start", RunStatus.queued)
    return _to(state, RunStatus.preparing, now)


def start_planning(state: RunState, now: datetime) -> RunState:
    _require(state, "plan", RunStatus.preparing)
    return _to(state, RunStatus.planning, now)


def finish_planning(
    state: RunState,
    now: datetime,
    *,
    has_changes: bool,
    needs_approval: bool = False,
    auto_apply: bool = False,
) -> RunState:
    """The plan is stored. Where the run goes depends on its type, the plan and the policies."""
    _require(state, "finish planning", RunStatus.planning)
    if state.type in PLAN_ONLY or not has_changes:
        return _to(state, RunStatus.finished, now)
    if needs_approval:
        return _to(state, RunStatus.pending_approval, now)
    if auto_apply:
        return _to(state, RunStatus.confirmed, now)
    return _to(state, RunStatus.unconfirmed, now)


def start_applying(state: RunState, now: datetime) -> RunState:
    _require(state, "apply", RunStatus.confirmed)
    return _to(state, RunStatus.applying, now)


def finish_applying(state: RunState, now: datetime) -> RunState:
    _require(state, "finish applying", RunStatus.applying)
    return _to(state, RunStatus.finished, now)


def fail(state: RunState, now: datetime, reason: str) -> RunState:
    """Any non-terminal run can fail (tool error, policy deny, worker lost, timeout)."""
    if state.is_terminal:
        raise IllegalTransition(f"cannot fail a run that is already {state.status.value}")
    return _to(state, RunStatus.failed, now, failure_reason=reason)


def mark_canceled(state: RunState, now: datetime) -> RunState:
    """The executor stopped after a cancel request."""
    if state.cancel_requested_at is None:
        raise IllegalTransition("cannot mark a run canceled that nobody asked to cancel")
    if state.is_terminal:
        raise IllegalTransition(f"cannot cancel a run that is already {state.status.value}")
    return _to(state, RunStatus.canceled, now)


# ---------------------------------------------------------------- user actions


def approve(
    state: RunState, now: datetime, *, approvals_complete: bool, auto_apply: bool = False
) -> RunState:
    """One approval was recorded; the run moves on when the required number is reached."""
    _require(state, "approve", RunStatus.pending_approval)
    if not approvals_complete:
        return state
    return _to(state, RunStatus.confirmed if auto_apply else RunStatus.unconfirmed, now)


def reject(state: RunState, now: datetime, reason: str = "rejected by an approver") -> RunState:
    _require(state, "reject", RunStatus.pending_approval)
    return _to(state, RunStatus.failed, now, failure_reason=reason)


def confirm(state: RunState, now: datetime) -> RunState:
    _require(state, "confirm", RunStatus.unconfirmed)
    return _to(state, RunStatus.confirmed, now)


def discard(state: RunState, now: datetime) -> RunState:
    """Drop a plan that is waiting for a human."""
    _require(state, "discard", RunStatus.unconfirmed, RunStatus.pending_approval)
    return _to(state, RunStatus.discarded, now)


def cancel(state: RunState, now: datetime, *, force: bool = False) -> RunState:
    """Stop a run that is queued or executing.

    A queued (or confirmed, not yet applying) run is canceled at once: nothing runs. An executing
    run is asked to stop gracefully (the worker signals the tool and then reports
    ``mark_canceled``); after FORCE_CANCEL_COOL_OFF, ``force=True`` cancels it outright and the
    worker kills the process.
    """
    if state.is_terminal:
        raise IllegalTransition(f"cannot cancel a run that is already {state.status.value}")
    if state.status in (RunStatus.unconfirmed, RunStatus.pending_approval):
        raise IllegalTransition("a run waiting for confirmation or approval is discarded, not canceled")
    if state.status in (RunStatus.queued, RunStatus.confirmed):
        return _to(state, RunStatus.canceled, now, cancel_requested_at=state.cancel_requested_at or now)
    # Executing: graceful first.
    if not force:
        if state.cancel_requested_at is not None:
            return state  # already asked; repeating it is harmless
        return replace(state, cancel_requested_at=now)
    if state.cancel_requested_at is None:
        raise IllegalTransition(
            "cancel the run gracefully first; force-cancel is for a run that does not stop"
        )
    if now - state.cancel_requested_at < FORCE_CANCEL_COOL_OFF:
        wait = FORCE_CANCEL_COOL_OFF - (now - state.cancel_requested_at)
        raise IllegalTransition(
            f"the run is still stopping; force-cancel is possible in {wait.seconds + 1} s"
        )
    return _to(state, RunStatus.canceled, now)


def can_retrigger(state: RunState) -> bool:
    """A new run with the same type and commit can be made from any finished-or-dead run."""
    return state.is_terminal


def can_delete(state: RunState) -> bool:
    return state.is_terminal
