"""The run queue: the runs table itself.

Claiming picks the oldest admissible queued run: a tracked/destroy run only when no other
tracked/destroy run holds its stack and no older one is queued for it (FIFO per stack); a
proposed or drift run while fewer than the per-stack cap of them execute. A partial unique index
backs the one-holder rule in the database itself.

PostgreSQL claims in one round trip: the ``crucible_claim_run`` function (migration
20261201_0005) locks the candidate with FOR UPDATE SKIP LOCKED, so concurrent workers never take
the same run, re-checks the proposed cap under the stack row lock, and retries when another
worker won the stack. It applies the transitions the lifecycle defines: ``_APPLYING`` and
``_PREPARING`` below are derived from ``lc.start_applying`` and ``lc.start_preparing`` when this
module is imported, and the import fails if either ever does more than the function knows how to
write. SQLite runs the same rules in Python; its immediate transaction serializes claims.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.runs import lifecycle as lc
from backend.runs.models import HOLDING, Run
from backend.runs.state import apply_state, state_of
from backend.timeutil import iso

EXECUTING = tuple(s.value for s in lc.EXECUTING)

# A tracked/destroy run: nothing holds its stack and it is the stack's oldest queued one.
_EXCLUSIVE_ADMISSIBLE = f"""
    (r.exclusive
     AND NOT EXISTS (SELECT 1 FROM run h WHERE h.stack_id = r.stack_id AND h.exclusive
                     AND h.status IN {HOLDING!r})
     AND NOT EXISTS (SELECT 1 FROM run o WHERE o.stack_id = r.stack_id AND o.exclusive
                     AND o.status = 'queued' AND (o.created_at, o.id) < (r.created_at, r.id)))
"""
_ADMISSIBLE = f"""
    r.status = 'queued'
    AND (
        {_EXCLUSIVE_ADMISSIBLE}
        OR (NOT r.exclusive
            AND (SELECT count(*) FROM run p WHERE p.stack_id = r.stack_id AND NOT p.exclusive
                 AND p.status IN {EXECUTING!r}) < :cap)
    )
"""
# Is any run claimable now? What a queue waiter asks before acting on a hand-off (backend.queue.
# wakeup). It ignores row locks and the proposed cap (a setting the waiter does not know), so it
# may answer yes in vain, never no in vain.
CLAIMABLE_SQL = f"""
SELECT EXISTS (SELECT 1 FROM run r WHERE r.status = 'queued' AND ({_EXCLUSIVE_ADMISSIBLE} OR NOT r.exclusive))
    OR EXISTS (SELECT 1 FROM run c WHERE c.status = '{lc.RunStatus.confirmed.value}')
"""


@dataclass(frozen=True)
class _Transition:
    """What a lifecycle step does to a run's row, as far as a SQL claim has to write it."""

    source: str  # the only status it may start from
    target: str
    stamp_key: str  # status_timestamps gains this key (unless present) with the claim's time


def _derive(step, name: str) -> _Transition:
    """Read ``step`` (a lifecycle function) off its behaviour on every run type and status.

    The SQL claim writes only the status and one status timestamp. If the lifecycle ever makes
    the step do more (touch another field, start from another status, stamp differently), this
    raises at import time instead of letting the SQL claim silently diverge from it."""
    t0 = datetime(2000, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(seconds=1)
    found: set[tuple[str, str, str]] = set()
    for run_type in lc.RunType:
        for status in lc.RunStatus:
            before = lc.RunState(type=run_type, status=status, timestamps={status: t0})
            try:
                after = step(before, t1)
            except lc.IllegalTransition:
                continue
            added = {k: v for k, v in after.timestamps.items() if k not in before.timestamps}
            if (
                len(added) != 1
                or next(iter(added.values())) != t1
                or replace(after, status=before.status, timestamps=before.timestamps) != before
            ):
                raise RuntimeError(
                    f"lifecycle.{name} now changes more than the status and one timestamp; "
                    "update the SQL claim (crucible_claim_run) to match"
                )
            found.add((status.value, after.status.value, str(next(iter(added)))))
    if len(found) != 1:
        raise RuntimeError(
            f"lifecycle.{name} is legal from {sorted(found)}; the SQL claim expects one source"
        )
    source, target, stamp_key = found.pop()
    return _Transition(source, target, stamp_key)


# What the SQL claim writes, and from which status it takes runs (crucible_claim_run selects
# confirmed and queued runs only): read off the lifecycle, checked once at import.
_APPLYING = _derive(lc.start_applying, "start_applying")
_PREPARING = _derive(lc.start_preparing, "start_preparing")
for _step, _expected in ((_APPLYING, lc.RunStatus.confirmed), (_PREPARING, lc.RunStatus.queued)):
    if _step.source != _expected.value:
        raise RuntimeError(
            f"the lifecycle moves {_step.target} runs from {_step.source}, the SQL claim from {_expected}"
        )

# crucible_claim_run's parameters, in order: both the ORM claim below and the async claimer
# (backend.queue.async_claim) call it with these names and ``claim_params``' values.
CLAIM_ARGS = (
    "worker_id",
    "now",
    "stamp",
    "apply_status",
    "apply_key",
    "cap",
    "prepare_status",
    "prepare_key",
)
_CLAIM_SQL = text(f"SELECT * FROM crucible_claim_run({', '.join(f':{a}' for a in CLAIM_ARGS)})")


def claim_params(
    worker_id: str, now: datetime, *, apply: bool, prepare: bool, proposed_cap: int
) -> dict[str, object]:
    """The arguments of one ``crucible_claim_run`` call, keyed by ``CLAIM_ARGS``: the statuses
    and timestamp keys come from the lifecycle (``_APPLYING``, ``_PREPARING``)."""
    return {
        "worker_id": worker_id,
        "now": now,
        "stamp": iso(now),
        "apply_status": _APPLYING.target if apply else None,
        "apply_key": _APPLYING.stamp_key,
        "cap": proposed_cap,
        "prepare_status": _PREPARING.target if prepare else None,
        "prepare_key": _PREPARING.stamp_key,
    }


def _claim_sql(
    session: Session, worker_id: str, now: datetime, *, apply: bool, prepare: bool, proposed_cap: int
) -> Run | None:
    """PostgreSQL: one round trip. The returned row is the truth, even if this session already
    held the run (``populate_existing``)."""
    params = claim_params(worker_id, now, apply=apply, prepare=prepare, proposed_cap=proposed_cap)
    stmt = _CLAIM_SQL.bindparams(**params)
    query = select(Run).from_statement(stmt).execution_options(populate_existing=True)
    return session.execute(query).scalars().first()


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_next(session: Session, worker_id: str, now: datetime, proposed_cap: int = 3) -> Run | None:
    """What a worker with a free slot takes: a confirmed run to apply first (it holds its stack
    already), else the next admissible queued run; None when there is neither. The status of the
    run returned (applying or preparing) says which."""
    if _postgres(session):
        return _claim_sql(session, worker_id, now, apply=True, prepare=True, proposed_cap=proposed_cap)
    return claim_apply(session, worker_id, now) or claim(session, worker_id, now, proposed_cap)


def claim(session: Session, worker_id: str, now: datetime, proposed_cap: int = 3) -> Run | None:
    """Take the next admissible queued run for ``worker_id`` (status → preparing), or None."""
    if _postgres(session):
        return _claim_sql(session, worker_id, now, apply=False, prepare=True, proposed_cap=proposed_cap)
    for _attempt in range(3):  # a lost race is retried: runs may still be claimable
        outcome = _claim_once(session, worker_id, now, proposed_cap)
        if outcome is not _LOST:
            return outcome  # type: ignore[return-value]
    return None


_LOST = object()


def _claim_once(session: Session, worker_id: str, now: datetime, proposed_cap: int) -> Run | object | None:
    """SQLite: the immediate transaction already serializes claims, so no locks are needed; the
    savepoint still turns a unique-index conflict into a retry rather than a failed session."""
    sql = text(f"SELECT r.* FROM run r WHERE {_ADMISSIBLE} ORDER BY r.created_at, r.id LIMIT 1")
    run = session.execute(select(Run).from_statement(sql.bindparams(cap=proposed_cap))).scalars().first()
    if run is None:
        return None
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
    if _postgres(session):
        return _claim_sql(session, worker_id, now, apply=True, prepare=False, proposed_cap=0)
    stmt = select(Run).where(Run.status == lc.RunStatus.confirmed.value)
    run = session.exec(stmt.order_by(col(Run.updated_at), col(Run.id)).limit(1)).first()
    if run is None:
        return None
    apply_state(run, lc.start_applying(state_of(run), now), now)
    run.worker_id = worker_id
    run.heartbeat_at = now
    session.add(run)
    session.flush()
    return run


def heartbeat(session: Session, worker_id: str, run_ids: list[str], now: datetime) -> int:
    """Refresh the heartbeat of the runs this worker is executing (``run_ids``, and only those:
    a run whose job died without reporting must go stale and be reaped, not be kept alive by a
    worker that no longer works on it); returns how many."""
    if not run_ids:
        return 0
    result = session.execute(
        update(Run)
        .where(col(Run.id).in_(run_ids), Run.worker_id == worker_id, col(Run.status).in_(EXECUTING))
        .values(heartbeat_at=now)
    )
    return int(result.rowcount or 0)


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
