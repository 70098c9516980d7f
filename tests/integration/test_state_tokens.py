"""Stack tokens: created by members and shown once, listed without secrets, revoked at once,
verified with argon2 only on a cache miss; run tokens bound to their run and short-lived.
On SQLite + filesystem store and PostgreSQL + S3 (moto's server)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from backend.audit.models import AuditEvent
from backend.auth.models import Role
from backend.state import tokens
from backend.state.models import StateToken, TokenAccess
from backend.timeutil import as_utc, utcnow
from tests.integration.test_state_protocol import (
    TerraformClient,
    make_run,
    paired_store_settings,
    tf_state,
)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, db_kind: str) -> dict[str, Any]:
    return paired_store_settings(request, db_kind)


@pytest.fixture
def stack_id(world) -> str:
    return world.stack()["id"]


def tokens_url(stack_id: str) -> str:
    return f"/api/v1/stacks/{stack_id}/tokens"


def test_a_member_creates_a_token_that_is_shown_once_and_works(as_actor, member, world, client, stack_id):
    api = as_actor(member)
    response = api.post(tokens_url(stack_id), json={"name": "laptop"})
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["token"]
    assert secret.startswith("crus_") and created["access"] == "write"
    assert created["id"].startswith("stt-") and created["created_by"] == member.email
    assert secret.startswith(created["prefix"]) and len(created["prefix"]) == len("crus_") + 12
    assert created["last_used_at"] is None and created["revoked_at"] is None

    tf = TerraformClient(client, stack_id, secret)
    assert tf.put(tf_state(1)).status_code == 200

    listed = api.get(tokens_url(stack_id)).json()
    assert listed["count"] == 1
    (row,) = listed["data"]
    assert "token" not in row and secret not in json.dumps(listed)
    assert row["id"] == created["id"] and row["last_used_at"] is not None

    with world.ctx.session() as s:
        stored = s.get(StateToken, created["id"])
        assert stored.secret_hash.startswith("$argon2id$") and secret not in stored.secret_hash


def test_access_and_name_are_validated(as_actor, member, stack_id):
    api = as_actor(member)
    read = api.post(tokens_url(stack_id), json={"name": "dashboards", "access": "read"})
    assert read.status_code == 201 and read.json()["access"] == "read"
    for body in (
        {"name": "x", "access": "plan"},
        {"name": "x", "access": "admin"},
        {"name": ""},
        {"name": "a\x00b"},
        {"name": "x" * 101},
        {"name": "x", "extra": 1},
        {},
    ):
        response = api.post(tokens_url(stack_id), json=body)
        assert response.status_code == 422, (body, response.text)


def test_viewers_list_but_cannot_create_or_revoke(as_actor, viewer, member, stack_id):
    created = as_actor(member).post(tokens_url(stack_id), json={"name": "ci"}).json()
    api = as_actor(viewer)
    assert api.get(tokens_url(stack_id)).json()["count"] == 1
    refused = api.post(tokens_url(stack_id), json={"name": "mine"})
    assert refused.status_code == 403
    assert "creating state tokens requires the member role" in refused.json()["detail"]
    assert api.delete(f"{tokens_url(stack_id)}/{created['id']}").status_code == 403


def test_revocation_is_immediate_and_audited_without_the_secret(as_actor, member, world, client, stack_id):
    api = as_actor(member)
    created = api.post(tokens_url(stack_id), json={"name": "ci"}).json()
    tf = TerraformClient(client, stack_id, created["token"])
    assert tf.get().status_code == 204  # verified, now cached

    assert api.delete(f"{tokens_url(stack_id)}/{created['id']}").status_code == 204
    response = tf.get()
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert api.delete(f"{tokens_url(stack_id)}/{created['id']}").status_code == 204  # idempotent
    listed = api.get(tokens_url(stack_id)).json()["data"]
    assert listed[0]["revoked_at"] is not None

    with world.ctx.session() as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.resource_id == stack_id)).all()
    actions = [e.action for e in events]
    assert actions.count("state.token_create") == 1 and actions.count("state.token_revoke") == 1
    assert created["token"] not in json.dumps([e.model_dump(mode="json") for e in events])
    create = next(e for e in events if e.action == "state.token_create")
    assert create.after == {"token_id": created["id"], "name": "ci", "access": "write"}


def test_tokens_of_another_stack_or_org_are_404(as_actor, member, world, stack_id, other_org):
    api = as_actor(member)
    other_stack = world.stack()["id"]
    theirs = api.post(tokens_url(other_stack), json={"name": "theirs"}).json()
    missing = api.delete(f"{tokens_url(stack_id)}/{theirs['id']}")
    assert missing.status_code == 404 and missing.json()["detail"] == f"state token {theirs['id']} not found"

    outsider = as_actor(world.user(Role.admin, other_org))
    for method, body in (("GET", None), ("POST", {"name": "x"})):
        response = outsider.request(method, tokens_url(stack_id), json=body)
        assert response.status_code == 404 and response.json()["detail"] == f"stack {stack_id} not found"
    assert outsider.delete(f"{tokens_url(other_stack)}/{theirs['id']}").status_code == 404


def test_argon2_runs_once_per_token_then_the_cache_answers(world, client, stack_id, monkeypatch):
    with world.ctx.session() as s:
        _public, secret = tokens.create_token(
            s, world.ctx.auth.hasher, world.system(), stack_id, "cached", "write"
        )
    verifier = tokens.verifier_for(world.ctx.auth)
    calls: list[str] = []
    real = verifier._verify_hash

    def counting(stored: str, plain: str) -> bool:
        calls.append(plain)
        return real(stored, plain)

    monkeypatch.setattr(verifier, "_verify_hash", counting)
    tf = TerraformClient(client, stack_id, secret)
    # Minted by this process: known without argon2 (what a run's first request relies on).
    assert tf.get().status_code == 204
    assert calls == []

    monkeypatch.setattr(tokens, "_verified", {})  # as in another process: nothing known yet
    assert tf.lock().status_code == 200
    assert tf.get().status_code == 204
    assert tf.put(tf_state(1)).status_code == 200
    assert tf.unlock().status_code == 200
    assert len(calls) == 1
    # A wrong password with a valid prefix still pays argon2, and is refused.
    wrong = TerraformClient(client, stack_id, secret[:-3] + "xyz")
    assert wrong.get().status_code == 401
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("run_type", "access"),
    [("tracked", "write"), ("destroy", "write"), ("proposed", "plan"), ("drift", "plan")],
)
def test_run_tokens_follow_the_run_type_and_expire(world, stack_id, run_type, access):
    run = make_run(world, stack_id, run_type)
    before = utcnow()
    with world.ctx.session() as s:
        token_id, secret = tokens.issue_run_token(s, world.ctx.auth.hasher, run, timeout_seconds=600)
    assert secret.startswith("crus_")
    with world.ctx.session() as s:
        tok = s.get(StateToken, token_id)
        assert (tok.access, tok.run_id, tok.stack_id) == (access, run.id, stack_id)
        expires = as_utc(tok.expires_at)
    assert (
        before + timedelta(seconds=600)
        < expires
        <= utcnow() + timedelta(seconds=600) + tokens.RUN_TOKEN_MARGIN
    )
    assert tokens.run_token_access(run_type) is TokenAccess(access)


def test_run_tokens_are_listed_while_active_and_revoked_with_their_run(as_actor, viewer, world, stack_id):
    run = make_run(world, stack_id)
    with world.ctx.session() as s:
        token_id, _secret = tokens.issue_run_token(s, world.ctx.auth.hasher, run)
        expired_id, _ = tokens.issue_run_token(s, world.ctx.auth.hasher, run)
        s.get(StateToken, expired_id).expires_at = utcnow() - timedelta(seconds=1)
    api = as_actor(viewer)
    listed = api.get(tokens_url(stack_id)).json()["data"]
    assert [t["id"] for t in listed] == [token_id] and listed[0]["run_id"] == run.id
    with world.ctx.session() as s:
        assert tokens.revoke_run_tokens(s, run.id) == 2
        assert tokens.revoke_run_tokens(s, run.id) == 0
    assert api.get(tokens_url(stack_id)).json()["data"] == []


def test_tokens_go_with_their_stack(as_actor, admin, world, client, stack_id):
    created = as_actor(admin).post(tokens_url(stack_id), json={"name": "ci"}).json()
    assert as_actor(admin).delete(f"/api/v1/stacks/{stack_id}").status_code == 204
    with world.ctx.session() as s:
        assert s.get(StateToken, created["id"]) is None
    assert TerraformClient(client, stack_id, created["token"]).get().status_code == 401
