"""The run queue on SQLite and PostgreSQL: admission rules, FIFO per stack, concurrent workers,
heartbeats and the reaper."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlmodel import select

from backend.queue import service as queue
from backend.runs import lifecycle as lc
from backend.runs.models import EXCLUSIVE_TYPES, Run
from backend.runs.state import apply_state, state_of
from backend.stacks.models import Stack
from backend.timeutil import new_id, utcnow


def enqueue(ctx, stack: dict, run_type: str = "tracked", at=None) -> str:
    now = at or utcnow()
    with ctx.session() as s:
        run = Run(
            id=new_id("run"),
            org_id=s.get(Stack, stack["id"]).org_id,
            stack_id=stack["id"],
            type=run_type,
            exclusive=run_type in EXCLUSIVE_TYPES,
            created_at=now,
            updated_at=now,
        )
        apply_state(run, lc.new_run(lc.RunType(run_type), now), now)
        s.add(run)
    return run.id


def claim(ctx, worker="w1", cap=3):
    with ctx.session() as s:
        run = queue.claim(s, worker, utcnow(), proposed_cap=cap)
        return None if run is None else (run.id, run.status, run.worker_id)


def set_status(ctx, run_id: str, transition) -> None:
    with ctx.session() as s:
        run = s.get(Run, run_id)
        now = utcnow()
        apply_state(run, transition(state_of(run), now), now)
        s.add(run)


def test_tracked_runs_hold_their_stack_in_fifo_order(ctx, world):
    stack = world.stack()
    first, second = enqueue(ctx, stack), enqueue(ctx, stack)
    assert claim(ctx) == (first, "preparing", "w1")
    assert claim(ctx, "w2") is None  # the stack is held
    # Waiting for confirmation still holds the stack.
    set_status(ctx, first, lc.start_planning)
    set_status(ctx, first, lambda s, t: lc.finish_planning(s, t, has_changes=True))
    assert claim(ctx, "w2") is None
    set_status(ctx, first, lc.discard)
    assert claim(ctx, "w2") == (second, "preparing", "w2")


def test_other_stacks_and_proposed_runs_are_not_blocked(ctx, world):
    a, b = world.stack(), world.stack()
    held = enqueue(ctx, a)
    proposed = enqueue(ctx, a, "proposed")
    other = enqueue(ctx, b)
    claimed = {claim(ctx)[0], claim(ctx)[0], claim(ctx)[0]}
    assert claimed == {held, proposed, other}


def test_proposed_runs_run_in_parallel_up_to_the_cap(ctx, world):
    stack = world.stack()
    ids = [enqueue(ctx, stack, "proposed") for _ in range(4)]
    got = [claim(ctx, cap=2) for _ in range(3)]
    assert [g[0] for g in got[:2]] == ids[:2] and got[2] is None
    set_status(ctx, ids[0], lambda s, t: lc.fail(s, t, "done"))
    assert claim(ctx, cap=2)[0] == ids[2]


def test_a_dead_worker_is_reaped_and_its_stack_unblocked(ctx, world):
    stack = world.stack()
    first, second = enqueue(ctx, stack), enqueue(ctx, stack)
    claim(ctx, "doomed")
    with ctx.session() as s:
        assert queue.heartbeat(s, "doomed", utcnow()) == 1
    with ctx.session() as s:
        assert queue.reap_stale(s, utcnow(), timedelta(seconds=30)) == []  # still fresh
    with ctx.session() as s:
        reaped = queue.reap_stale(s, utcnow() + timedelta(seconds=31), timedelta(seconds=30))
        assert [r.id for r in reaped] == [first]
    with ctx.session() as s:
        dead = s.get(Run, first)
        assert dead.status == "failed" and "worker doomed stopped responding" in dead.failure_reason
    assert claim(ctx, "w2")[0] == second


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_concurrent_workers_never_share_a_run_and_keep_stack_order(ctx, world, db_kind):
    """4 workers x 200 runs over 10 stacks: each run claimed once, tracked runs per stack in order."""
    stacks = [world.stack() for _ in range(10)]
    base = utcnow()
    order: dict[str, list[str]] = defaultdict(list)
    for i in range(200):
        stack = stacks[i % 10]
        run_type = "proposed" if i % 4 == 3 else "tracked"
        run_id = enqueue(ctx, stack, run_type, at=base + timedelta(microseconds=i))
        if run_type == "tracked":
            order[stack["id"]].append(run_id)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        idle = 0
        while idle < 50:
            with ctx.session() as s:
                run = queue.claim(s, name, utcnow(), proposed_cap=2)
                if run is not None:
                    # Finish at once so the stack frees up for the next run.
                    now = utcnow()
                    state = lc.finish_planning(lc.start_planning(state_of(run), now), now, has_changes=False)
                    apply_state(run, state, now)
                    s.add(run)
            if run is None:
                idle += 1
                continue
            idle = 0
            with lock:
                claimed.append((run.id, run.stack_id))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [c[0] for c in claimed]
    assert len(ids) == len(set(ids)) == 200
    with ctx.session() as s:
        runs = {r.id: r for r in s.exec(select(Run)).all()}
    for stack_id, expected in order.items():
        started = sorted(expected, key=lambda rid: runs[rid].status_timestamps["preparing"])
        assert started == expected, f"stack {stack_id} ran its tracked runs out of order"
