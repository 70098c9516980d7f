"""The audit trail: hash chain, tamper evidence, `crucible audit verify`, queries and export."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select
from starlette.testclient import TestClient

from backend.audit import service as audit
from backend.audit.models import AuditEvent
from backend.auth.models import Role
from backend.db import session_scope

AUDIT = "/api/v1/audit"
CRUCIBLE = Path(sys.executable).with_name("crucible")


def _record_many(world, n: int, action: str = "stack.update", org_id: str | None = None) -> list[int]:
    ids = []
    with world.ctx.session() as s:
        for i in range(n):
            ev = audit.record(
                s,
                world.system(org_id),
                action,
                resource_type="stack",
                resource_id=f"stk-{i:016x}",
                after={"n": i},
            )
            ids.append(ev.id)
    return ids


def _drop_append_only_triggers(engine) -> None:
    """What an attacker with the database owner's rights can do."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER audit_event_append_only ON audit_event"))
        else:
            conn.execute(text("DROP TRIGGER audit_event_no_update"))
            conn.execute(text("DROP TRIGGER audit_event_no_delete"))


def _sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


# ----------------------------------------------------------------------------- the chain


def test_every_mutation_extends_a_verifiable_chain(world, as_actor, stack_body):
    api = as_actor(world.user(Role.admin))
    stack = api.post("/api/v1/stacks", json=stack_body()).json()
    api.patch(f"/api/v1/stacks/{stack['id']}", json={"branch": "dev"})
    api.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    api.delete(f"/api/v1/stacks/{stack['id']}")

    events = world.audit_events()
    assert [e.action for e in events][-4:] == ["stack.create", "stack.update", "token.create", "stack.delete"]
    assert events[0].prev_hash == audit.GENESIS
    for prev, event in itertools.pairwise(events):
        assert event.prev_hash == prev.hash
    assert all(event.hash == audit.compute_hash(event) for event in events)
    result = audit.verify_chain(world.ctx.engine)
    assert (result.ok, result.checked, result.head_hash) == (True, len(events), events[-1].hash)


def test_an_empty_log_verifies(ctx):
    result = audit.verify_chain(ctx.engine)
    assert (result.ok, result.checked, result.head_hash) == (True, 0, audit.GENESIS)


def test_verification_spans_batches(world):
    ids = _record_many(world, 7)
    assert audit.verify_chain(world.ctx.engine, batch=3).checked == len(ids)


def test_database_refuses_update_and_delete(world):
    (first, *_rest) = _record_many(world, 3)
    for statement in (
        "UPDATE audit_event SET actor = 'mallory' WHERE id = :id",
        "DELETE FROM audit_event WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            _sql(world.ctx.engine, statement, id=first)
    with world.ctx.session() as s:
        assert s.get(AuditEvent, first).actor == "system"
    assert audit.verify_chain(world.ctx.engine).ok


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE audit_event SET actor = 'someone-else' WHERE id = :id",
        "UPDATE audit_event SET after = NULL WHERE id = :id",
        "UPDATE audit_event SET resource_id = 'stk-ffffffffffffffff' WHERE id = :id",
        "UPDATE audit_event SET org_id = 'org-ffffffffffffffff' WHERE id = :id",
    ],
    ids=["actor", "after", "resource", "org"],
)
def test_tampered_content_is_detected_at_the_first_altered_entry(world, tamper):
    ids = _record_many(world, 6)
    _drop_append_only_triggers(world.ctx.engine)
    _sql(world.ctx.engine, tamper, id=ids[2])
    _sql(world.ctx.engine, tamper, id=ids[4])
    result = audit.verify_chain(world.ctx.engine)
    assert result.ok is False
    assert result.first_bad_id == ids[2]
    assert result.checked == 2
    assert "hash" in result.reason


def test_tampered_timestamp_is_detected(world):
    ids = _record_many(world, 4)
    _drop_append_only_triggers(world.ctx.engine)
    with world.ctx.session() as s:
        event = s.get(AuditEvent, ids[1])
        event.at = event.at - timedelta(days=1)
    result = audit.verify_chain(world.ctx.engine)
    assert (result.ok, result.first_bad_id) == (False, ids[1])


def test_rehashing_a_tampered_entry_breaks_the_next_link(world):
    """Recomputing the altered entry's own hash does not help: its successor points elsewhere."""
    ids = _record_many(world, 5)
    _drop_append_only_triggers(world.ctx.engine)
    with world.ctx.session() as s:
        event = s.get(AuditEvent, ids[2])
        event.after = {"n": "forged"}
        event.hash = audit.compute_hash(event)
    result = audit.verify_chain(world.ctx.engine)
    assert (result.ok, result.first_bad_id) == (False, ids[3])
    assert "previous-hash link broken" in result.reason


def test_deleting_an_entry_in_the_middle_is_detected(world):
    ids = _record_many(world, 5)
    _drop_append_only_triggers(world.ctx.engine)
    _sql(world.ctx.engine, "DELETE FROM audit_event WHERE id = :id", id=ids[2])
    result = audit.verify_chain(world.ctx.engine)
    assert (result.ok, result.first_bad_id, result.checked) == (False, ids[3], 2)


# ----------------------------------------------------------------------------- CLI


def _cli_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUCIBLE_")}
    env.update(
        CRUCIBLE_DATABASE_URL=settings.sqlalchemy_url,
        CRUCIBLE_DATA_DIR=str(settings.data_dir),
        CRUCIBLE_LOG_LEVEL="WARNING",
    )
    return env


@pytest.mark.slow
def test_cli_audit_verify_exit_codes(world, settings):
    ids = _record_many(world, 4)
    env = _cli_env(settings)
    ok = subprocess.run(
        [str(CRUCIBLE), "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert f"audit log intact: {len(ids)} entries" in ok.stdout

    _drop_append_only_triggers(world.ctx.engine)
    _sql(world.ctx.engine, "UPDATE audit_event SET actor = 'mallory' WHERE id = :id", id=ids[1])
    bad = subprocess.run(
        [str(CRUCIBLE), "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"TAMPERED at entry {ids[1]}" in bad.stderr


# ----------------------------------------------------------------------------- listing


@pytest.fixture
def history(world):
    """A small history by two users and a token, plus noise in another org."""
    alice = world.user(Role.admin, email="alice@org0x.test")
    bob = world.user(Role.member, email="bob@org0x.test")
    token = world.token(Role.member, name="deployer")
    other = world.new_org()
    world.user(Role.admin, other)
    _record_many(world, 3, org_id=other)
    return {"alice": alice, "bob": bob, "token": token, "other_org": other}


@pytest.fixture
def alice_api(history, as_actor):
    return as_actor(history["alice"])


def _page(api, **params) -> dict:
    response = api.get(AUDIT, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_list_is_newest_first_and_scoped_to_the_org(world, history, alice_api):
    body = _page(alice_api, limit=200)
    mine = world.audit_events(world.org_id)
    assert body["count"] == len(mine)
    assert [e["id"] for e in body["data"]] == [e.id for e in reversed(mine)]
    assert not {e["id"] for e in body["data"]} & {e.id for e in world.audit_events(history["other_org"])}


def test_filter_by_actor_and_category(world, history, alice_api, as_actor, stack_body):
    as_actor(history["bob"]).post("/api/v1/stacks", json=stack_body())
    as_actor(history["token"]).post("/api/v1/stacks", json=stack_body(name="by-token"))

    bob = _page(alice_api, actor="bob@org0x.test")
    assert bob["count"] == 2 and {e["action"] for e in bob["data"]} == {"auth.login", "stack.create"}
    by_token = _page(alice_api, actor="token:deployer")
    assert [e["action"] for e in by_token["data"]] == ["stack.create"]
    stacks = _page(alice_api, category="stack")
    assert [e["actor"] for e in stacks["data"]] == ["token:deployer", "bob@org0x.test"]
    both = _page(alice_api, category="auth", actor="bob@org0x.test")
    assert [e["action"] for e in both["data"]] == ["auth.login"]
    assert _page(alice_api, actor="BOB@org0x.test")["count"] == 0  # exact match
    assert alice_api.get(AUDIT, params={"category": "Stack!"}).status_code == 422


def _at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


def test_filter_by_time_window(history, alice_api):
    events = list(reversed(_page(alice_api, limit=200)["data"]))  # oldest first
    assert len({e["at"] for e in events}) == len(events)
    middle = events[len(events) // 2]
    pivot = _at(middle)
    since = _page(alice_api, since=pivot.isoformat(), limit=200)["data"]
    until = _page(alice_api, until=pivot.isoformat(), limit=200)["data"]
    assert middle["id"] in {e["id"] for e in since}  # since is inclusive
    assert middle["id"] not in {e["id"] for e in until}  # until is exclusive
    assert sorted(e["id"] for e in since + until) == sorted(e["id"] for e in events)
    # The same instant written in another zone selects the same events.
    shifted = pivot.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert _page(alice_api, since=shifted, limit=200)["data"] == since
    window = _page(alice_api, since=_at(events[1]).isoformat(), until=_at(events[3]).isoformat())
    assert [e["id"] for e in window["data"]] == [events[2]["id"], events[1]["id"]]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59-05:00"])
def test_bad_dates_are_field_errors(alice_api, value):
    response = alice_api.get(AUDIT, params={"since": value})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", "since"]


def test_keyset_pagination_visits_every_event_once(world, history, alice_api):
    _record_many(world, 8)
    total = _page(alice_api, limit=1)["count"]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"before_id": cursor} if cursor else {})
        page = _page(alice_api, **params)
        assert page["count"] == total  # the count ignores the cursor
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_before_id"]
        if cursor is None:
            break
        assert cursor == page["data"][-1]["id"]
    assert len(seen) == total and seen == sorted(seen, reverse=True)
    # New events do not shift a cursor's page.
    first = _page(alice_api, limit=3)
    _record_many(world, 2)
    assert _page(alice_api, limit=3, before_id=first["next_before_id"])["data"][0]["id"] == seen[3]


def test_keyset_pagination_combines_with_filters(world, history, alice_api):
    _record_many(world, 5)
    page = _page(alice_api, category="stack", limit=2)
    rest = _page(alice_api, category="stack", limit=10, before_id=page["next_before_id"])
    assert [e["category"] for e in page["data"] + rest["data"]] == ["stack"] * 5


# ----------------------------------------------------------------------------- export


def test_csv_export_streams_the_filtered_log(world, history, alice_api):
    response = alice_api.get(f"{AUDIT}/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="crucible-audit.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    listed = _page(alice_api, limit=200)
    assert list(rows[0]) == audit.EXPORT_COLUMNS
    assert [int(r["id"]) for r in rows] == [e["id"] for e in listed["data"]]
    by_id = {e["id"]: e for e in listed["data"]}
    for row in rows:
        event = by_id[int(row["id"])]
        assert row["hash"] == event["hash"] and row["actor"] == event["actor"]
        assert (json.loads(row["after"]) if row["after"] else None) == event["after"]

    filtered = alice_api.get(f"{AUDIT}/export", params={"format": "csv", "category": "auth"})
    rows = list(csv.DictReader(io.StringIO(filtered.text)))
    assert rows and {r["category"] for r in rows} == {"auth"}
    assert len(rows) == _page(alice_api, category="auth")["count"]


def test_json_export_matches_the_list(world, history, alice_api):
    response = alice_api.get(f"{AUDIT}/export", params={"format": "json"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    exported = json.loads(response.text)
    assert exported == _page(alice_api, limit=200)["data"]
    only_alice = json.loads(
        alice_api.get(f"{AUDIT}/export", params={"format": "json", "actor": "alice@org0x.test"}).text
    )
    assert only_alice and {e["actor"] for e in only_alice} == {"alice@org0x.test"}
    none = alice_api.get(f"{AUDIT}/export", params={"format": "json", "since": "2999-01-01T00:00:00Z"})
    assert json.loads(none.text) == []


def test_export_of_a_long_log_crosses_batches(world, history):
    """Exports are streamed in batches; no event is lost or repeated at the seams."""
    _record_many(world, 11)
    principal = world.system()
    expected = [e.id for e in reversed(world.audit_events(world.org_id))]
    for fmt in ("json", "csv"):
        body = "".join(audit.iter_export(world.ctx.engine, principal, audit.AuditFilter(), fmt, batch=4))
        if fmt == "json":
            ids = [e["id"] for e in json.loads(body)]
        else:
            ids = [int(r["id"]) for r in csv.DictReader(io.StringIO(body))]
        assert ids == expected, fmt


def test_export_rejects_unknown_format(alice_api):
    assert alice_api.get(f"{AUDIT}/export", params={"format": "xml"}).status_code == 422


# ----------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_concurrent_appends_never_fork_the_chain(world):
    threads, per_thread = 8, 10
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with session_scope(world.ctx.engine) as s:
                    audit.record(s, world.system(), "stack.update", resource_id=f"stk-{n:08x}{i:08x}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    with world.ctx.session() as s:
        events = list(s.exec(select(AuditEvent).order_by(AuditEvent.id)).all())
    assert len(events) == threads * per_thread
    prev_hashes = [e.prev_hash for e in events]
    assert len(set(prev_hashes)) == len(prev_hashes), (
        "two events claim the same predecessor: the chain forked"
    )
    result = audit.verify_chain(world.ctx.engine)
    assert (result.ok, result.checked) == (True, threads * per_thread)


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_csv_export_defuses_spreadsheet_formulas(history, app, alice_api):
    """User agents are attacker-chosen (failed logins record them): no cell may start a formula."""
    with TestClient(app, client=("203.0.113.9", 1)) as c:
        c.post(
            "/api/v1/auth/login",
            json={"email": history["alice"].email, "password": "wrong"},
            headers={"User-Agent": '=HYPERLINK("http://evil.example","x")'},
        )
    rows = list(csv.DictReader(io.StringIO(alice_api.get(f"{AUDIT}/export", params={"format": "csv"}).text)))
    failed = [r for r in rows if r["action"] == "auth.login_failed"]
    assert failed and failed[0]["user_agent"] == '\'=HYPERLINK("http://evil.example","x")'
    assert not any(v.startswith(("=", "+", "@")) for r in rows for v in r.values())
