"""The state endpoint as Terraform's ``http`` backend client speaks to it.

``TerraformClient`` sends exactly what internal/backend/remote-state/http/client.go sends: basic
auth (username = stack id), ``Content-Type: application/json`` and ``Content-MD5`` on every body,
``?ID=<lock id>`` on writes while it holds the lock, LockInfo bodies on LOCK and UNLOCK. The
answers it reads are the ones the client branches on: 200/204 on GET, 200 on writes, 200 or
423/409 (with the holder's LockInfo) on LOCK, 200 on UNLOCK.

Most tests use the in-process TestClient; the concurrency tests and the streaming checks run
against a real uvicorn server on a loopback port. Every test runs on SQLite and PostgreSQL
(filesystem store); the write/read/version path also runs against S3 (moto's server over HTTP).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from backend.api import create_api
from backend.audit.models import AuditEvent
from backend.auth.principal import system_principal
from backend.runs.models import Run
from backend.state import service as state_service
from backend.state import tokens
from backend.state.models import StateHead, StateLock, StateToken, StateVersion
from backend.timeutil import new_id, utcnow
from tests.integration.test_object_store_s3 import moto_endpoint  # noqa: F401  (a fixture)

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


class TerraformClient:
    """What Terraform's http backend client sends, over any httpx-compatible client."""

    def __init__(self, http, stack_id: str, password: str, username: str | None = None):
        self.http = http
        self.stack_id = stack_id
        self.address = f"/api/v1/state/{stack_id}"
        self.auth = basic(username if username is not None else stack_id, password)
        self.lock_id: str | None = None
        self.json_lock_info: bytes | None = None

    def request(self, method: str, url: str, data: bytes | None = None, params: dict | None = None):
        headers = {"Authorization": self.auth}
        if data is not None:
            headers["Content-Type"] = "application/json"
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        return self.http.request(method, url, content=data, headers=headers, params=params)

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


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Tests pass a dict (indirect parametrize), or "s3" to use moto's S3 server."""
    param = getattr(request, "param", None)
    if param == "s3":
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        return {
            "object_store": "s3",
            "s3_endpoint_url": request.getfixturevalue("moto_endpoint"),
            "s3_bucket": f"state-{uuid.uuid4().hex[:12]}",
            "s3_access_key_id": "crucible-test",
            "s3_secret_access_key": "crucible-test-secret",
        }
    return dict(param or {})


@pytest.fixture
def stack_id(world, ctx) -> str:
    if ctx.settings.object_store == "s3":
        ctx.objects.ensure_bucket()
    return world.stack()["id"]


@pytest.fixture
def tf(client, world, stack_id) -> TerraformClient:
    return TerraformClient(client, stack_id, new_token(world, stack_id))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_url(ctx) -> Iterator[str]:
    """The API on a real loopback port (uvicorn in a thread)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_api(ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
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
def live_http(live_url) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(base_url=live_url, timeout=60, limits=limits) as http:
        yield http


# --------------------------------------------------------------------------- read / write


def test_a_stack_without_state_answers_204(tf):
    response = tf.get()
    assert response.status_code == 204
    assert response.content == b""


STORES = [pytest.param({}, id="filesystem"), pytest.param("s3", id="s3")]


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
    # Older clients' force-unlock sends an empty body: it cannot prove it knows the lock.
    empty = tf.unlock(b"")
    assert empty.status_code == 409 and empty.json() == info
    # Newer ones send a LockInfo with only the ID.
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


def test_a_corrupted_object_is_never_served_whole(live_http, world, stack_id):
    tf = TerraformClient(live_http, stack_id, new_token(world, stack_id))
    data = tf_state(1, resources=2000)  # several read chunks
    assert tf.put(data).status_code == 200
    (version,) = versions(world, stack_id)
    path = world.ctx.objects._path(version.object_key)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(httpx.HTTPError):
        response = tf.get()
        assert response.content != bytes(blob[-len(data) :])  # pragma: no cover - the read fails


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
