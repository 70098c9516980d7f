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
                         AND o.status = 'queued'
                         AND (o.created_at < r.created_at OR (o.created_at = r.created_at AND o.id < r.id))))
        OR (NOT r.exclusive
            AND (SELECT count(*) FROM run p WHERE p.stack_id = r.stack_id AND NOT p.exclusive
                 AND p.status IN {EXECUTING!r}) < :cap)
    )
"""


def claim(session: Session, worker_id: str, now: datetime, proposed_cap: int = 3) -> Run | None:
    """Take the next admissible run for ``worker_id`` (status → preparing), or None."""
    postgres = session.get_bind().dialect.name == "postgresql"
    lock = " FOR UPDATE OF r SKIP LOCKED" if postgres else ""
    sql = f"SELECT r.id, r.stack_id FROM run r WHERE {_ADMISSIBLE} ORDER BY r.created_at, r.id LIMIT 1{lock}"
    row = session.execute(text(sql), {"cap": proposed_cap}).first()
    if row is None:
        return None
    run_id, stack_id = row
    if postgres:
        # Serialize the per-stack checks: re-check admissibility with the stack row locked.
        session.exec(select(Stack.id).where(Stack.id == stack_id).with_for_update())
        again = session.execute(
            text(f"SELECT 1 FROM run r WHERE r.id = :id AND {_ADMISSIBLE}"),
            {"id": run_id, "cap": proposed_cap},
        ).first()
        if again is None:
            return None
    run = session.get(Run, run_id)
    assert run is not None
    apply_state(run, lc.start_preparing(state_of(run), now), now)
    run.worker_id = worker_id
    run.heartbeat_at = now
    session.add(run)
    try:
        session.flush()
    except IntegrityError:  # another worker won the stack in the meantime
        session.rollback()
        return None
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
