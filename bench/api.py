#!/usr/bin/env python3
"""API list benchmark: stack list (5,000 stacks) and audit page (100,000 events).

Serves the real API (backend.api.create_api) with uvicorn on 127.0.0.1 in a background thread,
next to a bare FastAPI baseline that returns the same page from memory, and measures both with
one keep-alive httpx client, interleaved round-robin. The figure is the ratio real/baseline of
p50 and p95 measured in the same run; absolute times on a noisy 2-core machine mean little.

It also captures the SQL each list call runs, prints the query plans (EXPLAIN QUERY PLAN on
SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL) and flags full scans, sorts without an index,
deep OFFSETs and counts that visit every matching row.

    python bench/api.py [--db sqlite|postgres|both] [--requests N] [--quick]

Results are printed and written to bench/results/api-<db>.json (git-ignored).
Nothing leaves the loopback interface; the temp data dir and the PostgreSQL database created
for the run are removed at the end, also on error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import json
import logging
import math
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
# This directory holds bench/queue.py: off the path, or it shadows the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from sqlalchemy import event, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from backend.api import create_api  # noqa: E402
from backend.audit.models import AuditEvent  # noqa: E402
from backend.audit.service import COUNT_CAP, GENESIS, compute_hash, verify_chain  # noqa: E402
from backend.auth.models import Role  # noqa: E402
from backend.config import load_settings  # noqa: E402
from backend.context import AppContext, build_context  # noqa: E402
from backend.db import migrate  # noqa: E402
from backend.logging_setup import JsonFormatter  # noqa: E402
from backend.stacks.models import Stack, StackLabel, Tool  # noqa: E402
from backend.timeutil import new_id  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PG_HOST, PG_PORT = "127.0.0.1", 5432
PAGE = 50
SEED = 20261122

TEAMS = ["net", "payments", "identity", "data", "platform", "search", "billing", "edge"]
ENVS = ["prod", "staging", "dev"]
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1", "eu-central-1"]
COMPONENTS = ["vpc", "dns", "k8s", "db", "cache", "queue", "cdn", "iam", "vault", "monitoring"]
SEARCH_Q = "payments"
LABEL_FILTER = "team/net"
CATEGORY_FILTER = "stack"
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "crucible-cli/0.1.0",
]

# ---------------------------------------------------------------------------- helpers


def say(msg: str = "") -> None:
    print(msg, flush=True)


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


@contextlib.contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = round(time.perf_counter() - t0, 3)


def configure_app_logging() -> None:
    """Mirror production (`crucible serve`): crucible.* at INFO as JSON, but into /dev/null,
    so the per-request access-log line costs what it costs in production without flooding us."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives for the process
    handler.setFormatter(JsonFormatter())
    for name in ("crucible", "backend"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = False


# ---------------------------------------------------------------------------- databases


@dataclass
class DbTarget:
    kind: str  # sqlite | postgres
    url: str
    data_dir: Path
    info: dict[str, Any] = field(default_factory=dict)


def pg_admin_user() -> str | None:
    """The first role that can log in (trust auth) and create databases, or None."""
    try:
        import psycopg
    except ImportError:
        return None
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
def sqlite_target() -> Iterator[DbTarget]:
    tmp = Path(tempfile.mkdtemp(prefix="crucible-bench-"))
    try:
        yield DbTarget(
            "sqlite",
            f"sqlite:///{tmp / 'crucible.db'}",
            tmp,
            {"sqlite_version": __import__("sqlite3").sqlite_version},
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres_target(user: str) -> Iterator[DbTarget]:
    import psycopg

    name = f"crucible_bench_{os.getpid()}_{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="crucible-bench-"))

    def admin() -> psycopg.Connection:
        return psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
    try:
        yield DbTarget(
            "postgres",
            f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}",
            tmp,
            {"server_version": version, "database": name, "role": user},
        )
    finally:
        try:
            with admin() as conn:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.errors.SyntaxError:  # PostgreSQL < 13
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (name,),
                    )
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except Exception as exc:  # pragma: no cover - best effort, but say so
            say(f"WARNING: could not drop database {name}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- seeding


@dataclass
class Seeded:
    org_id: str
    token: str
    n_stacks: int
    n_events: int
    expect_search: int
    expect_label: int
    expect_category: int
    first_event_id: int
    timings: dict[str, float] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)


def _stack_rows(org_id: str, n: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    now = datetime.now(UTC)
    order = list(range(n))
    rng.shuffle(order)  # insertion order must not equal name order
    tools = [t.value for t in Tool]
    stacks, labels = [], []
    for i in order:
        team, env = TEAMS[i % len(TEAMS)], ENVS[(i // len(TEAMS)) % len(ENVS)]
        region, comp = REGIONS[(i // 24) % len(REGIONS)], COMPONENTS[(i // 7) % len(COMPONENTS)]
        sid = new_id("stk")
        created = now - timedelta(minutes=rng.randrange(500_000))
        stacks.append(
            {
                "id": sid,
                "org_id": org_id,
                "name": f"{team}-{comp}-{env}-{region}-{i:04d}",
                "description": f"{comp} for the {team} team in {env} ({region})",
                "repository_url": f"https://git.example.com/{team}/infra-{comp}.git",
                "branch": "main" if i % 5 else "release",
                "project_root": f"envs/{env}/{region}",
                "tool": tools[i % len(tools)],
                "tool_version": None if i % 3 else "1.8.2",
                "runner": "local" if i % 4 else "docker",
                "runner_image": None if i % 4 else "ghcr.io/acme/runner:1.2",
                "auto_apply": env == "dev",
                "created_by": "admin@crucible.local",
                "created_at": created,
                "updated_at": created,
            }
        )
        names = [f"env:{env}", f"team/{team}", f"region={region}"]
        if i % 7 == 0:
            names.append("critical")
        labels.extend({"stack_id": sid, "label": lb} for lb in names)
    return stacks, labels


def _event_fields(
    i: int,
    org_id: str,
    stacks: list[dict],
    users: list[tuple[str, str]],
    rng: random.Random,
    t0: datetime,
) -> dict[str, Any]:
    at = t0 + timedelta(seconds=20 * i, microseconds=rng.randrange(1_000_000))
    r = rng.random()
    email, uid = users[rng.randrange(len(users))]
    actor, actor_id, actor_type = email, uid, "user"
    ip: str | None = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    ua: str | None = USER_AGENTS[rng.randrange(2)]
    before = after = None
    if r < 0.50:
        st = stacks[rng.randrange(len(stacks))]
        rtype, rid = "stack", st["id"]
        if rng.random() < 0.3:
            actor, actor_id, actor_type, ua = "token:ci", "tok-00000000000000ci", "token", USER_AGENTS[2]
        k = rng.random()
        if k < 0.2:
            action = "stack.create"
            after = {
                "name": st["name"],
                "tool": st["tool"],
                "branch": st["branch"],
                "repository_url": st["repository_url"],
                "labels": ["env:prod", "team/net"],
            }
        elif k < 0.9:
            action = "stack.update"
            before, after = {"branch": "main"}, {"branch": f"feature-{rng.randrange(1000)}"}
        else:
            action = "stack.delete"
            before = {"name": st["name"], "tool": st["tool"], "branch": st["branch"]}
    elif r < 0.85:
        rtype, rid = "user", uid
        k = rng.random()
        action = "auth.login" if k < 0.8 else ("auth.logout" if k < 0.95 else "auth.login_failed")
    elif r < 0.90:
        rtype, rid = "token", new_id("tok")
        action = "token.create" if rng.random() < 0.7 else "token.revoke"
        after = {"name": f"ci-{rng.randrange(100)}", "role": "member"}
    else:
        rtype, rid = "user", new_id("usr")
        action = "user.create"
        after = {"email": f"new{i}@example.com", "role": "viewer"}
        if rng.random() < 0.2:
            actor, actor_id, actor_type, ip, ua = "system", None, "system", None, None
    return {
        "org_id": org_id,
        "at": at,
        "actor": actor,
        "actor_id": actor_id,
        "actor_type": actor_type,
        "action": action,
        "category": action.split(".", 1)[0],
        "resource_type": rtype,
        "resource_id": rid,
        "ip": ip,
        "user_agent": ua,
        "before": before,
        "after": after,
    }


def seed(ctx: AppContext, n_stacks: int, n_events: int) -> Seeded:
    rng = random.Random(SEED)
    timings: dict[str, float] = {}
    with ctx.session() as s:
        org_id = ctx.auth.ensure_default_org(s).id

    with timed(timings, "stacks_s"):
        stacks, labels = _stack_rows(org_id, n_stacks, rng)
        with ctx.engine.begin() as conn:
            conn.execute(insert(Stack.__table__), stacks)  # type: ignore[attr-defined]
            conn.execute(insert(StackLabel.__table__), labels)  # type: ignore[attr-defined]
    q = SEARCH_Q.lower()
    expect_search = sum(
        1
        for st in stacks
        if q in st["name"].lower() or q in st["description"].lower() or q in st["repository_url"].lower()
    )
    expect_label = sum(1 for lb in labels if lb["label"] == LABEL_FILTER)

    # n_events - 1 seeded events; the admin token created afterwards through the real service
    # appends the last one (token.create), so the chain continues exactly as in production.
    users = [(f"user{k:02d}@example.com", new_id("usr")) for k in range(25)]
    t0 = datetime.now(UTC) - timedelta(seconds=20 * n_events + 3600)
    with ctx.session() as s:
        head = s.execute(
            select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)  # type: ignore[union-attr]
        ).first()
    next_id, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    first_event_id = next_id
    to_seed = n_events - 1 - (next_id - 1)
    category_counts: dict[str, int] = {}
    hash_s = 0.0
    batch = 5000
    checked_model = False
    with timed(timings, "events_s"), ctx.engine.begin() as conn:
        for start in range(0, to_seed, batch):
            rows = []
            h0 = time.perf_counter()
            for i in range(start, min(start + batch, to_seed)):
                ev = _event_fields(i, org_id, stacks, users, rng, t0)
                ev["prev_hash"] = prev
                ev["hash"] = ""
                # compute_hash only reads attributes; a namespace is ~8x cheaper than a model.
                ev["hash"] = prev = compute_hash(SimpleNamespace(**ev))  # type: ignore[arg-type]
                if not checked_model:
                    model = AuditEvent(**{**ev, "hash": ""})
                    assert compute_hash(model) == ev["hash"], "namespace hash != model hash"
                    checked_model = True
                ev["id"] = next_id
                next_id += 1
                category_counts[ev["category"]] = category_counts.get(ev["category"], 0) + 1
                rows.append(ev)
            hash_s += time.perf_counter() - h0
            conn.execute(insert(AuditEvent.__table__), rows)  # type: ignore[attr-defined]
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('audit_event', 'id'), "
                    "(SELECT max(id) FROM audit_event))"
                )
            )
    timings["events_hash_s"] = round(hash_s, 3)

    with ctx.session() as s:
        _tok, plaintext = ctx.auth.create_token_as_system(s, "bench", Role.admin)
    if ctx.engine.dialect.name == "postgresql":
        # What autovacuum does shortly after a bulk load; without it PG plans on guesses and
        # index-only scans hit the heap. (SQLite: the app never runs ANALYZE, so neither do we.)
        with (
            timed(timings, "vacuum_analyze_s"),
            ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        ):
            conn.execute(text("VACUUM ANALYZE"))

    with ctx.session() as s:
        total = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
        n_stack_rows = s.execute(select(func.count()).select_from(Stack)).scalar_one()
    assert total == n_events, f"seeded {total} audit events, wanted {n_events}"
    assert n_stack_rows == n_stacks
    return Seeded(
        org_id=org_id,
        token=plaintext,
        n_stacks=n_stacks,
        n_events=n_events,
        expect_search=expect_search,
        expect_label=expect_label,
        expect_category=category_counts.get(CATEGORY_FILTER, 0),
        first_event_id=first_event_id,
        timings=timings,
    )


def check_chain(ctx: AppContext, seeded: Seeded) -> None:
    t = time.perf_counter()
    res = verify_chain(ctx.engine)
    dt = time.perf_counter() - t
    seeded.verify = {
        "ok": res.ok,
        "checked": res.checked,
        "seconds": round(dt, 3),
        "events_per_s": round(res.checked / dt) if dt else None,
        "reason": res.reason,
    }
    if not res.ok or res.checked != seeded.n_events:
        raise SystemExit(f"audit chain does not verify after seeding: {res}")


# ---------------------------------------------------------------------------- server


class Dispatch:
    """One ASGI app for uvicorn: /bare/* goes to the baseline, everything else (incl. lifespan)
    to the real API, so both share the server, the event loop and the keep-alive connection."""

    def __init__(self, real: Any, bare: Any):
        self.real, self.bare = real, bare

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/bare/"):
            await self.bare(scope, receive, send)
        else:
            await self.real(scope, receive, send)


def make_baseline(pages: dict[str, dict]) -> FastAPI:
    """Bare FastAPI: sync endpoints (thread pool, like the real ones), no auth, no middleware,
    no DB, no response_model; returns the captured first page of each list from memory."""
    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @bare.get("/bare/stacks", response_model=None)
    def bare_stacks():
        return pages["stacks"]

    @bare.get("/bare/audit", response_model=None)
    def bare_audit():
        return pages["audit"]

    return bare


class BackgroundServer:
    """uvicorn on 127.0.0.1 with an OS-chosen free port, as `crucible serve` runs it
    (uvicorn binds the socket itself, so accepted connections get TCP_NODELAY like production)."""

    def __init__(self, app: Any):
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="on",
            timeout_keep_alive=120,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)
        self.port = 0

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


# ---------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    group: str  # stacks | audit
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    note: str = ""
    check: Callable[[dict], str | None] | None = None

    @property
    def url(self) -> str:
        return self.path + ("?" + urlencode(self.params) if self.params else "")


def _expect(
    count: int | None = None, length: int = PAGE, pred: Callable[[dict], bool] | None = None, what: str = ""
) -> Callable[[dict], str | None]:
    def check(doc: dict) -> str | None:
        if count is not None:
            # Audit counts stop at COUNT_CAP and say so with count_is_exact=false.
            want = min(count, COUNT_CAP) if "count_is_exact" in doc else count
            if doc.get("count") != want or doc.get("count_is_exact", True) != (count <= COUNT_CAP):
                return f"count {doc.get('count')} != expected {want}"
        if len(doc.get("data", [])) != length:
            return f"{len(doc.get('data', []))} items != expected {length}"
        if pred and not pred(doc):
            return f"unexpected page content ({what})"
        return None

    return check


def build_cases(sd: Seeded) -> list[Case]:
    before = sd.first_event_id + PAGE  # the oldest page of the log
    deep_offset_stacks = sd.n_stacks - PAGE
    deep_offset_audit = sd.n_events - PAGE
    return [
        Case("baseline stacks (memory)", "stacks", "/bare/stacks", baseline=True),
        Case("stacks first page", "stacks", "/api/v1/stacks", {"limit": PAGE}, check=_expect(sd.n_stacks)),
        Case(
            f"stacks offset={deep_offset_stacks}",
            "stacks",
            "/api/v1/stacks",
            {"limit": PAGE, "offset": deep_offset_stacks},
            check=_expect(sd.n_stacks),
        ),
        Case(
            f"stacks q={SEARCH_Q}",
            "stacks",
            "/api/v1/stacks",
            {"q": SEARCH_Q, "limit": PAGE},
            check=_expect(sd.expect_search),
        ),
        Case(
            f"stacks label={LABEL_FILTER}",
            "stacks",
            "/api/v1/stacks",
            {"label": LABEL_FILTER, "limit": PAGE},
            check=_expect(
                sd.expect_label,
                pred=lambda d: all(LABEL_FILTER in s["labels"] for s in d["data"]),
                what="label missing",
            ),
        ),
        Case("baseline audit (memory)", "audit", "/bare/audit", baseline=True),
        Case(
            "audit first page",
            "audit",
            "/api/v1/audit",
            {"limit": PAGE},
            check=_expect(sd.n_events, pred=lambda d: d["next_before_id"] is not None),
        ),
        Case(
            f"audit before_id={before} (keyset)",
            "audit",
            "/api/v1/audit",
            {"limit": PAGE, "before_id": before},
            check=_expect(sd.n_events, pred=lambda d: all(e["id"] < before for e in d["data"]), what="ids"),
        ),
        Case(
            f"audit category={CATEGORY_FILTER}",
            "audit",
            "/api/v1/audit",
            {"category": CATEGORY_FILTER, "limit": PAGE},
            check=_expect(
                sd.expect_category,
                pred=lambda d: all(e["category"] == CATEGORY_FILTER for e in d["data"]),
                what="category",
            ),
        ),
        Case(
            f"audit offset={deep_offset_audit} (ref)",
            "audit",
            "/api/v1/audit",
            {"limit": PAGE, "offset": deep_offset_audit},
            check=_expect(sd.n_events),
            note="reference only: the same deep page by OFFSET instead of the keyset cursor",
        ),
    ]


# ---------------------------------------------------------------------------- SQL capture & plans


SKIP_SQL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SELECT 1\b|;)", re.I)


@dataclass
class Captured:
    case: str
    kind: str
    sql: str
    params: Any
    plan: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    direct_ms: float | None = None


def classify(sql: str) -> str | None:
    low = " ".join(sql.lower().split())
    if "audit_event" not in low and not re.search(r"\bstack(_label)?\b", low):
        return None  # auth lookups (api_token, ...)
    if "count(" in low:
        return "count"
    if "from stack_label" in low and "order by stack_label.label" in low:
        return "labels"
    return "page"


@contextlib.contextmanager
def capture_sql(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def on_exec(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany:
            with lock:
                seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", on_exec)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_exec)


def _raw_exec(engine: Engine, sql: str, params: Any) -> list[tuple]:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql, params)
        rows = cur.fetchall()
        cur.close()
        raw.rollback()
        return rows
    finally:
        raw.close()


BIG = 10_000  # rows: above this a per-request O(rows) step is a problem, below it information


def explain(
    engine: Engine, q: Captured, case: Case, count_value: int | None, org_rows: dict[str, int], repeats: int
) -> None:
    """Fill q.plan and q.flags; flags are "PROBLEM: ..." or "info: ..."."""
    tables = ("stack", "audit_event", "stack_label")
    flags: list[str] = []
    low = " ".join(q.sql.lower().split())
    bounded = q.kind == "labels"  # labels of one page: at most page x labels rows, always small
    residual = [w for w, pat in (("substring search", " like "), ("label filter", "exists (")) if pat in low]
    if engine.dialect.name == "sqlite":
        rows = _raw_exec(engine, "EXPLAIN QUERY PLAN " + q.sql, q.params)
        q.plan = [r[3] for r in rows]
        for line in q.plan:
            m = re.match(r"SCAN (\w+)(.*)", line)
            if m and m.group(1) in tables:
                what = "FULL INDEX SCAN" if "INDEX" in m.group(2) else "FULL TABLE SCAN"
                flags.append(f"PROBLEM: {what} of {m.group(1)} ({line})")
            m = re.match(r"SEARCH (stack|audit_event) USING (?:COVERING )?INDEX \w+ \(org_id=\?\)$", line)
            if m and residual:
                n = org_rows[m.group(1)]
                upto = "up to " if q.kind == "page" else ""
                flags.append(
                    f"PROBLEM: the index narrows only by org_id, so the {' and '.join(residual)} "
                    f"reads and tests {upto}all {n} {m.group(1)} rows of the org ({line})"
                )
            if "CORRELATED SCALAR SUBQUERY" in line and "label filter" in residual:
                flags.append(
                    "PROBLEM: label filter runs as a correlated EXISTS probe per stack; "
                    "ix_stack_label_label_stack (label, stack_id) is not used"
                )
            if "TEMP B-TREE" in line:
                level = "info" if bounded else "PROBLEM"
                flags.append(
                    f"{level}: sort without an index ({line})"
                    + (" on at most one page of labels" if bounded else "")
                )
    else:
        rows = _raw_exec(engine, "EXPLAIN (ANALYZE, BUFFERS) " + q.sql, q.params)
        q.plan = [r[0] for r in rows]
        # Scan nodes on our tables: [table, rows out, rows removed by filter, node line, filter].
        nodes: list[list[Any]] = []
        node: list[Any] | None = None
        loops = 1
        for line in q.plan:
            m = re.search(
                r"(Index Only Scan|Index Scan|Bitmap Heap Scan|Seq Scan)(?: Backward)?"
                r"(?: using \w+)? on (\w+).*actual time=\S+ rows=(\d+) loops=(\d+)",
                line,
            )
            if m:
                loops = int(m.group(4))
                node = [m.group(2), int(m.group(3)) * loops, 0, line.strip(), "", m.group(1)]
                nodes.append(node)
                continue
            if node is not None and (
                m := re.search(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", line)
            ):
                node[2] += int(m.group(1)) * loops
            elif node is not None and (m := re.match(r"\s*Filter: (.*)", line)):
                node[4] = m.group(1)
            elif re.match(r"\s*->", line):
                node = None
            m = re.match(r"\s*(?:->\s+)?(Incremental Sort|Sort)\s+\(.*actual time=\S+ rows=(\d+)", line)
            if m:
                i = q.plan.index(line)
                key = next((ln.strip() for ln in q.plan[i + 1 : i + 4] if "Sort Key" in ln), "")
                if bounded:
                    flags.append(f"info: sort without an index of at most one page of labels ({key})")
                elif m.group(1) == "Incremental Sort":
                    flags.append(
                        f"info: incremental sort ({key}, presorted by the index): the index gives "
                        "name order, the id tie-break is sorted per group of equal names"
                    )
                else:
                    flags.append(f"PROBLEM: sort without an index of {m.group(2)}+ rows ({key})")
        for table, out, removed, line, flt, how in nodes:
            if table not in tables or bounded:
                continue
            visited = out + removed
            org_only = re.fullmatch(r"\(\(org_id\)::text = '[^']*'::text\)", flt) is not None
            if how == "Seq Scan":
                if org_only:
                    flags.append(
                        f"info: Seq Scan of {table} ({visited} rows) is the planner's choice: "
                        "org_id matches every row (one org), so an index would not narrow it"
                    )
                else:
                    flags.append(
                        f"PROBLEM: FULL TABLE SCAN of {table}: {visited} rows read, "
                        f"{removed} removed by a filter no index serves ({line})"
                    )
            elif removed and removed > 10 * PAGE:
                flags.append(
                    f"PROBLEM: {table} index scan reads {visited} rows, {removed} removed by "
                    f"a filter the index cannot serve ({line})"
                )
            elif visited > 10 * PAGE and q.kind != "count":
                level = "PROBLEM" if visited >= BIG else "info"
                flags.append(f"{level}: reads {visited} rows of {table} ({line})")
    if q.kind == "count" and count_value is not None and count_value > 10 * PAGE:
        level = "PROBLEM" if count_value >= BIG else "info"
        flags.append(f"{level}: count(*) visits all {count_value} matching rows on every page request")
    off = case.params.get("offset", 0)
    if q.kind == "page" and off >= 10 * PAGE:
        level = "PROBLEM" if off >= BIG else "info"
        flags.append(f"{level}: OFFSET {off} reads and discards {off} rows before the page")
    q.flags = list(dict.fromkeys(flags))
    q.direct_ms = round(direct_ms(engine, q.sql, q.params, repeats), 3)


def direct_ms(engine: Engine, sql: str, params: Any, repeats: int) -> float:
    """Median of execute + fetchall on one driver connection (no pool checkout, ping or commit)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql, params)  # warm the statement / plan caches
        cur.fetchall()
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            cur.execute(sql, params)
            cur.fetchall()
            samples.append(time.perf_counter() - t)
        cur.close()
        raw.rollback()
        return statistics.median(samples) * 1000
    finally:
        raw.close()


# ---------------------------------------------------------------------------- measurement


@dataclass
class CaseResult:
    case: Case
    samples: list[float]
    statements_per_request: int = 0
    transactions_per_request: int = 0  # write transactions seen (SQLite: BEGIN IMMEDIATE)

    def stats(self) -> dict[str, float]:
        s = sorted(self.samples)
        return {
            "n": len(s),
            "p50_ms": pct(s, 50) * 1000,
            "p95_ms": pct(s, 95) * 1000,
            "mean_ms": statistics.fmean(s) * 1000 if s else float("nan"),
            "min_ms": s[0] * 1000 if s else float("nan"),
            "max_ms": s[-1] * 1000 if s else float("nan"),
        }


def run_db(target: DbTarget, args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    settings = load_settings(
        data_dir=target.data_dir,
        database_url=target.url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        secret_key=secrets.token_urlsafe(48),
    )
    setup: dict[str, float] = {}
    with timed(setup, "migrate_s"):
        migrate(settings)
    ctx = build_context(settings)
    try:
        return _run_with_ctx(ctx, target, args, setup, t_start)
    finally:
        ctx.engine.dispose()


def _run_with_ctx(
    ctx: AppContext, target: DbTarget, args: argparse.Namespace, setup: dict[str, float], t_start: float
) -> dict[str, Any]:
    say(f"\n=== {target.kind}: seeding {args.stacks:,} stacks and {args.events:,} audit events ...")
    sd = seed(ctx, args.stacks, args.events)
    sd.timings.update(setup)
    check_chain(ctx, sd)
    t = sd.timings
    extra = f", VACUUM ANALYZE {t['vacuum_analyze_s']:.1f}s" if "vacuum_analyze_s" in t else ""
    say(
        f"    stacks {t['stacks_s']:.1f}s, audit events {t['events_s']:.1f}s "
        f"(hash chain {t['events_hash_s']:.1f}s){extra}; "
        f"verify_chain: {sd.verify['checked']:,} events OK in {sd.verify['seconds']:.1f}s "
        f"= {sd.verify['events_per_s']:,} events/s"
    )

    cases = build_cases(sd)
    pages: dict[str, dict] = {}
    bare_holder: dict[str, dict] = {}
    app = Dispatch(create_api(ctx), make_baseline(bare_holder))
    results = {c.name: CaseResult(c, []) for c in cases}
    per_case_sql: dict[str, list[tuple[str, Any]]] = {}
    counts: dict[str, int | None] = {}
    truncated = False
    rounds_done = 0
    with (
        BackgroundServer(app) as srv,
        httpx.Client(
            base_url=f"http://127.0.0.1:{srv.port}",
            headers={"Authorization": f"Bearer {sd.token}"},
            timeout=30.0,
            trust_env=False,
        ) as client,
    ):
        # 1. one call per real case: check the answer, capture its SQL, keep first pages.
        client.get(cases[1].url).raise_for_status()  # first call verifies the token (argon2)
        for c in cases:
            if c.baseline:
                continue
            with capture_sql(ctx.engine) as seen:
                r = client.get(c.url)
            if r.status_code != 200:
                raise SystemExit(f"{c.name}: HTTP {r.status_code}: {r.text[:300]}")
            doc = r.json()
            problem = c.check(doc) if c.check else None
            if problem:
                raise SystemExit(f"{c.name}: {problem}")
            counts[c.name] = doc.get("count")
            sql = [(s, p) for s, p in seen if not SKIP_SQL.match(s)]
            per_case_sql[c.name] = sql
            results[c.name].statements_per_request = len(sql)
            results[c.name].transactions_per_request = sum(
                1 for s, _ in seen if s.strip().upper().startswith("BEGIN IMMEDIATE")
            )
            if c.name == "stacks first page":
                pages["stacks"] = doc
            if c.name == "audit first page":
                pages["audit"] = doc
        bare_holder.update(pages)
        for c in cases:
            if c.baseline:
                r = client.get(c.url)
                assert r.status_code == 200 and r.json() == pages[c.group], "baseline mismatch"

        # 2. warm-up, then interleaved rounds; the start rotates so no case always follows another.
        for _ in range(args.warmup):
            for c in cases:
                client.get(c.url).raise_for_status()
        gc.collect()
        # Per-database budget, also cut so that the whole run ends within --max-seconds: keep 10 s
        # for this database's plans and clean-up, 30 s to seed each database still to come, and
        # share the rest fairly with their measurements.
        now = time.monotonic()
        share = (args.run_deadline - now - 10 - 30 * args.pending) / (1 + args.pending)
        deadline = now + min(args.budget, share)
        min_rounds = min(args.requests, 20)
        for rnd in range(args.requests):
            if rnd >= min_rounds and time.monotonic() > deadline:
                truncated = True
                break
            k = rnd % len(cases)
            for c in cases[k:] + cases[:k]:
                t0 = time.perf_counter()
                r = client.get(c.url)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise SystemExit(f"{c.name}: HTTP {r.status_code} during measurement")
                results[c.name].samples.append(dt)
            rounds_done += 1

    # 3. plans and direct query timings, with the server stopped.
    captured: list[Captured] = []
    org_rows = {"stack": sd.n_stacks, "audit_event": sd.n_events}
    for c in cases:
        for sql, params in per_case_sql.get(c.name, []):
            kind = classify(sql)
            if kind is None:
                continue
            q = Captured(c.name, kind, sql, params)
            explain(ctx.engine, q, c, counts.get(c.name), org_rows, args.query_repeats)
            captured.append(q)

    report = make_report(target, args, sd, cases, results, captured, truncated, rounds_done)
    report["runtime_s"] = round(time.perf_counter() - t_start, 1)
    print_report(report)
    return report


# ---------------------------------------------------------------------------- reporting


def make_report(
    target: DbTarget,
    args: argparse.Namespace,
    sd: Seeded,
    cases: list[Case],
    results: dict[str, CaseResult],
    captured: list[Captured],
    truncated: bool,
    rounds: int,
) -> dict[str, Any]:
    base = {c.group: results[c.name].stats() for c in cases if c.baseline}
    rows = []
    for c in cases:
        st = results[c.name].stats()
        b = base[c.group]
        mine = [q for q in captured if q.case == c.name]
        rows.append(
            {
                "case": c.name,
                "group": c.group,
                "url": c.url,
                "baseline": c.baseline,
                "note": c.note,
                **{k: round(v, 3) if isinstance(v, float) else v for k, v in st.items()},
                "ratio_p50": round(st["p50_ms"] / b["p50_ms"], 2),
                "ratio_p95": round(st["p95_ms"] / b["p95_ms"], 2),
                "sql_statements_per_request": results[c.name].statements_per_request,
                "transactions_per_request": results[c.name].transactions_per_request,
                "list_sql_direct_ms": round(sum(q.direct_ms or 0 for q in mine), 3),
                "count_sql_direct_ms": round(sum(q.direct_ms or 0 for q in mine if q.kind == "count"), 3),
            }
        )
    return {
        "db": target.kind,
        "db_info": target.info,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "uvicorn": uvicorn.__version__,
        },
        "params": {
            "stacks": sd.n_stacks,
            "events": sd.n_events,
            "page": PAGE,
            "requests_per_case": args.requests,
            "rounds_done": rounds,
            "warmup_rounds": args.warmup,
            "budget_s": args.budget,
            "truncated_by_budget": truncated,
            "interleaved": "round-robin, rotating start",
        },
        "seed": sd.timings,
        "verify_chain": sd.verify,
        "cases": rows,
        "queries": [q.__dict__ | {"params": repr(q.params)} for q in captured],
        "problems": [
            {"case": q.case, "kind": q.kind, "flag": f, "direct_ms": q.direct_ms}
            for q in captured
            for f in q.flags
            if f.startswith("PROBLEM")
        ],
    }


def short_sql(sql: str, width: int = 200) -> str:
    sql = " ".join(sql.split())
    sql = re.sub(r"SELECT (?!count\()[^()]+? FROM", "SELECT ... FROM", sql)
    sql = re.sub(
        r"\((?:\?|%\(\w+\)s)(?:, (?:\?|%\(\w+\)s))+\)", lambda m: f"({m.group(0).count(',') + 1} params)", sql
    )
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def print_report(rep: dict[str, Any]) -> None:
    p = rep["params"]
    say(
        f"\n--- {rep['db']}: {p['stacks']:,} stacks, {p['events']:,} audit events, page {p['page']}; "
        f"{p['rounds_done']} interleaved requests/case after {p['warmup_rounds']} warm-up rounds"
        + (
            f"  [STOPPED EARLY: time budget, {p['rounds_done']} of {p['requests_per_case']} rounds]"
            if p["truncated_by_budget"]
            else ""
        )
    )
    say("    x = real / baseline (bare FastAPI, same page from memory, same server, same run);")
    say("    SQL = list statements per request (+ auth); SQL ms = their direct median, of which count(*)")
    w = max(len(r["case"]) for r in rep["cases"]) + 2
    say(
        f"    {'case':<{w}}{'p50 ms':>8}{'p95 ms':>8}{'x p50':>7}{'x p95':>7}{'SQL':>5}"
        f"{'SQL ms':>8}{'count':>7}"
    )
    for r in rep["cases"]:
        if r["baseline"] and r is not rep["cases"][0]:
            say("")
        tail = (
            (
                f"{r['sql_statements_per_request']:>5}{r['list_sql_direct_ms']:>8.2f}"
                f"{r['count_sql_direct_ms']:>7.2f}"
            )
            if not r["baseline"]
            else f"{'-':>5}"
        )
        say(
            f"    {r['case']:<{w}}{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}"
            f"{r['ratio_p50']:>7.2f}{r['ratio_p95']:>7.2f}{tail}"
        )
    txns = {r["transactions_per_request"] for r in rep["cases"] if not r["baseline"]}
    if rep["db"] == "sqlite" and txns - {0}:
        say(
            f"    note: each list request opens {'/'.join(map(str, sorted(txns)))} BEGIN IMMEDIATE "
            "transaction(s), i.e. takes the SQLite write lock to read"
        )

    how = "EXPLAIN QUERY PLAN" if rep["db"] == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
    say(f"\n    plans ({how}) of the SQL each list call ran; direct = median of the bare statement")
    last_case = None
    for q in rep["queries"]:
        if q["case"] != last_case:
            say(f"\n    [{q['case']}]")
            last_case = q["case"]
        say(f"      {q['kind']:<6} {q['direct_ms']:.2f} ms  {short_sql(q['sql'])}")
        for line in q["plan"]:
            if re.match(r"\s*(Planning|Execution) Time|\s*Planning:|\s*Buffers:", line):
                continue
            say(f"          | {line if len(line) <= 200 else line[:197] + '...'}")
        for f in q["flags"]:
            say(f"          {'!!' if f.startswith('PROBLEM') else '--'} {f}")
    if rep["problems"]:
        say(f"\n    {len(rep['problems'])} PROBLEM flag(s) on {rep['db']}:")
        for pr in rep["problems"]:
            say(f"      - [{pr['case']}] {pr['kind']} ({pr['direct_ms']:.2f} ms): {pr['flag'][9:]}")
    else:
        say("\n    no PROBLEM flags: indexed access, no unbounded sort, no big count or offset")


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--db",
        choices=["sqlite", "postgres", "both"],
        default=None,
        help="default: both if PostgreSQL answers on 127.0.0.1:5432, else sqlite",
    )
    ap.add_argument("--requests", type=int, default=None, help="measured requests per case (default 300)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: ~50 requests per case")
    ap.add_argument("--stacks", type=int, default=5000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="max seconds of measurement per database (default 90; --quick 20)",
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=170.0,
        help="wall-clock cap for the whole run: measurement stops early to stay within it (default 170)",
    )
    args = ap.parse_args(argv)
    if args.requests is None:
        args.requests = 50 if args.quick else 300
    if args.budget is None:
        args.budget = 20.0 if args.quick else 90.0
    args.warmup = max(5, min(10, args.requests // 10))
    args.run_deadline = time.monotonic() + args.max_seconds
    args.query_repeats = 5 if args.quick else 15
    if args.stacks < 2 * PAGE or args.events < 2 * PAGE:
        ap.error(f"need at least {2 * PAGE} stacks and events")

    configure_app_logging()
    pg_user = pg_admin_user() if args.db in (None, "postgres", "both") else None
    if args.db is None:
        args.db = "both" if pg_user else "sqlite"
        if not pg_user:
            say("PostgreSQL not reachable on 127.0.0.1:5432: running SQLite only")
    if args.db in ("postgres", "both") and not pg_user:
        say(
            "ERROR: PostgreSQL on 127.0.0.1:5432 is not reachable (tried roles postgres, "
            f"{getpass.getuser()} with trust auth)"
        )
        return 2
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = []
    for i, db in enumerate(dbs):
        args.pending = len(dbs) - i - 1
        target_cm = sqlite_target() if db == "sqlite" else postgres_target(pg_user)  # type: ignore[arg-type]
        with target_cm as target:
            rep = run_db(target, args)
        out = RESULTS_DIR / f"api-{db}.json"
        out.write_text(json.dumps(rep, indent=2, default=str) + "\n")
        say(f"\n    wrote {out.relative_to(ROOT)} ({rep['runtime_s']:.0f}s for {db})")
        summary.append(rep)
    say(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
