"""Policies enforced in real runs: a real Worker executes real Ansible playbooks from real git
repositories and evaluates the stack's policies with the embedded Rego engine at each hook.

What users rely on: a deny stops the run at its hook with the policy's messages, warnings show,
an approval policy holds the run until enough different reviewers approve (or one rejects),
every decision is stored per run with the policy's version, and policies fail closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.auth.models import Role
from tests.integration.runs_support import (
    GitRepo,
    WorkerThread,
    copy_task,
    load,
    log_text,
    playbook,
    wait_for_status,
)

HEADER = "package crucible\n\nimport rego.v1\n\n"
SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"])


@pytest.fixture
def managed(tmp_path: Path) -> Path:
    path = tmp_path / "managed"
    path.mkdir()
    return path


@pytest.fixture
def settings_overrides(managed: Path) -> dict[str, Any]:
    return {
        "worker_heartbeat_seconds": 0.5,
        "local_runner_writable_paths": str(managed),
        "policy_timeout_seconds": 2,
    }


@pytest.fixture
def api(as_actor, admin):
    return as_actor(admin)


def _stack(world, tmp_path: Path, managed: Path, **fields: Any) -> dict:
    n = len(list(tmp_path.glob("repo-*")))
    target = managed / f"motd-{n}"
    repo = GitRepo.create(tmp_path / f"repo-{n}", {"site.yml": playbook(copy_task(target, "hello\n"))})
    stack = world.stack(tool="ansible", repository_url=repo.url, **fields)
    stack["target"] = target
    return stack


def _policy(api, name: str, type_: str, rules: str, *, stack: dict | None = None, **fields: Any) -> dict:
    body = {"name": name, "type": type_, "body": HEADER + rules, **fields}
    created = api.post("/api/v1/policies", json=body)
    assert created.status_code == 201, created.text
    if stack is not None:
        path = f"/api/v1/stacks/{stack['id']}/policies"
        attached = api.post(path, json={"policy_id": created.json()["id"]})
        assert attached.status_code == 201, attached.text
    return created.json()


def _trigger(api, stack: dict, type_: str = "tracked") -> str:
    created = api.post(f"/api/v1/stacks/{stack['id']}/runs", json={"type": type_})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _results(api, run_id: str) -> list[dict]:
    resp = api.get(f"/api/v1/runs/{run_id}/policy-results")
    assert resp.status_code == 200, resp.text
    assert resp.json()["count"] == len(resp.json()["data"])
    return resp.json()["data"]


def test_post_plan_deny_fails_the_run_with_the_message_and_warnings_show(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed)
    other = _stack(world, tmp_path, managed)
    deny = _policy(
        api,
        "no big changes",
        "post_plan",
        'deny contains sprintf("%d changes on %s", '
        "[input.crucible.counts.change, input.crucible.stack.name]) "
        "if input.crucible.counts.change > 0\n",
        stack=stack,
    )
    _policy(api, "say hello", "post_plan", 'warn contains "hello from policy" if true\n', applies_to_all=True)
    _policy(api, "disabled", "post_plan", 'deny contains "never" if true\n', stack=stack, enabled=False)
    edited = api.put(f"/api/v1/policies/{deny['id']}", json={"description": "now at version 2"})
    assert edited.status_code == 200 and edited.json()["version"] == 2

    with WorkerThread(ctx) as worker:
        denied = _trigger(api, stack)
        allowed = _trigger(api, other, "proposed")
        failed = wait_for_status(ctx, denied, "failed", worker=worker)
        finished = wait_for_status(ctx, allowed, "finished", worker=worker)

    assert failed.failure_reason == (
        f"denied at post_plan: policy 'no big changes' (version 2): 1 changes on {stack['name']}"
    )
    assert failed.plan_summary is None  # the plan was never reported: nothing to confirm
    assert not stack["target"].exists()
    results = {r["policy_name"]: r for r in _results(api, denied)}
    assert set(results) == {"no big changes", "say hello"}  # the disabled one is not evaluated
    assert results["no big changes"] | {"duration_ms": 0, "created_at": ""} == {
        "hook": "post_plan",
        "policy_id": deny["id"],
        "policy_name": "no big changes",
        "policy_version": 2,
        "outcome": "deny",
        "deny": [f"1 changes on {stack['name']}"],
        "warn": [],
        "require_approval": False,
        "required_approvals": 0,
        "error": None,
        "engine": results["no big changes"]["engine"],
        "triggered": [],
        "duration_ms": 0,
        "created_at": "",
    }
    assert results["say hello"]["outcome"] == "warn"
    log = log_text(ctx, denied)
    assert "policy no big changes (v2, post_plan): deny" in log
    assert "  warn: hello from policy" in log
    assert finished.plan_summary["change"] == 1
    assert [(r["policy_name"], r["outcome"]) for r in _results(api, allowed)] == [("say hello", "warn")]


@SQLITE_ONLY
def test_pre_plan_deny_stops_the_run_before_the_tool_plans(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed, labels=["env:prod"])
    _policy(
        api,
        "freeze",
        "pre_plan",
        'deny contains "prod is frozen" if "env:prod" in input.crucible.stack.labels\n'
        'deny contains "no plan keys before the plan" if input.resource_changes\n',
        labels=["env:prod"],
    )
    with WorkerThread(ctx) as worker:
        run_id = _trigger(api, stack)
        failed = wait_for_status(ctx, run_id, "failed", worker=worker)
    assert failed.failure_reason == "denied at pre_plan: policy 'freeze' (version 1): prod is frozen"
    assert "planning with" not in log_text(ctx, run_id)
    assert [r["hook"] for r in _results(api, run_id)] == ["pre_plan"]


@SQLITE_ONLY
def test_a_policy_that_cannot_be_evaluated_fails_the_run_closed(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed)
    _policy(
        api,
        "endless",
        "post_plan",
        'deny contains "slow" if count([x | some x in numbers.range(1, 200000000)]) < 0\n',
        stack=stack,
    )
    with WorkerThread(ctx) as worker:
        run_id = _trigger(api, stack)
        failed = wait_for_status(ctx, run_id, "failed", worker=worker)
    assert failed.failure_reason.startswith(
        "denied at post_plan: policy 'endless' (version 1) could not be evaluated"
    )
    (result,) = _results(api, run_id)
    assert result["outcome"] == "error" and result["error"]
    assert not stack["target"].exists()


def test_approval_needs_distinct_approvers_then_the_run_applies(
    ctx, world, as_actor, admin, tmp_path, managed
):
    api = as_actor(admin)
    second_admin = world.user(Role.admin)
    approver = world.user(Role.member)
    outsider = world.user(Role.member)
    stack = _stack(world, tmp_path, managed)
    assert api.put(f"/api/v1/stacks/{stack['id']}/approvers/{approver.id}").status_code == 200
    _policy(
        api,
        "two approvals",
        "approval",
        "require_approval if input.crucible.counts.change > 0\nrequired_approvals := 2\n",
        stack=stack,
    )
    with WorkerThread(ctx) as worker:
        run_id = _trigger(api, stack)
        waiting = wait_for_status(ctx, run_id, "pending_approval", worker=worker)
        assert waiting.required_approvals == 2
        public = api.get(f"/api/v1/runs/{run_id}").json()
        assert public["required_approvals"] == 2 and {"approve", "reject"} <= set(public["actions"])
        assert "approve" not in as_actor(outsider).get(f"/api/v1/runs/{run_id}").json()["actions"]

        refused = as_actor(outsider).post(f"/api/v1/runs/{run_id}/approve")
        assert refused.status_code == 403 and "approver" in refused.json()["detail"]
        first = as_actor(approver).post(f"/api/v1/runs/{run_id}/approve", json={"comment": "looks right"})
        assert first.status_code == 200 and first.json()["status"] == "pending_approval"
        again = as_actor(approver).post(f"/api/v1/runs/{run_id}/approve")
        assert again.status_code == 409 and "different people" in again.json()["detail"]
        assert as_actor(approver).post(f"/api/v1/runs/{run_id}/confirm").status_code == 409
        second = as_actor(second_admin).post(f"/api/v1/runs/{run_id}/approve")
        assert second.status_code == 200 and second.json()["status"] == "unconfirmed"

        reviews = api.get(f"/api/v1/runs/{run_id}/approvals").json()
        assert (reviews["required"], reviews["approved"], reviews["count"]) == (2, 2, 2)
        assert [(r["user"], r["decision"], r["comment"]) for r in reviews["data"]] == [
            (approver.email, "approve", "looks right"),
            (second_admin.email, "approve", ""),
        ]
        assert api.post(f"/api/v1/runs/{run_id}/confirm").status_code == 200
        wait_for_status(ctx, run_id, "finished", worker=worker)
    assert stack["target"].read_text() == "hello\n"
    (result,) = _results(api, run_id)
    assert (result["hook"], result["outcome"], result["required_approvals"]) == ("approval", "approval", 2)
    actions = [e.action for e in world.audit_events() if e.resource_id == run_id]
    assert actions.count("run.approve") == 2


def test_a_rejection_fails_the_run_and_frees_the_stack(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed, auto_apply=True)
    _policy(api, "always ask", "approval", "require_approval if true\n", stack=stack)
    with WorkerThread(ctx) as worker:
        first = _trigger(api, stack)
        second = _trigger(api, stack)
        wait_for_status(ctx, first, "pending_approval", worker=worker)
        assert load(ctx, second).status == "queued"  # the stack is held while the run waits
        rejected = api.post(f"/api/v1/runs/{first}/reject", json={"comment": "not today"})
        assert rejected.status_code == 200, rejected.text
        body = rejected.json()
        assert body["status"] == "failed" and body["failure_reason"].endswith(": not today")
        assert api.post(f"/api/v1/runs/{first}/approve").status_code == 409
        # The next run is planned, then approved by one admin: an auto-apply stack applies.
        wait_for_status(ctx, second, "pending_approval", worker=worker)
        assert api.post(f"/api/v1/runs/{second}/approve").json()["status"] == "confirmed"
        wait_for_status(ctx, second, "finished", worker=worker)
    assert stack["target"].read_text() == "hello\n"
    assert "run.reject" in [e.action for e in world.audit_events() if e.resource_id == first]


@SQLITE_ONLY
def test_proposed_runs_are_not_held_for_approval(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed)
    _policy(api, "always ask", "approval", "require_approval if true\n", stack=stack)
    with WorkerThread(ctx) as worker:
        run_id = _trigger(api, stack, "proposed")
        wait_for_status(ctx, run_id, "finished", worker=worker)
    assert _results(api, run_id) == []


@SQLITE_ONLY
def test_pre_apply_deny_stops_the_apply(ctx, world, api, tmp_path, managed):
    stack = _stack(world, tmp_path, managed)
    _policy(
        api,
        "no applies on fridays",
        "pre_apply",
        'deny contains sprintf("not at %s", [input.crucible.run.commit]) '
        "if input.crucible.counts.change == 1\n",
        stack=stack,
    )
    with WorkerThread(ctx) as worker:
        run_id = _trigger(api, stack)
        wait_for_status(ctx, run_id, "unconfirmed", worker=worker)
        assert _results(api, run_id) == []  # pre_apply runs at apply time, not before
        assert api.post(f"/api/v1/runs/{run_id}/confirm").status_code == 200
        failed = wait_for_status(ctx, run_id, "failed", worker=worker)
    assert failed.failure_reason == (
        f"denied at pre_apply: policy 'no applies on fridays' (version 1): not at {failed.commit_sha}"
    )
    assert not stack["target"].exists()
    assert [r["hook"] for r in _results(api, run_id)] == ["pre_apply"]


def test_review_endpoints_refuse_runs_that_do_not_wait_for_approval(world, as_actor, admin, viewer, db_kind):
    from tests.integration.test_rbac_matrix import make_run

    run_id = make_run(world, world.org_id, "unconfirmed")
    api = as_actor(admin)
    resp = api.post(f"/api/v1/runs/{run_id}/approve")
    assert resp.status_code == 409 and "only runs waiting for approval" in resp.json()["detail"]
    assert api.post(f"/api/v1/runs/{run_id}/reject", json={"comment": "x" * 1001}).status_code == 422
    assert as_actor(viewer).post(f"/api/v1/runs/{run_id}/reject").status_code == 403
    assert as_actor(viewer).get(f"/api/v1/runs/{run_id}/policy-results").json() == {"data": [], "count": 0}
    assert api.get("/api/v1/runs/run-0000000000000000/approvals").status_code == 404


def test_api_tokens_cannot_review_runs(world, app, as_actor, admin, db_kind):
    """Approvals count people: one admin with two admin tokens must not make two approvals."""
    from fastapi.testclient import TestClient

    from tests.integration.test_rbac_matrix import make_run

    run_id = make_run(world, world.org_id, "pending_approval")
    api = as_actor(admin)
    secret = api.post("/api/v1/tokens", json={"name": "ci", "role": "admin"}).json()["token"]
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as token_client:
        assert "approve" not in token_client.get(f"/api/v1/runs/{run_id}").json()["actions"]
        for action in ("approve", "reject"):
            resp = token_client.post(f"/api/v1/runs/{run_id}/{action}")
            assert resp.status_code == 403 and "sign in as a user" in resp.json()["detail"]
    assert api.get(f"/api/v1/runs/{run_id}/approvals").json()["count"] == 0
    assert api.post(f"/api/v1/runs/{run_id}/approve").json()["status"] == "unconfirmed"


def test_trigger_policies_run_the_stacks_they_name_once_per_chain(ctx, world, api, tmp_path, managed):
    upstream = _stack(world, tmp_path, managed, auto_apply=True)
    downstream = _stack(world, tmp_path, managed, auto_apply=True)
    _policy(
        api,
        "then downstream",
        "trigger",
        f'trigger contains "{downstream["name"]}" if input.crucible.run.status == "finished"\n'
        'trigger contains "no-such-stack" if true\n',
        stack=upstream,
    )
    # Downstream names upstream back: the chain must stop there, not loop.
    _policy(api, "and back", "trigger", f'trigger contains "{upstream["id"]}" if true\n', stack=downstream)
    with WorkerThread(ctx) as worker:
        first = _trigger(api, upstream)
        wait_for_status(ctx, first, "finished", worker=worker)
        (result,) = _results(api, first)
        assert (result["hook"], result["outcome"]) == ("trigger", "trigger")
        (made,) = result["triggered"]
        assert result["warn"] == ["no stack 'no-such-stack' in this organization: not triggered"]
        public = api.get(f"/api/v1/runs/{made}").json()
        assert (public["stack_id"], public["type"], public["trigger"], public["triggered_by"]) == (
            downstream["id"],
            "tracked",
            "policy",
            first,
        )
        wait_for_status(ctx, made, "finished", worker=worker)
    (back,) = _results(api, made)
    assert back["triggered"] == []
    assert back["warn"] == [f"{upstream['name']} is already in this chain of runs: not triggered again"]
    assert downstream["target"].read_text() == "hello\n"
    created = [e for e in world.audit_events() if e.action == "run.create" and e.resource_id == made]
    assert created and created[0].actor == "trigger policy then downstream"
    assert "policy then downstream (v1, trigger): trigger" in log_text(ctx, first)
