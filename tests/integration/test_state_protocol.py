"""The state endpoint as Terraform's ``http`` backend client speaks to it.

``TerraformClient`` sends exactly what internal/backend/remote-state/http/client.go sends: basic
auth (username = stack id), ``Content-Type: application/json`` and ``Content-MD5`` on every body,
``?ID=<lock id>`` on writes while it holds the lock, LockInfo bodies on LOCK and UNLOCK. The
answers it reads are the ones the client branches on: 200/204 on GET, 200 on writes, 200 or
423/409 (with the holder's LockInfo) on LOCK, 200 on UNLOCK.

It also retries as Terraform's client does (go-retryablehttp): connection errors, 429 and 5xx
except 501, ``retry_max`` times (default 2), waiting ``retry_wait_min * 2**attempt`` (at most
``retry_wait_max``) or what ``Retry-After`` says on 429/503.

Most tests use the in-process TestClient; the concurrency, streaming and retry tests run against
a real uvicorn server on a loopback port. Every test runs on the two pairings Crucible supports,
SQLite + filesystem store and PostgreSQL + S3 (moto's server over HTTP); the write/read/version
path also runs on the crossed pairs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from backend.api import create_api
from backend.audit.models import AuditEvent
from backend.auth.principal import system_principal
from backend.runs.models import Run
from backend.state import parse, protocol, tokens
from backend.state import service as state_service
from backend.state.models import StateHead, StateLock, StateToken, StateVersion
from backend.storage import ObjectStore, S3ObjectStore
from backend.timeutil import new_id, utcnow

# --------------------------------------------------------------------------- helpers


def tf_state(serial: int, lineage: str = "5e1f0c2a-lineage", resources: int = 1, **extra: Any) -> bytes:
    """A state as Terraform writes it (indent 2, trailing newline)."""
    doc: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.9.8",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"name": {"value": f"v{serial}", "type": "string"}},
        "resources": [
            {
                "mode": "managed",
                "type": "null_resource",
                "name": f"r{i}",
                "provider": 'provider["registry.terraform.io/hashicorp/null"]',
                "instances": [{"schema_version": 0, "attributes": {"id": f"{serial}-{i}"}}],
            }
            for i in range(resources)
        ],
        "check_results": None,
        **extra,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def lock_info(lock_id: str | None = None, who: str = "alice@laptop", operation: str = "OperationTypeApply"):
    return {
        "ID": lock_id or str(uuid.uuid4()),
        "Operation": operation,
        "Info": "",
        "Who": who,
        "Version": "1.9.8",
        "Created": "2026-12-01T10:00:00.123456789Z",
        "Path": "",
    }


def new_token(world, stack_id: str, access: str = "write", name: str | None = None) -> str:
    with world.ctx.session() as s:
        _public, secret = tokens.create_token(
            s, world.ctx.auth.hasher, system_principal(world.org_id), stack_id, name or f"t-{access}", access
        )
    return secret


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# Terraform's http backend defaults: retry_max, retry_wait_min, retry_wait_max (seconds).
RETRY_MAX, RETRY_WAIT_MIN, RETRY_WAIT_MAX = 2, 1.0, 30.0


def retryable(status: int) -> bool:
    """go-retryablehttp's DefaultRetryPolicy for an answer (connection errors retry too)."""
    return status == 429 or status == 0 or (status >= 500 and status != 501)


class TerraformClient:
    """What Terraform's http backend client sends, over any httpx-compatible client, retried as
    its go-retryablehttp client retries. ``waits`` records every wait between attempts;
    ``sleep`` does the waiting (tests pass a no-op and check ``waits``).

    One difference: after the last attempt Terraform reports "giving up after N attempt(s)"
    without the answer; this client returns the last answer, so tests can read it."""

    def __init__(
        self,
        http,
        stack_id: str,
        password: str,
        username: str | None = None,
        *,
        retry_max: int = RETRY_MAX,
        retry_wait_min: float = RETRY_WAIT_MIN,
        retry_wait_max: float = RETRY_WAIT_MAX,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.http = http
        self.stack_id = stack_id
        self.address = f"/api/v1/state/{stack_id}"
        self.auth = basic(username if username is not None else stack_id, password)
        self.lock_id: str | None = None
        self.json_lock_info: bytes | None = None
        self.retry_max, self.retry_wait_min, self.retry_wait_max = retry_max, retry_wait_min, retry_wait_max
        self.sleep = sleep
        self.waits: list[float] = []

    def backoff(self, attempt: int, response: httpx.Response | None) -> float:
        """go-retryablehttp's DefaultBackoff: Retry-After on 429/503, else exponential."""
        if response is not None and response.status_code in (429, 503):
            retry_after = response.headers.get("retry-after", "").strip()
            if retry_after.isdigit():
                return float(retry_after)
        return min(self.retry_wait_min * 2**attempt, self.retry_wait_max)

    def request(self, method: str, url: str, data: bytes | None = None, params: dict | None = None):
        headers = {"Authorization": self.auth}
        if data is not None:
            headers["Content-Type"] = "application/json"
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        for attempt in itertools.count():
            last = attempt >= self.retry_max
            request = self.http.build_request(method, url, content=data, headers=headers, params=params)
            try:
                response = self.http.send(request, stream=True)
            except httpx.TransportError:
                if last:
                    raise
                answer = None
            else:
                if last or not retryable(response.status_code):
                    # Terraform reads the body after the retrying client returned: a body that
                    # breaks off is an error, not a retry.
                    try:
                        response.read()
                    finally:
                        response.close()
                    return response
                with contextlib.suppress(httpx.HTTPError):
                    response.read()  # drained, as go-retryablehttp does before retrying
                response.close()
                answer = response
            wait = self.backoff(attempt, answer)
            self.waits.append(wait)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def get(self):
        return self.request("GET", self.address)

    def put(self, data: bytes, method: str = "POST", lock_id: str | None = None):
        lock_id = lock_id or self.lock_id
        return self.request(method, self.address, data, params={"ID": lock_id} if lock_id else None)

    def delete(self):
        return self.request("DELETE", self.address)

    def lock(self, info: dict[str, str] | None = None, method: str = "LOCK", url: str | None = None):
        info = info or lock_info()
        body = json.dumps(info).encode()
        response = self.request(method, url or self.address, body)
        if response.status_code == 200:
            self.lock_id, self.json_lock_info = info["ID"], body
        return response

    def unlock(self, body: bytes | None = None, method: str = "UNLOCK", url: str | None = None):
        # Terraform re-sends the LockInfo it locked with; force-unlock sends what it has.
        data = self.json_lock_info if body is None else body
        response = self.request(method, url or self.address, data if data is not None else b"")
        if response.status_code == 200:
            self.lock_id = self.json_lock_info = None
        return response


def versions(world, stack_id: str) -> list[StateVersion]:
    with world.ctx.session() as s:
        return list(
            s.exec(
                select(StateVersion)
                .where(StateVersion.stack_id == stack_id)
                .order_by(col(StateVersion.serial))
            ).all()
        )


def head(world, stack_id: str) -> StateHead | None:
    with world.ctx.session() as s:
        return s.get(StateHead, stack_id)


def state_objects(world, stack_id: str) -> list[str]:
    return [info.key for info in world.ctx.objects.list(f"state/{stack_id}/")]


def leftover_uploads(world) -> list[str]:
    directory = world.ctx.settings.state_upload_dir
    return sorted(os.listdir(directory)) if directory.exists() else []


def state_events(world, stack_id: str) -> list[AuditEvent]:
    """The stack's state audit events, without token management."""
    return [
        e
        for e in world.audit_events()
        if e.resource_id == stack_id and e.category == "state" and not e.action.startswith("state.token")
    ]


def make_run(world, stack_id: str, run_type: str = "tracked") -> Run:
    run = Run(
        id=new_id("run"),
        org_id=world.org_id,
        stack_id=stack_id,
        type=run_type,
        exclusive=run_type in ("tracked", "destroy"),
        status="planning",
        status_timestamps={},
    )
    with world.ctx.session() as s:
        s.add(run)
    return run


# --------------------------------------------------------------------------- fixtures


def s3_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for a fresh bucket (created here) on moto's S3 server."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    values = {
        "object_store": "s3",
        "s3_endpoint_url": request.getfixturevalue("moto_endpoint"),
        "s3_bucket": f"state-{uuid.uuid4().hex[:12]}",
        "s3_access_key_id": "crucible-test",
        "s3_secret_access_key": "crucible-test-secret",
    }
    _bucket_maker(values["s3_endpoint_url"]).create_bucket(Bucket=values["s3_bucket"])
    return values


@functools.cache
def _bucket_maker(endpoint: str) -> Any:
    # One client for the session: building a boto3 client costs ~0.3 s.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="crucible-test",
        aws_secret_access_key="crucible-test-secret",
    )


def paired_store_settings(request: pytest.FixtureRequest, db_kind: str) -> dict[str, Any]:
    """The object store goes with the database: the filesystem with SQLite, S3 (moto) with
    PostgreSQL. An indirect param "filesystem" or "s3" picks the store instead; a dict param
    adds settings to the paired store."""
    param = getattr(request, "param", None)
    extra = param if isinstance(param, dict) else {}
    store = param if isinstance(param, str) else ("s3" if db_kind == "postgres" else "filesystem")
    assert store in ("filesystem", "s3"), store
    return {**(s3_settings(request) if store == "s3" else {}), **extra}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, db_kind: str) -> dict[str, Any]:
    return paired_store_settings(request, db_kind)


@pytest.fixture
def stack_id(world) -> str:
    return world.stack()["id"]


@pytest.fixture
def tf(client, world, stack_id) -> TerraformClient:
    return TerraformClient(client, stack_id, new_token(world, stack_id))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """An ASGI app on a real loopback port (uvicorn in a thread); yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_url(ctx) -> Iterator[str]:
    """The API on a real loopback port."""
    with serving(create_api(ctx)) as url:
        yield url


@pytest.fixture
def live_http(live_url) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(base_url=live_url, timeout=60, limits=limits) as http:
        yield http


# --------------------------------------------------------------------------- read / write


def test_the_object_store_goes_with_the_database(ctx, db_kind):
    assert ctx.settings.object_store == {"sqlite": "filesystem", "postgres": "s3"}[db_kind]


def test_a_stack_without_state_answers_204(tf):
    response = tf.get()
    assert response.status_code == 204
    assert response.content == b""


STORES = ["filesystem", "s3"]  # both stores on both databases (the pairings plus the crossed ones)


@pytest.mark.parametrize("settings_overrides", STORES, indirect=True)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_then_read_returns_the_exact_bytes_and_records_a_version(tf, world, stack_id, method):
    data = tf_state(1, resources=3)
    response = tf.put(data, method=method)
    assert response.status_code == 200, response.text
    assert response.json() == {"serial": 1, "lineage": "5e1f0c2a-lineage", "created": True}

    got = tf.get()
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-md5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["content-type"].startswith("application/json")

    (version,) = versions(world, stack_id)
    assert (version.serial, version.lineage, version.size) == (1, "5e1f0c2a-lineage", len(data))
    assert version.sha256 == hashlib.sha256(data).hexdigest()
    assert version.md5 == hashlib.md5(data).hexdigest()
    assert (version.resource_count, version.instance_count, version.terraform_version) == (3, 3, "1.9.8")
    assert version.created_by == "stack-token:t-write" and version.token_id and not version.forced
    assert version.object_key == f"state/{stack_id}/{version.id}.tfstate"
    assert state_objects(world, stack_id) == [version.object_key]
    assert head(world, stack_id).current_version_id == version.id
    assert [e.action for e in state_events(world, stack_id)] == ["state.write"]
    assert leftover_uploads(world) == []


@pytest.mark.parametrize("settings_overrides", STORES, indirect=True)
def test_serial_and_lineage_rules(tf, world, stack_id):
    assert tf.put(tf_state(5)).status_code == 200

    lower = tf.put(tf_state(4))
    assert lower.status_code == 409
    assert "serial 4 is lower than the current serial 5" in lower.json()["detail"]

    other = tf.put(tf_state(6, lineage="another-lineage"))
    assert other.status_code == 409
    assert "lineage 'another-lineage' differs" in other.json()["detail"]

    retry = tf.put(tf_state(5))  # the same bytes again: Terraform retrying after a lost answer
    assert retry.status_code == 200 and retry.json()["created"] is False

    changed = tf.put(tf_state(5, resources=2))
    assert changed.status_code == 409
    assert "serial 5 is already stored with different content" in changed.json()["detail"]

    assert tf.put(tf_state(9)).status_code == 200  # serials may jump
    assert [v.serial for v in versions(world, stack_id)] == [5, 9]
    assert tf.get().content == tf_state(9)
    assert len(state_objects(world, stack_id)) == 2  # refused writes left nothing behind
    assert leftover_uploads(world) == []


def test_content_md5_is_checked(tf, world, stack_id, client):
    data = tf_state(1)
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    response = client.post(tf.address, content=data, headers={"Authorization": tf.auth, "Content-MD5": wrong})
    assert response.status_code == 400
    assert "Content-MD5 does not match the body" in response.json()["detail"]
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        response = client.post(
            tf.address, content=data, headers={"Authorization": tf.auth, "Content-MD5": bad}
        )
        assert response.status_code == 400
        assert "base64-encoded MD5" in response.json()["detail"]
    # Without the header (curl) the body is accepted as it is.
    assert client.post(tf.address, content=data, headers={"Authorization": tf.auth}).status_code == 200
    assert [v.serial for v in versions(world, stack_id)] == [1]


NOT_STATES = [
    (b"", "the request body is empty"),
    (b"{not json", "malformed JSON"),
    (tf_state(1)[:-30], "malformed JSON"),
    (b"[1, 2]", "must be a JSON object, not an array"),
    (b'{"version": 4, "serial": 1}', "'lineage' field is missing"),
    (b'{"version": 7, "serial": 1, "lineage": "l", "resources": [], "outputs": {}}', "version 7"),
    (b'{"version": 4, "serial": -2, "lineage": "l", "resources": [], "outputs": {}}', "non-negative"),
    (b'{"version": 4, "serial": 1, "lineage": "l", "resources": {}, "outputs": {}}', "must be an array"),
    ('{"lineage": "\u00e9"}'.encode("latin-1"), "malformed JSON"),
]


def test_malformed_json_or_a_non_state_is_400_with_the_reason(tf, world, stack_id):
    for body, message in NOT_STATES:
        response = tf.put(body)
        assert response.status_code == 400, (body[:40], response.text)
        assert message in response.json()["detail"], (body[:40], response.text)
    assert versions(world, stack_id) == [] and state_objects(world, stack_id) == []
    assert leftover_uploads(world) == []
    assert tf.get().status_code == 204


def test_delete_keeps_the_versions_and_later_writes_start_above_them(tf, world, stack_id):
    tf.put(tf_state(1))
    tf.put(tf_state(2))
    response = tf.delete()
    assert response.status_code == 200 and response.json() == {"deleted": True}
    assert tf.get().status_code == 204
    assert [v.serial for v in versions(world, stack_id)] == [1, 2]  # history kept
    assert len(state_objects(world, stack_id)) == 2
    assert head(world, stack_id).deleted_at is not None
    assert [e.action for e in state_events(world, stack_id)] == ["state.write", "state.write", "state.delete"]
    assert tf.delete().json() == {"deleted": False}  # nothing left to delete: still 200

    reused = tf.put(tf_state(2, lineage="fresh"))
    assert reused.status_code == 409
    assert "serial 2 was already used by an earlier version" in reused.json()["detail"]
    assert tf.put(tf_state(3, lineage="fresh")).status_code == 200  # any lineage once deleted
    assert tf.get().content == tf_state(3, lineage="fresh")


# --------------------------------------------------------------------------- locking


def test_lock_write_unlock_as_terraform_does(tf, world, stack_id):
    info = lock_info(who="alice@laptop")
    assert tf.lock(info).status_code == 200
    with world.ctx.session() as s:
        row = s.get(StateLock, stack_id)
        assert (row.lock_id, row.who, row.created, row.operation) == (
            info["ID"],
            "alice@laptop",
            info["Created"],
            "OperationTypeApply",
        )

    assert tf.get().status_code == 204  # reads need no lock ID
    assert tf.put(tf_state(1)).status_code == 200  # carries ?ID= while locked
    assert tf.unlock().status_code == 200
    assert tf.put(tf_state(2)).status_code == 200  # unlocked: a write without ID is fine
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None


def test_a_second_locker_gets_423_with_the_holders_lock_info(tf, client, world, stack_id):
    holder = lock_info(who="alice@laptop")
    assert tf.lock(holder).status_code == 200
    other = TerraformClient(client, stack_id, new_token(world, stack_id, name="bob"))

    response = other.lock(lock_info(who="bob@ci"))
    assert response.status_code == 423
    assert response.json() == holder  # Terraform prints the holder from this body

    write = other.put(tf_state(1))
    assert write.status_code == 409
    assert write.json() == holder
    wrong = other.put(tf_state(1), lock_id="not-the-lock")
    assert wrong.status_code == 409 and wrong.json() == holder
    assert other.delete().status_code == 409

    unlock = other.unlock(json.dumps(lock_info(who="bob@ci")).encode())
    assert unlock.status_code == 409
    assert unlock.json() == holder
    assert versions(world, stack_id) == []

    # The holder's lock ID works whatever token carries it (Terraform's ID is the capability).
    assert other.put(tf_state(1), lock_id=holder["ID"]).status_code == 200


def test_relocking_with_the_holders_id_succeeds_and_unlocking_an_unlocked_state_is_fine(tf):
    info = lock_info()
    assert tf.lock(info).status_code == 200
    assert tf.lock(info).status_code == 200  # a retry whose first answer was lost
    assert tf.unlock().status_code == 200
    assert tf.unlock(json.dumps(info).encode()).status_code == 200  # not locked: nothing to do


def test_unlock_bodies_that_force_unlock_sends(tf, client, world, stack_id):
    info = lock_info()
    assert tf.lock(info).status_code == 200
    # `terraform force-unlock` (1.11; OpenTofu's client is the same) sends an empty body: it
    # cannot prove it knows the lock (test_state_terraform_cli.py runs it).
    empty = tf.unlock(b"")
    assert empty.status_code == 409 and empty.json() == info
    # A LockInfo with only the ID does.
    assert tf.unlock(json.dumps({"ID": info["ID"]}).encode()).status_code == 200
    # The ID may also come as ?ID= (curl).
    assert tf.lock(info).status_code == 200
    response = client.request(
        "UNLOCK", tf.address, headers={"Authorization": tf.auth}, params={"ID": info["ID"]}
    )
    assert response.status_code == 200


def test_lock_and_unlock_with_post_and_their_own_addresses(tf, client, world, stack_id):
    info = lock_info()
    lock_url, unlock_url = f"{tf.address}/lock", f"{tf.address}/unlock"
    assert tf.lock(info, method="POST", url=lock_url).status_code == 200
    taken = tf.lock(lock_info(), method="POST", url=lock_url)
    assert taken.status_code == 423 and taken.json() == info
    assert tf.unlock(method="POST", url=unlock_url).status_code == 200
    # lock_address = .../lock with the default LOCK method works too.
    assert tf.lock(info, method="LOCK", url=lock_url).status_code == 200
    assert tf.unlock(method="UNLOCK", url=unlock_url).status_code == 200


BAD_LOCK_BODIES = [
    (b"", "needs Terraform's LockInfo"),
    (b"{nope", "invalid LockInfo"),
    (b"[]", "invalid LockInfo"),
    (b'{"Who": "x"}', "ID"),
    (b'{"ID": ""}', "ID must not be empty"),
    (b'{"ID": 7}', "ID"),
    (b'{"ID": "a", "Who": "a\\u0000b"}', "control characters"),
    (json.dumps({"ID": "x" * 300}).encode(), "ID"),
    (json.dumps({"ID": "a", "Info": "i" * 5000}).encode(), "Info"),
]


def test_a_bad_lock_body_is_400(tf, world, stack_id):
    for body, message in BAD_LOCK_BODIES:
        response = tf.request("LOCK", tf.address, body)
        assert response.status_code == 400, (body[:40], response.text)
        assert message in response.json()["detail"], (body[:40], response.text)
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None


def test_fifty_concurrent_lockers_exactly_one_wins(live_http, world, stack_id):
    password = new_token(world, stack_id)
    infos = [lock_info(who=f"worker-{i}") for i in range(50)]
    barrier = threading.Barrier(50)

    def attempt(info):
        client = TerraformClient(live_http, stack_id, password)
        barrier.wait()
        return info, client.lock(info)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(attempt, infos))
    statuses = sorted(r.status_code for _, r in results)
    assert statuses == [200] + [423] * 49
    (winner,) = [info for info, r in results if r.status_code == 200]
    assert all(r.json() == winner for _, r in results if r.status_code == 423)
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id).lock_id == winner["ID"]


def test_concurrent_writers_never_lose_an_update(live_http, world, stack_id):
    password = new_token(world, stack_id)
    serials = list(range(1, 13))
    barrier = threading.Barrier(len(serials))

    def write(serial):
        client = TerraformClient(live_http, stack_id, password)
        barrier.wait()
        return serial, client.put(tf_state(serial))

    with ThreadPoolExecutor(len(serials)) as pool:
        results = list(pool.map(write, serials))
    assert {r.status_code for _, r in results} <= {200, 409}, [r.text for _, r in results]
    accepted = {serial for serial, r in results if r.status_code == 200}
    stored = versions(world, stack_id)
    # Every 200 is a stored version, every 409 is not; stored in increasing serial order.
    assert {v.serial for v in stored} == accepted and accepted
    by_creation = sorted(stored, key=lambda v: (v.created_at, v.serial))
    assert [v.serial for v in by_creation] == sorted(accepted)
    assert head(world, stack_id).current_version_id == by_creation[-1].id
    assert TerraformClient(live_http, stack_id, password).get().content == tf_state(max(accepted))
    assert len(state_objects(world, stack_id)) == len(stored)  # refused writes left no objects


# --------------------------------------------------------------------------- authentication


def test_missing_or_wrong_credentials_are_401_with_a_basic_challenge(tf, client, world, stack_id):
    good = new_token(world, stack_id)
    cases = {
        "none": {},
        "bearer": {"Authorization": f"Bearer {good}"},
        "not-base64": {"Authorization": "Basic !!!"},
        "no-colon": {"Authorization": "Basic " + base64.b64encode(b"justuser").decode()},
        "wrong-password": {"Authorization": basic(stack_id, good[:-4] + "AAAA")},
        "not-a-stack-token": {"Authorization": basic(stack_id, "hunter2")},
        "org-api-token": {"Authorization": basic(stack_id, world.token().token)},
        "wrong-username": {"Authorization": basic("admin", good)},
    }
    for name, headers in cases.items():
        for method in ("GET", "POST", "LOCK", "UNLOCK", "DELETE"):
            response = client.request(method, tf.address, headers=headers, content=b"{}")
            assert response.status_code == 401, (name, method, response.text)
            assert response.headers["www-authenticate"] == 'Basic realm="crucible"', name
            assert response.json()["detail"]


def test_a_token_of_another_stack_is_403(client, world, stack_id):
    other_stack = world.stack()["id"]
    foreign = TerraformClient(client, stack_id, new_token(world, other_stack))
    for response in (foreign.get(), foreign.put(tf_state(1)), foreign.lock(), foreign.delete()):
        assert response.status_code == 403
        assert "belongs to another stack" in response.json()["detail"]
    # Even when the username names the token's own stack.
    mixed = TerraformClient(client, stack_id, new_token(world, other_stack), username=other_stack)
    assert mixed.get().status_code == 403


def test_read_and_plan_tokens_are_limited(client, world, stack_id, tf):
    assert tf.put(tf_state(1)).status_code == 200
    reader = TerraformClient(client, stack_id, new_token(world, stack_id, "read"))
    assert reader.get().content == tf_state(1)
    for response in (reader.put(tf_state(2)), reader.lock(), reader.unlock(b""), reader.delete()):
        assert response.status_code == 403, response.text
        assert "read" in response.json()["detail"]

    run = make_run(world, stack_id, "proposed")
    with world.ctx.session() as s:
        _tid, secret = tokens.issue_run_token(s, world.ctx.auth.hasher, run)
    planner = TerraformClient(client, stack_id, secret)
    assert planner.get().status_code == 200
    assert planner.lock().status_code == 200
    assert planner.put(tf_state(2)).status_code == 403
    assert planner.delete().status_code == 403
    assert planner.unlock().status_code == 200
    with world.ctx.session() as s:
        assert s.get(StateToken, _tid).access == "plan"


def test_revocation_and_expiry_take_effect_at_once(client, world, stack_id):
    password = new_token(world, stack_id)
    tf = TerraformClient(client, stack_id, password)
    assert tf.get().status_code == 204  # verified and cached
    with world.ctx.session() as s:
        tok = s.exec(select(StateToken).where(StateToken.stack_id == stack_id)).one()
        tok.revoked_at = utcnow()
        s.add(tok)
    response = tf.get()
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

    run = make_run(world, stack_id)
    with world.ctx.session() as s:
        token_id, secret = tokens.issue_run_token(s, world.ctx.auth.hasher, run, timeout_seconds=60)
    runner = TerraformClient(client, stack_id, secret)
    assert runner.put(tf_state(1)).status_code == 200
    with world.ctx.session() as s:
        tok = s.get(StateToken, token_id)
        tok.expires_at = utcnow() - timedelta(seconds=1)
        s.add(tok)
    expired = runner.get()
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert expired.headers["www-authenticate"] == 'Basic realm="crucible"'


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_lost_during_a_request_is_401_with_a_basic_challenge(
    client, world, stack_id, monkeypatch, how
):
    """Authenticated at the start, revoked or expired before the transaction re-checks it."""
    real_identify = protocol._identify

    async def identify_then_lose_the_token(request, ctx, sid):
        identity = await real_identify(request, ctx, sid)

        def lose() -> None:
            with ctx.session() as s:
                tok = s.get(StateToken, identity.token_id)
                if how == "revoked":
                    tok.revoked_at = utcnow()
                else:
                    tok.expires_at = utcnow() - timedelta(seconds=1)
                s.add(tok)

        await run_in_threadpool(lose)
        return identity

    monkeypatch.setattr(protocol, "_identify", identify_then_lose_the_token)
    for method, body in [
        ("POST", tf_state(1)),
        ("PUT", tf_state(1)),
        ("DELETE", None),
        ("LOCK", json.dumps(lock_info()).encode()),
        ("UNLOCK", json.dumps(lock_info()).encode()),
    ]:
        tf = TerraformClient(client, stack_id, new_token(world, stack_id, name=f"t-{method}"))
        response = tf.request(method, tf.address, body)
        assert response.status_code == 401, (method, response.text)
        assert response.headers["www-authenticate"] == 'Basic realm="crucible"', method
        assert how in response.json()["detail"], (method, response.text)
    assert versions(world, stack_id) == [] and state_objects(world, stack_id) == []
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None


def test_run_tokens_stamp_their_run_on_versions_and_locks(client, world, stack_id):
    run = make_run(world, stack_id, "tracked")
    with world.ctx.session() as s:
        _tid, secret = tokens.issue_run_token(s, world.ctx.auth.hasher, run)
    runner = TerraformClient(client, stack_id, secret)
    assert runner.lock().status_code == 200
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id).run_id == run.id
    assert runner.put(tf_state(1)).status_code == 200
    (version,) = versions(world, stack_id)
    assert (version.run_id, version.created_by) == (run.id, f"run:{run.id}")
    with world.ctx.session() as s:
        assert tokens.revoke_run_tokens(s, run.id) == 1
    assert runner.unlock().status_code == 401


# --------------------------------------------------------------------------- size limits and failures


@pytest.mark.parametrize("settings_overrides", [{"state_max_bytes": 4096}], indirect=True)
def test_a_state_over_the_limit_is_413(tf, client, world, stack_id):
    big = tf_state(1, resources=60)
    assert len(big) > 4096
    response = tf.put(big)  # with Content-Length: refused before the body is read
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["detail"]
    assert "CRUCIBLE_STATE_MAX_BYTES" in response.json()["detail"]

    def chunked():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    streamed = client.post(tf.address, content=chunked(), headers={"Authorization": tf.auth})
    assert streamed.status_code == 413
    assert "CRUCIBLE_STATE_MAX_BYTES" in streamed.json()["detail"]
    assert versions(world, stack_id) == [] and leftover_uploads(world) == []
    assert tf.put(tf_state(1)).status_code == 200  # a small one still fits


def test_the_global_body_limit_does_not_apply_to_state_uploads(tf, world, as_actor, stack_body):
    big = tf_state(1, resources=12_000)
    assert len(big) > 2 * world.ctx.settings.max_request_bytes
    response = tf.put(big)
    assert response.status_code == 200, response.text[:200]
    assert tf.get().content == big
    # ...but still does to everything else.
    admin = as_actor(world.user("admin"))
    assert (
        admin.post("/api/v1/stacks", content=big, headers={"content-type": "application/json"}).status_code
        == 413
    )


def test_a_failed_write_leaves_the_previous_version_current_and_no_orphan_object(
    tf, world, stack_id, monkeypatch
):
    assert tf.put(tf_state(1)).status_code == 200
    (first,) = versions(world, stack_id)
    seen: list[list[str]] = []
    real_advance = state_service._advance

    def failing_advance(session, head_row, version):
        seen.append(state_objects(world, stack_id))  # the object is already stored...
        real_advance(session, head_row, version)
        raise OperationalError("INSERT", {}, Exception("the database went away"))  # ...the commit fails

    monkeypatch.setattr(state_service, "_advance", failing_advance)
    tf.retry_max = 0  # the answer itself, not Terraform's retry of it
    response = tf.put(tf_state(2))
    assert response.status_code == 503
    assert len(seen) == 1 and len(seen[0]) == 2
    monkeypatch.undo()

    assert [v.serial for v in versions(world, stack_id)] == [1]
    assert head(world, stack_id).current_version_id == first.id
    assert state_objects(world, stack_id) == [first.object_key]  # the new object was removed
    assert leftover_uploads(world) == []
    assert tf.get().content == tf_state(1)
    assert tf.put(tf_state(2)).status_code == 200  # and the retry succeeds


def _upload(tmp_path, data: bytes) -> state_service.Upload:
    path = tmp_path / f"upload-{uuid.uuid4().hex}.tfstate"
    path.write_bytes(data)
    return state_service.Upload(
        path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest()
    )


LOST = "server closed the connection unexpectedly"


def failing_next_commit(monkeypatch, engine, *, lands: bool) -> Callable[[], None]:
    """Returns arm(): the next COMMIT on the engine raises the driver's OperationalError, after
    committing when ``lands`` (the answer lost on the way back), else without committing."""
    dialect = engine.dialect
    real_commit = dialect.do_commit
    armed: list[bool] = []

    def do_commit(dbapi_connection) -> None:
        if not armed:
            return real_commit(dbapi_connection)
        armed.clear()
        if lands:
            real_commit(dbapi_connection)
        raise dialect.loaded_dbapi.OperationalError(LOST)

    monkeypatch.setattr(dialect, "do_commit", do_commit)
    return lambda: armed.append(True)


@pytest.mark.parametrize("when", ["refused-at-commit", "lost-during-commit", "lost-after-commit"])
def test_a_committed_version_never_loses_its_object(client, world, stack_id, tmp_path, monkeypatch, when):
    """The write transaction's COMMIT fails (nothing landed), or lands with its answer lost, or
    the connection is lost after it: the object goes only with a transaction that did not
    commit; a committed version keeps it, and Terraform's retry of the same bytes finds it."""
    ctx = world.ctx
    password = new_token(world, stack_id)
    identity = ctx.read(lambda s: tokens.verifier_for(ctx.auth).identify(s, password))
    data = tf_state(1)
    arm = failing_next_commit(monkeypatch, ctx.engine, lands=when == "lost-during-commit")

    @contextlib.contextmanager
    def sessions(readonly: bool = False) -> Iterator[Any]:
        if readonly:
            with ctx.session(readonly=True) as s:
                yield s
            return
        with ctx.session() as s:
            yield s
            if when != "lost-after-commit":
                arm()  # the next COMMIT is this session's
        if when == "lost-after-commit":
            raise OperationalError("COMMIT", {}, Exception(LOST))  # committed; then the connection died

    with pytest.raises(OperationalError, match=LOST):
        state_service.write_state(
            sessions,
            ctx.objects,
            identity,
            stack_id,
            _upload(tmp_path, data),
            parse.validate_state_bytes(data),
            lock_id=None,
        )
    stored = versions(world, stack_id)
    tf = TerraformClient(client, stack_id, password)
    if when == "refused-at-commit":
        assert stored == [] and state_objects(world, stack_id) == []
        assert tf.get().status_code == 204
        return
    (version,) = stored
    assert head(world, stack_id).current_version_id == version.id
    assert state_objects(world, stack_id) == [version.object_key]
    assert tf.get().content == data
    retry = tf.put(data)  # Terraform saw an error and sends the same bytes again
    assert retry.status_code == 200 and retry.json()["created"] is False
    assert [v.id for v in versions(world, stack_id)] == [version.id]


def corrupt(objects: ObjectStore, key: str) -> bytes:
    """Flip a byte near the end of a stored object behind the store's back, keeping the SHA-256
    stored with it (so only the store's own verification can notice); returns the new payload."""
    if isinstance(objects, S3ObjectStore):
        full_key = objects._full_key(key)
        stored = objects._client.get_object(Bucket=objects.bucket, Key=full_key)
        blob = bytearray(stored["Body"].read())
        blob[-10] ^= 0xFF
        assert stored["Metadata"]["sha256"]
        objects._client.put_object(
            Bucket=objects.bucket, Key=full_key, Body=bytes(blob), Metadata=stored["Metadata"]
        )
        return bytes(blob)
    path = objects._path(key)  # type: ignore[attr-defined]
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    return bytes(blob)


def test_a_corrupted_object_is_never_served_whole(live_http, world, stack_id):
    tf = TerraformClient(live_http, stack_id, new_token(world, stack_id))
    data = tf_state(1, resources=2000)  # several read chunks
    assert tf.put(data).status_code == 200
    (version,) = versions(world, stack_id)
    blob = corrupt(world.ctx.objects, version.object_key)
    with pytest.raises(httpx.HTTPError):
        response = tf.get()
        assert response.content != blob[-len(data) :]  # pragma: no cover - the read fails


def test_a_big_state_streams_over_real_http(live_http, world, stack_id):
    tf = TerraformClient(live_http, stack_id, new_token(world, stack_id))
    data = tf_state(7, resources=30_000)  # ~8 MB
    assert tf.put(data).status_code == 200
    response = tf.get()
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()
    (version,) = versions(world, stack_id)
    assert (version.resource_count, version.instance_count) == (30_000, 30_000)


@pytest.mark.parametrize("settings_overrides", [{"state_versions_kept": 2}], indirect=True)
def test_retention_prunes_old_versions_and_their_objects(tf, world, stack_id):
    for serial in range(1, 6):
        assert tf.put(tf_state(serial)).status_code == 200
    kept = versions(world, stack_id)
    assert [v.serial for v in kept] == [4, 5]
    assert sorted(state_objects(world, stack_id)) == sorted(v.object_key for v in kept)
    assert tf.get().content == tf_state(5)


# --------------------------------------------------------------------------- retries


class FaultInjector:
    """ASGI middleware in front of the app that spoils the first request of an armed method.

    ``lose_answer`` (default): the app handles the request completely — its transaction commits
    — but the client gets ``status`` instead of the app's answer, as from a proxy that timed out
    on the way back. Without it, the client gets ``status`` and the app never sees the request."""

    def __init__(self, app):
        self.app = app
        self.armed: dict[str, tuple[int, bool]] = {}
        self.seen: list[str] = []  # the method of every request that arrived
        self.lost: list[tuple[str, int]] = []  # (method, the app's own status) of lost answers
        self.url = ""

    def arm(self, method: str, status: int = 502, *, lose_answer: bool = True) -> None:
        self.armed[method] = (status, lose_answer)

    def count(self, method: str) -> int:
        return self.seen.count(method)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.seen.append(scope["method"])
        fault = self.armed.pop(scope["method"], None)
        if fault is None:
            return await self.app(scope, receive, send)
        status, lose_answer = fault
        if lose_answer:
            answered: list[int] = []

            async def swallow(message) -> None:
                if message["type"] == "http.response.start":
                    answered.append(message["status"])

            await self.app(scope, receive, swallow)
            self.lost.append((scope["method"], answered[0]))
        else:
            while (await receive()).get("more_body"):
                pass
        body = b"injected fault"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def faults(ctx) -> Iterator[FaultInjector]:
    """The API behind a FaultInjector, on a real loopback port (``faults.url``)."""
    injector = FaultInjector(create_api(ctx))
    with serving(injector) as url:
        injector.url = url
        yield injector


@pytest.fixture
def fast_tf(faults, world, stack_id) -> Iterator[TerraformClient]:
    """A TerraformClient to the faulty server with tiny waits that records them instead of sleeping."""
    with httpx.Client(base_url=faults.url, timeout=30) as http:
        yield TerraformClient(
            http,
            stack_id,
            new_token(world, stack_id),
            retry_wait_min=0.01,
            retry_wait_max=0.05,
            sleep=lambda _s: None,
        )


def test_lost_answers_to_lock_write_and_unlock_are_retried_as_terraform_expects(
    faults, fast_tf, world, stack_id
):
    info = lock_info(who="ci@runner")
    for method in ("LOCK", "POST", "UNLOCK"):
        faults.arm(method)

    # LOCK landed, its answer was lost: the retry is a re-LOCK by the holder, 200.
    assert fast_tf.lock(info).status_code == 200
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id).lock_id == info["ID"]

    # The write landed: the retry is the same serial with the same bytes, 200 and no new version.
    data = tf_state(1)
    write = fast_tf.put(data)
    assert write.status_code == 200 and write.json() == {
        "serial": 1,
        "lineage": "5e1f0c2a-lineage",
        "created": False,
    }
    (version,) = versions(world, stack_id)
    assert state_objects(world, stack_id) == [version.object_key]
    assert [e.action for e in state_events(world, stack_id)] == ["state.write"]

    # The unlock landed: the retry unlocks a state that is not locked, 200.
    unlock = fast_tf.unlock()
    assert unlock.status_code == 200 and unlock.json() == {"unlocked": False}
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None

    assert faults.lost == [("LOCK", 200), ("POST", 200), ("UNLOCK", 200)]
    assert [faults.count(m) for m in ("LOCK", "POST", "UNLOCK")] == [2, 2, 2]
    assert fast_tf.waits == [0.01, 0.01, 0.01]  # retry_wait_min before each first retry
    assert fast_tf.get().content == data
    assert leftover_uploads(world) == []


def test_a_503_before_the_commit_is_retried_after_retry_after(faults, fast_tf, world, stack_id, monkeypatch):
    real_advance = state_service._advance
    failures: list[int] = []

    def failing_once(session, head_row, version):
        real_advance(session, head_row, version)
        if not failures:
            failures.append(version.serial)
            raise OperationalError("INSERT", {}, Exception("the database went away"))

    monkeypatch.setattr(state_service, "_advance", failing_once)
    data = tf_state(1)
    response = fast_tf.put(data)
    assert response.status_code == 200 and response.json()["created"] is True
    assert failures == [1] and faults.count("POST") == 2
    assert fast_tf.waits == [5.0]  # Crucible's Retry-After: 5, which go-retryablehttp honours on 503
    (version,) = versions(world, stack_id)
    assert state_objects(world, stack_id) == [version.object_key]  # the failed attempt's object went
    assert fast_tf.get().content == data


def test_which_answers_are_retried(faults, fast_tf, world, stack_id):
    for status in (429, 500, 502, 503, 504):
        faults.arm("GET", status, lose_answer=False)
        before = faults.count("GET")
        assert fast_tf.get().status_code == 204, status  # the retry reached the app
        assert faults.count("GET") - before == 2, status
    # 501 Not Implemented is final: one request, no retry, the answer as it came.
    faults.arm("LOCK", 501, lose_answer=False)
    fast_tf.waits.clear()
    response = fast_tf.lock()
    assert response.status_code == 501 and faults.count("LOCK") == 1 and fast_tf.waits == []
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None
    # Retries stop after retry_max (2) retries: the last answer is what the client sees.
    faults.arm("GET", 502, lose_answer=False)
    tf_once = TerraformClient(fast_tf.http, stack_id, new_token(world, stack_id), retry_max=0)
    assert tf_once.get().status_code == 502 and tf_once.waits == []


def test_connection_errors_are_retried_with_exponential_waits():
    with httpx.Client(base_url=f"http://127.0.0.1:{_free_port()}", timeout=2) as http:  # nothing listens
        tf = TerraformClient(
            http, "stk-0000000000000000", "crus_x", retry_wait_min=0.01, sleep=lambda _s: None
        )
        with pytest.raises(httpx.ConnectError):
            tf.get()
    assert tf.waits == [0.01, 0.02]


# --------------------------------------------------------------------------- no input is a 5xx


RESOURCE = st.dictionaries(
    st.sampled_from(["instances", "x"]), st.lists(st.integers()) | st.lists(st.just({}))
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "version": st.sampled_from([4, 3, "4", 4.5, None]),
            "serial": st.one_of(st.integers(-3, 2**70), st.text(max_size=3)),
            "lineage": st.one_of(st.text(max_size=5), st.integers()),
            "resources": st.one_of(st.lists(RESOURCE, max_size=3), st.just({})),
            "outputs": st.one_of(st.just({}), st.just([])),
        }
    ).map(lambda v: json.dumps(v).encode()),
)
METHODS = st.sampled_from(["POST", "PUT", "LOCK", "UNLOCK"])


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=BODIES,
    method=st.sampled_from(["POST", "PUT", "LOCK", "UNLOCK"]),
    lock_id=st.none() | st.text(max_size=5),
)
def test_no_body_causes_a_server_error(tf, body, method, lock_id):
    params = {"ID": lock_id} if lock_id else None
    response = tf.request(method, tf.address, body, params=params)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()
    tf.request("UNLOCK", tf.address, json.dumps({"ID": lock_id or ""}).encode())
