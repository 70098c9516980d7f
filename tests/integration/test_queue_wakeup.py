"""Queue wake-ups on SQLite and PostgreSQL: a committed enqueue wakes an idle waiter, a rolled-back
one does not, a notification sent between a claim and the next wait is not lost, a worker's
hand-off wakes the others only when a run is still claimable, and the PostgreSQL listener
survives losing its connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
import pytest
from sqlalchemy import text

from backend.queue import service as queue
from backend.queue import wakeup
from backend.queue.wakeup import Waiter
from backend.runs import lifecycle as lc
from backend.runs import service as runs_service
from backend.runs.models import Run
from backend.runs.schemas import RunCreate
from backend.runs.state import apply_state, state_of
from backend.timeutil import utcnow
from tests.aio import run_async as run
from tests.integration.runs_support import queued_run

GENEROUS = 5.0  # seconds: an upper bound that a loaded 2-core CI machine still meets


class Boom(Exception):
    pass


def enqueue(ctx, stack: dict, run_type: str = "tracked", fail: bool = False) -> str:
    """What the run service does: insert the queued run and say so, in one transaction. On
    PostgreSQL ``enqueued`` sends nothing: the wake-up comes from the INSERT's own trigger."""
    with ctx.session() as s:
        run = queued_run(s, stack["id"], run_type)
        s.flush()
        wakeup.enqueued(s)
        if fail:
            raise Boom("the enqueue failed after its INSERT")
    return run.id


def claim(ctx, worker: str = "w1") -> str | None:
    with ctx.session() as s:
        got = queue.claim(s, worker, utcnow())
        return None if got is None else got.id


def finish(ctx, run_id: str) -> None:
    """A worker reports a plan without changes: the run finishes and frees its stack (a hand-off:
    the worker claims again itself, others look after the grace)."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        now = utcnow()
        apply_state(
            run, lc.finish_planning(lc.start_planning(state_of(run), now), now, has_changes=False), now
        )
        s.add(run)
        wakeup.notify(s)


async def wait_while(waiter: Waiter, action, timeout: float = 10.0) -> tuple[bool, float]:
    """Start waiting, then run ``action`` in a thread; returns (woke, seconds waited)."""
    started = time.monotonic()
    waiting = asyncio.create_task(waiter.wait(timeout))
    await asyncio.sleep(0.05)  # let the waiter block first
    await asyncio.to_thread(action)
    woke = await waiting
    return woke, time.monotonic() - started


def test_a_committed_enqueue_wakes_an_idle_waiter_which_then_claims_it(ctx, world, db_url):
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url) as waiter:
            assert claim(ctx) is None  # idle: nothing to do
            ids = []
            woke, waited = await wait_while(waiter, lambda: ids.append(enqueue(ctx, stack)))
            return woke, waited, ids[0]

    woke, waited, run_id = run(scenario())
    assert woke and waited < GENEROUS
    assert claim(ctx) == run_id


def test_a_freed_stack_wakes_the_waiter_for_the_next_run_on_it(ctx, world, db_url):
    stack = world.stack()
    first, second = enqueue(ctx, stack), enqueue(ctx, stack)
    assert claim(ctx) == first

    async def scenario():
        async with Waiter(db_url) as waiter:
            await waiter.wait(0)  # forget the notifications of the two enqueues, if any
            assert claim(ctx, "w2") is None  # the stack is held
            return await wait_while(waiter, lambda: finish(ctx, first))

    woke, waited = run(scenario())
    assert woke and waited < GENEROUS
    assert claim(ctx, "w2") == second


def test_a_rolled_back_enqueue_does_not_wake_the_waiter(ctx, world, db_url):
    stack = world.stack()

    def failing_enqueue():
        with pytest.raises(Boom):
            enqueue(ctx, stack, fail=True)

    async def scenario():
        async with Waiter(db_url) as waiter:
            return await wait_while(waiter, failing_enqueue, timeout=0.5)

    woke, _ = run(scenario())
    assert not woke
    assert claim(ctx) is None


def test_a_notification_between_claim_and_wait_is_not_lost(ctx, world, db_url):
    """The worker's race: a run enqueued after its claim found nothing, before it waits."""
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url) as waiter:
            assert claim(ctx) is None
            run_id = await asyncio.to_thread(enqueue, ctx, stack)
            started = time.monotonic()
            woke = await waiter.wait(10)
            return woke, time.monotonic() - started, run_id

    woke, waited, run_id = run(scenario())
    assert woke and waited < GENEROUS
    assert claim(ctx) == run_id


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_sqlite_waiter_falls_back_to_its_poll_interval(db_url, db_kind):
    async def scenario():
        async with Waiter(db_url, poll_interval=0.2) as waiter:
            started = time.monotonic()
            woke = await waiter.wait()
            return woke, time.monotonic() - started

    woke, waited = run(scenario())
    assert not woke and waited < GENEROUS


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_sqlite_wakeups_reach_only_waiters_of_the_same_database(ctx, world, db_url, db_kind, tmp_path):
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url) as same, Waiter(f"sqlite:///{tmp_path / 'other.db'}") as other:
            await asyncio.to_thread(enqueue, ctx, stack)
            return await same.wait(10), await other.wait(0.2)

    assert run(scenario()) == (True, False)


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_postgres_waiter_reconnects_after_its_backend_is_terminated(ctx, world, db_url, db_kind, caplog):
    stack = world.stack()

    def terminate_listener() -> int:
        with ctx.session() as s:
            return s.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'crucible-queue-waiter'"
                )
            ).scalar_one()

    async def scenario():
        async with Waiter(db_url) as waiter:
            assert waiter.connected
            killed = await asyncio.to_thread(terminate_listener)
            started = time.monotonic()
            # The dropped connection is noticed, re-established, and reported as a wake-up
            # (notifications may have been missed meanwhile).
            back = await waiter.wait(10)
            reconnected_in = time.monotonic() - started
            connected = waiter.connected
            woke, waited = await wait_while(waiter, lambda: enqueue(ctx, stack))
            return killed, back, reconnected_in, connected, woke, waited

    with caplog.at_level(logging.WARNING, logger="crucible.queue.wakeup"):
        killed, back, reconnected_in, connected, woke, waited = run(scenario())
    assert killed == 1
    assert back and connected and reconnected_in < GENEROUS
    assert woke and waited < GENEROUS
    messages = [r.getMessage() for r in caplog.records if r.name == "crucible.queue.wakeup"]
    assert sum("unavailable" in m for m in messages) == 1, messages
    assert sum("is back" in m for m in messages) == 1, messages


def test_postgres_waiter_polls_while_the_server_is_unreachable_and_warns_once(caplog):
    # Nothing listens on port 1 of loopback: connecting fails at once, as during a restart.
    url = "postgresql+psycopg://postgres@127.0.0.1:1/crucible"

    async def scenario():
        async with Waiter(url, poll_interval=0.1, max_backoff=0.05) as waiter:
            results = [await waiter.wait() for _ in range(5)]
            return results, waiter.connected

    with caplog.at_level(logging.WARNING, logger="crucible.queue.wakeup"):
        results, connected = run(scenario())
    assert results == [False] * 5 and not connected
    messages = [r.getMessage() for r in caplog.records if r.name == "crucible.queue.wakeup"]
    assert len(messages) == 1 and "unavailable" in messages[0], messages


def test_sqlalchemy_urls_become_libpq_conninfo():
    info = psycopg.conninfo.conninfo_to_dict(
        wakeup.libpq_conninfo(
            "postgresql+psycopg://app:p%40ss%20word@db.internal:6432/crucible?sslmode=require",
            connect_timeout=5,
        )
    )
    assert info == {
        "host": "db.internal",
        "port": "6432",
        "user": "app",
        "password": "p@ss word",
        "dbname": "crucible",
        "sslmode": "require",
        "connect_timeout": "5",
    }
    socket = psycopg.conninfo.conninfo_to_dict(
        wakeup.libpq_conninfo("postgresql://app@/crucible?host=/run/pg")
    )
    assert socket == {"host": "/run/pg", "user": "app", "dbname": "crucible"}
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        wakeup.libpq_conninfo("sqlite:///crucible.db")


def test_a_notify_in_a_savepoint_of_a_rolled_back_transaction_does_not_wake(ctx, db_url):
    def work():
        with pytest.raises(Boom), ctx.session() as s:
            with s.begin_nested():
                wakeup.notify(s)  # the savepoint is released, but the transaction is not committed
            raise Boom("the transaction fails later")

    async def scenario():
        async with Waiter(db_url) as waiter:
            return await wait_while(waiter, work, timeout=0.5)

    woke, _ = run(scenario())
    assert not woke


def test_cancelling_a_wait_leaves_the_waiter_usable(ctx, world, db_url):
    """A worker may race wait() against its stop event and cancel the loser."""
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url) as waiter:
            waiting = asyncio.create_task(waiter.wait(10))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            connected = waiter.connected
            woke, waited = await wait_while(waiter, lambda: enqueue(ctx, stack))
            return connected, woke, waited

    connected, woke, waited = run(scenario())
    assert connected and woke and waited < GENEROUS


# ---------------------------------------------------------------------------- hand-offs (PostgreSQL)


def claimed_run(ctx, world) -> str:
    """A run a worker has claimed (its stack held), with nothing else queued."""
    run_id = enqueue(ctx, world.stack())
    assert claim(ctx, "worker") == run_id
    return run_id


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_handoff_wakes_other_waiters_when_a_run_is_still_claimable(ctx, world, db_url, db_kind):
    stack = world.stack()
    first, second = enqueue(ctx, stack), enqueue(ctx, stack)
    assert claim(ctx) == first

    async def scenario():
        async with Waiter(db_url, handoff_grace=0.05) as waiter:
            await waiter.wait(0)  # forget the enqueues
            woke, waited = await wait_while(waiter, lambda: finish(ctx, first))
            return woke, waited, waiter.handoff_checks, waiter.handoff_idle

    woke, waited, checks, idle = run(scenario())
    assert woke and waited < GENEROUS
    assert (checks, idle) == (1, 0)
    assert claim(ctx, "w2") == second


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_handoff_with_nothing_claimable_lets_the_waiter_sleep(ctx, world, db_url, db_kind):
    """The worker that finished took (or will take) what there is: the others stay idle, and the
    next enqueue still wakes them."""
    done = claimed_run(ctx, world)
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url, handoff_grace=0.05) as waiter:
            await waiter.wait(0)
            slept, _ = await wait_while(waiter, lambda: finish(ctx, done), timeout=1.0)
            checks, idle = waiter.handoff_checks, waiter.handoff_idle
            woke, waited = await wait_while(waiter, lambda: enqueue(ctx, stack))
            return slept, checks, idle, woke, waited

    slept, checks, idle, woke, waited = run(scenario())
    assert not slept and (checks, idle) == (1, 1)
    assert woke and waited < GENEROUS


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_an_immediate_notification_does_not_wait_behind_a_handoff(ctx, world, db_url, db_kind):
    done = claimed_run(ctx, world)
    stack = world.stack()

    async def scenario():
        async with Waiter(db_url, handoff_grace=3600) as waiter:
            await waiter.wait(0)
            finish(ctx, done)  # a hand-off this waiter would act on only in an hour
            woke, waited = await wait_while(waiter, lambda: enqueue(ctx, stack))
            return woke, waited, waiter.handoff_checks

    woke, waited, checks = run(scenario())
    assert woke and waited < GENEROUS and checks == 0
    assert claim(ctx) is not None


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_handoffs_received_together_cost_one_check(ctx, world, db_url, db_kind):
    done = [claimed_run(ctx, world) for _ in range(3)]

    async def scenario():
        async with Waiter(db_url, handoff_grace=0.05) as waiter:
            await waiter.wait(0)
            for run_id in done:  # three transactions, three notifications, before the wait
                await asyncio.to_thread(finish, ctx, run_id)
            woke = await waiter.wait(1.0)
            return woke, waiter.handoff_checks, waiter.handoff_idle

    assert run(scenario()) == (False, 1, 1)


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_wait_cancelled_during_its_check_leaves_the_waiter_usable(ctx, world, db_url, db_kind):
    done = claimed_run(ctx, world)
    stack = world.stack()
    slow_check = "SELECT true FROM pg_sleep(0.5)"

    async def scenario():
        async with Waiter(db_url, handoff_grace=0, claimable_sql=slow_check) as waiter:
            await waiter.wait(0)
            waiting = asyncio.create_task(waiter.wait(10))
            await asyncio.to_thread(finish, ctx, done)
            await asyncio.sleep(0.2)  # the check is running now
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            rechecked = await waiter.wait(10)  # the hand-off was not forgotten: checked again
            woke, waited = await wait_while(waiter, lambda: enqueue(ctx, stack))
            return waiter.connected, rechecked, waiter.handoff_checks, woke, waited

    connected, rechecked, checks, woke, waited = run(scenario())
    assert connected and rechecked and checks == 1
    assert woke and waited < GENEROUS


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_runs_created_through_the_service_wake_waiters_at_once(ctx, world, db_url, db_kind):
    stack = world.stack()

    def create() -> None:
        with ctx.session() as s:
            runs_service.create_run(s, world.system(), ctx.secret_box, stack["id"], RunCreate())

    async def scenario():
        async with Waiter(db_url, handoff_grace=3600) as waiter:  # a hand-off would not wake it
            return await wait_while(waiter, create)

    woke, waited = run(scenario())
    assert woke and waited < GENEROUS
