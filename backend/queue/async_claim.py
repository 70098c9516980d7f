"""PostgreSQL claims on the worker's event loop: one round trip, no thread, no transaction.

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
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import psycopg
from sqlalchemy.engine import URL

from backend.queue.service import CLAIM_ARGS, claim_params
from backend.queue.wakeup import libpq_conninfo

log = logging.getLogger("crucible.queue.claim")

# Both the confirmed runs to apply and the queued runs to prepare, as queue.claim_next asks.
_SQL = f"SELECT id FROM crucible_claim_run({', '.join(f'%({a})s' for a in CLAIM_ARGS)})"
CONNECT_TIMEOUT_SECONDS = 10


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
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    cursor = await conn.execute(_SQL, params)
                    row = await cursor.fetchone()
                    return None if row is None else str(row[0])
                except psycopg.OperationalError:
                    if not conn.closed and not conn.broken:
                        raise  # the connection is fine: the statement itself failed
                    await self._discard()
                    if attempt == 2:
                        raise
                    log.warning("the claim connection was lost; reconnecting")
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
