"""PostgreSQL claims and reports on the worker's event loop: one round trip, no thread.

A claim through the ORM hops to a thread, checks a pooled connection out (pinging it first),
opens a transaction, calls ``crucible_claim_run`` and commits. The function is one statement,
atomic on its own, so an ``AsyncClaimer`` calls it on a dedicated autocommit
``psycopg.AsyncConnection`` instead and returns only the run id; the worker then builds the job
(``backend.runs.execution.job_for``) in a thread, in a transaction of its own. The arguments are
``backend.queue.service.claim_params``, the very ones the ORM claim passes.

A lost connection (a database restart, ``pg_terminate_backend``) is reopened and the claim tried
once more; a second failure is raised. (If the connection dropped after the server committed a
claim, that run is never started here: it goes stale and the reaper fails it.) SQLite has no
such path: its workers claim through ``backend.queue.service`` as before.

Reports go the same way. A run's hot path after its claim (planning started, plan stored, apply
finished, failed) is one ``REPORT_SQL`` statement each: the row is taken only if this worker
still owns it in an expected status (else the report is ignored, as the ORM path ignores it),
the new status is the one ``backend.runs.execution.report`` read off the lifecycle for the run's
type and its stack's auto-apply flag, and the queue is notified in the same statement when the
stack is freed or the run became ready to apply.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.engine import URL

from backend.queue.service import CLAIM_ARGS, claim_params
from backend.queue.wakeup import CHANNEL, HANDOFF, libpq_conninfo
from backend.runs import lifecycle as lc
from backend.runs.execution import WAKE_STATUSES, Report
from backend.timeutil import iso

log = logging.getLogger("crucible.queue.claim")

# Both the confirmed runs to apply and the queued runs to prepare, as queue.claim_next asks.
_SQL = f"SELECT id FROM crucible_claim_run({', '.join(f'%({a})s' for a in CLAIM_ARGS)})"
CONNECT_TIMEOUT_SECONDS = 10

# One worker report (see the module docstring). Columns a report does not set are passed as
# NULL and keep their value; artifacts are merged key by key, as the ORM path merges them.
REPORT_SQL = f"""
WITH target AS (
    SELECT r.id,
           %(targets)s::jsonb ->> (r.type || CASE WHEN s.auto_apply THEN ':auto' ELSE '' END) AS status
      FROM run r JOIN stack s ON s.id = r.stack_id
     WHERE r.id = %(run_id)s AND r.worker_id = %(worker_id)s AND r.status = ANY(%(expected)s)
       FOR UPDATE OF r
), moved AS (
    UPDATE run
       SET status = target.status,
           status_timestamps = (jsonb_build_object(target.status, %(stamp)s::text)
                                || run.status_timestamps::jsonb)::json,
           worker_id = CASE WHEN target.status = ANY(%(releases)s) THEN NULL ELSE run.worker_id END,
           heartbeat_at = %(now)s,
           updated_at = %(now)s,
           failure_reason = COALESCE(%(failure_reason)s, run.failure_reason),
           commit_sha = COALESCE(%(commit_sha)s, run.commit_sha),
           commit_message = COALESCE(%(commit_message)s, run.commit_message),
           plan_summary = COALESCE(%(plan_summary)s::json, run.plan_summary),
           has_changes = COALESCE(%(has_changes)s::boolean, run.has_changes),
           required_approvals = COALESCE(%(required_approvals)s::integer, run.required_approvals),
           artifacts = (run.artifacts::jsonb || COALESCE(%(artifacts)s::jsonb, '{{}}'::jsonb))::json
      FROM target
     WHERE run.id = target.id
 RETURNING run.status, run.worker_id
), revoked AS (
    -- The phase is over (the run ended, or waits for people): so are its state tokens.
    UPDATE state_token
       SET revoked_at = %(now)s
      FROM moved
     WHERE state_token.run_id = %(run_id)s AND state_token.revoked_at IS NULL
       AND (moved.status = ANY(%(terminal)s) OR moved.worker_id IS NULL)
)
SELECT status, CASE WHEN status = ANY(%(wake)s) THEN pg_notify('{CHANNEL}', '{HANDOFF}') END FROM moved
"""
_REPORT_COLUMNS = (
    "failure_reason",
    "commit_sha",
    "commit_message",
    "plan_summary",
    "has_changes",
    "artifacts",
    "required_approvals",
)
_JSON_COLUMNS = frozenset({"plan_summary", "artifacts"})


def report_params(run_id: str, worker_id: str, report: Report) -> dict[str, object]:
    unknown = set(report.columns) - set(_REPORT_COLUMNS)
    if unknown:
        raise ValueError(f"REPORT_SQL does not write {sorted(unknown)}")
    params: dict[str, object] = {
        "run_id": run_id,
        "worker_id": worker_id,
        "expected": list(report.expected),
        "targets": Jsonb(report.targets),
        "releases": list(report.releases),
        "wake": list(WAKE_STATUSES),
        "terminal": sorted(s.value for s in lc.TERMINAL),
        "stamp": iso(report.now),
        "now": report.now,
    }
    for name in _REPORT_COLUMNS:
        value = report.columns.get(name)
        params[name] = Jsonb(value) if name in _JSON_COLUMNS and value is not None else value
    return params


class AsyncClaimer:
    """One autocommit connection that claims runs for one worker. Not for SQLite."""

    def __init__(self, url: str | URL):
        self._conninfo = libpq_conninfo(
            url, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="crucible-claim"
        )
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the one connection

    async def claim(self, worker_id: str, now: datetime, proposed_cap: int) -> str | None:
        """Claim a confirmed run to apply, else the next admissible queued run (see
        ``queue.claim_next``); returns its id, or None when there is none."""
        params = claim_params(worker_id, now, apply=True, prepare=True, proposed_cap=proposed_cap)
        row = await self._fetch_one(_SQL, params, retry=True)
        return None if row is None else str(row[0])

    async def report(self, run_id: str, worker_id: str, report: Report) -> str | None:
        """Apply one worker report; the run's new status, or None if the run is no longer this
        worker's in an expected status (the report is then ignored). Not retried on a lost
        connection: the first attempt may have committed, and a retry would then find the run
        moved on and wrongly report it lost; the error goes to the caller instead."""
        row = await self._fetch_one(REPORT_SQL, report_params(run_id, worker_id, report), retry=False)
        return None if row is None else str(row[0])

    async def _fetch_one(self, sql: str, params: dict[str, object], *, retry: bool) -> tuple | None:
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchone()
                except psycopg.OperationalError:
                    if not conn.closed and not conn.broken:
                        raise  # the connection is fine: the statement itself failed
                    await self._discard()
                    if attempt == 2 or not retry:
                        raise
                    log.warning("the queue connection was lost; reconnecting")
        raise AssertionError("unreachable")

    async def connect(self) -> None:
        """Open the connection now, if it is not open. A caller that reads the clock for
        ``claim`` does so after this: a claim stamped before a slow connect could predate the
        very run it takes."""
        async with self._lock:
            await self._connection()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            await self._discard()
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already gone: nothing to release
                log.debug("closing a lost claim connection failed", exc_info=True)

    async def close(self) -> None:
        async with self._lock:
            await self._discard()
