"""Queue wake-ups: idle workers learn at once that a run became claimable.

Every transaction that makes a run claimable calls ``notify(session)`` (a run enqueued, a stack
freed, a run confirmed and ready to apply). A worker keeps one ``Waiter`` open for its whole
life and, whenever a claim finds nothing, waits on it::

    async with Waiter(engine) as waiter:     # LISTEN first, then claim: no lost wake-up
        while not stopping:
            run = await claim_in_thread()
            if run is None:
                await waiter.wait()          # a notification, or the poll interval elapsed

Two kinds of wake-up. When a person or an API client makes a run claimable (enqueue, confirm,
discard, cancel), no worker is about to look, so ``notify(session, immediate=True)`` wakes every
idle worker at once. When a worker does it (its run finished and freed the stack, or became
confirmed), that worker claims again itself as soon as its slot is free, and the next run of the
stack is almost always its to take; waking every other idle worker as well would only make them
race it and come back empty (on a busy queue, most claim attempts). So a plain
``notify(session)`` is a *hand-off*: other waiters act on it only after ``HANDOFF_GRACE_SECONDS``,
and then only if a run is still claimable (``queue.service.CLAIMABLE_SQL``, a cheap check on the
waiter's own connection). Nothing is lost either way: the grace only delays the others, and the
check can say "nothing" only when no run was claimable after the notifying commit, and whatever
makes one claimable later notifies again. (Hand-offs arriving within one grace collapse into one
check, so a stack working through its queue costs each idle worker one query per grace, not one
claim per run.)

PostgreSQL: ``notify`` runs ``pg_notify('crucible_runs', payload)``, which the server delivers
when the transaction commits and drops when it rolls back. Inserting a run needs no call: a
trigger on ``run`` sends the immediate notification in the INSERT itself (``enqueued`` says so
where SQLite still needs the in-process wake-up). The waiter holds a dedicated
autocommit connection that LISTENs; it reconnects with backoff when that connection drops (a
database restart must not kill a worker) and meanwhile degrades to polling.

SQLite: there is no LISTEN, so ``notify`` marks the session and, once it commits, sets the
asyncio events of this process's waiters on the same database file (thread-safely: the
service usually runs in a thread pool). Runs enqueued by another process are found by the poll
interval (1 s by default). Both kinds wake at once: a SQLite deployment has one worker process,
whose claims are serialized anyway.

A wake-up is only a hint to try a claim now; the claim decides. Spurious wake-ups are harmless,
which is why notifications are not tied to a stack.
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

from backend.queue.service import CLAIMABLE_SQL

log = logging.getLogger("crucible.queue.wakeup")

CHANNEL = "crucible_runs"
SQLITE_POLL_SECONDS = 1.0
# On PostgreSQL a missed notification is not expected; the poll is only a safety net.
POSTGRES_POLL_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 5.0
# How long other waiters leave a hand-off to the worker that made it. Long enough for a worker
# to come back for its next claim, short next to the minutes a run takes.
HANDOFF_GRACE_SECONDS = 0.05

# pg_notify payloads: wake at once, or leave it to the notifying worker first.
IMMEDIATE = ""
HANDOFF = "handoff"

_PENDING = "crucible_queue_wakeup_pending"  # Session.info key: wake local waiters on commit


# ---------------------------------------------------------------------------- notify


def notify(session: Session, *, immediate: bool = False) -> None:
    """Tell idle workers that a run may be claimable, once this transaction commits.

    ``immediate``: wake them at once; for changes by people and API clients. Without it the
    wake-up is a hand-off from the worker that calls it (see the module docstring)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": IMMEDIATE if immediate else HANDOFF},
        )
        return
    # SQLite: waking a waiter before the commit would only make it claim too early (and a
    # rollback would make the wake-up a lie), so defer to the commit, like pg_notify does.
    pending: set[tuple[str, str]] = session.info.setdefault(_PENDING, set())
    pending.add(_database_key(_url_of(bind)))


def enqueued(session: Session) -> None:
    """Wake idle workers at once for the runs this transaction inserts, once it commits.

    On PostgreSQL the ``run_inserted_notify`` trigger (migration 0011) already sent that
    immediate notification with the INSERT itself, so this costs nothing; SQLite marks the
    session as ``notify`` does."""
    if session.get_bind().dialect.name != "postgresql":
        notify(session, immediate=True)


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
    both cases the caller tries a claim. A hand-off wakes it only ``handoff_grace`` seconds later
    and only if ``claimable_sql`` (a query returning one boolean; None: skip the check) finds a
    claimable run; ``handoff_checks`` and ``handoff_idle`` count those checks and how many found
    nothing. It never raises because the database is unreachable: it then polls, reconnecting
    with capped, jittered exponential backoff, and logs one warning per outage. Open it before
    the first claim, so a run enqueued in between still wakes it.
    """

    def __init__(
        self,
        target: str | URL | Engine,
        *,
        poll_interval: float | None = None,
        channel: str = CHANNEL,
        connect_timeout: int = 5,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        handoff_grace: float = HANDOFF_GRACE_SECONDS,
        claimable_sql: str | None = CLAIMABLE_SQL,
    ) -> None:
        self.url = target.url if isinstance(target, Engine) else make_url(target)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise ValueError(f"queue wake-ups support PostgreSQL and SQLite, not {self.backend}")
        default = POSTGRES_POLL_SECONDS if self.backend == "postgresql" else SQLITE_POLL_SECONDS
        self.poll_interval = default if poll_interval is None else poll_interval
        self.channel = channel
        self.max_backoff = max_backoff
        self.handoff_grace = handoff_grace
        self.claimable_sql = claimable_sql
        self.handoff_checks = 0
        self.handoff_idle = 0
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
        # When a hand-off received but not yet acted on becomes this waiter's to act on. Kept
        # across wait() calls: a wait cancelled by the caller must not forget it.
        self._handoff_due: float | None = None
        self._checks: set[asyncio.Task[bool]] = set()

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
        for check in list(self._checks):  # a check orphaned by a cancelled wait
            check.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
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
            try:
                if self._conn is None:
                    woke = await self._reconnect_before(deadline)
                else:
                    woke = await self._listen_until(self._conn, deadline)
            except psycopg.Error as exc:
                await self._lost(exc)
                continue
            # The caller claims now, whatever the answer: that covers a pending hand-off too.
            self._handoff_due = None
            return woke

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
        while True:
            due = self._handoff_due
            payloads = await self._receive(conn, deadline if due is None else min(deadline, due))
            if payloads - {HANDOFF}:  # at once (an unknown payload too: better early than late)
                return True
            now = time.monotonic()
            if payloads and self._handoff_due is None:
                self._handoff_due = now + self.handoff_grace
            if self._handoff_due is not None and now >= self._handoff_due:
                # Cancelled here, the hand-off stays due: the next wait() checks again at once.
                claimable = await self._claimable(conn)
                self._handoff_due = None
                if claimable:
                    return True
                continue  # nothing to take; whatever makes a run claimable notifies again
            if now >= deadline:
                return False

    @staticmethod
    async def _receive(conn: psycopg.AsyncConnection[Any], until: float) -> set[str]:
        """The payloads of the notifications that arrive before ``until`` (none: timed out)."""
        payloads: set[str] = set()
        remaining = max(0.0, until - time.monotonic())
        async with contextlib.aclosing(conn.notifies(timeout=remaining, stop_after=1)) as notes:
            async for note in notes:
                payloads.add(note.payload)
        if payloads:
            # Swallow what already arrived too: the claim that follows covers it, and otherwise
            # a burst of N enqueues would cost N needless wake-ups.
            async with contextlib.aclosing(conn.notifies(timeout=0)) as notes:
                async for note in notes:
                    payloads.add(note.payload)
        return payloads

    async def _claimable(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether a run is claimable now; True when unsure (no check configured, or it failed)."""
        if self.claimable_sql is None:
            return True
        # Shielded: a wait cancelled mid-query must not leave the connection half-way through
        # the protocol. The orphaned check finishes on its own (its answer, stale by then, is
        # dropped); the connection's lock makes the next query wait for it.
        check = asyncio.create_task(self._run_check(conn, self.claimable_sql))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        found = await asyncio.shield(check)
        self.handoff_checks += 1
        self.handoff_idle += not found
        return found

    @staticmethod
    async def _run_check(conn: psycopg.AsyncConnection[Any], query: str) -> bool:
        try:
            row = await (await conn.execute(query)).fetchone()  # type: ignore[arg-type]
        except psycopg.Error as exc:  # a broken connection shows at the next notifies()
            log.debug("queue wake-ups: the claimable check failed: %s", exc)
            return True
        return bool(row and row[0])

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
