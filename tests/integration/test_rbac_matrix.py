"""Every route, by every kind of caller, against its own org and another org.

Callers: anonymous, a logged-in viewer/member/admin (session cookie), and API tokens with each
role. Expected:

  anonymous                         → 401 with WWW-Authenticate (public routes excepted)
  role below the route's minimum    → 403, whether the resource is missing, ours or foreign
  another organization's resource   → 404, indistinguishable from an id that does not exist
  otherwise                         → the route's success status, with its effect in our org only

Whatever is refused leaves no trace: no audit event, the target resource unchanged.
A route that is not listed in MATRIX fails test_matrix_covers_every_route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import routing as fastapi_routing
from sqlmodel import select
from starlette.testclient import TestClient

from backend.api import create_api
from backend.auth.models import ApiToken, Membership, Role
from backend.config import load_settings
from backend.context import build_context
from backend.policies.models import Policy, PolicyLabel, PolicyVersion, StackPolicy, StackValidation
from backend.runs.lifecycle import RunStatus
from backend.runs.models import Run
from backend.stacks.models import Stack, StackApprover, StackLabel, StackVariable
from backend.state import service as state_service
from backend.state import tokens as state_tokens
from backend.state.models import StateHead, StateLock, StateToken, StateVersion
from backend.timeutil import iso, new_id, utcnow
from backend.vcs.models import RunVcs, StackWebhook, WebhookDelivery

CALLERS: list[tuple[str, Role | None]] = [("anonymous", None)] + [
    (kind, role) for kind in ("session", "token") for role in (Role.viewer, Role.member, Role.admin)
]
SCOPES = ("own", "other")


@dataclass
class Cell:
    """One request of the matrix: who calls, and whose resources are involved."""

    world: Any
    caller: Any  # conftest.Actor
    scope: str
    caller_org: str  # the caller's org (for anonymous callers: the org the cell is about)
    resource_org: str  # the org that owns the path resource
    resource_id: str | None = None
    user_id: str | None = None  # the {user_id} in the path: the caller, or a user of its org
    token_id: str | None = None  # the {token_id} of a stack token (resource "state_token")
    policy_id: str | None = None  # the {policy_id} under a stack (resources "stack_policy*")


@dataclass(frozen=True)
class Rule:
    min_role: Role | None  # None: public
    ok: int
    # The {id} in the path, created per cell: "stack", "stack_var" (a stack with variable X),
    # "token", "run:<status>" (a run in that status; "run:planned" also has a plan JSON),
    # "state" (a stack with state version serial 1), "state_locked" (the same, locked) or
    # "state_token" (a stack with a stack token, the {token_id}), "policy", "stack_policy" (a
    # stack with a policy attached, the {policy_id}), "stack_and_policy" (a stack, and an
    # unattached policy of the caller's org) or "state_validation" (a stack with state serial 1,
    # a validation policy attached and a stored result of it).
    resource: str | None = None
    body: Callable[[Cell], dict[str, Any]] | None = None
    params: dict[str, str] | None = None
    effect: Callable[[Cell, Any], None] | None = None  # asserts the effect of an allowed call
    users_only: bool = False  # API tokens get 403 whatever their role
    # Below this role the caller needs a grant on the resource itself (stack approver), which
    # the matrix's callers never have: 404 for another org's resource, else 403 after the lookup.
    granted_below: Role | None = None


# ----------------------------------------------------------------------------- effects


def _stack_row(world, stack_id: str) -> dict[str, Any] | None:
    with world.ctx.session() as s:
        row = s.get(Stack, stack_id)
        if row is None:
            return None
        labels = sorted(s.exec(select(StackLabel.label).where(StackLabel.stack_id == stack_id)).all())
        return {**row.model_dump(), "labels": labels}


def _token_row(world, token_id: str) -> dict[str, Any] | None:
    with world.ctx.session() as s:
        row = s.get(ApiToken, token_id)
        return None if row is None else row.model_dump(exclude={"last_used_at"})


def _run_row(world, run_id: str) -> dict[str, Any] | None:
    with world.ctx.session() as s:
        row = s.get(Run, run_id)
        return None if row is None else row.model_dump()


def _variables(world, stack_id: str) -> list[dict[str, Any]]:
    with world.ctx.session() as s:
        rows = s.exec(select(StackVariable).where(StackVariable.stack_id == stack_id)).all()
        return [r.model_dump() for r in rows]


def _webhook_rows(world, stack_id: str) -> dict[str, Any]:
    with world.ctx.session() as s:
        hook = s.get(StackWebhook, stack_id)
        deliveries = s.exec(select(WebhookDelivery.id).where(WebhookDelivery.stack_id == stack_id)).all()
        runs = s.exec(select(Run.id).where(Run.stack_id == stack_id)).all()
        rows = {
            "hook": None if hook is None else hook.model_dump(),
            "deliveries": sorted(deliveries),
            "runs": sorted(runs),
        }
    return {"stack": _stack_row(world, stack_id), **rows}


def make_delivery(world, org_id: str) -> str:
    """A stored, verified push delivery to a fresh stack (written directly)."""
    stack_id = world.stack(org_id)["id"]
    payload = {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"full_name": "o/r"}}
    with world.ctx.session() as s:
        delivery = WebhookDelivery(
            id=new_id("whd"),
            org_id=org_id,
            stack_id=stack_id,
            provider="github",
            event="push",
            delivery_id="matrix",
            dedupe_key="matrix",
            payload=json.dumps(payload),
            outcome="skipped",
        )
        s.add(delivery)
    return delivery.id


def _delivery_stack(world, delivery_id: str) -> str:
    with world.ctx.session() as s:
        return s.get(WebhookDelivery, delivery_id).stack_id


def _secret_shown(cell: Cell, response) -> None:
    with cell.world.ctx.session() as s:
        hook = s.get(StackWebhook, cell.resource_id)
        secret = cell.world.ctx.secret_box.decrypt(
            hook.secret_encrypted, f"stack/{hook.stack_id}/webhook/current"
        )
    assert response.json()["secret"] == secret
    assert response.json()["url"].endswith(f"/api/v1/webhooks/{cell.resource_id}")


def make_vcs_run(world, org_id: str) -> str:
    run_id = make_run(world, org_id, "finished")
    with world.ctx.session() as s:
        stack_id = s.get(Run, run_id).stack_id
        s.add(RunVcs(run_id=run_id, stack_id=stack_id, provider="github", repo="o/r", sha="c" * 40))
    return run_id


def _vcs_shown(cell: Cell, response) -> None:
    assert (response.json()["repo"], response.json()["sha"]) == ("o/r", "c" * 40)


def _replayed(cell: Cell, response) -> None:
    body = response.json()
    assert body["replay_of"] == cell.resource_id and body["outcome"] == "created"
    assert _webhook_rows(cell.world, body["stack_id"])["runs"] == [body["run_id"]]


def make_run(world, org_id: str, status: str) -> str:
    """A run of a fresh stack in ``status`` (written directly: the matrix is about access)."""
    stack_id = world.stack(org_id)["id"]
    planned = status == "planned"
    status = "finished" if planned else status
    now = utcnow()
    run = Run(
        id=new_id("run"),
        org_id=org_id,
        stack_id=stack_id,
        type="tracked",
        exclusive=True,
        status=status,
        created_at=now,
        status_timestamps={RunStatus.queued.value: iso(now), status: iso(now)},
        plan_summary={"add": 1, "change": 0, "destroy": 0},
    )
    if planned:
        info = world.ctx.objects.put(
            f"runs/{run.id}/plan.json",
            b'{"format_version": "1.2", "planned_values": {}, "resource_changes": []}',
        )
        run.artifacts = {"plan_json": {"key": info.key, "sha256": info.sha256, "size": info.size}}
    with world.ctx.session() as s:
        s.add(run)
    return run.id


STATE_SERIAL = "1"  # the {serial} in state routes


def _state_body(serial: int = 1, lineage: str = "matrix-lineage") -> dict[str, Any]:
    return {
        "version": 4,
        "terraform_version": "1.9.8",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"greeting": {"value": "hello", "type": "string"}},
        "resources": [
            {
                "mode": "managed",
                "type": "null_resource",
                "name": "a",
                "provider": 'provider["registry.terraform.io/hashicorp/null"]',
                "instances": [{"schema_version": 0, "attributes": {"id": "1"}}],
            }
        ],
    }


def make_state(world, org_id: str, locked: bool = False) -> str:
    """A fresh stack with state serial 1 (and, if asked, a lock held on it)."""
    stack_id = world.stack(org_id)["id"]
    data = json.dumps(_state_body()).encode()
    with world.ctx.session() as s:
        state_service.upload_state(
            s,
            world.ctx.objects,
            world.system(org_id),
            stack_id,
            data,
            force=False,
            limits=state_service.Limits(),
        )
        if locked:
            s.add(StateLock(stack_id=stack_id, lock_id="matrix-lock", who="matrix@test"))
    return stack_id


def make_stack_token(world, org_id: str, stack_id: str) -> str:
    with world.ctx.session() as s:
        public, _secret = state_tokens.create_token(
            s, world.ctx.auth.hasher, world.system(org_id), stack_id, "matrix", "read"
        )
    return public.id


def _state_rows(world, stack_id: str) -> dict[str, Any]:
    stack = _stack_row(world, stack_id)
    with world.ctx.session() as s:
        lock = s.get(StateLock, stack_id)
        head = s.get(StateHead, stack_id)
        found = s.exec(select(StateVersion).where(StateVersion.stack_id == stack_id)).all()
        stack_tokens = s.exec(select(StateToken).where(StateToken.stack_id == stack_id)).all()
        return {
            "stack": stack,
            "head": None if head is None else head.model_dump(),
            "lock": None if lock is None else lock.model_dump(),
            "versions": sorted((v.serial, v.id) for v in found),
            "tokens": sorted(str(t.model_dump(exclude={"last_used_at"})) for t in stack_tokens),
        }


def _snapshot(cell: Cell, kind: str | None) -> dict[str, Any] | None:
    if kind in ("state", "state_locked", "state_token"):
        return _state_rows(cell.world, cell.resource_id)
    if kind == "state_validation":
        return {
            **_state_rows(cell.world, cell.resource_id),
            "validations": _validations(cell.world, cell.resource_id),
        }
    if kind == "stack":
        return _stack_row(cell.world, cell.resource_id)
    if kind == "stack_webhook":
        return _webhook_rows(cell.world, cell.resource_id)
    if kind == "delivery":
        return _webhook_rows(cell.world, _delivery_stack(cell.world, cell.resource_id))
    if kind == "policy":
        return _policy_rows(cell.world, cell.resource_id)
    if kind in ("stack_policy", "stack_and_policy"):
        return {
            "stack": _stack_row(cell.world, cell.resource_id),
            "attachments": _attachments(cell.world, cell.resource_id),
            "policy": _policy_rows(cell.world, cell.policy_id),
        }
    if kind == "stack_approver":
        return {
            "stack": _stack_row(cell.world, cell.resource_id),
            "approvers": _approvers(cell.world, cell.resource_id),
        }
    if kind == "stack_var":
        return {
            "stack": _stack_row(cell.world, cell.resource_id),
            "vars": _variables(cell.world, cell.resource_id),
        }
    if kind and (kind.startswith("run:") or kind == "run_vcs"):
        return _run_row(cell.world, cell.resource_id)
    if kind == "token":
        return _token_row(cell.world, cell.resource_id)
    return None


def _me(cell: Cell, headers: dict[str, str]):
    with TestClient(cell.world.app) as c:
        return c.get("/api/v1/auth/me", headers=headers)


def _stack_created_in_caller_org(cell: Cell, response) -> None:
    row = _stack_row(cell.world, response.json()["id"])
    assert row is not None and row["org_id"] == cell.caller_org


def _stack_patched(cell: Cell, response) -> None:
    assert response.json()["description"] == "patched by the matrix"
    assert _stack_row(cell.world, cell.resource_id)["description"] == "patched by the matrix"


def _stack_deleted(cell: Cell, _response) -> None:
    assert _stack_row(cell.world, cell.resource_id) is None


def _token_usable_in_caller_org(cell: Cell, response) -> None:
    assert "token" in response.json()
    me = _me(cell, {"Authorization": f"Bearer {response.json()['token']}"})
    assert me.status_code == 200 and me.json()["org_id"] == cell.caller_org


def _token_revoked(cell: Cell, _response) -> None:
    assert _token_row(cell.world, cell.resource_id)["revoked_at"] is not None


def _user_created_in_caller_org(cell: Cell, response) -> None:
    with cell.world.ctx.session() as s:
        orgs = s.exec(select(Membership.org_id).where(Membership.user_id == response.json()["id"])).all()
    assert list(orgs) == [cell.caller_org]


def _me_is_caller(cell: Cell, response) -> None:
    assert response.json()["id"] == cell.caller.id
    assert response.json()["role"] == cell.caller.role.value


def _logged_out(cell: Cell, _response) -> None:
    if cell.caller.kind == "session":  # the session is gone server-side
        assert _me(cell, cell.caller.headers).status_code == 401
    elif cell.caller.kind == "token":  # logout does not touch tokens
        assert _me(cell, cell.caller.headers).status_code == 200


def _password_changed(cell: Cell, _response) -> None:
    assert _me(cell, cell.caller.headers).status_code == 401  # every session of the user ended
    cell.world.login(cell.caller.email, "a brand new password")


def _login_body(cell: Cell) -> dict[str, Any]:
    user = cell.world.user(Role.viewer, cell.caller_org, login=False)
    return {"email": user.email, "password": user.password}


def _new_stack_body(cell: Cell) -> dict[str, Any]:
    n = cell.world._n()
    return {"name": f"matrix-{n}", "repository_url": "https://git.example.com/m.git", "tool": "ansible"}


def _new_user_body(cell: Cell) -> dict[str, Any]:
    return {
        "email": f"new{cell.world._n()}@{cell.world.tag(cell.caller_org)}.test",
        "password": "a long enough password",
        "role": "viewer",
    }


def _run_created_in_caller_org(cell: Cell, response) -> None:
    row = _run_row(cell.world, response.json()["id"])
    assert row is not None and row["org_id"] == cell.caller_org and row["status"] == "queued"


def _run_status(expected: str) -> Callable[[Cell, Any], None]:
    def check(cell: Cell, response) -> None:
        assert response.json()["status"] == expected
        assert _run_row(cell.world, cell.resource_id)["status"] == expected

    return check


def _run_deleted(cell: Cell, _response) -> None:
    assert _run_row(cell.world, cell.resource_id) is None


def _variable_set(cell: Cell, response) -> None:
    assert response.json() == {**response.json(), "name": "MATRIX_VAR", "value": "v", "secret": False}
    assert [v["name"] for v in _variables(cell.world, cell.resource_id)] == ["MATRIX_VAR"]


def _variable_deleted(cell: Cell, _response) -> None:
    assert _variables(cell.world, cell.resource_id) == []


def _state_serials(cell: Cell) -> list[int]:
    return [serial for serial, _id in _state_rows(cell.world, cell.resource_id)["versions"]]


def _state_forced(cell: Cell, response) -> None:
    assert response.json()["serial"] == 2 and response.json()["forced"] is True
    assert _state_serials(cell) == [1, 2]


def _state_rolled_back(cell: Cell, response) -> None:
    assert response.json()["serial"] == 2 and response.json()["note"] == "rollback of serial 1"
    assert _state_serials(cell) == [1, 2]


def _state_downloaded(cell: Cell, response) -> None:
    assert json.loads(response.content) == _state_body()


def _state_unlocked(cell: Cell, response) -> None:
    assert response.json()["unlocked"] is True
    assert _state_rows(cell.world, cell.resource_id)["lock"] is None


def _stack_token_usable(cell: Cell, response) -> None:
    with cell.world.ctx.session() as s:
        tok = s.get(StateToken, response.json()["id"])
        assert tok is not None and tok.stack_id == cell.resource_id
        assert state_tokens.verifier_for(cell.world.ctx.auth).verify(s, response.json()["token"]).id == tok.id


def _stack_token_revoked(cell: Cell, _response) -> None:
    with cell.world.ctx.session() as s:
        assert s.get(StateToken, cell.token_id).revoked_at is not None


def _approvers(world, stack_id: str) -> list[str]:
    with world.ctx.session() as s:
        return list(s.exec(select(StackApprover.user_id).where(StackApprover.stack_id == stack_id)).all())


def _approver_added(cell: Cell, response) -> None:
    assert response.json()["user_id"] == cell.user_id
    assert _approvers(cell.world, cell.resource_id) == [cell.user_id]


def _approver_removed(cell: Cell, _response) -> None:
    assert _approvers(cell.world, cell.resource_id) == []


MATRIX_POLICY = 'package crucible\n\ndeny contains "matrix says no" if input.no\n'


def make_policy(world, org_id: str) -> str:
    """A policy at version 1 (written directly: the matrix is about access)."""
    now = utcnow()
    policy = Policy(
        id=new_id("pol"),
        org_id=org_id,
        name=f"matrix-{world._n()}",
        type="post_plan",
        body=MATRIX_POLICY,
        created_at=now,
        updated_at=now,
    )
    with world.ctx.session() as s:
        s.add(policy)
        s.flush()
        s.add(PolicyVersion(policy_id=policy.id, version=1, body=policy.body, type=policy.type))
    return policy.id


def _setup_policy_cell(world, cell: Cell, kind: str) -> None:
    if kind == "policy":
        cell.resource_id = make_policy(world, cell.resource_org)
        return
    cell.resource_id = world.stack(cell.resource_org)["id"]
    if kind == "stack_and_policy":
        cell.policy_id = make_policy(world, cell.caller_org)
        return
    cell.policy_id = make_policy(world, cell.resource_org)
    with world.ctx.session() as s:
        s.add(StackPolicy(stack_id=cell.resource_id, policy_id=cell.policy_id))


def _policy_rows(world, policy_id: str | None) -> dict[str, Any] | None:
    with world.ctx.session() as s:
        row = s.get(Policy, policy_id) if policy_id else None
        if row is None:
            return None
        versions = s.exec(select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)).all()
        labels = s.exec(select(PolicyLabel.label).where(PolicyLabel.policy_id == policy_id)).all()
        return {
            **row.model_dump(),
            "versions": sorted(str(v.model_dump()) for v in versions),
            "labels": sorted(labels),
        }


def _attachments(world, stack_id: str) -> list[str]:
    with world.ctx.session() as s:
        return sorted(s.exec(select(StackPolicy.policy_id).where(StackPolicy.stack_id == stack_id)).all())


def _new_policy_body(cell: Cell) -> dict[str, Any]:
    return {"name": f"matrix-new-{cell.world._n()}", "type": "post_plan", "body": MATRIX_POLICY}


def _policy_created_in_caller_org(cell: Cell, response) -> None:
    row = _policy_rows(cell.world, response.json()["id"])
    assert row is not None and row["org_id"] == cell.caller_org and len(row["versions"]) == 1


def _policy_patched(cell: Cell, response) -> None:
    assert response.json()["description"] == "patched by the matrix" and response.json()["version"] == 2
    row = _policy_rows(cell.world, cell.resource_id)
    assert row["description"] == "patched by the matrix" and len(row["versions"]) == 2


def _policy_deleted(cell: Cell, _response) -> None:
    assert _policy_rows(cell.world, cell.resource_id) is None


def _policy_attached(cell: Cell, response) -> None:
    assert response.json()["policy_id"] == cell.policy_id and response.json()["via"] == ["direct"]
    assert _attachments(cell.world, cell.resource_id) == [cell.policy_id]


def _policy_detached(cell: Cell, _response) -> None:
    assert _attachments(cell.world, cell.resource_id) == []
    assert _policy_rows(cell.world, cell.policy_id) is not None


def _stack_policies_listed(cell: Cell, response) -> None:
    assert [p["policy_id"] for p in response.json()["data"]] == [cell.policy_id]


def _policy_evaluated(cell: Cell, response) -> None:
    assert response.json()["deny"] == ["matrix says no"]


def _backtested(cell: Cell, response) -> None:
    # The caller's org has no planned runs; another org's never show.
    assert response.json()["summary"]["runs"] == 0 and response.json()["runs"] == []


def _policy_input(cell: Cell, response) -> None:
    assert response.json()["crucible"]["run"]["id"] == cell.resource_id
    assert response.json()["resource_changes"] == []


MATRIX_VALIDATION = 'package crucible\n\ndeny contains "matrix state" if count(input.state.resources) > 0\n'


def make_validated_state(world, org_id: str) -> str:
    """A stack with state serial 1, a validation policy attached and a stored (scheduled) result."""
    stack_id = make_state(world, org_id)
    now = utcnow()
    policy = Policy(
        id=new_id("pol"),
        org_id=org_id,
        name=f"matrix-validation-{world._n()}",
        type="validation",
        body=MATRIX_VALIDATION,
        created_at=now,
        updated_at=now,
    )
    with world.ctx.session() as s:
        s.add(policy)
        s.flush()
        s.add(PolicyVersion(policy_id=policy.id, version=1, body=policy.body, type=policy.type))
        s.add(StackPolicy(stack_id=stack_id, policy_id=policy.id))
        s.add(
            StackValidation(
                stack_id=stack_id,
                policy_id=policy.id,
                policy_name=policy.name,
                policy_version=1,
                state_serial=1,
                outcome="deny",
                deny=["matrix state"],
                trigger="schedule",
                evaluated_by="system",
            )
        )
    return stack_id


def _validations(world, stack_id: str) -> list[dict[str, Any]]:
    with world.ctx.session() as s:
        rows = s.exec(select(StackValidation).where(StackValidation.stack_id == stack_id)).all()
        return [r.model_dump() for r in rows]


def _validated(cell: Cell, response) -> None:
    [row] = response.json()["data"]
    assert row["outcome"] == "deny" and row["deny"] == ["matrix state"] and row["state_serial"] == 1
    assert row["trigger"] == "manual" and row["evaluated_by"] == cell.caller.label
    assert _validations(cell.world, cell.resource_id)[0]["trigger"] == "manual"


def _validations_listed(cell: Cell, response) -> None:
    [row] = response.json()["data"]
    assert row["trigger"] == "schedule" and row["deny"] == ["matrix state"]


V, M, A = Role.viewer, Role.member, Role.admin
MATRIX: dict[tuple[str, str], Rule] = {
    # public
    ("GET", "/health"): Rule(None, 200),
    ("GET", "/metrics"): Rule(None, 200),
    ("GET", "/api/v1/openapi.json"): Rule(None, 200),
    ("GET", "/api/v1/docs"): Rule(None, 200),
    ("GET", "/api/v1/docs/oauth2-redirect"): Rule(None, 200),
    ("POST", "/api/v1/auth/login"): Rule(None, 200, body=_login_body),
    ("POST", "/api/v1/auth/logout"): Rule(None, 204, effect=_logged_out),
    # identity and people
    ("GET", "/api/v1/auth/me"): Rule(V, 200, effect=_me_is_caller),
    ("POST", "/api/v1/auth/password"): Rule(
        V,
        204,
        users_only=True,
        effect=_password_changed,
        body=lambda c: {"current_password": c.caller.password or "x", "new_password": "a brand new password"},
    ),
    ("GET", "/api/v1/users"): Rule(V, 200),
    ("POST", "/api/v1/users"): Rule(A, 201, body=_new_user_body, effect=_user_created_in_caller_org),
    # tokens
    ("GET", "/api/v1/tokens"): Rule(A, 200),
    ("POST", "/api/v1/tokens"): Rule(
        A, 201, body=lambda c: {"name": "matrix", "role": "viewer"}, effect=_token_usable_in_caller_org
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): Rule(A, 204, resource="token", effect=_token_revoked),
    # stacks
    ("GET", "/api/v1/stacks"): Rule(V, 200, params={"limit": "200"}),
    ("POST", "/api/v1/stacks"): Rule(M, 201, body=_new_stack_body, effect=_stack_created_in_caller_org),
    ("GET", "/api/v1/stacks/{stack_id}"): Rule(V, 200, resource="stack"),
    ("PATCH", "/api/v1/stacks/{stack_id}"): Rule(
        M,
        200,
        resource="stack",
        body=lambda c: {"description": "patched by the matrix"},
        effect=_stack_patched,
    ),
    ("DELETE", "/api/v1/stacks/{stack_id}"): Rule(A, 204, resource="stack", effect=_stack_deleted),
    # stack variables
    ("GET", "/api/v1/stacks/{stack_id}/variables"): Rule(V, 200, resource="stack_var"),
    ("PUT", "/api/v1/stacks/{stack_id}/variables/{name}"): Rule(
        M, 200, resource="stack", body=lambda c: {"value": "v"}, effect=_variable_set
    ),
    ("DELETE", "/api/v1/stacks/{stack_id}/variables/{name}"): Rule(
        M, 204, resource="stack_var", effect=_variable_deleted
    ),
    # stack approvers
    ("GET", "/api/v1/stacks/{stack_id}/approvers"): Rule(V, 200, resource="stack"),
    ("PUT", "/api/v1/stacks/{stack_id}/approvers/{user_id}"): Rule(
        A, 200, resource="stack", effect=_approver_added
    ),
    ("DELETE", "/api/v1/stacks/{stack_id}/approvers/{user_id}"): Rule(
        A, 204, resource="stack_approver", effect=_approver_removed
    ),
    # runs
    ("POST", "/api/v1/stacks/{stack_id}/runs"): Rule(
        M, 201, resource="stack", body=lambda c: {"type": "proposed"}, effect=_run_created_in_caller_org
    ),
    ("GET", "/api/v1/runs"): Rule(V, 200, params={"limit": "200"}),
    ("GET", "/api/v1/runs/{run_id}"): Rule(V, 200, resource="run:queued"),
    ("POST", "/api/v1/runs/{run_id}/confirm"): Rule(
        V, 200, resource="run:unconfirmed", effect=_run_status("confirmed"), granted_below=A
    ),
    ("POST", "/api/v1/runs/{run_id}/approve"): Rule(
        V,
        200,
        resource="run:pending_approval",
        effect=_run_status("unconfirmed"),
        granted_below=A,
        users_only=True,
    ),
    ("POST", "/api/v1/runs/{run_id}/reject"): Rule(
        V,
        200,
        resource="run:pending_approval",
        effect=_run_status("failed"),
        granted_below=A,
        users_only=True,
    ),
    ("GET", "/api/v1/runs/{run_id}/approvals"): Rule(V, 200, resource="run:pending_approval"),
    ("GET", "/api/v1/runs/{run_id}/policy-results"): Rule(V, 200, resource="run:failed"),
    ("GET", "/api/v1/runs/{run_id}/policy-input"): Rule(M, 200, resource="run:planned", effect=_policy_input),
    ("POST", "/api/v1/runs/{run_id}/discard"): Rule(
        M, 200, resource="run:unconfirmed", effect=_run_status("discarded")
    ),
    ("POST", "/api/v1/runs/{run_id}/cancel"): Rule(
        M, 200, resource="run:queued", effect=_run_status("canceled")
    ),
    ("POST", "/api/v1/runs/{run_id}/retrigger"): Rule(
        M, 201, resource="run:failed", effect=_run_created_in_caller_org
    ),
    ("DELETE", "/api/v1/runs/{run_id}"): Rule(A, 204, resource="run:finished", effect=_run_deleted),
    ("GET", "/api/v1/runs/{run_id}/logs"): Rule(V, 200, resource="run:queued"),
    ("GET", "/api/v1/runs/{run_id}/plan"): Rule(V, 200, resource="run:planned"),
    # state (the Terraform protocol itself authenticates with stack tokens: STATE_PROTOCOL below)
    ("GET", "/api/v1/stacks/{stack_id}/state/versions"): Rule(V, 200, resource="state"),
    ("POST", "/api/v1/stacks/{stack_id}/state/versions"): Rule(
        A,
        201,
        resource="state",
        params={"force": "true"},
        body=lambda c: _state_body(1, "another-lineage"),
        effect=_state_forced,
    ),
    ("GET", "/api/v1/stacks/{stack_id}/state/versions/{serial}"): Rule(V, 200, resource="state"),
    ("GET", "/api/v1/stacks/{stack_id}/state/versions/{serial}/download"): Rule(
        M, 200, resource="state", effect=_state_downloaded
    ),
    ("POST", "/api/v1/stacks/{stack_id}/state/versions/{serial}/rollback"): Rule(
        A, 201, resource="state", effect=_state_rolled_back
    ),
    ("GET", "/api/v1/stacks/{stack_id}/state/diff"): Rule(V, 200, resource="state"),
    ("GET", "/api/v1/stacks/{stack_id}/state/resources"): Rule(V, 200, resource="state"),
    ("GET", "/api/v1/stacks/{stack_id}/state/outputs"): Rule(V, 200, resource="state"),
    ("GET", "/api/v1/stacks/{stack_id}/state/lock"): Rule(V, 200, resource="state_locked"),
    ("DELETE", "/api/v1/stacks/{stack_id}/state/lock"): Rule(
        A, 200, resource="state_locked", effect=_state_unlocked
    ),
    ("POST", "/api/v1/stacks/{stack_id}/tokens"): Rule(
        M, 201, resource="stack", body=lambda c: {"name": "matrix"}, effect=_stack_token_usable
    ),
    ("GET", "/api/v1/stacks/{stack_id}/tokens"): Rule(V, 200, resource="state_token"),
    ("DELETE", "/api/v1/stacks/{stack_id}/tokens/{token_id}"): Rule(
        M, 204, resource="state_token", effect=_stack_token_revoked
    ),
    # policies
    ("GET", "/api/v1/policies"): Rule(V, 200, params={"limit": "200"}),
    ("POST", "/api/v1/policies"): Rule(A, 201, body=_new_policy_body, effect=_policy_created_in_caller_org),
    ("POST", "/api/v1/policies/evaluate"): Rule(
        M, 200, body=lambda c: {"body": MATRIX_POLICY, "input": {"no": True}}, effect=_policy_evaluated
    ),
    ("POST", "/api/v1/policies/backtest"): Rule(
        M, 200, body=lambda c: {"body": MATRIX_POLICY, "type": "post_plan"}, effect=_backtested
    ),
    ("GET", "/api/v1/policies/library"): Rule(V, 200),
    ("POST", "/api/v1/policies/library/{slug}/install"): Rule(
        A,
        201,
        body=lambda c: {"name": f"matrix-library-{c.world._n()}"},
        effect=_policy_created_in_caller_org,
    ),
    ("GET", "/api/v1/policies/{policy_id}"): Rule(V, 200, resource="policy"),
    ("PUT", "/api/v1/policies/{policy_id}"): Rule(
        A,
        200,
        resource="policy",
        body=lambda c: {"description": "patched by the matrix"},
        effect=_policy_patched,
    ),
    ("DELETE", "/api/v1/policies/{policy_id}"): Rule(A, 204, resource="policy", effect=_policy_deleted),
    ("GET", "/api/v1/policies/{policy_id}/versions"): Rule(V, 200, resource="policy"),
    ("GET", "/api/v1/policies/{policy_id}/versions/{version}"): Rule(V, 200, resource="policy"),
    ("GET", "/api/v1/stacks/{stack_id}/policies"): Rule(
        V, 200, resource="stack_policy", effect=_stack_policies_listed
    ),
    ("POST", "/api/v1/stacks/{stack_id}/policies"): Rule(
        A,
        201,
        resource="stack_and_policy",
        body=lambda c: {"policy_id": c.policy_id},
        effect=_policy_attached,
    ),
    ("DELETE", "/api/v1/stacks/{stack_id}/policies/{policy_id}"): Rule(
        A, 204, resource="stack_policy", effect=_policy_detached
    ),
    ("POST", "/api/v1/stacks/{stack_id}/validate"): Rule(
        M, 200, resource="state_validation", effect=_validated
    ),
    ("GET", "/api/v1/stacks/{stack_id}/validation"): Rule(
        V, 200, resource="state_validation", effect=_validations_listed
    ),
    # webhooks (the endpoint providers call authenticates with the stack's secret: SECRET_AUTHENTICATED)
    ("GET", "/api/v1/stacks/{stack_id}/webhook"): Rule(
        M, 200, resource="stack_webhook", effect=_secret_shown
    ),
    ("POST", "/api/v1/stacks/{stack_id}/webhook/rotate"): Rule(
        M, 200, resource="stack_webhook", effect=_secret_shown
    ),
    ("GET", "/api/v1/stacks/{stack_id}/webhook/deliveries"): Rule(V, 200, resource="stack_webhook"),
    ("GET", "/api/v1/webhooks/deliveries/{delivery_id}"): Rule(V, 200, resource="delivery"),
    ("GET", "/api/v1/runs/{run_id}/vcs"): Rule(V, 200, resource="run_vcs", effect=_vcs_shown),
    ("POST", "/api/v1/webhooks/deliveries/{delivery_id}/replay"): Rule(
        M, 201, resource="delivery", effect=_replayed
    ),
    # audit
    ("GET", "/api/v1/audit"): Rule(V, 200, params={"limit": "200"}),
    ("GET", "/api/v1/audit/export"): Rule(V, 200, params={"format": "json"}),
}

# Routes of Terraform's http state backend. They authenticate with stack tokens over HTTP basic,
# never with sessions or API tokens, so the matrix's callers all get 401 with a basic challenge
# (test_state_protocol_refuses_every_matrix_caller); who may do what with stack tokens is
# tests/integration/test_state_protocol.py and test_state_tokens.py.
STATE_PROTOCOL = {
    (method, path)
    for path, methods in {
        "/api/v1/state/{stack_id}": ("GET", "POST", "PUT", "DELETE", "LOCK", "UNLOCK"),
        "/api/v1/state/{stack_id}/lock": ("POST", "LOCK"),
        "/api/v1/state/{stack_id}/unlock": ("POST", "UNLOCK"),
    }.items()
    for method in methods
}

WEBHOOK_RECEIVER = ("POST", "/api/v1/webhooks/{stack_id}")
SECRET_AUTHENTICATED = STATE_PROTOCOL | {WEBHOOK_RECEIVER}

MISSING_IDS = {
    "delivery": "whd-00000000000000aa",
    "stack": "stk-00000000000000aa",
    "state": "stk-00000000000000aa",
    "token": "tok-00000000000000aa",
    "run": "run-00000000000000aa",
    "policy": "pol-00000000000000aa",
}


def _app_routes(app) -> set[tuple[str, str]]:
    found = set()
    # FastAPI >= 0.16x keeps included routers lazily; iter_route_contexts flattens them.
    flatten = getattr(fastapi_routing, "iter_route_contexts", lambda routes: routes)
    for route in flatten(app.routes):
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    for path, operations in app.openapi()["paths"].items():
        found.update((method.upper(), path) for method in operations)
    return found


def test_matrix_covers_every_route(tmp_path):
    """A route added without deciding who may call it must fail here."""
    settings = load_settings(
        data_dir=tmp_path, secret_key="s" * 40, database_url=f"sqlite:///{tmp_path}/x.db"
    )
    routes = _app_routes(create_api(build_context(settings)))
    assert routes - set(MATRIX) - SECRET_AUTHENTICATED == set(), "routes without an RBAC matrix entry"
    assert (set(MATRIX) | SECRET_AUTHENTICATED) - routes == set(), (
        "matrix entries for routes that no longer exist"
    )


def _expected(rule: Rule, cell: Cell) -> int:
    if rule.min_role is None:
        return rule.ok
    if cell.caller.kind == "anonymous":
        return 401
    if not cell.caller.role.at_least(rule.min_role):
        return 403
    if rule.users_only and cell.caller.kind != "session":
        return 403
    if cell.scope == "other" and rule.resource:
        return 404
    if rule.granted_below and not cell.caller.role.at_least(rule.granted_below):
        return 403
    return rule.ok


def _without_ids(detail: Any, *ids: str) -> str:
    text = repr(detail)
    for value in ids:
        text = text.replace(value, "<id>")
    return text


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_authorization(route: tuple[str, str], world, db_kind):
    method, template = route
    rule = MATRIX[route]
    org_a = world.org_id
    org_b = world.new_org("org-b")
    # What org A owns; none of it may appear in what org B's callers get back.
    secret_stack = world.stack(org_a, name="secret-stack-a", description="only for org a")
    secret_token = world.token(Role.viewer, org_a, name="secret-token-a")
    world.user(Role.admin, org_a)
    markers = [org_a, world.tag(org_a), secret_stack["id"], "secret-stack-a", secret_token.id]

    failures: list[str] = []
    with TestClient(world.app) as client:
        for scope in SCOPES:
            for kind, role in CALLERS:
                # Another org's *resource* is reached by our own callers; for collection
                # routes, "other" means a caller from org B looking at org A's world.
                caller_org = org_b if scope == "other" and not rule.resource else org_a
                resource_org = org_b if scope == "other" else caller_org
                caller = world.actor(kind, role, caller_org)
                cell = Cell(world, caller, scope, caller_org, resource_org)
                if rule.resource == "stack":
                    cell.resource_id = world.stack(resource_org)["id"]
                elif rule.resource == "stack_var":
                    cell.resource_id = world.stack(resource_org)["id"]
                    sealed = world.ctx.secret_box.encrypt("v", f"stack/{cell.resource_id}/var/MATRIX_VAR")
                    with world.ctx.session() as s:
                        s.add(
                            StackVariable(
                                stack_id=cell.resource_id, name="MATRIX_VAR", value_encrypted=sealed
                            )
                        )
                elif rule.resource in ("stack_approver", "stack_webhook"):
                    cell.resource_id = world.stack(resource_org)["id"]
                elif rule.resource == "delivery":
                    cell.resource_id = make_delivery(world, resource_org)
                elif rule.resource == "run_vcs":
                    cell.resource_id = make_vcs_run(world, resource_org)
                elif rule.resource in ("state", "state_locked"):
                    cell.resource_id = make_state(world, resource_org, locked=rule.resource == "state_locked")
                elif rule.resource == "state_validation":
                    cell.resource_id = make_validated_state(world, resource_org)
                elif rule.resource == "state_token":
                    cell.resource_id = world.stack(resource_org)["id"]
                    with world.ctx.session() as s:
                        public, _secret = state_tokens.create_token(
                            s,
                            world.ctx.auth.hasher,
                            world.system(resource_org),
                            cell.resource_id,
                            "m",
                            "read",
                        )
                    cell.token_id = public.id
                if "{user_id}" in template:
                    cell.user_id = {"session": caller.id, "anonymous": None}.get(
                        caller.kind, world.user(Role.viewer, caller_org, login=False).id
                    )
                if rule.resource == "stack_approver" and cell.user_id:
                    with world.ctx.session() as s:
                        s.add(StackApprover(stack_id=cell.resource_id, user_id=cell.user_id))
                elif rule.resource and rule.resource.startswith("run:"):
                    cell.resource_id = make_run(world, resource_org, rule.resource.split(":", 1)[1])
                elif rule.resource == "token":
                    cell.resource_id = world.token(Role.viewer, resource_org).id
                if rule.resource in ("policy", "stack_policy", "stack_and_policy"):
                    _setup_policy_cell(world, cell, rule.resource)
                label = f"{scope:5} {caller!s:15}"
                try:
                    _check_cell(client, method, template, rule, cell, markers)
                except AssertionError as exc:
                    failures.append(f"{label}: {exc}".replace("\n", " "))
    assert not failures, f"{method} {template} [{db_kind}]:\n  " + "\n  ".join(failures)


def _call(client: TestClient, method: str, template: str, rule: Rule, cell: Cell, resource_id: str | None):
    path = template.replace("{user_id}", cell.user_id or "usr-00000000000000aa")
    path = path.replace("{serial}", STATE_SERIAL)
    if cell.token_id:
        path = path.replace("{token_id}", cell.token_id)
    if cell.policy_id:
        path = path.replace("{policy_id}", cell.policy_id)
    path = path.replace("{version}", "1")
    path = path.replace("{slug}", "blast_radius")
    path = re.sub(r"\{[a-z_]+_id\}", resource_id or "", path).replace("{name}", "MATRIX_VAR")
    kwargs: dict[str, Any] = {"headers": cell.caller.headers}
    if rule.body is not None:
        kwargs["json"] = rule.body(cell)
    if rule.params:
        kwargs["params"] = rule.params
    client.cookies.clear()
    response = client.request(method, path, **kwargs)
    client.cookies.clear()  # a login response must not leak its cookie into the next cell
    return response


def _check_cell(client, method, template, rule: Rule, cell: Cell, markers: list[str]) -> None:
    expected = _expected(rule, cell)
    before_events = cell.world.audit_count()
    before = _snapshot(cell, rule.resource)

    response = _call(client, method, template, rule, cell, cell.resource_id)
    assert response.status_code == expected, (
        f"expected {expected}, got {response.status_code} {response.text[:200]}"
    )

    if expected == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    if expected >= 400:
        # Refused means refused: nothing written, nothing audited.
        assert cell.world.audit_count() == before_events, "a refused request wrote an audit event"
        assert _snapshot(cell, rule.resource) == before, "a refused request changed the resource"
    granted_403 = rule.granted_below is not None and expected == 403
    if expected in (403, 404) and rule.resource and not granted_403:
        # Foreign and missing ids must look exactly alike (403 comes before any lookup).
        missing_id = MISSING_IDS[rule.resource.split(":")[0].split("_")[0]]
        missing = _call(client, method, template, rule, cell, missing_id)
        assert missing.status_code == expected
        assert _without_ids(missing.json()["detail"], missing_id) == _without_ids(
            response.json()["detail"], cell.resource_id
        )
    if 200 <= expected < 300:
        if cell.scope == "other" and not rule.resource:
            text = response.text.lower()
            leaked = [m for m in markers if m.lower() in text]
            assert not leaked, f"org B's caller saw org A's data: {leaked}"
        if rule.effect is not None:
            rule.effect(cell, response)


def test_state_protocol_refuses_every_matrix_caller(world, db_kind):
    """Sessions and API tokens of any role, of this org or another, cannot use the state backend:
    401 with the basic challenge Terraform understands, and nothing is written."""
    org_b = world.new_org("org-b")
    stack_id = make_state(world, world.org_id)
    before = _state_rows(world, stack_id)
    callers = [world.actor(kind, role, org) for kind, role in CALLERS for org in (world.org_id, org_b)]
    events = world.audit_count()
    with TestClient(world.app) as client:
        for method, template in sorted(STATE_PROTOCOL):
            path = template.replace("{stack_id}", stack_id)
            for caller in callers:
                client.cookies.clear()
                response = client.request(
                    method, path, headers=caller.headers, content=json.dumps(_state_body(2)).encode()
                )
                assert response.status_code == 401, (method, path, str(caller), response.text)
                assert response.headers["www-authenticate"] == 'Basic realm="crucible"'
    assert _state_rows(world, stack_id) == before
    assert world.audit_count() == events


def test_webhook_receiver_refuses_every_matrix_caller(world, db_kind):
    """Sessions and API tokens do not sign webhooks: a push that carries one but no signature is
    refused (401) for every caller, and starts nothing."""
    stack_id = world.stack(world.org_id)["id"]
    body = json.dumps({"ref": "refs/heads/main", "after": "b" * 40}).encode()
    callers = [world.actor(kind, role, world.org_id) for kind, role in CALLERS]
    before = _webhook_rows(world, stack_id)
    events = world.audit_count()
    with TestClient(world.app) as client:
        for caller in callers:
            client.cookies.clear()
            headers = {**caller.headers, "X-GitHub-Event": "push", "Content-Type": "application/json"}
            response = client.post(f"/api/v1/webhooks/{stack_id}", headers=headers, content=body)
            assert response.status_code == 401, (str(caller), response.text)
            assert "unsigned" in response.json()["detail"]
    assert _webhook_rows(world, stack_id) == before
    assert world.audit_count() == events


def test_users_of_another_org_are_not_listed(world, as_actor):
    """The leak check above relies on org tags; this states the rule for users directly."""
    org_b = world.new_org("org-b")
    a_admin = world.user(Role.admin)
    b_admin = world.user(Role.admin, org_b)
    listed = as_actor(b_admin).get("/api/v1/users").json()
    assert [u["email"] for u in listed["data"]] == [b_admin.email]
    assert listed["count"] == 1
    assert a_admin.email in {u["email"] for u in as_actor(a_admin).get("/api/v1/users").json()["data"]}
