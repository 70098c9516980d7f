#!/usr/bin/env python3
"""Webhook benchmark: signed GitHub push deliveries per second, and latency to the run enqueued.

A server process runs the real API on a fresh PostgreSQL database (migrated by
``backend.db.migrate``, the worker disabled, so every run stays queued) under uvicorn on
127.0.0.1, plus a bare route in the same process and event loop: ``POST /bare/webhook`` reads
the body and answers 202, nothing else. The client (this process) pre-builds N realistic push
deliveries (about 8 KB each, a new ``X-GitHub-Delivery`` and ``after`` sha per delivery, signed
with the stack's secret before any timing starts) and sends them over C keep-alive connections,
one thread each, in interleaved rounds of real vs bare, so machine noise hits both.

- client side: deliveries/s per side, and the round trip (p50/p99) of each request;
- server side: receipt (the ASGI app is entered) → the commit of the transaction that inserted
  the run (a SQLAlchemy ``after_commit`` listener, matched to the delivery through
  ``webhook_delivery.run_id``), and receipt → the response's first byte, for both sides;
- where the real endpoint's time goes: SQL statements per delivery, by kind, with their time
  (including the wait for the audit chain's advisory lock) and the commit.

Every real delivery must answer 202 with outcome ``created``; afterwards the database must hold
exactly one queued tracked run, one run_vcs row and one delivery per real delivery.

    python bench/webhooks.py [--deliveries 2000] [--concurrency 8] [--rounds 5] [--quick]

Results are printed and written to bench/results/webhooks.json (git-ignored). The database and
the temp dir are removed and the server stopped at the end, also on error or Ctrl-C; the run
stops itself after --max-seconds (default 300). Without PostgreSQL on 127.0.0.1:5432 it prints
SKIPPED and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import hashlib
import hmac
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the route's annotation by name

ROOT = Path(__file__).resolve().parent.parent
# This directory holds bench/queue.py: off the path, or it shadows the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PG_HOST, PG_PORT = "127.0.0.1", 5432
SECRET_KEY = "bench-" + "k" * 40
REPO = "acme-corp/infrastructure"
BRANCH = "main"
TRIGGER_PATHS = ["envs/prod/**", "modules/**"]
GRACE_S = 30.0  # past --max-seconds, the most the second half of a cut round may take


def say(msg: str = "") -> None:
    print(msg, flush=True)


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------------------- the server side


def configure_app_logging() -> None:
    """Mirror production (`crucible serve`): crucible.* at INFO as JSON, but into /dev/null, so
    the access-log line costs what it costs in production without flooding the terminal."""
    import logging

    from backend.logging_setup import JsonFormatter

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives for the process
    handler.setFormatter(JsonFormatter())
    for name in ("crucible", "backend"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = False


_SQL_KIND = (
    (re.compile(r"^\s*SELECT\s+pg_advisory_xact_lock", re.I), "SELECT pg_advisory_xact_lock (audit chain)"),
    (re.compile(r"^\s*SELECT\s+pg_notify", re.I), "SELECT pg_notify"),
    (re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.I), "INSERT {}"),
    (re.compile(r"^\s*UPDATE\s+(\w+)", re.I), "UPDATE {}"),
    (re.compile(r"^\s*DELETE\s+FROM\s+(\w+)", re.I), "DELETE {}"),
    (re.compile(r"^\s*SELECT\b.*?\bFROM\s+(\w+)", re.I | re.S), "SELECT {}"),
)


@functools.lru_cache(maxsize=256)
def sql_kind(statement: str) -> str:
    for rx, label in _SQL_KIND:
        m = rx.match(statement)
        if m:
            return label.format(*m.groups())
    return statement.split(None, 1)[0].upper() if statement.strip() else "?"


class Probe:
    """What the server records for the client: when each request arrived and was answered,
    when each run's transaction committed, the SQL it took, and how long each transaction held
    the audit chain's advisory lock. Lives in the server process."""

    LOCK_KIND = "SELECT pg_advisory_xact_lock (audit chain)"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()  # the audit lock is taken and released in one thread
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.receipt: dict[str, float] = {}  # "<side>:<delivery id>" -> time.time()
            self.response: dict[str, float] = {}
            self.commit: dict[str, float] = {}  # run id -> time.time() after COMMIT returned
            self.sql: dict[str, list[float]] = {}  # kind -> [count, seconds]
            self.commits = [0, 0.0]  # session commits, seconds in them
            self.checkouts = 0  # pool checkouts (each one pings: pool_pre_ping)
            # per transaction that took the audit lock: [held s, SQL s while held, COMMIT s]
            self.holds: list[list[float]] = []

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "receipt": dict(self.receipt),
                "response": dict(self.response),
                "commit": dict(self.commit),
                "sql": {k: list(v) for k, v in self.sql.items()},
                "commits": list(self.commits),
                "checkouts": self.checkouts,
                "holds": list(self.holds),
            }

    def install(self, engine: Any) -> None:
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        from backend.runs.models import Run

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, _cursor, _statement, _params, _context, _many):
            conn.info["bench_t0"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, _cursor, statement, _params, _context, _many):
            now = time.perf_counter()
            took = now - conn.info.pop("bench_t0", now)
            kind = sql_kind(statement)
            if kind == self.LOCK_KIND:
                self.local.held, self.local.sql = now, 0.0
            elif getattr(self.local, "held", None) is not None:
                self.local.sql += took
            with self.lock:
                row = self.sql.setdefault(kind, [0, 0.0])
                row[0] += 1
                row[1] += took

        @event.listens_for(engine, "checkout")
        def _checkout(_dbapi, _record, _proxy):
            with self.lock:
                self.checkouts += 1

        @event.listens_for(Session, "after_flush")
        def _flushed(session, _ctx):
            runs = [o.id for o in session.new if isinstance(o, Run)]
            if runs:
                session.info.setdefault("bench_runs", []).extend(runs)

        @event.listens_for(Session, "before_commit")
        def _committing(session):
            session.info["bench_commit_t0"] = time.perf_counter()

        @event.listens_for(Session, "after_commit")
        def _committed(session):
            now, t1 = time.time(), time.perf_counter()
            t0 = session.info.pop("bench_commit_t0", t1)
            runs = session.info.pop("bench_runs", ())
            held, self.local.held = getattr(self.local, "held", None), None
            with self.lock:
                self.commits[0] += 1
                self.commits[1] += t1 - t0
                if held is not None:
                    self.holds.append([t1 - held, self.local.sql, t1 - t0])
                for run_id in runs:
                    self.commit[run_id] = now

        @event.listens_for(Session, "after_rollback")
        def _rolled_back(session):
            session.info.pop("bench_runs", None)
            session.info.pop("bench_commit_t0", None)
            self.local.held = None


def serve(workdir: Path, database_url: str) -> None:
    """The child process: migrate, make the stack and its webhook secret, serve the API and the
    bare route, and the probe's control routes."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    import backend.models  # noqa: F401 - every table, so the ORM can resolve foreign keys
    from backend.api import create_api
    from backend.auth.principal import system_principal
    from backend.config import load_settings
    from backend.context import build_context, set_context
    from backend.db import migrate
    from backend.stacks import service as stacks_service
    from backend.stacks.schemas import StackCreate
    from backend.vcs import service as vcs_service

    configure_app_logging()
    settings = load_settings(
        data_dir=workdir / "data",
        database_url=database_url,
        secret_key=SECRET_KEY,
        log_level="INFO",
        worker_enabled=False,
    )
    migrate(settings)
    ctx = build_context(settings)
    set_context(ctx)
    with ctx.session() as s:
        org = ctx.auth.ensure_default_org(s)
        system = system_principal(org.id)
        stack = stacks_service.create_stack(
            s,
            system,
            StackCreate(
                name="infrastructure-prod",
                repository_url=f"https://github.com/{REPO}.git",
                branch=BRANCH,
                project_root="envs/prod",
                tool="opentofu",
                vcs_provider="github",
                trigger_paths=TRIGGER_PATHS,
                skip_actors=["dependabot[bot]"],
            ),
        )
        hook = vcs_service.get_webhook(s, system, ctx, stack.id)

    probe = Probe()
    probe.install(ctx.engine)

    bare = FastAPI()

    @bare.post("/bare/webhook", status_code=202)
    async def bare_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"outcome": "bare", "bytes": len(body)}, status_code=202)

    @bare.get("/bare/probe")
    def bare_probe() -> JSONResponse:
        return JSONResponse(probe.snapshot())

    @bare.post("/bare/probe/reset")
    def bare_probe_reset() -> JSONResponse:
        probe.reset()
        return JSONResponse({"ok": True})

    real = create_api(ctx)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await real(scope, receive, send)
        path = scope["path"]
        if path.startswith("/bare/probe"):
            return await bare(scope, receive, send)
        t0 = time.time()
        side = "bare" if path.startswith("/bare/") else "real"
        delivery = next((v for k, v in scope["headers"] if k == b"x-github-delivery"), b"").decode()
        key = f"{side}:{delivery}"

        async def stamped_send(message):
            if message["type"] == "http.response.start":
                probe.response[key] = time.time()
            await send(message)

        probe.receipt[key] = t0
        await (bare if side == "bare" else real)(scope, receive, stamped_send)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        info = {
            "port": port,
            "stack_id": stack.id,
            "secret": hook.secret,
            # What uvicorn's "auto" picks: uvloop and httptools when installed, else asyncio and h11.
            "uvicorn": {
                "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            },
        }
        print("READY " + json.dumps(info), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


# ---------------------------------------------------------------------------- the database


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
def database(user: str) -> Iterator[tuple[str, str, str]]:
    """A fresh database: (its SQLAlchemy URL, its name, the server version); dropped at the end."""
    import psycopg

    def admin() -> psycopg.Connection:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True, connect_timeout=5
        )

    name = f"crucible_bench_webhooks_{os.getpid()}_{secrets.token_hex(3)}"
    with admin() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}", name, version
    finally:
        try:
            with admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # pragma: no cover - best effort, but say so
            say(f"WARNING: could not drop database {name}: {exc}")


# ---------------------------------------------------------------------------- the payloads


def _user(login: str, uid: int, kind: str = "User") -> dict[str, Any]:
    api = f"https://api.github.com/users/{login}"
    return {
        "name": login,
        "email": f"{uid}+{login}@users.noreply.github.com",
        "login": login,
        "id": uid,
        "node_id": "MDQ6VXNlcj" + hashlib.sha1(login.encode()).hexdigest()[:10],
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def _repository(pushed_at: int) -> dict[str, Any]:
    owner, name = REPO.split("/")
    api = f"https://api.github.com/repos/{REPO}"
    urls = {
        f"{k}_url": f"{api}/{v}"
        for k, v in (
            ("forks", "forks"),
            ("keys", "keys{/key_id}"),
            ("collaborators", "collaborators{/collaborator}"),
            ("teams", "teams"),
            ("hooks", "hooks"),
            ("issue_events", "issues/events{/number}"),
            ("events", "events"),
            ("assignees", "assignees{/user}"),
            ("branches", "branches{/branch}"),
            ("tags", "tags"),
            ("blobs", "git/blobs{/sha}"),
            ("git_tags", "git/tags{/sha}"),
            ("git_refs", "git/refs{/sha}"),
            ("trees", "git/trees{/sha}"),
            ("statuses", "statuses/{sha}"),
            ("languages", "languages"),
            ("stargazers", "stargazers"),
            ("contributors", "contributors"),
            ("subscribers", "subscribers"),
            ("subscription", "subscription"),
            ("commits", "commits{/sha}"),
            ("git_commits", "git/commits{/sha}"),
            ("comments", "comments{/number}"),
            ("issue_comment", "issues/comments{/number}"),
            ("contents", "contents/{+path}"),
            ("compare", "compare/{base}...{head}"),
            ("merges", "merges"),
            ("archive", "{archive_format}{/ref}"),
            ("downloads", "downloads"),
            ("issues", "issues{/number}"),
            ("pulls", "pulls{/number}"),
            ("milestones", "milestones{/number}"),
            ("notifications", "notifications{?since,all,participating}"),
            ("labels", "labels{/name}"),
            ("releases", "releases{/id}"),
            ("deployments", "deployments"),
        )
    }
    return {
        "id": 734501298,
        "node_id": "R_kgDOK8dYsg",
        "name": name,
        "full_name": REPO,
        "private": True,
        "owner": _user(owner, 98765432, "Organization"),
        "html_url": f"https://github.com/{REPO}",
        "description": "Terraform/OpenTofu for the production AWS accounts",
        "fork": False,
        "url": f"https://github.com/{REPO}",
        **urls,
        "created_at": 1701950712,
        "updated_at": "2026-11-30T09:12:44Z",
        "pushed_at": pushed_at,
        "git_url": f"git://github.com/{REPO}.git",
        "ssh_url": f"git@github.com:{REPO}.git",
        "clone_url": f"https://github.com/{REPO}.git",
        "svn_url": f"https://github.com/{REPO}",
        "homepage": None,
        "size": 18342,
        "stargazers_count": 4,
        "watchers_count": 4,
        "language": "HCL",
        "has_issues": True,
        "has_projects": False,
        "has_downloads": True,
        "has_wiki": False,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": 7,
        "license": None,
        "allow_forking": False,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": ["terraform", "opentofu", "aws"],
        "visibility": "private",
        "forks": 0,
        "open_issues": 7,
        "watchers": 4,
        "default_branch": BRANCH,
        "stargazers": 4,
        "master_branch": BRANCH,
        "organization": owner,
        "custom_properties": {},
    }


AUTHORS = [("Mara Lindqvist", "mlindqvist", 4412871), ("Tomás Oyelaran", "toyelaran", 7719020)]
FILES = [
    "envs/prod/eu-west-1/network/main.tf",
    "envs/prod/eu-west-1/network/variables.tf",
    "envs/prod/eu-west-1/eks/main.tf",
    "envs/prod/eu-west-1/eks/node_groups.tf",
    "envs/prod/us-east-1/rds/main.tf",
    "modules/vpc/outputs.tf",
    "modules/eks-cluster/iam.tf",
    "modules/eks-cluster/versions.tf",
    "docs/runbooks/eks-upgrade.md",
    ".github/CODEOWNERS",
]


def push_payload(i: int, before: str, after: str, now: datetime) -> dict[str, Any]:
    """A GitHub push of three commits to the tracked branch (GitHub's documented shape)."""
    ids = [hashlib.sha1(f"{after}-{k}".encode()).hexdigest() for k in range(2)] + [after]
    commits = []
    for k, sha in enumerate(ids):
        name, login, _uid = AUTHORS[(i + k) % len(AUTHORS)]
        at = (now - timedelta(minutes=3 * (2 - k))).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        files = [FILES[(i + k + j) % len(FILES)] for j in range(4)]
        commits.append(
            {
                "id": sha,
                "tree_id": hashlib.sha1(f"tree-{sha}".encode()).hexdigest(),
                "distinct": True,
                "message": (
                    f"eks: raise the prod node group's max size to {6 + (i + k) % 10}\n\n"
                    "Black Friday load test showed the cluster autoscaler pinned at the current\n"
                    f"maximum for 40 minutes. Refs INFRA-{1200 + i % 800}."
                ),
                "timestamp": at,
                "url": f"https://github.com/{REPO}/commit/{sha}",
                "author": {"name": name, "email": f"{login}@acme-corp.example", "username": login},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                "added": files[:1] if k == 0 else [],
                "removed": [files[3]] if k == 2 else [],
                "modified": files[1:3] if k else files[1:],
            }
        )
    _name, pusher_login, pusher_id = AUTHORS[i % len(AUTHORS)]
    return {
        "ref": f"refs/heads/{BRANCH}",
        "before": before,
        "after": after,
        "repository": _repository(int(now.timestamp())),
        "pusher": {"name": pusher_login, "email": f"{pusher_login}@acme-corp.example"},
        "organization": {
            "login": REPO.split("/")[0],
            "id": 98765432,
            "node_id": "O_kgDOBeLjeA",
            "url": f"https://api.github.com/orgs/{REPO.split('/')[0]}",
            "description": "Acme Corp",
        },
        "sender": _user(pusher_login, pusher_id),
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{REPO}/compare/{before[:12]}...{after[:12]}",
        "commits": commits,
        "head_commit": commits[-1],
    }


@dataclass
class Delivery:
    delivery_id: str
    sha: str
    body: bytes
    headers: dict[str, str]


def build_deliveries(n: int, secret: str) -> list[Delivery]:
    """N pushes, each a new delivery id and head commit, signed the way GitHub signs."""
    out = []
    now = datetime.now(UTC)
    before = hashlib.sha1(b"genesis").hexdigest()
    key = secret.encode()
    for i in range(n):
        after = hashlib.sha1(f"bench-{i}-{secrets.token_hex(4)}".encode()).hexdigest()
        body = json.dumps(push_payload(i, before, after, now), separators=(",", ":")).encode()
        delivery = str(uuid.uuid4())
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/b3d1e8a",
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": "push",
            "X-GitHub-Hook-ID": "512874310",
            "X-GitHub-Hook-Installation-Target-ID": "734501298",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        }
        out.append(Delivery(delivery, after, body, headers))
        before = after
    return out


# ---------------------------------------------------------------------------- the load


class Aborted(Exception):
    pass


@dataclass
class Batch:
    side: str
    n: int
    wall_s: float
    latencies: list[float]
    replies: list[tuple[Delivery, int, bytes]] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # server, postgres, client


class CpuMeter:
    """CPU seconds (user + system) spent so far by the server process, by the PostgreSQL
    backends serving the bench database, and by this client process."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pid: int, admin: Any, dbname: str):
        self.server_pid, self.admin, self.dbname = server_pid, admin, dbname

    @classmethod
    def _proc(cls, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime, stime

    def sample(self) -> dict[str, Any]:
        pids = [
            r[0]
            for r in self.admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.dbname,),
            ).fetchall()
        ]
        return {
            "server": self._proc(self.server_pid),
            "postgres": {pid: self._proc(pid) for pid in pids},
            "client": time.process_time(),
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        pg = sum(t - before["postgres"].get(pid, 0.0) for pid, t in after["postgres"].items())
        return {
            "server": after["server"] - before["server"],
            "postgres": pg,
            "client": after["client"] - before["client"],
        }


class Client:
    """C keep-alive connections, one thread each, draining a shared list of deliveries."""

    def __init__(self, port: int, concurrency: int):
        self.port = port
        self.conns = [self._connect() for _ in range(concurrency)]

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def close(self) -> None:
        for c in self.conns:
            c.close()

    def send(self, side: str, path: str, deliveries: list[Delivery], deadline: float) -> Batch:
        latencies: list[float] = [0.0] * len(deliveries)
        replies: list[tuple[int, bytes]] = [(0, b"")] * len(deliveries)
        done = [0] * len(deliveries)
        lock = threading.Lock()
        state = {"next": 0, "error": None}

        def worker(slot: int) -> None:
            conn = self.conns[slot]
            while True:
                with lock:
                    i = state["next"]
                    if i >= len(deliveries) or state["error"] or time.monotonic() > deadline:
                        return
                    state["next"] = i + 1
                d = deliveries[i]
                try:
                    t0 = time.perf_counter()
                    conn.request("POST", path, body=d.body, headers=d.headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    latencies[i] = time.perf_counter() - t0
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self.conns[slot] = conn = self._connect()
                    with lock:
                        state["error"] = state["error"] or f"{side} delivery {d.delivery_id}: {exc!r}"
                    return
                replies[i] = (resp.status, data)
                done[i] = 1
                if resp.status != 202:
                    with lock:
                        state["error"] = state["error"] or (
                            f"{side} delivery {d.delivery_id} answered {resp.status}: {data[:500]!r}"
                        )
                    return

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(self.conns))]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins, so Ctrl-C reaches the main thread
        wall = time.perf_counter() - t0
        if state["error"]:
            raise Aborted(state["error"])
        n = sum(done)
        return Batch(
            side,
            n,
            wall,
            [latencies[i] for i in range(len(deliveries)) if done[i]],
            [(deliveries[i], *replies[i]) for i in range(len(deliveries)) if done[i]],
        )


def get_json(port: int, method: str, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path} answered {resp.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def check_real(batch: Batch, created: dict[str, str], runs: set[str]) -> None:
    """Every real reply: 202, outcome created, a run id no other delivery got."""
    for d, status, data in batch.replies:
        doc = json.loads(data)
        if status != 202 or doc.get("outcome") != "created" or not doc.get("run_id"):
            raise Aborted(f"delivery {d.delivery_id}: expected 202 created, got {status} {doc}")
        if doc["run_id"] in runs:
            raise Aborted(f"delivery {d.delivery_id}: run {doc['run_id']} was already made by another")
        runs.add(doc["run_id"])
        created[d.delivery_id] = doc["run_id"]


# ---------------------------------------------------------------------------- the run


@dataclass
class Server:
    proc: subprocess.Popen
    info: dict[str, Any]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_server(workdir: Path, url: str) -> Server:
    err = (workdir / "server.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir), "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    server = Server(proc, {})
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                tail = (workdir / "server.err").read_text()[-3000:]
                raise RuntimeError(f"the server exited:\n{tail}")
            if line.startswith("READY "):
                server.info = json.loads(line[len("READY ") :])
                return server
        raise RuntimeError("the server did not start within 90 s")
    except BaseException:
        server.stop()
        raise


def measure(args: argparse.Namespace, server: Server, cpu: CpuMeter, started: float) -> dict[str, Any]:
    info = server.info
    port, stack_id = info["port"], info["stack_id"]
    real_path, bare_path = f"/api/v1/webhooks/{stack_id}", "/bare/webhook"
    warm = min(args.deliveries, 4 * args.concurrency)
    t_build = time.perf_counter()
    deliveries = build_deliveries(warm + args.deliveries, info["secret"])
    build_s = time.perf_counter() - t_build
    sizes = [len(d.body) for d in deliveries]
    say(
        f"built and signed {len(deliveries)} deliveries in {build_s:.1f} s "
        f"(body {min(sizes)} to {max(sizes)} bytes, mean {statistics.mean(sizes):.0f})"
    )
    deadline = started + args.max_seconds
    client = Client(port, args.concurrency)
    created: dict[str, str] = {}
    runs: set[str] = set()
    batches: list[Batch] = []
    rounds_done, stopped_early = 0, False
    try:
        # Warm-up: connections, the thread pool, the ORM's statement caches, PostgreSQL's buffers.
        check_real(client.send("real", real_path, deliveries[:warm], deadline), created, runs)
        client.send("bare", bare_path, deliveries[:warm], deadline)
        get_json(port, "POST", "/bare/probe/reset")
        measured = deliveries[warm:]
        per_round = math.ceil(len(measured) / args.rounds)
        for rnd in range(args.rounds):
            chunk = measured[rnd * per_round : (rnd + 1) * per_round]
            if not chunk:
                break
            if time.monotonic() > deadline:
                stopped_early = True
                say(f"stopping early: --max-seconds {args.max_seconds:g} reached after {rnd} rounds")
                break
            order = ("real", "bare") if rnd % 2 == 0 else ("bare", "real")
            line = []
            for k, side in enumerate(order):
                # The second side of a round cut short by the deadline still gets as many
                # deliveries as the first one managed, so each round stays a pair.
                until = deadline if k == 0 else max(deadline, time.monotonic()) + GRACE_S
                before = cpu.sample()
                batch = client.send(side, real_path if side == "real" else bare_path, chunk, until)
                batch.cpu_s = CpuMeter.spent(before, cpu.sample())
                if side == "real":
                    check_real(batch, created, runs)
                if batch.n < len(chunk):
                    stopped_early = True
                    chunk = chunk[: batch.n]
                if batch.n:
                    batches.append(batch)
                    line.append(f"{side} {batch.n / batch.wall_s:7.1f}/s")
            if not line:
                break
            rounds_done += 1
            say(
                f"  round {rnd + 1}/{args.rounds}: "
                + "  ".join(line)
                + (" (cut short)" if stopped_early else "")
            )
            if stopped_early:
                say(f"stopping early: --max-seconds {args.max_seconds:g} reached during round {rnd + 1}")
                break
        probe = get_json(port, "GET", "/bare/probe")
    finally:
        client.close()
    return {
        "warmup": warm,
        "built_s": build_s,
        "body_bytes": sizes,
        "batches": batches,
        "created": created,
        "probe": probe,
        "rounds_done": rounds_done,
        "stopped_early": stopped_early,
    }


def verify_db(url: str, created: dict[str, str]) -> dict[str, Any]:
    """The database after the run: one queued tracked run, one run_vcs row and one delivery per
    real delivery; returns the delivery → run map for the server-side latency join."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        runs = dict(conn.execute("SELECT status, count(*) FROM run GROUP BY status").fetchall())
        types = dict(conn.execute("SELECT type, count(*) FROM run GROUP BY type").fetchall())
        vcs = conn.execute("SELECT count(*) FROM run_vcs").fetchone()[0]
        rows = conn.execute(
            "SELECT delivery_id, run_id, outcome, status_code FROM webhook_delivery"
        ).fetchall()
        audits = conn.execute("SELECT count(*) FROM audit_event WHERE action = 'run.create'").fetchone()[0]
    n = len(created)
    by_delivery = {d: r for d, r, _o, _s in rows}
    problems = []
    if runs != {"queued": n}:
        problems.append(f"runs by status {runs}, expected {{'queued': {n}}}")
    if types != {"tracked": n}:
        problems.append(f"runs by type {types}, expected {{'tracked': {n}}}")
    if vcs != n:
        problems.append(f"{vcs} run_vcs rows, expected {n}")
    if audits != n:
        problems.append(f"{audits} run.create audit events, expected {n}")
    if len(rows) != n or any(o != "created" or s != 202 for _d, _r, o, s in rows):
        problems.append(f"{len(rows)} deliveries logged, expected {n}, all created/202")
    if by_delivery != created:
        problems.append("the delivery log's run ids differ from the ones the replies named")
    return {
        "runs": n,
        "runs_by_status": runs,
        "run_vcs": vcs,
        "deliveries_logged": len(rows),
        "problems": problems,
        "by_delivery": by_delivery,
    }


# ---------------------------------------------------------------------------- the report


def lat_stats(values: list[float]) -> dict[str, Any]:
    s = sorted(values)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "p50_ms": pct(s, 50) * 1000,
        "p99_ms": pct(s, 99) * 1000,
        "max_ms": s[-1] * 1000,
        "mean_ms": statistics.mean(s) * 1000,
    }


def summarize(args: argparse.Namespace, m: dict[str, Any], db: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("real", "bare"):
        bs = [b for b in m["batches"] if b.side == side]
        n = sum(b.n for b in bs)
        wall = sum(b.wall_s for b in bs)
        rates = [b.n / b.wall_s for b in bs if b.wall_s > 0]
        out[side] = {
            "deliveries": n,
            "per_s": n / wall if wall else float("nan"),
            "per_s_rounds": rates,
            "per_s_median_round": statistics.median(rates) if rates else float("nan"),
            "client": lat_stats([x for b in bs for x in b.latencies]),
            "cpu_ms_per_delivery": {
                k: sum(b.cpu_s.get(k, 0.0) for b in bs) * 1000 / max(1, n)
                for k in ("server", "postgres", "client")
            },
            "cpu_cores_busy": {
                k: sum(b.cpu_s.get(k, 0.0) for b in bs) / wall if wall else float("nan")
                for k in ("server", "postgres", "client")
            },
        }
    probe = m["probe"]
    receipt, response, commit = probe["receipt"], probe["response"], probe["commit"]
    measured = set(receipt) & set(response)
    for side in ("real", "bare"):
        keys = [k for k in measured if k.startswith(side + ":")]
        out[side]["server_receipt_to_response"] = lat_stats([response[k] - receipt[k] for k in keys])
    enq, misordered = [], 0
    for key in measured:
        if not key.startswith("real:"):
            continue
        run_id = db["by_delivery"].get(key[len("real:") :])
        if run_id in commit:
            enq.append(commit[run_id] - receipt[key])
            misordered += commit[run_id] > response[key]
    out["real"]["server_receipt_to_enqueued"] = lat_stats(enq)
    out["real"]["server_commit_after_response"] = misordered
    r, b = out["real"], out["bare"]
    out["ratio"] = {
        "per_s_real_over_bare": r["per_s"] / b["per_s"],
        "p50_real_over_bare": r["client"]["p50_ms"] / b["client"]["p50_ms"],
        "p99_real_over_bare": r["client"]["p99_ms"] / b["client"]["p99_ms"],
    }
    n_real = max(1, r["deliveries"])
    sql = {
        kind: {"per_delivery": c / n_real, "ms_per_delivery": s * 1000 / n_real, "ms_each": s * 1000 / c}
        for kind, (c, s) in sorted(probe["sql"].items(), key=lambda kv: -kv[1][1])
    }
    c_n, c_s = probe["commits"]
    out["server_work_per_real_delivery"] = {
        "sql": sql,
        "statements": sum(v["per_delivery"] for v in sql.values()),
        "sql_ms": sum(v["ms_per_delivery"] for v in sql.values()),
        "commits": c_n / n_real,
        "commit_ms": c_s * 1000 / n_real,
        "pool_checkouts": probe["checkouts"] / n_real,
    }
    holds = probe["holds"]
    real_wall = sum(b.wall_s for b in m["batches"] if b.side == "real")
    if holds:
        held = sorted(h[0] for h in holds)
        out["audit_lock"] = {
            "transactions": len(holds),
            "held_p50_ms": pct(held, 50) * 1000,
            "held_p99_ms": pct(held, 99) * 1000,
            "held_mean_ms": statistics.mean(held) * 1000,
            "sql_while_held_mean_ms": statistics.mean(h[1] for h in holds) * 1000,
            "commit_while_held_mean_ms": statistics.mean(h[2] for h in holds) * 1000,
            # The share of the real rounds' wall time during which some transaction held it:
            # near 1, deliveries queue for the lock and 1 / held_mean is the ceiling.
            "busy_fraction": sum(held) / real_wall if real_wall else float("nan"),
            "ceiling_per_s": 1 / statistics.mean(held),
        }
    return out


def print_report(args: argparse.Namespace, s: dict[str, Any]) -> None:
    r, b = s["real"], s["bare"]
    say()
    say(f"{'':<34} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    say("-" * 74)
    for label, side in (("real  POST /api/v1/webhooks/{id}", r), ("bare  POST /bare/webhook", b)):
        c = side["client"]
        say(f"{label:<34} {side['per_s']:>12.1f} {c['p50_ms']:>8.2f} {c['p99_ms']:>8.2f} {c['max_ms']:>8.2f}")
    x = s["ratio"]
    say(
        f"{'ratio real / bare':<34} {x['per_s_real_over_bare']:>11.3f}x "
        f"{x['p50_real_over_bare']:>7.1f}x {x['p99_real_over_bare']:>7.1f}x"
    )
    say()
    say(
        f"client: {args.concurrency} keep-alive connections, round trip from the request's first byte "
        "to the reply's last; deliveries/s = deliveries / wall time of the rounds (median round: "
        f"real {r['per_s_median_round']:.1f}/s, bare {b['per_s_median_round']:.1f}/s)."
    )
    say()
    say("server side (in the server process, from the ASGI app's entry):")
    e, rr, br = (
        r["server_receipt_to_enqueued"],
        r["server_receipt_to_response"],
        b["server_receipt_to_response"],
    )
    if e["n"]:
        say(
            f"  real  receipt → run committed (enqueued)  p50 {e['p50_ms']:7.2f} ms  "
            f"p99 {e['p99_ms']:7.2f} ms  (n={e['n']})"
        )
    say(f"  real  receipt → response start            p50 {rr['p50_ms']:7.2f} ms  p99 {rr['p99_ms']:7.2f} ms")
    say(f"  bare  receipt → response start            p50 {br['p50_ms']:7.2f} ms  p99 {br['p99_ms']:7.2f} ms")
    if r["server_commit_after_response"]:
        say(f"  !! {r['server_commit_after_response']} runs committed after their response started")
    say()
    say(
        f"CPU per delivery (ms; in parentheses: cores kept busy) of {os.cpu_count()} CPUs, "
        "from /proc (10 ms ticks):"
    )
    for label, side in (("real", r), ("bare", b)):
        per, busy = side["cpu_ms_per_delivery"], side["cpu_cores_busy"]
        say(
            f"  {label}  server process {per['server']:6.2f} ({busy['server']:.2f})   "
            f"PostgreSQL backends {per['postgres']:6.2f} ({busy['postgres']:.2f})   "
            f"client {per['client']:6.2f} ({busy['client']:.2f})"
        )
    w = s["server_work_per_real_delivery"]
    say()
    say(
        f"per real delivery: {w['statements']:.1f} SQL statements, {w['sql_ms']:.2f} ms in them, "
        f"{w['commits']:.1f} commits ({w['commit_ms']:.2f} ms), {w['pool_checkouts']:.1f} pool checkouts "
        "(each one a pre-ping round trip)"
    )
    for kind, v in list(w["sql"].items())[:12]:
        say(f"  {kind:<48} {v['per_delivery']:>4.1f}x {v['ms_per_delivery']:>7.3f} ms")
    say("  (times are wall time under load: they include waiting for the CPU and for locks)")
    lock = s.get("audit_lock")
    if lock:
        say()
        say(
            f"audit chain lock: held p50 {lock['held_p50_ms']:.2f} ms, p99 {lock['held_p99_ms']:.2f} ms, "
            f"mean {lock['held_mean_ms']:.2f} ms per delivery (of which SQL "
            f"{lock['sql_while_held_mean_ms']:.2f} ms, COMMIT {lock['commit_while_held_mean_ms']:.2f} ms, "
            "the rest Python and waiting for the GIL)"
        )
        say(
            f"  held {lock['busy_fraction'] * 100:.0f} % of the real rounds' wall time; one holder at a time "
            f"allows at most {lock['ceiling_per_s']:.0f} deliveries/s"
        )


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C: the finally blocks stop the server and drop the database."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deliveries", type=int, default=2000, help="real deliveries measured (default 2000)")
    ap.add_argument("--concurrency", type=int, default=8, help="client connections (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of real vs bare (default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke: 300 deliveries in 3 rounds")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--database-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(Path(args.serve), args.database_url)
        return 0
    if args.quick:
        args.deliveries, args.rounds = 300, 3
    if args.deliveries < 1 or args.concurrency < 1 or args.rounds < 1:
        ap.error("--deliveries, --concurrency and --rounds must be at least 1")

    user = pg_admin_user()
    if user is None:
        say(f"SKIPPED: no PostgreSQL role with CREATEDB answers on {PG_HOST}:{PG_PORT}")
        return 0
    import psycopg

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="crucible-bench-webhooks-"))
    try:
        with database(user) as (url, name, version):
            say(
                f"webhook bench: {args.deliveries} GitHub push deliveries, {args.concurrency} connections, "
                f"{args.rounds} rounds, PostgreSQL {version} (database {name}), loopback"
            )
            server = start_server(workdir, url)
            try:
                uv = server.info["uvicorn"]
                say(f"server ready: uvicorn ({uv['loop']}, {uv['http']}), pid {server.proc.pid}")
                with psycopg.connect(
                    host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True
                ) as admin:
                    m = measure(args, server, CpuMeter(server.proc.pid, admin, name), started)
            finally:
                server.stop()
            db = verify_db(url, m["created"])
        if not all(any(b.side == side for b in m["batches"]) for side in ("real", "bare")):
            say(f"nothing was measured within --max-seconds {args.max_seconds:g}")
            return 1
        summary = summarize(args, m, db)
        print_report(args, summary)
        sizes = m["body_bytes"]
        doc = {
            "benchmark": "webhooks",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "params": {
                "deliveries": args.deliveries,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "quick": args.quick,
                "max_seconds": args.max_seconds,
                "warmup_deliveries": m["warmup"],
            },
            "env": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "postgres": version,
                "uvicorn": server.info["uvicorn"],
            },
            "payload": {"provider": "github", "event": "push", "bytes_mean": statistics.mean(sizes)},
            "rounds_done": m["rounds_done"],
            "stopped_early": m["stopped_early"],
            "results": summary,
            "rounds": [
                {"side": b.side, "n": b.n, "wall_s": b.wall_s, "per_s": b.n / b.wall_s, "cpu_s": b.cpu_s}
                for b in m["batches"]
            ],
            "verify": {k: v for k, v in db.items() if k != "by_delivery"},
            "seconds": round(time.monotonic() - started, 1),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "webhooks.json").write_text(json.dumps(doc, indent=2))
        say()
        if db["problems"]:
            say("VERIFY FAILED: " + "; ".join(db["problems"]))
            return 1
        say(
            f"verified: {db['runs']} real deliveries (warm-up included) → {db['runs']} queued tracked runs, "
            f"{db['run_vcs']} run_vcs rows, {db['deliveries_logged']} deliveries logged as created"
        )
        say(f"wrote bench/results/webhooks.json ({doc['seconds']} s)")
        return 0
    except Aborted as exc:
        say(f"ABORTED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted: the server is stopped and the database dropped")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
