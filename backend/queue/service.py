"""The run queue: the runs table itself.

Claiming picks the oldest admissible queued run: a tracked/destroy run only when no other
tracked/destroy run holds its stack and no older one is queued for it (FIFO per stack); a
proposed or drift run while fewer than the per-stack cap of them execute. On PostgreSQL the
candidate row is locked with FOR UPDATE SKIP LOCKED and its stack row with FOR UPDATE, so
concurrent workers never take the same run and per-stack rules are checked under a lock; on
SQLite the immediate transaction serializes claims. A partial unique index backs the
one-holder rule in the database itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.runs import lifecycle as lc
from backend.runs.models import HOLDING, Run
from backend.runs.state import apply_state, state_of
from backend.stacks.models import Stack

EXECUTING = tuple(s.value for s in lc.EXECUTING)

_ADMISSIBLE = f"""
    r.status = 'queued'
    AND (
        (r.exclusive
         AND NOT EXISTS (SELECT 1 FROM run h WHERE h.stack_id = r.stack_id AND h.exclusive
                         AND h.status IN {HOLDING!r})
         AND NOT EXISTS (SELECT 1 FROM run o WHERE o.stack_id = r.stack_id AND o.exclusive
                         AND o.status = 'queued' AND (o.created_at, o.id) < (r.created_at, r.id)))
        OR (NOT r.exclusive
            AND (SELECT count(*) FROM run p WHERE p.stack_id = r.stack_id AND NOT p.exclusive
                 AND p.status IN {EXECUTING!r}) < :cap)
    )
"""


def claim(session: Session, worker_id: str, now: datetime, proposed_cap: int = 3) -> Run | None:
    """Take the next admissible run for ``worker_id`` (status → preparing), or None."""
    for _attempt in range(3):  # a lost race is retried: runs may still be claimable
        outcome = _claim_once(session, worker_id, now, proposed_cap)
        if outcome is not _LOST:
            return outcome  # type: ignore[return-value]
    return None


_LOST = object()


def _claim_once(session: Session, worker_id: str, now: datetime, proposed_cap: int) -> Run | object | None:
    postgres = session.get_bind().dialect.name == "postgresql"
    lock = " FOR UPDATE OF r SKIP LOCKED" if postgres else ""
    sql = text(f"SELECT r.* FROM run r WHERE {_ADMISSIBLE} ORDER BY r.created_at, r.id LIMIT 1{lock}")
    run = session.execute(select(Run).from_statement(sql.bindparams(cap=proposed_cap))).scalars().first()
    if run is None:
        return None
    if postgres and not run.exclusive:
        # The cap on parallel proposed runs has no index behind it: re-check under the stack
        # lock. (One active tracked/destroy run per stack is the partial unique index's job.)
        session.exec(select(Stack.id).where(Stack.id == run.stack_id).with_for_update())
        again = session.execute(
            text(f"SELECT 1 FROM run r WHERE r.id = :id AND {_ADMISSIBLE}"),
            {"id": run.id, "cap": proposed_cap},
        ).first()
        if again is None:
            return _LOST
    apply_state(run, lc.start_preparing(state_of(run), now), now)
    run.worker_id = worker_id
    run.heartbeat_at = now
    session.add(run)
    try:
        with session.begin_nested():  # only this claim is undone if another worker won the stack
            session.flush()
    except IntegrityError:
        session.expire(run)
        return _LOST
    return run


def claim_apply(session: Session, worker_id: str, now: datetime) -> Run | None:
    """Take the oldest confirmed run (status → applying). It already holds its stack, so there is
    nothing to admit: only the row lock keeps two workers from taking it."""
    postgres = session.get_bind().dialect.name == "postgresql"
    stmt = select(Run).where(Run.status == lc.RunStatus.confirmed.value)
    stmt = stmt.order_by(col(Run.updated_at), col(Run.id)).limit(1)
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    run = session.exec(stmt).first()
    if run is None:
        return None
    apply_state(run, lc.start_applying(state_of(run), now), now)
    run.worker_id = worker_id
    run.heartbeat_at = now
    session.add(run)
    session.flush()
    return run


def heartbeat(session: Session, worker_id: str, now: datetime) -> int:
    """Refresh the heartbeat of every run this worker executes; returns how many."""
    runs = session.exec(select(Run).where(Run.worker_id == worker_id, col(Run.status).in_(EXECUTING))).all()
    for run in runs:
        run.heartbeat_at = now
        session.add(run)
    return len(runs)


def reap_stale(session: Session, now: datetime, timeout: timedelta) -> list[Run]:
    """Fail executing runs whose worker stopped heartbeating, which unblocks their stacks."""
    stale = session.exec(
        select(Run).where(col(Run.status).in_(EXECUTING), col(Run.heartbeat_at) < now - timeout)
    ).all()
    for run in stale:
        last = run.heartbeat_at.isoformat(timespec="seconds") if run.heartbeat_at else "never"
        reason = f"worker {run.worker_id} stopped responding (last heartbeat {last}); the run was failed"
        apply_state(run, lc.fail(state_of(run), now, reason), now)
        session.add(run)
    return list(stale)
