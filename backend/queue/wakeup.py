"""Queue wake-ups: idle workers learn at once that a run became claimable.

The run service calls ``notify(session)`` inside every transaction that makes a run claimable
(a run enqueued, a stack freed, a run confirmed and ready to apply). A worker keeps one
``Waiter`` open for its whole life and, whenever a claim finds nothing, waits on it::

    async with Waiter(engine) as waiter:     # LISTEN first, then claim: no lost wake-up
        while not stopping:
            run = await claim_in_thread()
            if run is None:
                await waiter.wait()          # a notification, or the poll interval elapsed

PostgreSQL: ``notify`` runs ``pg_notify('crucible_runs', '')``, which the server delivers when
the transaction commits and drops when it rolls back. The waiter holds a dedicated autocommit
connection that LISTENs; it reconnects with backoff when that connection drops (a database
restart must not kill a worker) and meanwhile degrades to polling.

SQLite: there is no LISTEN, so ``notify`` marks the session and, once it commits, sets the
asyncio events of this process's waiters on the same database file (thread-safely: the
service usually runs in a thread pool). Runs enqueued by another process are found by the poll
interval (1 s by default).

A wake-up is only a hint to try a claim now; the claim decides. Spurious wake-ups are harmless,
which is why notifications carry no payload and are not tied to a stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("crucible.queue.wakeup")

CHANNEL = "crucible_runs"
SQLITE_POLL_SECONDS = 1.0
# On PostgreSQL a missed notification is not expected; the poll is only a safety net.
POSTGRES_POLL_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 5.0

_PENDING = "crucible_queue_wakeup_pending"  # Session.info key: wake local waiters on commit


# ---------------------------------------------------------------------------- notify


def notify(session: Session) -> None:
    """Tell idle workers that a run may be claimable, once this transaction commits."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
        return
    # SQLite: waking a waiter before the commit would only make it claim too early (and a
    # rollback would make the wake-up a lie), so defer to the commit, like pg_notify does.
    pending: set[tuple[str, str]] = session.info.setdefault(_PENDING, set())
    pending.add(_database_key(_url_of(bind)))


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released: the work is not committed yet
        return
    keys = session.info.pop(_PENDING, None)
    if keys:
        for key in keys:
            _local.wake(key)


@event.listens_for(Session, "after_transaction_end")
def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # Rolled back or closed without a commit (after a commit, _wake_after_commit emptied it).
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _url_of(bind: Engine | Connection) -> URL:
    return bind.engine.url if isinstance(bind, Connection) else bind.url


def _database_key(url: URL) -> tuple[str, str]:
    """Which database a URL points at, so a wake-up reaches only that database's waiters."""
    backend = url.get_backend_name()
    database = url.database or ""
    if backend == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        database = os.path.realpath(database)
    return backend, database


# ---------------------------------------------------------------------------- in-process registry


@dataclass(eq=False)
class _Slot:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


class _LocalRegistry:
    """Waiters of this process by database; woken from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], set[_Slot]] = {}

    def register(self, key: tuple[str, str], slot: _Slot) -> None:
        with self._lock:
            self._slots.setdefault(key, set()).add(slot)

    def unregister(self, key: tuple[str, str], slot: _Slot) -> None:
        with self._lock:
            slots = self._slots.get(key)
            if slots is not None:
                slots.discard(slot)
                if not slots:
                    del self._slots[key]

    def wake(self, key: tuple[str, str]) -> None:
        with self._lock:
            slots = list(self._slots.get(key, ()))
        for slot in slots:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its waiter is gone
                slot.loop.call_soon_threadsafe(slot.event.set)


_local = _LocalRegistry()


# ---------------------------------------------------------------------------- URL conversion


def libpq_conninfo(url: str | URL, **defaults: Any) -> str:
    """A libpq conninfo string for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://...``).

    Query parameters are passed through (``sslmode``, ``host=/run/postgresql``, ...); ``defaults``
    apply only where the URL says nothing.
    """
    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {url.render_as_string()}")
    params: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None}
    for key, value in url.query.items():
        params[key] = ",".join(value) if isinstance(value, tuple) else value
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password),
        ("dbname", url.database),
    ):
        if value is not None:
            params[key] = value
    return make_conninfo(**params)


# ---------------------------------------------------------------------------- Waiter


class Waiter:
    """Waits until a run may have become claimable, or until the poll interval passes.

    ``wait(timeout)`` returns True when woken (a notification, or the LISTEN connection came back
    after an outage, during which notifications may have been missed) and False on timeout; in
    both cases the caller tries a claim. It never raises because the database is unreachable:
    it then polls, reconnecting with capped, jittered exponential backoff, and logs one warning
    per outage. Open it before the first claim, so a run enqueued in between still wakes it.
    """

    def __init__(
        self,
        target: str | URL | Engine,
        *,
        poll_interval: float | None = None,
        channel: str = CHANNEL,
        connect_timeout: int = 5,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.url = target.url if isinstance(target, Engine) else make_url(target)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise ValueError(f"queue wake-ups support PostgreSQL and SQLite, not {self.backend}")
        default = POSTGRES_POLL_SECONDS if self.backend == "postgresql" else SQLITE_POLL_SECONDS
        self.poll_interval = default if poll_interval is None else poll_interval
        self.channel = channel
        self.max_backoff = max_backoff
        self._conninfo = (
            libpq_conninfo(
                self.url,
                connect_timeout=connect_timeout,
                application_name="crucible-queue-waiter",
                # Notice a silently vanished server within ~30 s, not after the kernel's 2 h.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            if self.backend == "postgresql"
            else ""
        )
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._slot: _Slot | None = None
        self._key = _database_key(self.url)
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._outage_since: float | None = None

    @property
    def connected(self) -> bool:
        """True while notifications can arrive (always True on SQLite)."""
        if self.backend == "sqlite":
            return self._slot is not None
        return self._conn is not None and not self._conn.closed

    async def __aenter__(self) -> Waiter:
        if self.backend == "sqlite":
            self._slot = _Slot(asyncio.get_running_loop())
            _local.register(self._key, self._slot)
        else:
            try:
                await self._connect()
            except psycopg.Error as exc:
                await self._lost(exc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._slot is not None:
            _local.unregister(self._key, self._slot)
            self._slot = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def wait(self, timeout: float | None = None) -> bool:
        """Return True when woken, False once ``timeout`` seconds (default: the poll interval) pass."""
        timeout = self.poll_interval if timeout is None else max(0.0, timeout)
        if self.backend == "sqlite":
            return await self._wait_local(timeout)
        deadline = time.monotonic() + timeout
        while True:
            if self._conn is None:
                return await self._reconnect_before(deadline)
            try:
                return await self._listen_until(self._conn, deadline)
            except psycopg.Error as exc:
                await self._lost(exc)

    # -- SQLite

    async def _wait_local(self, timeout: float) -> bool:
        if self._slot is None:
            raise RuntimeError("use the Waiter as `async with Waiter(...) as waiter`")
        ev = self._slot.event
        try:
            async with asyncio.timeout(timeout):
                await ev.wait()
        except TimeoutError:
            return False
        ev.clear()
        return True

    # -- PostgreSQL

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._backoff = 0.0
        if self._outage_since is not None:
            log.warning(
                "queue wake-ups: LISTEN %s on %s is back after %.1f s",
                self.channel,
                self._safe_url,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    async def _listen_until(self, conn: psycopg.AsyncConnection[Any], deadline: float) -> bool:
        remaining = max(0.0, deadline - time.monotonic())
        woke = False
        async with contextlib.aclosing(conn.notifies(timeout=remaining, stop_after=1)) as notes:
            async for _ in notes:
                woke = True
        if woke:
            # Swallow what already arrived too: the claim that follows covers it, and otherwise
            # a burst of N enqueues would cost N needless wake-ups.
            async with contextlib.aclosing(conn.notifies(timeout=0)) as notes:
                async for _ in notes:
                    pass
        return woke

    async def _reconnect_before(self, deadline: float) -> bool:
        """Try to get LISTEN back before ``deadline``; True if it is back (notifications may have
        been missed, so the caller should claim), False if the deadline came first."""
        while True:
            now = time.monotonic()
            if now >= self._next_attempt:
                try:
                    await self._connect()
                    return True
                except psycopg.Error as exc:
                    log.debug("queue wake-ups: reconnect to %s failed: %s", self._safe_url, exc)
                    self._schedule_retry()
                    continue
            if self._next_attempt >= deadline:
                await asyncio.sleep(max(0.0, deadline - now))
                return False
            await asyncio.sleep(self._next_attempt - now)

    async def _lost(self, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # local only: it sends nothing to the server
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "queue wake-ups: LISTEN %s on %s unavailable (%s); polling every %.1f s and "
                "reconnecting with backoff",
                self.channel,
                self._safe_url,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                self.poll_interval,
            )
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self._backoff = min(self.max_backoff, max(0.1, self._backoff * 2))
        self._next_attempt = time.monotonic() + self._backoff * random.uniform(0.5, 1.0)

    @property
    def _safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)
