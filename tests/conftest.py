"""Shared fixtures: one migrated database per test (SQLite and PostgreSQL), the app, and actors.

Databases follow procrastinate's pattern: Alembic migrates ONE template per session (a SQLite
file, a PostgreSQL database); every test gets a copy (file copy / CREATE DATABASE ... TEMPLATE),
so tests are isolated and still fast.

PostgreSQL lives at 127.0.0.1:5432 (override with CRUCIBLE_TEST_PG_URL). When it is unreachable,
PostgreSQL tests skip, or fail when CRUCIBLE_REQUIRE_POSTGRES=1 (set by `make test`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from backend.api import create_api
from backend.audit.models import AuditEvent
from backend.auth.models import Organization, Role
from backend.auth.principal import Principal, system_principal
from backend.config import Settings, load_settings
from backend.context import AppContext, build_context
from backend.db import migrate
from backend.deps import SESSION_COOKIE
from backend.stacks import service as stacks_service
from backend.stacks.schemas import StackCreate
from backend.timeutil import new_id

# starlette warns (as a UserWarning subclass) when httpx is used instead of httpx2; the suite runs
# with filterwarnings=error, so import the test client once with that one warning silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*httpx.*starlette\.testclient.*")
    from starlette.testclient import TestClient

PG_ADMIN_URL = os.environ.get("CRUCIBLE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("CRUCIBLE_REQUIRE_POSTGRES") == "1"
TEST_SECRET_KEY = "test-secret-key-" + "x" * 32
PASSWORD = "correct horse battery staple"

DB_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

# Settings a developer's shell may export; tests must not pick them up by accident.
_KEEP_ENV = {"CRUCIBLE_REQUIRE_POSTGRES", "CRUCIBLE_TEST_PG_URL"}


@pytest.fixture(autouse=True)
def _clean_crucible_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRUCIBLE_") and name not in _KEEP_ENV:
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- databases


class PgServer:
    """Creates and drops throw-away databases on the shared PostgreSQL server.

    CREATE and DROP DATABASE wait for fsyncs and checkpoints (~0.1 s each), so clones are made
    a couple of tests ahead and dropped in the background, several at a time (concurrent drops
    share checkpoints)."""

    PREFETCH = 2

    def __init__(self, admin_url: str):
        self.admin_url = make_url(admin_url)
        self._creator = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-create")
        self._dropper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pg-drop")
        self._prefetched: dict[str, deque[Future[str]]] = {}
        self._drops: list[Future[None]] = []

    def _admin(self) -> psycopg.Connection:
        url = self.admin_url.set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5)

    def check(self) -> None:
        with self._admin() as conn:
            conn.execute("SELECT 1")

    def sqlalchemy_url(self, name: str) -> str:
        url = self.admin_url.set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def create(self, prefix: str = "crucible_test", template: str | None = None) -> str:
        name = f"{prefix}_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def clone(self, template: str) -> str:
        """A new database copied from template (ready-made when possible)."""
        queue = self._prefetched.setdefault(template, deque())
        while len(queue) < self.PREFETCH + 1:
            queue.append(self._creator.submit(self.create, "crucible_test", template))
        return queue.popleft().result()

    def release(self, name: str) -> None:
        self._drops.append(self._dropper.submit(self.drop, name))

    def retire_template(self, template: str) -> None:
        """Drop the spare clones and wait for pending drops, so the template can go too."""
        for ready in self._prefetched.pop(template, ()):
            self.release(ready.result())
        for future in self._drops:
            future.result()
        self._drops.clear()


@pytest.fixture(scope="session")
def pg_server() -> PgServer | str:
    """The server, or the reason it cannot be used (a string)."""
    server = PgServer(PG_ADMIN_URL)
    try:
        server.check()
    except psycopg.Error as exc:
        return f"PostgreSQL at {server.admin_url.render_as_string()} is unreachable: {exc}".strip()
    return server


def require_postgres(request: pytest.FixtureRequest) -> PgServer:
    server = request.getfixturevalue("pg_server")
    if isinstance(server, str):
        if REQUIRE_POSTGRES:
            pytest.fail(f"{server} (CRUCIBLE_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(server)
    return server


def _migrated_settings(url: str, data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir, database_url=url, secret_key=TEST_SECRET_KEY)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sqlite-template")
    path = directory / "template.db"
    migrate(_migrated_settings(f"sqlite:///{path}", directory))
    for suffix in ("-wal", "-shm"):  # the last connection closed: WAL is checkpointed away
        assert not Path(f"{path}{suffix}").exists() or Path(f"{path}{suffix}").stat().st_size == 0
    return path


@pytest.fixture(scope="session")
def pg_template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = require_postgres(request)
    name = server.create(prefix="crucible_tpl")
    try:
        migrate(_migrated_settings(server.sqlalchemy_url(name), tmp_path_factory.mktemp("pg-template")))
        yield name
    finally:
        try:
            server.retire_template(name)
        finally:
            server.drop(name)


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of its own for this test."""
    if db_kind == "sqlite":
        target = tmp_path / "crucible.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    server = require_postgres(request)
    name = server.clone(request.getfixturevalue("pg_template"))
    try:
        yield server.sqlalchemy_url(name)
    finally:
        server.release(name)


@pytest.fixture
def empty_db_url(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (for migration tests)."""
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = require_postgres(request)
    name = server.create()
    try:
        yield server.sqlalchemy_url(name)
    finally:
        server.drop(name)


# --------------------------------------------------------------------------- docker

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_STATE_DIR = REPO_ROOT / ".cache" / "docker"  # short enough for unix socket paths
REQUIRE_DOCKER = os.environ.get("CRUCIBLE_REQUIRE_DOCKER") == "1"


def _engine_answers(sock: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """A Docker engine started by hand (.ci/docker-engine.sh, idempotent) with the runner image
    built locally; yields its base URL. Skips with the reason when the engine cannot run here,
    fails instead when CRUCIBLE_REQUIRE_DOCKER=1 (set by `make test`). An engine this session
    started is stopped at the end; the image stays cached in .cache/docker."""
    sock = DOCKER_STATE_DIR / "docker.sock"
    started_here = not _engine_answers(sock)
    try:
        proc = subprocess.run(
            ["bash", str(REPO_ROOT / ".ci" / "docker-engine.sh"), str(DOCKER_STATE_DIR)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        reason = None if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()[-2000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc)
    if reason is not None:
        reason = f"the Docker engine cannot run here (.ci/docker-engine.sh {DOCKER_STATE_DIR}): {reason}"
        if REQUIRE_DOCKER:
            pytest.fail(f"{reason} (CRUCIBLE_REQUIRE_DOCKER=1)", pytrace=False)
        pytest.skip(reason)
    try:
        yield f"unix://{sock}"
    finally:
        pidfile = DOCKER_STATE_DIR / "docker.pid"
        if started_here and pidfile.exists():
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.2)


# --------------------------------------------------------------------------- app


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override per test with @pytest.mark.parametrize("settings_overrides", [{...}])."""
    return {}


@pytest.fixture
def settings(db_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": db_url,
        "secret_key": TEST_SECRET_KEY,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
    }
    values.update(settings_overrides)
    return load_settings(**values)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = build_context(settings)
    try:
        yield context
    finally:
        context.engine.dispose()


@pytest.fixture
def app(ctx: AppContext):
    return create_api(ctx)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    """An anonymous client. Its cookie jar keeps what login responses set."""
    with TestClient(app) as c:
        yield c


# --------------------------------------------------------------------------- actors


@dataclass
class Actor:
    """Someone calling the API: a logged-in user (session cookie) or an API token."""

    kind: str  # "session" | "token" | "anonymous"
    role: Role | None
    org_id: str | None
    label: str = "anonymous"
    id: str | None = None
    email: str | None = None
    password: str | None = None
    session: str | None = None  # cookie value
    token: str | None = None  # plaintext API token

    @property
    def headers(self) -> dict[str, str]:
        if self.kind == "session":
            return {"Cookie": f"{SESSION_COOKIE}={self.session}"}
        if self.kind == "token":
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def __str__(self) -> str:
        return self.kind if self.role is None else f"{self.kind}:{self.role.value}"


@dataclass
class World:
    """Builds organizations, users, tokens and stacks through the real services."""

    ctx: AppContext
    app: Any
    org_id: str
    # Short per-org tags keep generated emails short and tell the orgs apart in responses.
    tags: dict[str, str] = field(default_factory=dict)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def _n(self) -> int:
        return next(self._seq)

    def tag(self, org_id: str) -> str:
        return self.tags.setdefault(org_id, f"org{len(self.tags)}x")

    def new_org(self, name: str | None = None) -> str:
        with self.ctx.session() as s:
            org = Organization(id=new_id("org"), name=name or f"org-{secrets.token_hex(4)}")
            s.add(org)
        self.tag(org.id)
        return org.id

    def system(self, org_id: str | None = None) -> Principal:
        return system_principal(org_id or self.org_id)

    def user(
        self,
        role: Role | str = Role.member,
        org_id: str | None = None,
        *,
        email: str | None = None,
        password: str = PASSWORD,
        login: bool = True,
    ) -> Actor:
        role = Role(role)
        org_id = org_id or self.org_id
        email = email or f"{role.value}{self._n()}@{self.tag(org_id)}.test"
        with self.ctx.session() as s:
            user = self.ctx.auth.create_user(s, self.system(org_id), email, password, role)
        actor = Actor(
            "session", role, org_id, label=user.email, id=user.id, email=user.email, password=password
        )
        if login:
            actor.session = self.login(user.email, password)
        return actor

    def login(self, email: str, password: str = PASSWORD) -> str:
        """Open a session the way the login route does; returns the cookie value.

        Each call comes from its own address in 10/8, so fixture logins never use up the per-IP
        login budget of the test client ("testclient")."""
        n = self._n()
        ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        cookie, _principal = self.ctx.auth.login(self.ctx.session, email, password, ip, "pytest")
        return cookie

    def token(
        self, role: Role | str = Role.member, org_id: str | None = None, name: str | None = None
    ) -> Actor:
        role = Role(role)
        org_id = org_id or self.org_id
        with self.ctx.session() as s:
            tok, plaintext = self.ctx.auth.create_token(
                s, self.system(org_id), name or f"tok-{role.value}-{self._n()}", role
            )
        return Actor("token", role, org_id, label=f"token:{tok.name}", id=tok.id, token=plaintext)

    def actor(self, kind: str, role: Role | str | None, org_id: str | None = None) -> Actor:
        if kind == "anonymous":
            return Actor("anonymous", None, None)
        if kind == "session":
            return self.user(role or Role.viewer, org_id)
        return self.token(role or Role.viewer, org_id)

    def stack(self, org_id: str | None = None, **fields: Any) -> dict[str, Any]:
        n = self._n()
        body = {
            "name": f"stack-{n}",
            "repository_url": f"https://git.example.com/infra/{n}.git",
            "tool": "opentofu",
            **fields,
        }
        with self.ctx.session() as s:
            created = stacks_service.create_stack(s, self.system(org_id), StackCreate(**body))
        return created.model_dump(mode="json")

    def audit_events(self, org_id: str | None = None) -> list[AuditEvent]:
        with self.ctx.session() as s:
            stmt = select(AuditEvent).order_by(col(AuditEvent.id))
            if org_id is not None:
                stmt = stmt.where(AuditEvent.org_id == org_id)
            return list(s.exec(stmt).all())

    def audit_count(self) -> int:
        return len(self.audit_events())


@pytest.fixture
def world(ctx: AppContext, app) -> World:
    with ctx.session() as s:
        org = ctx.auth.ensure_default_org(s)
    w = World(ctx=ctx, app=app, org_id=org.id)
    w.tag(org.id)
    return w


@pytest.fixture
def admin(world: World) -> Actor:
    return world.user(Role.admin)


@pytest.fixture
def member(world: World) -> Actor:
    return world.user(Role.member)


@pytest.fixture
def viewer(world: World) -> Actor:
    return world.user(Role.viewer)


@pytest.fixture
def other_org(world: World) -> str:
    return world.new_org("other-org")


@pytest.fixture
def as_actor(app) -> Iterator[Callable[[Actor], TestClient]]:
    """as_actor(actor) → a TestClient that sends that actor's credentials on every request."""
    clients: list[TestClient] = []

    def make(actor: Actor) -> TestClient:
        c = TestClient(app, headers=actor.headers)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def valid_stack_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "network-prod",
        "repository_url": "https://github.com/acme/network.git",
        "tool": "opentofu",
    }
    body.update(overrides)
    return body


@pytest.fixture
def stack_body() -> Callable[..., dict[str, Any]]:
    return valid_stack_body


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server on a loopback port, one per test session (every module that
    needs S3 shares it; each test makes its own bucket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    args = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*args, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {endpoint}:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
