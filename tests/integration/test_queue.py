"""The run queue on SQLite and PostgreSQL: admission rules, FIFO per stack, concurrent workers,
heartbeats and the reaper; and PostgreSQL's one-statement claim, which must write what the
lifecycle says and admit what the Python rules admit."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session

from backend.queue import service as queue
from backend.queue.async_claim import AsyncClaimer
from backend.runs import execution
from backend.runs import lifecycle as lc
from backend.runs.models import EXCLUSIVE_TYPES, HOLDING, Run
from backend.runs.state import apply_state, state_of
from backend.stacks.models import Stack, StackVariable
from backend.timeutil import iso, new_id, utcnow
from tests.aio import run_async
from tests.integration.runs_support import queued_run


def enqueue(ctx, stack: dict, run_type: str = "tracked", at=None) -> str:
    with ctx.session() as s:
        return queued_run(s, stack["id"], run_type, at).id


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


def row_of(session, run_id: str) -> dict:
    """Every column of the run as the database has it now."""
    session.expire_all()
    return session.get(Run, run_id).model_dump()


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
        assert queue.heartbeat(s, "doomed", [first, second], utcnow()) == 1  # only the claimed one
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
    # The order of the claims themselves, taken inside each claim's transaction. (Not the status
    # timestamps: a worker reads its clock before its claim runs, and on a busy machine another
    # worker can claim and finish the previous run in between.)
    with ctx.session() as s:
        s.execute(text("CREATE SEQUENCE claim_order"))
    claimed: list[tuple[str, str]] = []
    claim_seq: dict[str, int] = {}
    jumped: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        idle = 0
        while idle < 50:
            with ctx.session() as s:
                run = queue.claim(s, name, utcnow(), proposed_cap=2)
                if run is not None:
                    seq = s.execute(text("SELECT nextval('claim_order')")).scalar_one()
                    older = s.execute(
                        text(
                            "SELECT count(*) FROM run WHERE stack_id = :stack AND exclusive "
                            "AND status = 'queued' AND (created_at, id) < (:at, :id)"
                        ),
                        {"stack": run.stack_id, "at": run.created_at, "id": run.id},
                    ).scalar_one()
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
                claim_seq[run.id] = seq
                if run.exclusive and older:
                    jumped.append(run.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [c[0] for c in claimed]
    assert len(ids) == len(set(ids)) == 200
    assert jumped == [], "tracked runs were claimed while an older one of their stack was queued"
    for stack_id, expected in order.items():
        started = sorted(expected, key=claim_seq.__getitem__)
        assert started == expected, f"stack {stack_id} ran its tracked runs out of order"


def test_claim_next_takes_a_confirmed_run_to_apply_before_any_queued_run(ctx, world):
    held, free = world.stack(), world.stack()
    to_apply = enqueue(ctx, held)
    assert claim(ctx, "planner") == (to_apply, "preparing", "planner")
    set_status(ctx, to_apply, lc.start_planning)
    set_status(ctx, to_apply, lambda s, t: lc.finish_planning(s, t, has_changes=True))
    set_status(ctx, to_apply, lc.confirm)
    queued = enqueue(ctx, free)
    with ctx.session() as s:
        before = Run.model_validate(row_of(s, to_apply))
    now = utcnow()
    with ctx.session() as s:
        got = queue.claim_next(s, "w1", now)
        assert (got.id, got.status, got.worker_id) == (to_apply, "applying", "w1")
    with ctx.session() as s:
        apply_state(before, lc.start_applying(state_of(before), now), now)
        before.worker_id, before.heartbeat_at = "w1", now
        assert row_of(s, to_apply) == before.model_dump()
    with ctx.session() as s:
        got = queue.claim_next(s, "w2", utcnow())
        assert (got.id, got.status, got.worker_id) == (queued, "preparing", "w2")
    with ctx.session() as s:
        assert queue.claim_next(s, "w3", utcnow()) is None
        assert queue.claim_apply(s, "w3", utcnow()) is None


# ---------------------------------------------------------------- the SQL claim (PostgreSQL)


def test_the_sql_claim_takes_its_transition_from_the_lifecycle():
    """The claim function writes only what ``lc.start_preparing`` does: status and one timestamp."""
    prep = queue._PREPARING
    assert (prep.source, prep.target, prep.stamp_key) == ("queued", "preparing", "preparing")

    def also_sets_a_reason(state, now):
        return replace(lc.start_preparing(state, now), failure_reason="surprise")

    def stamps_twice(state, now):
        new = lc.start_preparing(state, now)
        return replace(new, timestamps={**new.timestamps, lc.RunStatus.planning: now})

    def starts_anywhere(state, now):
        if state.status not in (lc.RunStatus.queued, lc.RunStatus.confirmed):
            raise lc.IllegalTransition("no")
        return replace(state, status=lc.RunStatus.preparing, timestamps={**state.timestamps, "x": now})

    for step in (also_sets_a_reason, stamps_twice):
        with pytest.raises(RuntimeError, match="update the SQL claim"):
            queue._derive(step, step.__name__)
    with pytest.raises(RuntimeError, match="expects one source"):
        queue._derive(starts_anywhere, "starts_anywhere")


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_the_sql_claim_writes_what_the_lifecycle_would(ctx, world, db_kind):
    """For random runs, the row crucible_claim_run leaves equals the lifecycle's transition of it."""
    rng = random.Random(20261201)
    stacks = [world.stack() for _ in range(6)]
    base = utcnow() - timedelta(hours=1)
    ids = []
    with ctx.session() as s:
        for i in range(30):
            run_type = rng.choice(list(lc.RunType))
            at = base + timedelta(seconds=i, microseconds=rng.randrange(1000))
            run = Run(
                id=new_id("run"),
                org_id=s.get(Stack, stacks[0]["id"]).org_id,
                stack_id=rng.choice(stacks)["id"],
                type=run_type.value,
                exclusive=run_type.value in EXCLUSIVE_TYPES,
                created_at=at,
                updated_at=at,
                message=rng.choice(["", "deploy", "ünïcode ✓"]),
                commit_sha=rng.choice([None, "a" * 40]),
                artifacts=rng.choice([{}, {"plan": {"key": "k", "sha256": "0" * 64}}]),
                env_override_names=rng.choice([[], ["TF_VAR_x"]]),
            )
            state = lc.new_run(run_type, at)
            if rng.random() < 0.3:  # an odd history: the lifecycle keeps a timestamp already there
                state = replace(state, timestamps={**state.timestamps, lc.RunStatus.preparing: at})
            apply_state(run, state, at)
            s.add(run)
            ids.append(run.id)
    claimed = 0
    while True:
        with ctx.session() as s:
            before = {rid: row_of(s, rid) for rid in ids}
        now = utcnow() + timedelta(microseconds=rng.randrange(10**6))
        with ctx.session() as s:
            got = queue.claim(s, f"w{claimed}", now, proposed_cap=rng.randint(1, 3))
            got_id = None if got is None else got.id
        if got_id is None:
            break
        claimed += 1
        with ctx.session() as s:
            after = row_of(s, got_id)
            expected_run = Run.model_validate(before[got_id])
            apply_state(expected_run, lc.start_preparing(state_of(expected_run), now), now)
            expected_run.worker_id = f"w{claimed - 1}"
            expected_run.heartbeat_at = now
            expected = expected_run.model_dump()
            assert after == expected
            assert state_of(s.get(Run, got_id)) == lc.start_preparing(
                state_of(Run.model_validate(before[got_id])), now
            )
            for rid in ids:  # nothing else changed
                if rid != got_id:
                    assert row_of(s, rid) == before[rid]
            if rng.random() < 0.5:  # free the stack now and then, so more runs get their turn
                finish_now = utcnow()
                run = s.get(Run, got_id)
                state = lc.finish_planning(
                    lc.start_planning(state_of(run), finish_now), finish_now, has_changes=False
                )
                apply_state(run, state, finish_now)
                s.add(run)
    assert claimed >= 6


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_the_sql_claim_admits_what_the_python_rules_admit(ctx, world, db_kind):
    """crucible_claim_run freezes the admission rules in a migration; the SQLite claim and the
    waiters' check read them from backend.queue.service. For random queues both pick the same run."""
    rng = random.Random(7)
    stacks = [world.stack() for _ in range(4)]
    org_id = None
    with ctx.session() as s:
        org_id = s.get(Stack, stacks[0]["id"]).org_id
    statuses = ["queued"] * 4 + ["preparing", "planning", "unconfirmed", "confirmed", "applying", "finished"]
    python_pick = text(
        f"SELECT r.id FROM run r WHERE {queue._ADMISSIBLE} ORDER BY r.created_at, r.id LIMIT 1"
    )
    claimable = text(queue.CLAIMABLE_SQL)
    base = utcnow() - timedelta(hours=1)
    for trial in range(40):
        with ctx.session() as s:
            s.execute(text("DELETE FROM run"))
            held: set[str] = set()
            for i in range(rng.randint(0, 12)):
                run_type = rng.choice(["tracked", "tracked", "destroy", "proposed", "drift"])
                status = rng.choice(statuses)
                stack_id = rng.choice(stacks)["id"]
                exclusive = run_type in EXCLUSIVE_TYPES
                if exclusive and status in HOLDING:
                    if stack_id in held:  # the unique index allows one holder per stack
                        status = "queued"
                    held.add(stack_id)
                at = base + timedelta(seconds=rng.randrange(100), microseconds=i)
                run = Run(
                    id=new_id("run"),
                    org_id=org_id,
                    stack_id=stack_id,
                    type=run_type,
                    exclusive=exclusive,
                    status=status,
                    created_at=at,
                    updated_at=at,
                    status_timestamps={"queued": iso(at)},
                )
                s.add(run)
        cap = rng.randint(1, 3)
        with ctx.session() as s:
            expected = s.execute(python_pick, {"cap": cap}).scalar()
            says_claimable = s.execute(claimable).scalar()
            got = queue.claim(s, "w", utcnow(), proposed_cap=cap)
            assert (got and got.id) == expected, f"trial {trial}"
            if not says_claimable:  # the waiters' check never says "nothing" in vain
                assert got is None
            s.rollback()


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
@pytest.mark.parametrize("cap", [1, 3])
def test_concurrent_claims_never_exceed_the_proposed_cap(ctx, world, db_kind, cap):
    """8 workers race for 20 proposed runs of one stack and keep what they claim: exactly the cap."""
    stack = world.stack()
    base = utcnow()
    for i in range(20):
        enqueue(ctx, stack, "proposed", at=base + timedelta(microseconds=i))
    barrier = threading.Barrier(8)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        barrier.wait()
        while True:
            got = claim(ctx, name, cap=cap)
            if got is None:
                return
            with lock:
                claimed.append(got[0])

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(claimed) == len(set(claimed)) == cap


def _waits_for_a_lock(ctx, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with ctx.session() as s:
            waiting = s.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_claim_that_loses_the_stack_to_a_concurrent_claim_retries_instead_of_failing(ctx, world, db_kind):
    """Runs are committed out of created_at order (created_at is set before the enqueue commits),
    so two workers can each see a different run as the stack's oldest: the unique index lets one
    win, and the other's claim moves on rather than raising."""
    stack, other = world.stack(), world.stack()
    late = enqueue(ctx, stack)  # created second, committed first
    with ctx.session() as a:
        won = queue.claim(a, "a", utcnow())
        assert won is not None and won.id == late  # a's claim is not committed yet
        early = enqueue(ctx, stack, at=utcnow() - timedelta(minutes=1))  # older, committed now
        spare = enqueue(ctx, other)
        result: dict[str, object] = {}

        def b() -> None:
            # Sees `early` as the stack's oldest queued run and nothing holding the stack (a has
            # not committed), so it tries `early`, waits on the index for a, then loses.
            result["got"] = claim(ctx, "b")

        thread = threading.Thread(target=b)
        thread.start()
        assert _waits_for_a_lock(ctx), "b never queued behind a's claim"
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["got"] == (spare, "preparing", "b")
    with ctx.session() as s:
        assert s.get(Run, early).status == "queued"


# ------------------------------------------------------- the async claimer (PostgreSQL workers)


def finish(ctx, run_id: str) -> None:
    """What a worker's plan without changes does: the run finishes and frees its stack."""
    set_status(ctx, run_id, lc.start_planning)
    set_status(ctx, run_id, lambda s, t: lc.finish_planning(s, t, has_changes=False))


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_the_async_claimer_claims_what_claim_next_would(ctx, world, db_kind):
    held, a, b = world.stack(), world.stack(), world.stack()
    to_apply = enqueue(ctx, held)
    assert claim(ctx, "planner") == (to_apply, "preparing", "planner")
    set_status(ctx, to_apply, lc.start_planning)
    set_status(ctx, to_apply, lambda s, t: lc.finish_planning(s, t, has_changes=True))
    set_status(ctx, to_apply, lc.confirm)
    base = utcnow()
    for i, (stack, run_type) in enumerate([(a, "tracked"), (a, "tracked"), (a, "proposed"), (b, "proposed")]):
        enqueue(ctx, stack, run_type, at=base + timedelta(microseconds=i))

    async def main() -> list[tuple[str | None, str | None]]:
        claimer = AsyncClaimer(ctx.engine.url)
        pairs = []
        try:
            while True:
                with Session(ctx.engine) as s:  # what the ORM claim would take, rolled back
                    expected = queue.claim_next(s, "orm", utcnow(), proposed_cap=1)
                    expected_id = None if expected is None else expected.id
                    s.rollback()
                got = await claimer.claim("async", utcnow(), 1)
                pairs.append((expected_id, got))
                if got is None:
                    return pairs
        finally:
            await claimer.close()

    pairs = run_async(main())
    assert [e for e, _ in pairs] == [g for _, g in pairs]
    assert pairs[0][1] == to_apply and pairs[-1] == (None, None)
    assert len(pairs) == 5  # the apply, a's first tracked run, a's proposed run, b's proposed run, none
    with ctx.session() as s:
        rows = {r: s.get(Run, r) for _, r in pairs[:-1]}
        assert rows[to_apply].status == "applying"
        assert {r.worker_id for r in rows.values()} == {"async"}
        assert {r.status for r in rows.values() if r.id != to_apply} == {"preparing"}


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_concurrent_async_claimers_never_share_a_run(ctx, world, db_kind):
    """4 claimers (4 connections) x 100 runs over 10 stacks, each claimed run finished at once."""
    stacks = [world.stack() for _ in range(10)]
    base = utcnow()
    runs = {
        enqueue(
            ctx, stacks[i % 10], "proposed" if i % 4 == 3 else "tracked", base + timedelta(microseconds=i)
        )
        for i in range(100)
    }
    claimed: list[str] = []

    async def worker(name: str, deadline: float) -> None:
        claimer = AsyncClaimer(ctx.engine.url)
        try:
            while len(claimed) < len(runs) and time.monotonic() < deadline:
                run_id = await claimer.claim(name, utcnow(), 2)
                if run_id is None:
                    await asyncio.sleep(0.005)  # another claimer is finishing a stack's run
                    continue
                claimed.append(run_id)
                await asyncio.to_thread(finish, ctx, run_id)
        finally:
            await claimer.close()

    async def main() -> None:
        deadline = time.monotonic() + 60
        await asyncio.gather(*(worker(f"w{i}", deadline) for i in range(4)))

    run_async(main())
    assert len(claimed) == len(set(claimed)) == 100
    assert set(claimed) == runs


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_the_async_claimer_survives_losing_its_connection(ctx, world, db_kind):
    stack = world.stack()
    first = enqueue(ctx, stack, "proposed")
    second = enqueue(ctx, stack, "proposed")

    async def main() -> tuple[str | None, str | None, int, int]:
        claimer = AsyncClaimer(ctx.engine.url)
        try:
            got_first = await claimer.claim("w1", utcnow(), 3)
            pid = claimer._conn.info.backend_pid
            with ctx.session() as s:
                assert s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            got_second = await claimer.claim("w1", utcnow(), 3)
            return got_first, got_second, pid, claimer._conn.info.backend_pid
        finally:
            await claimer.close()

    got_first, got_second, old_pid, new_pid = run_async(main())
    assert (got_first, got_second) == (first, second)
    assert old_pid != new_pid


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_job_for_builds_the_job_or_fails_the_run_when_a_variable_does_not_decrypt(ctx, world, db_kind):
    good, bad = world.stack(), world.stack()
    with ctx.session() as s:
        s.add(StackVariable(stack_id=bad["id"], name="TF_VAR_x", value_encrypted="not-a-sealed-value"))
    planned = enqueue(ctx, good)

    async def claim_one() -> str | None:
        claimer = AsyncClaimer(ctx.engine.url)
        try:
            return await claimer.claim("w1", utcnow(), 3)
        finally:
            await claimer.close()

    assert run_async(claim_one()) == planned
    with ctx.session() as s:
        job = execution.job_for(s, ctx.secret_box, planned, utcnow())
    assert job is not None and (job.run_id, job.phase, job.stack_id) == (planned, "plan", good["id"])

    broken = enqueue(ctx, bad)
    assert run_async(claim_one()) == broken
    with ctx.session() as s:
        assert execution.job_for(s, ctx.secret_box, broken, utcnow()) is None
    with ctx.session() as s:
        run = s.get(Run, broken)
        assert run.status == "failed"
        assert run.failure_reason.startswith("cannot prepare the run's variables")
        assert run.worker_id == "w1"
    with ctx.session() as s:  # a run that is no longer claimed has no job
        assert execution.job_for(s, ctx.secret_box, broken, utcnow()) is None


# ---------------------------------------------------------------------------- SQL reports

_REPORTS = {
    # name: (the status the run is brought to first, the ORM report, the SQL report)
    "start_planning": (
        "preparing",
        lambda s, run_id, w, now: execution.start_planning(s, run_id, w, now, "a" * 40, "the commit"),
        lambda now: execution.start_planning_report(now, "a" * 40, "the commit"),
    ),
    "finish_planning_changes": (
        "planning",
        lambda s, run_id, w, now: execution.finish_planning(
            s,
            run_id,
            w,
            now,
            summary={"add": 1, "change": 2, "destroy": 0},
            has_changes=True,
            artifacts={"plan_json": {"key": "k", "sha256": "0" * 64}},
        ),
        lambda now: execution.finish_planning_report(
            now,
            summary={"add": 1, "change": 2, "destroy": 0},
            has_changes=True,
            artifacts={"plan_json": {"key": "k", "sha256": "0" * 64}},
        ),
    ),
    "finish_planning_no_changes": (
        "planning",
        lambda s, run_id, w, now: execution.finish_planning(
            s, run_id, w, now, summary={"add": 0, "change": 0, "destroy": 0}, has_changes=False, artifacts={}
        ),
        lambda now: execution.finish_planning_report(
            now, summary={"add": 0, "change": 0, "destroy": 0}, has_changes=False, artifacts={}
        ),
    ),
    "finish_planning_needs_approval": (
        "planning",
        lambda s, run_id, w, now: execution.finish_planning(
            s, run_id, w, now, summary=_SUMMARY, has_changes=True, artifacts={}, required_approvals=2
        ),
        lambda now: execution.finish_planning_report(
            now, summary=_SUMMARY, has_changes=True, artifacts={}, required_approvals=2
        ),
    ),
    "finish_applying": (
        "applying",
        lambda s, run_id, w, now: execution.finish_applying(s, run_id, w, now),
        lambda now: execution.finish_applying_report(now),
    ),
    "fail_planning": (
        "planning",
        lambda s, run_id, w, now: execution.fail(s, run_id, w, now, "the tool exited with 1"),
        lambda now: execution.fail_report(now, "the tool exited with 1"),
    ),
    "fail_applying": (
        "applying",
        lambda s, run_id, w, now: execution.fail(s, run_id, w, now, "the tool exited with 1"),
        lambda now: execution.fail_report(now, "the tool exited with 1"),
    ),
}


_SUMMARY = {"add": 1, "change": 0, "destroy": 3}


def _run_in(ctx, stack: dict, run_type: str, status: str, worker: str) -> str:
    """A run of ``run_type`` walked through the lifecycle to ``status``, owned by ``worker``."""
    steps = {
        "preparing": [lc.start_preparing],
        "planning": [lc.start_preparing, lc.start_planning],
        "applying": [
            lc.start_preparing,
            lc.start_planning,
            lambda s, t: lc.finish_planning(s, t, has_changes=True),
            lc.confirm,
            lc.start_applying,
        ],
    }[status]
    run_id = enqueue(ctx, stack, run_type)
    with ctx.session() as s:
        run = s.get(Run, run_id)
        now = utcnow()
        state = state_of(run)
        for step in steps:
            state = step(state, now)
        apply_state(run, state, now)
        run.worker_id, run.heartbeat_at, run.artifacts = worker, now, {"old": {"key": "kept"}}
        s.add(run)
    return run_id


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
@pytest.mark.parametrize(
    ("name", "run_type"),
    [
        (name, run_type)
        for name in sorted(_REPORTS)
        for run_type in ("tracked", "proposed")
        if not (_REPORTS[name][0] == "applying" and run_type == "proposed")  # plan-only runs never apply
    ],
)
@pytest.mark.parametrize("auto_apply", [False, True])
def test_a_sql_report_writes_what_the_orm_report_writes(ctx, world, db_kind, name, auto_apply, run_type):
    """Pairs of identical runs: one reported through the ORM, one through REPORT_SQL at the same
    time; the rows must come out the same (apart from their ids), and both must wake the queue."""
    status, orm_report, sql_report = _REPORTS[name]
    stack_a, stack_b = world.stack(auto_apply=auto_apply), world.stack(auto_apply=auto_apply)
    by_orm = _run_in(ctx, stack_a, run_type, status, "w")
    by_sql = _run_in(ctx, stack_b, run_type, status, "w")
    now = utcnow()
    with ctx.session() as s:
        orm_status = orm_report(s, by_orm, "w", now)

    async def main():
        claimer = AsyncClaimer(ctx.engine.url)
        try:
            return await claimer.report(by_sql, "w", sql_report(now))
        finally:
            await claimer.close()

    assert run_async(main()) == orm_status
    with ctx.session() as s:
        a, b = row_of(s, by_orm), row_of(s, by_sql)
    stamps = []
    for row in (a, b):
        row.pop("id"), row.pop("stack_id"), row.pop("created_at")
        stamps.append(row.pop("status_timestamps"))  # the runs were made at different times
    assert a == b
    assert a["status"] == orm_status and orm_status != status
    assert stamps[0].keys() == stamps[1].keys()
    assert stamps[0][orm_status] == stamps[1][orm_status] == iso(now)


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_sql_report_is_ignored_unless_the_worker_owns_the_run_in_an_expected_status(ctx, world, db_kind):
    stack, other = world.stack(), world.stack()
    planning = _run_in(ctx, stack, "tracked", "planning", "owner")
    preparing = _run_in(ctx, other, "proposed", "preparing", "owner")
    with ctx.session() as s:
        before = {r: row_of(s, r) for r in (planning, preparing)}

    async def main():
        claimer = AsyncClaimer(ctx.engine.url)
        try:
            now = utcnow()
            return [
                await claimer.report(planning, "someone-else", execution.finish_applying_report(now)),
                await claimer.report(planning, "owner", execution.finish_applying_report(now)),
                await claimer.report(preparing, "owner", execution.finish_applying_report(now)),
                await claimer.report("run-0000000000000000", "owner", execution.fail_report(now, "x")),
            ]
        finally:
            await claimer.close()

    assert run_async(main()) == [None, None, None, None]
    with ctx.session() as s:
        assert {r: row_of(s, r) for r in (planning, preparing)} == before


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
def test_a_sql_report_that_frees_the_stack_wakes_idle_workers(ctx, world, db_kind):
    import psycopg

    from backend.queue.wakeup import CHANNEL, libpq_conninfo

    stack = world.stack()
    running = _run_in(ctx, stack, "tracked", "planning", "w")
    listener = psycopg.connect(libpq_conninfo(ctx.engine.url), autocommit=True)
    try:
        listener.execute(f"LISTEN {CHANNEL}")

        async def main():
            claimer = AsyncClaimer(ctx.engine.url)
            try:
                now = utcnow()
                assert (
                    await claimer.report(running, "w", execution.start_planning_report(now, "b" * 40, ""))
                    is None
                )
                return await claimer.report(running, "w", execution.fail_report(now, "boom"))
            finally:
                await claimer.close()

        assert run_async(main()) == "failed"
        notes = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.channel for n in notes] == [CHANNEL]
    finally:
        listener.close()
