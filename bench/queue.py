#!/usr/bin/env python3
"""Queue benchmark: enqueue → claim latency and claims/s, Crucible vs procrastinate on PostgreSQL.

Four Crucible worker processes (the product's PostgreSQL claim, ``backend.queue.async_claim.
AsyncClaimer``, on the event loop, as ``runner.port`` uses it; woken by
``backend.queue.wakeup.Waiter``) and four procrastinate worker processes (``concurrency=1``,
LISTEN/NOTIFY on) run side by side against the same PostgreSQL server, each queue in its own
fresh database. A worker that claims a run finishes it at once (a Crucible worker reports
planning started and a plan without changes, the two reports ``runner.port`` makes on
PostgreSQL, which finish the run, free its stack and notify; a procrastinate job is a no-op),
so the next run on that stack becomes claimable.

Cases (per side, alternating which side goes first every round):

- ``paced``: runs enqueued one transaction each at a steady rate over many stacks; the figure
  is the enqueue → claim latency (p50/p99).
- ``burst``: all runs committed in one transaction over many stacks; the figure is claims/s.
- ``same-stack``: one stack (a procrastinate ``lock``), so claims are strictly one at a time.
- ``backlog`` (once, at the end): a deep queue, 1,000 runs over the stacks in one transaction,
  as after a monorepo push or a scheduler catching up; claims/s again.

Both tables first get the same history: 20,000 finished runs / succeeded jobs spread over the
stacks (``--history``), since a production runs table keeps every run it ever had.

Latency is wall clock (``time.time()``) from the start of the enqueue call to the moment the
claiming worker's claim has committed, so it includes the enqueue itself. The figure to watch is
the ratio Crucible / procrastinate measured in the same run; absolute numbers on a noisy
2-core machine mean little.

    python bench/queue.py [--rounds N] [--runs N] [--stacks N] [--interval-ms MS] [--quick]

Results are printed and written to bench/results/queue.json (git-ignored). Everything stays on
127.0.0.1; the two databases are dropped and the worker processes stopped at the end, also on
error or Ctrl-C. The run stops itself after --max-seconds (default 170).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: its directory must not shadow the standard library's `queue`
# (which asyncio, concurrent.futures and psycopg_pool import) for us or for our children.
_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import getpass  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import queue as stdqueue  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

RESULTS_DIR = _HERE / "results"
PG_HOST, PG_PORT = "127.0.0.1", 5432
WORKERS = 4
SIDES = ("crucible", "procrastinate")
CASES = ("paced", "burst", "same-stack", "backlog")
ROUND_CASES = CASES[:3]  # every round; the backlog runs once per queue, at the end


def say(msg: str = "") -> None:
    print(msg, flush=True)


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------------------- worker processes
#
# A worker writes one line per event to stdout, flushed:
#   ready
#   C <key> <claimed_at> <claim_ms>      a claim committed (wall clock, seconds)
#   E <at> <claim_ms>                    a claim attempt that found nothing
#   S <json>                             totals, on the way out


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _crucible_worker(url: str, name: str) -> None:
    import backend.models  # noqa: F401 - every table, so the ORM can resolve foreign keys
    from backend.db import make_engine
    from backend.queue import wakeup
    from backend.queue.async_claim import AsyncClaimer
    from backend.runs import execution
    from backend.timeutil import utcnow

    engine = make_engine(url)  # exactly what `crucible worker` gets: pool_pre_ping included
    totals = {"claims": 0, "empty": 0, "wakeups": 0, "timeouts": 0, "claim_s": 0.0, "finish_s": 0.0}

    # What InProcessPort.claim does on PostgreSQL: one call on a dedicated autocommit connection.
    claimer = AsyncClaimer(engine.url)

    async def finish(run_id: str) -> None:
        t1 = time.perf_counter()
        # The executor would start here; instead the plan "has no changes": the worker reports
        # planning started and the plan stored, exactly as runner.port does on PostgreSQL (one
        # statement each on the claim connection); the second frees the stack and notifies.
        await claimer.report(run_id, name, execution.start_planning_report(utcnow(), "0" * 40, "bench"))
        plan = execution.finish_planning_report(
            utcnow(), summary={"add": 0, "change": 0, "destroy": 0}, has_changes=False, artifacts={}
        )
        status = await claimer.report(run_id, name, plan)
        assert status == "finished", status
        totals["finish_s"] += time.perf_counter() - t1

    async def claim_and_finish() -> tuple[str | None, float, float]:
        t0 = time.perf_counter()
        run_id = await claimer.claim(name, utcnow(), 3)
        claimed_at = time.time()
        took = time.perf_counter() - t0
        if run_id is not None:
            await finish(run_id)
        return run_id, claimed_at, took

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    waiter_ref: list[wakeup.Waiter] = []
    try:
        async with wakeup.Waiter(engine) as waiter:  # LISTEN before the first claim
            waiter_ref.append(waiter)
            _emit("ready")
            while True:
                run_id, at, took = await claim_and_finish()
                totals["claim_s"] += took
                if run_id is not None:
                    totals["claims"] += 1
                    _emit(f"C {run_id} {at:.6f} {took * 1000:.3f}")
                    continue
                totals["empty"] += 1
                _emit(f"E {at:.6f} {took * 1000:.3f}")
                if await waiter.wait():
                    totals["wakeups"] += 1
                else:
                    totals["timeouts"] += 1
    except asyncio.CancelledError:
        pass
    finally:
        if waiter_ref:
            totals["handoff_checks"] = waiter_ref[0].handoff_checks
            totals["handoff_idle"] = waiter_ref[0].handoff_idle
        _emit("S " + json.dumps(totals))
        await claimer.close()
        engine.dispose()


def _procrastinate_app(conninfo: str):
    import procrastinate

    # It warns that the app lives in __main__; harmless here: both ends register "noop" by name.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop(key: str) -> None:
        return None

    return app, noop


async def _procrastinate_worker(conninfo: str, name: str) -> None:
    app, _noop = _procrastinate_app(conninfo)
    totals = {"claims": 0, "empty": 0, "fetch_s": 0.0}
    async with app.open_async():
        manager = app.job_manager
        fetch = manager.fetch_job

        async def timed_fetch(*args: Any, **kwargs: Any):
            t0 = time.perf_counter()
            job = await fetch(*args, **kwargs)
            at = time.time()
            took = time.perf_counter() - t0
            totals["fetch_s"] += took
            if job is None:
                totals["empty"] += 1
                _emit(f"E {at:.6f} {took * 1000:.3f}")
            else:
                totals["claims"] += 1
                _emit(f"C {job.task_kwargs['key']} {at:.6f} {took * 1000:.3f}")
            return job

        manager.fetch_job = timed_fetch  # type: ignore[method-assign]
        _emit("ready")
        try:
            # SIGTERM → procrastinate's own graceful stop.
            await app.run_worker_async(name=name, concurrency=1, wait=True, install_signal_handlers=True)
        finally:
            _emit("S " + json.dumps(totals))


def worker_main(kind: str, target: str, name: str) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{name} %(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore", DeprecationWarning)
    coro = _crucible_worker(target, name) if kind == "crucible" else _procrastinate_worker(target, name)
    asyncio.run(coro)
    return 0


@dataclass
class Worker:
    side: str
    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    ready: threading.Event = field(default_factory=threading.Event)
    stats: dict[str, Any] | None = None
    reader: threading.Thread | None = None


class Fleet:
    """The worker processes of both sides and one inbox for what they report."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.workers: list[Worker] = []
        self.inbox: stdqueue.Queue[tuple[str, str, str, float, float]] = stdqueue.Queue()

    def spawn(self, side: str, target: str, n: int) -> None:
        for i in range(n):
            name = f"{side[:4]}-{i}"
            err = self.tmp / f"{name}.stderr"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    side,
                    "--target",
                    target,
                    "--name",
                    name,
                ],
                stdout=subprocess.PIPE,
                stderr=err.open("w"),
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            w = Worker(side, name, proc, err)
            w.reader = threading.Thread(target=self._read, args=(w,), daemon=True, name=f"read-{name}")
            w.reader.start()
            self.workers.append(w)

    def _read(self, w: Worker) -> None:
        assert w.proc.stdout is not None
        for line in w.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "ready":
                w.ready.set()
            elif kind == "C":
                key, at, took = rest.split()
                self.inbox.put((w.side, "C", key, float(at), float(took)))
            elif kind == "E":
                at, took = rest.split()
                self.inbox.put((w.side, "E", w.name, float(at), float(took)))
            elif kind == "S":
                w.stats = json.loads(rest)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if not w.ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"worker {w.name} did not start:\n{self.stderr_tail(w)}")

    def check_alive(self) -> None:
        for w in self.workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited ({w.proc.returncode}):\n{self.stderr_tail(w)}")

    @staticmethod
    def stderr_tail(w: Worker, lines: int = 20) -> str:
        try:
            return "\n".join(w.stderr_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
            if w.reader is not None:
                w.reader.join(2)


# ---------------------------------------------------------------------------- databases


def pg_admin_user() -> str | None:
    """The first role that can log in (trust auth) and create databases, or None."""
    import psycopg

    for user in dict.fromkeys(["postgres", getpass.getuser()]):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=2
            ) as conn:
                row = conn.execute(
                    "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
                if row and row[0]:
                    return user
        except Exception:
            continue
    return None


@contextlib.contextmanager
def databases(user: str, *labels: str) -> Iterator[tuple[dict[str, str], str]]:
    """Fresh databases (name per label) and the server version; dropped on the way out."""
    import psycopg

    def admin() -> psycopg.Connection:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True, connect_timeout=5
        )

    names: dict[str, str] = {}
    try:
        with admin() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            for label in labels:
                name = f"crucible_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
                conn.execute(f'CREATE DATABASE "{name}"')
                names[label] = name
        yield names, version
    finally:
        with contextlib.suppress(Exception), admin() as conn:
            for name in names.values():
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as exc:  # pragma: no cover - best effort, but say so
                    say(f"WARNING: could not drop database {name}: {exc}")


# ---------------------------------------------------------------------------- the two queues


class CrucibleQueue:
    """The enqueue side, as the run service does it: a run row and a notify in one transaction."""

    side = "crucible"

    def __init__(self, url: str, data_dir: Path, n_stacks: int):
        import backend.models  # noqa: F401 - every table, so the ORM can resolve foreign keys
        from backend.auth.models import Organization
        from backend.config import load_settings
        from backend.db import make_engine, migrate
        from backend.stacks.models import Stack
        from backend.timeutil import new_id

        settings = load_settings(data_dir=data_dir, database_url=url, secret_key="bench-" + "k" * 40)
        migrate(settings)
        self.url = settings.sqlalchemy_url
        self.engine = make_engine(self.url)
        self.org_id = new_id("org")
        self.stacks = [new_id("stk") for _ in range(n_stacks + 1)]  # the last one: same-stack case
        with self.session() as s:
            s.add(Organization(id=self.org_id, name="bench"))
            s.flush()
            for i, sid in enumerate(self.stacks):
                s.add(
                    Stack(
                        id=sid,
                        org_id=self.org_id,
                        name=f"bench-{i:03d}",
                        repository_url=f"https://git.example.com/infra/{i}.git",
                        tool="opentofu",
                    )
                )

    def seed_history(self, n: int, n_stacks: int) -> None:
        """Finished runs from the past year, bulk-inserted (what a year of a busy install leaves)."""
        from sqlalchemy import insert, text

        from backend.runs.models import Run
        from backend.timeutil import iso, new_id, utcnow

        base = utcnow() - timedelta(days=365)
        rows = []
        for i in range(n):
            at = base + timedelta(seconds=30 * i)
            rows.append(
                {
                    "id": new_id("run"),
                    "org_id": self.org_id,
                    "stack_id": self.stacks[i % n_stacks],
                    "type": "tracked",
                    "exclusive": True,
                    "status": "finished",
                    "created_at": at,
                    "updated_at": at,
                    "status_timestamps": {"queued": iso(at), "finished": iso(at)},
                    "message": "",
                    "trigger": "bench",
                }
            )
        with self.engine.begin() as conn:
            for k in range(0, n, 5000):
                conn.execute(insert(Run.__table__), rows[k : k + 5000])  # type: ignore[attr-defined]
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE run"))  # what autovacuum does soon after

    def session(self):
        from backend.db import session_scope

        return session_scope(self.engine)

    def _run(self, stack_id: str, at):
        from backend.runs import lifecycle as lc
        from backend.runs.models import Run
        from backend.runs.state import apply_state
        from backend.timeutil import new_id

        run = Run(
            id=new_id("run"),
            org_id=self.org_id,
            stack_id=stack_id,
            type="tracked",
            exclusive=True,
            created_at=at,
            updated_at=at,
            trigger="bench",
        )
        apply_state(run, lc.new_run(lc.RunType.tracked, at), at)
        return run

    async def enqueue(self, stack: int) -> str:
        from backend.queue import wakeup
        from backend.timeutil import utcnow

        with self.session() as s:
            run = self._run(self.stacks[stack], utcnow())
            s.add(run)
            wakeup.enqueued(s)  # as the run service's create_run does (PostgreSQL: the INSERT notifies)
        return run.id

    async def enqueue_many(self, stacks: list[int]) -> list[str]:
        from backend.queue import wakeup
        from backend.timeutil import utcnow

        base = utcnow()
        with self.session() as s:
            # Distinct created_at values: FIFO per stack is defined by them.
            runs = [
                self._run(self.stacks[st], base + timedelta(microseconds=i)) for i, st in enumerate(stacks)
            ]
            s.add_all(runs)
            wakeup.enqueued(s)
        return [r.id for r in runs]

    def claim_plan(self, depth: int, n_stacks: int) -> dict[str, Any]:
        """The plans of what one claim() runs, with ``depth`` runs queued and a few stacks held,
        rolled back afterwards. claim() is one call of a SQL function, so the statements inside it
        are what matter: auto_explain (log_nested_statements) reports them to this session as
        notices. Without the rights to LOAD it, the plan of the first statement instead."""
        from sqlalchemy import event
        from sqlmodel import Session

        from backend.queue import service as queue
        from backend.timeutil import utcnow

        captured: list[tuple[str, Any]] = []

        def grab(conn, cursor, statement, parameters, context, executemany):
            if not captured and statement.lstrip()[:6].upper() in ("SELECT", "WITH", "UPDATE"):
                captured.append((statement, parameters))

        with Session(self.engine) as s:
            base = utcnow()
            s.add_all(
                self._run(self.stacks[i % n_stacks], base + timedelta(microseconds=i)) for i in range(depth)
            )
            s.flush()
            for i in range(4):  # four stacks already busy, as with four workers
                queue.claim(s, f"plan-{i}", utcnow())
            event.listen(self.engine, "before_cursor_execute", grab)
            try:
                t0 = time.perf_counter()
                queue.claim(s, "plan", utcnow())
                took = time.perf_counter() - t0
            finally:
                event.remove(self.engine, "before_cursor_execute", grab)
            statement, params = captured[0]
            plan = self._nested_plans(s, lambda: queue.claim(s, "plan-explained", utcnow()))
            if plan is None:
                rows = s.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).all()
                plan = [r[0] for r in rows]
            s.rollback()
        return {"depth": depth, "claim_ms": round(took * 1000, 3), "statement": statement, "plan": plan}

    @staticmethod
    def _nested_plans(s, action) -> list[str] | None:
        """EXPLAIN ANALYZE output of every statement ``action`` runs, functions' insides included."""
        from sqlalchemy import text

        conn = s.connection()
        dbapi = conn.connection.dbapi_connection
        try:
            with s.begin_nested():
                conn.exec_driver_sql("LOAD 'auto_explain'")
        except Exception:  # not a superuser, or the module is not installed
            return None
        for name, value in (
            ("log_min_duration", "0"),
            ("log_analyze", "on"),
            ("log_buffers", "on"),
            ("log_timing", "on"),
            ("log_nested_statements", "on"),
            ("log_level", "notice"),
        ):
            conn.execute(text(f"SET LOCAL auto_explain.{name} = {value}"))
        notices: list[str] = []

        def keep(diag) -> None:
            notices.append(diag.message_primary or "")

        dbapi.add_notice_handler(keep)
        try:
            action()
        finally:
            dbapi.remove_notice_handler(keep)
            conn.execute(text("SET LOCAL auto_explain.log_min_duration = -1"))
        return [line for note in notices for line in note.splitlines()] or None

    async def close(self) -> None:
        self.engine.dispose()


class ProcrastinateQueue:
    side = "procrastinate"

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self.app, self.task = _procrastinate_app(conninfo)

    async def open(self) -> None:
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def seed_history(self, n: int, n_stacks: int) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, attempts) "
                "SELECT 'default', 'noop', 'stack-' || (g %% %s), '{}'::jsonb, 'succeeded', 1 "
                "FROM generate_series(0, %s - 1) g",
                (n_stacks, n),
            )
            await conn.execute("VACUUM ANALYZE procrastinate_jobs")

    def _lock(self, stack: int) -> str:
        return f"stack-{stack}"  # one job at a time per lock, FIFO: a Crucible stack

    async def enqueue(self, stack: int) -> str:
        key = secrets.token_hex(8)
        await self.task.configure(lock=self._lock(stack)).defer_async(key=key)
        return key

    async def enqueue_many(self, stacks: list[int]) -> list[str]:
        keys = [secrets.token_hex(8) for _ in stacks]
        jobs = [
            self.task.configure(lock=self._lock(st)).make_new_job(key=k)
            for st, k in zip(stacks, keys, strict=True)
        ]
        await self.app.job_manager.batch_defer_jobs_async(jobs=jobs)
        return keys

    async def close(self) -> None:
        await self.app.close_async()


# ---------------------------------------------------------------------------- measurement


@dataclass
class CaseResult:
    side: str
    case: str
    round: int
    n: int
    latencies_ms: list[float]
    commit_to_claim_ms: list[float]
    enqueue_ms: list[float]
    span_s: float  # from the (last) enqueue commit to the last claim
    empty_claims: int
    claim_ms: list[float]
    complete: bool

    @property
    def claims_per_s(self) -> float | None:
        """Claims/s of a batch; None for ``paced``, where it would only echo the enqueue rate."""
        if self.case == "paced":
            return None
        return self.n / self.span_s if self.span_s > 0 else float("nan")


class Bench:
    def __init__(self, fleet: Fleet, queues: dict[str, Any], args: argparse.Namespace):
        self.fleet = fleet
        self.queues = queues
        self.args = args

    def _collect(
        self, side: str, keys: set[str], timeout: float
    ) -> tuple[dict[str, tuple[float, float]], list]:
        """Claims of ``keys`` (and the empty claims of that side meanwhile) until all arrived.

        The other queue's workers are idle meanwhile; their occasional poll is not this case's."""
        got: dict[str, tuple[float, float]] = {}
        empties: list[tuple[float, float]] = []
        deadline = time.monotonic() + timeout
        while len(got) < len(keys):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                ev = self.fleet.inbox.get(timeout=min(remaining, 1.0))
            except stdqueue.Empty:
                self.fleet.check_alive()
                continue
            ev_side, kind, key, at, took = ev
            if ev_side != side:
                continue
            if kind == "C" and key in keys:
                got[key] = (at, took)
            elif kind == "E":
                empties.append((at, took))
        return got, empties

    def _settle(self, seconds: float = 0.3) -> None:
        """Let the workers go idle, then forget what they reported meanwhile."""
        time.sleep(seconds)
        with contextlib.suppress(stdqueue.Empty):
            while True:
                self.fleet.inbox.get_nowait()

    async def run_case(self, side: str, case: str, rnd: int) -> CaseResult:
        q = self.queues[side]
        a = self.args
        starts: dict[str, float] = {}
        commits: dict[str, float] = {}
        if case == "paced":
            t_first = time.time()
            interval = a.interval_ms / 1000
            for i in range(a.runs):
                # Open loop: the schedule does not wait for the queue.
                delay = t_first + i * interval - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = time.time()
                key = await q.enqueue(i % a.stacks)
                starts[key], commits[key] = t0, time.time()
        else:
            stacks = {
                "burst": [i % a.stacks for i in range(a.runs)],
                "backlog": [i % a.stacks for i in range(a.backlog_runs)],
                "same-stack": [a.stacks] * a.same_stack_runs,
            }[case]
            t0 = time.time()
            keys = await q.enqueue_many(stacks)
            t1 = time.time()
            for k in keys:
                starts[k], commits[k] = t0, t1
        timeout = a.case_timeout * (3 if case == "backlog" else 1)
        got, empties = self._collect(side, set(starts), timeout=timeout)
        self._settle()
        last_commit = max(commits.values())
        # One run per transaction: from the start of its enqueue call. A batch: from its commit,
        # since inserting 1,000 rows at once is not what is being compared.
        origin = starts if case == "paced" else commits
        lat = sorted((got[k][0] - origin[k]) * 1000 for k in got)
        c2c = sorted((got[k][0] - commits[k]) * 1000 for k in got)
        enq = sorted((commits[k] - starts[k]) * 1000 for k in starts) if case == "paced" else []
        span = (max(at for at, _ in got.values()) - last_commit) if got else float("nan")
        return CaseResult(
            side=side,
            case=case,
            round=rnd,
            n=len(got),
            latencies_ms=lat,
            commit_to_claim_ms=c2c,
            enqueue_ms=enq,
            span_s=span,
            empty_claims=len(empties),
            claim_ms=sorted([t for _, t in got.values()]),
            complete=len(got) == len(starts),
        )

    async def warm_up(self) -> None:
        for side in SIDES:
            q = self.queues[side]
            keys = [await q.enqueue(i) for i in range(2 * WORKERS)]
            got, _ = self._collect(side, set(keys), timeout=30)
            if len(got) != len(keys):
                raise RuntimeError(f"{side}: warm-up runs were not claimed ({len(got)}/{len(keys)})")
            self._settle(0.5)


def summarize(results: list[CaseResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in CASES:
        for side in SIDES:
            rs = [r for r in results if r.case == case and r.side == side]
            if not rs:
                continue
            lat = sorted(x for r in rs for x in r.latencies_ms)
            c2c = sorted(x for r in rs for x in r.commit_to_claim_ms)
            enq = sorted(x for r in rs for x in r.enqueue_ms)
            claim = sorted(x for r in rs for x in r.claim_ms)
            n = sum(r.n for r in rs)
            out[f"{case}/{side}"] = {
                "case": case,
                "side": side,
                "rounds": len(rs),
                "n": n,
                "complete": all(r.complete for r in rs),
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": lat[-1] if lat else float("nan"),
                "commit_to_claim_p50_ms": pct(c2c, 50),
                "commit_to_claim_p99_ms": pct(c2c, 99),
                "enqueue_p50_ms": pct(enq, 50) if enq else None,
                "claim_call_p50_ms": pct(claim, 50),
                "claims_per_s": None if case == "paced" else statistics.median(r.claims_per_s for r in rs),
                "empty_claims_per_run": sum(r.empty_claims for r in rs) / n if n else float("nan"),
            }
    return out


def print_table(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    cols = ["case", "queue", "n", "p50 ms", "p99 ms", "max ms", "claims/s", "claim call ms", "empty/run"]
    rows = []
    ratios: dict[str, dict[str, float]] = {}
    for case in CASES:
        pair = [summary.get(f"{case}/{side}") for side in SIDES]
        for s in pair:
            if s is None:
                continue
            rows.append(
                [
                    case,
                    s["side"] + ("" if s["complete"] else " (INCOMPLETE)"),
                    str(s["n"]),
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                    f"{s['max_ms']:.2f}",
                    f"{s['claims_per_s']:.0f}" if case != "paced" else "-",  # paced: the enqueue rate
                    f"{s['claim_call_p50_ms']:.2f}",
                    f"{s['empty_claims_per_run']:.2f}",
                ]
            )
        if all(pair):
            c, p = pair
            ratio = {"p50": c["p50_ms"] / p["p50_ms"], "p99": c["p99_ms"] / p["p99_ms"]}
            if case != "paced":
                ratio["claims_per_s"] = c["claims_per_s"] / p["claims_per_s"]
            ratios[case] = ratio
            rows.append(
                [
                    case,
                    "ratio crucible/procr.",
                    "",
                    f"x{ratio['p50']:.2f}",
                    f"x{ratio['p99']:.2f}",
                    "",
                    f"x{ratio['claims_per_s']:.2f}" if case != "paced" else "",
                    "",
                    "",
                ]
            )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    say("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    say("  ".join("-" * w for w in widths))
    for r in rows:
        say("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    say()
    say(
        "Latency, wall clock, until the claim committed: from the start of the enqueue call (paced, one "
        "run per transaction) or from the commit of the batch (burst, same-stack, backlog). Ratios "
        "crucible/procrastinate: >1 means Crucible is slower (latency) or faster (claims/s)."
    )
    if "paced/crucible" in summary and "paced/procrastinate" in summary:
        c, p = summary["paced/crucible"], summary["paced/procrastinate"]
        say(
            f"paced: enqueue call p50 crucible {c['enqueue_p50_ms']:.2f} ms, procrastinate "
            f"{p['enqueue_p50_ms']:.2f} ms; commit → claim p50 {c['commit_to_claim_p50_ms']:.2f} ms vs "
            f"{p['commit_to_claim_p50_ms']:.2f} ms."
        )
    return ratios


# ---------------------------------------------------------------------------- main


async def bench_main(args: argparse.Namespace, user: str, tmp: Path) -> dict[str, Any]:
    t_start = time.monotonic()
    with databases(user, "crucible", "procr") as (names, version):
        dbs = ", ".join(names.values())
        say(f"PostgreSQL {version} at {PG_HOST}:{PG_PORT} (role {user}); databases {dbs}")
        crucible = CrucibleQueue(
            f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{names['crucible']}", tmp, args.stacks
        )
        procr = ProcrastinateQueue(f"host={PG_HOST} port={PG_PORT} user={user} dbname={names['procr']}")
        await procr.open()
        if args.history:
            t0 = time.monotonic()
            crucible.seed_history(args.history, args.stacks)
            await procr.seed_history(args.history, args.stacks)
            say(
                f"history: {args.history} finished runs / succeeded jobs each ({time.monotonic() - t0:.1f} s)"
            )
        fleet = Fleet(tmp)
        try:
            fleet.spawn("crucible", crucible.url, WORKERS)
            fleet.spawn("procrastinate", procr.conninfo, WORKERS)
            fleet.wait_ready(60)
            bench = Bench(fleet, {"crucible": crucible, "procrastinate": procr}, args)
            await bench.warm_up()
            say(f"{2 * WORKERS} workers up and warm after {time.monotonic() - t_start:.1f} s")
            results: list[CaseResult] = []
            budget_cut = False
            plan_rounds = [
                (rnd, case) for rnd in range(args.rounds) for case in ROUND_CASES if case in args.cases
            ]
            if args.backlog_runs and "backlog" in args.cases:
                plan_rounds.append((args.rounds - 1, "backlog"))
            for rnd, case in plan_rounds:
                order = SIDES if rnd % 2 == 0 else SIDES[::-1]
                for side in order:
                    # Keep room for the backlog (~40 s at worst) and the clean-up.
                    backlog_left = case != "backlog" and args.backlog_runs and "backlog" in args.cases
                    reserve = 20 + (45 if backlog_left else 0)
                    if time.monotonic() - t_start > args.max_seconds - reserve:
                        budget_cut = True
                        continue
                    r = await bench.run_case(side, case, rnd)
                    results.append(r)
                    rate = "        -" if case == "paced" else f"{r.claims_per_s:9.0f}"
                    say(
                        f"  round {rnd + 1} {case:<10} {side:<13} n={r.n:<5} p50 "
                        f"{pct(r.latencies_ms, 50):8.2f} ms  p99 {pct(r.latencies_ms, 99):8.2f} ms  "
                        f"{rate} claims/s" + ("" if r.complete else "  INCOMPLETE")
                    )
            plan = crucible.claim_plan(max(args.backlog_runs, args.runs), args.stacks)
        finally:
            fleet.stop()
            await crucible.close()
            await procr.close()
        worker_stats = {w.name: w.stats for w in fleet.workers}
    summary = summarize(results)
    say()
    say(
        f"{WORKERS} workers per queue; {args.runs} runs over {args.stacks} stacks (paced every "
        f"{args.interval_ms} ms, burst in one transaction), same-stack {args.same_stack_runs} runs, "
        f"backlog {args.backlog_runs} runs; history {args.history} finished runs; "
        f"{len({r.round for r in results})} rounds" + (" (cut short by --max-seconds)" if budget_cut else "")
    )
    say()
    ratios = print_table(summary, args)
    say()
    say(
        f"Crucible: one claim() with {plan['depth']} runs queued (4 stacks held) took "
        f"{plan['claim_ms']:.1f} ms; EXPLAIN (ANALYZE, BUFFERS) of what it runs:"
    )
    for line in plan["plan"]:
        say("  " + line)
    return {
        "benchmark": "queue",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "postgres": version,
        "params": {k: v for k, v in vars(args).items() if k not in ("worker", "target", "name")},
        "budget_cut": budget_cut,
        "summary": summary,
        "ratios_crucible_over_procrastinate": ratios,
        "worker_stats": worker_stats,
        "claim_plan": plan,
        "rounds": [
            {
                "side": r.side,
                "case": r.case,
                "round": r.round,
                "n": r.n,
                "complete": r.complete,
                "p50_ms": pct(r.latencies_ms, 50),
                "p99_ms": pct(r.latencies_ms, 99),
                "claims_per_s": r.claims_per_s,
                "empty_claims": r.empty_claims,
            }
            for r in results
        ],
        "seconds": round(time.monotonic() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all cases per queue (default 3)")
    ap.add_argument("--runs", type=int, default=200, help="runs per paced/burst case (default 200)")
    ap.add_argument("--stacks", type=int, default=50, help="stacks (procrastinate locks) they spread over")
    ap.add_argument("--same-stack-runs", type=int, default=100, help="runs in the same-stack case")
    ap.add_argument("--backlog-runs", type=int, default=1000, help="runs in the backlog case (0: skip it)")
    ap.add_argument("--history", type=int, default=20000, help="finished runs seeded first (default 20000)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="paced enqueue interval (default 20)")
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds to wait for one case's claims")
    ap.add_argument("--max-seconds", type=float, default=170.0, help="stop starting new cases after this")
    ap.add_argument(
        "--cases",
        type=lambda v: [c for c in v.split(",") if c],
        default=list(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (default: all)",
    )
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1 round, 50 runs, small backlog/history")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if unknown := set(args.cases) - set(CASES):
        ap.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    if args.worker:
        return worker_main(args.worker, args.target, args.name)
    if args.quick:
        args.rounds, args.runs, args.same_stack_runs, args.backlog_runs = 1, 50, 30, 200
        args.history = min(args.history, 2000)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    user = pg_admin_user()
    if user is None:
        say(f"SKIPPED: no PostgreSQL role with CREATEDB answers on {PG_HOST}:{PG_PORT} (trust auth).")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="crucible-bench-queue-"))
    try:
        report = asyncio.run(bench_main(args, user, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "queue.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    say(f"\nwrote {out.relative_to(ROOT)} ({report['seconds']} s)")
    incomplete = [k for k, s in report["summary"].items() if not s["complete"]]
    if incomplete:
        say(f"INCOMPLETE cases (not every run was claimed within --case-timeout): {', '.join(incomplete)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
