"""Policies over REST: CRUD, versions, compile errors, attachments, evaluation, isolation, audit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from backend.auth.models import Role
from backend.policies import service as policy_service
from backend.policies.models import Policy, PolicyLabel, PolicyType, PolicyVersion, StackPolicy
from backend.runs.models import Run
from backend.stacks.models import Stack
from backend.timeutil import new_id, utcnow

POLICIES = "/api/v1/policies"
EVALUATE = f"{POLICIES}/evaluate"

DENY_DESTROY = """package crucible

deny contains msg if {
\tsome rc in input.resource_changes
\t"delete" in rc.change.actions
\tmsg := sprintf("%s would be destroyed", [rc.address])
}
"""

WARN_ALWAYS = """package crucible

warn contains "review this plan" if true
"""

APPROVAL = """package crucible

require_approval if input.crucible.counts.add > 2

required_approvals := 2 if input.crucible.counts.add > 2
"""

# Line 4, where the rule body has an assignment without a right-hand side.
BROKEN = """package crucible

deny contains msg if {
\tmsg :=
}
"""

# Two values for one complete rule: compiles, fails when it runs.
CONFLICT = """package crucible

x := 1 if true

x := 2 if true

deny contains "never" if x == 3
"""

DESTROY_PLAN = {
    "format_version": "1.2",
    "resource_changes": [
        {"address": "aws_s3_bucket.logs", "change": {"actions": ["delete"]}},
        {"address": "aws_instance.web", "change": {"actions": ["update"]}},
    ],
}


@pytest.fixture
def api(as_actor, admin) -> TestClient:
    return as_actor(admin)


def policy_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "no-destroy", "type": "post_plan", "body": DENY_DESTROY}
    body.update(overrides)
    return body


def _create(api: TestClient, **overrides: Any) -> dict[str, Any]:
    response = api.post(POLICIES, json=policy_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def _rows(world, policy_id: str) -> dict[str, Any]:
    with world.ctx.session() as s:
        policy = s.get(Policy, policy_id)
        versions = s.exec(select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)).all()
        labels = s.exec(select(PolicyLabel.label).where(PolicyLabel.policy_id == policy_id)).all()
        return {
            "policy": None if policy is None else policy.model_dump(),
            "versions": sorted(v.version for v in versions),
            "labels": sorted(labels),
        }


def _policy_count(world) -> int:
    with world.ctx.session() as s:
        return len(s.exec(select(Policy.id)).all())


def _events(world, action_prefix: str = "policy.") -> list:
    return [e for e in world.audit_events() if e.action.startswith(action_prefix)]


def _error(response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and len(detail) >= 1, detail
    return detail[0]


# ----------------------------------------------------------------------------- CRUD


def test_create_fills_defaults_and_reads_back(api, admin, world):
    policy = _create(api, description="no destroys outside destroy runs", labels=["env:prod", "env:prod"])
    assert policy["id"].startswith("pol-") and len(policy["id"]) == 20
    assert policy["enabled"] is True and policy["applies_to_all"] is False
    assert policy["labels"] == ["env:prod"]
    assert policy["version"] == 1 and policy["body"] == DENY_DESTROY
    assert policy["body_bytes"] == len(DENY_DESTROY.encode()) and len(policy["body_sha256"]) == 64
    assert policy["created_by"] == admin.email == policy["updated_by"]
    assert policy["created_at"] == policy["updated_at"] and policy["created_at"].endswith("Z")
    assert api.get(f"{POLICIES}/{policy['id']}").json() == policy
    assert _rows(world, policy["id"])["versions"] == [1]


def test_list_filters_by_type_pages_and_leaves_bodies_out(api):
    for n in range(3):
        _create(api, name=f"plan-{n}")
    _create(api, name="approve", type="approval", body=APPROVAL)
    everything = api.get(POLICIES).json()
    assert everything["count"] == 4
    assert [p["name"] for p in everything["data"]] == ["approve", "plan-0", "plan-1", "plan-2"]
    assert all("body" not in p and "body_sha256" in p for p in everything["data"])
    page = api.get(POLICIES, params={"type": "post_plan", "limit": 2, "offset": 1}).json()
    assert page["count"] == 3 and [p["name"] for p in page["data"]] == ["plan-1", "plan-2"]
    assert api.get(POLICIES, params={"type": "approval"}).json()["count"] == 1
    assert api.get(POLICIES, params={"type": "nonsense"}).status_code == 422
    assert api.get(POLICIES, params={"limit": 0}).status_code == 422


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "-starts-with-dash"}, "name"),
        ({"type": "post-plan"}, "type"),
        ({"body": "   \n"}, "body"),
        ({"body": "package crucible\x00"}, "body"),
        ({"description": "x" * 2001}, "description"),
        ({"enabled": "yes"}, "enabled"),
        ({"labels": ["bad label"]}, "labels"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_create_rejects_bad_fields(api, world, overrides, field):
    detail = _error(api.post(POLICIES, json=policy_body(**overrides)))
    assert detail["loc"][:2] == ["body", field]
    assert _policy_count(world) == 0


def test_body_larger_than_256_kib_is_refused(api, world):
    big = DENY_DESTROY + "# padding\n" * 30_000
    detail = _error(api.post(POLICIES, json=policy_body(body=big)))
    assert detail["loc"][:2] == ["body", "body"] and "262144" in detail["msg"]
    assert _policy_count(world) == 0


def test_rego_that_does_not_compile_is_422_with_line_and_column_and_nothing_saved(api, world):
    events = world.audit_count()
    detail = _error(api.post(POLICIES, json=policy_body(body=BROKEN)))
    assert detail["loc"] == ["body", "body"]
    assert detail["type"] == "rego_compile_error"
    assert detail["msg"].startswith("the policy does not compile: ")
    assert isinstance(detail["line"], int) and detail["line"] >= 4
    assert isinstance(detail["column"], int) and detail["column"] >= 1
    assert _policy_count(world) == 0 and world.audit_count() == events


def test_names_are_unique_per_org_ignoring_case(api, as_actor, world, other_org):
    _create(api, name="No-Destroy")
    detail = _error(api.post(POLICIES, json=policy_body(name="no-destroy")))
    assert detail["loc"] == ["body", "name"] and "already exists" in detail["msg"]
    other_admin = as_actor(world.user(Role.admin, other_org))
    assert other_admin.post(POLICIES, json=policy_body(name="no-destroy")).status_code == 201


# ----------------------------------------------------------------------------- versions


def test_every_change_to_an_evaluated_field_is_a_new_version(api, world, member):
    policy = _create(api)
    pid = policy["id"]
    steps = [
        ({"body": DENY_DESTROY + "\n# v2\n"}, 2),
        ({"description": "now described"}, 3),
        ({"enabled": False}, 4),
        ({"type": "pre_apply"}, 5),
        ({"name": "renamed"}, 5),  # where it applies is not versioned
        ({"labels": ["team:net"], "applies_to_all": True}, 5),
    ]
    for change, version in steps:
        response = api.put(f"{POLICIES}/{pid}", json=change)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == version, change
    current = api.get(f"{POLICIES}/{pid}").json()
    assert current["name"] == "renamed" and current["labels"] == ["team:net"] and current["applies_to_all"]
    assert current["type"] == "pre_apply" and current["enabled"] is False

    versions = api.get(f"{POLICIES}/{pid}/versions").json()
    assert versions["count"] == 5
    assert [v["version"] for v in versions["data"]] == [5, 4, 3, 2, 1]  # newest first
    assert [v["current"] for v in versions["data"]] == [True, False, False, False, False]
    assert all("body" not in v for v in versions["data"])
    first = api.get(f"{POLICIES}/{pid}/versions/1").json()
    assert first["body"] == DENY_DESTROY and first["type"] == "post_plan" and first["enabled"] is True
    second = api.get(f"{POLICIES}/{pid}/versions/2").json()
    assert second["body"].endswith("# v2\n") and second["description"] == ""
    assert api.get(f"{POLICIES}/{pid}/versions/5").json()["type"] == "pre_apply"
    page = api.get(f"{POLICIES}/{pid}/versions", params={"limit": 2, "offset": 1}).json()
    assert [v["version"] for v in page["data"]] == [4, 3] and page["count"] == 5

    missing = api.get(f"{POLICIES}/{pid}/versions/99")
    assert missing.status_code == 404 and "latest is 5" in missing.json()["detail"]
    assert api.get(f"{POLICIES}/{pid}/versions/0").status_code == 422


def test_a_no_op_edit_writes_nothing(api, world):
    policy = _create(api, description="d", labels=["a", "b"])
    before = _rows(world, policy["id"])
    events = world.audit_count()
    same = {k: policy[k] for k in ("name", "type", "body", "description", "enabled", "applies_to_all")}
    response = api.put(f"{POLICIES}/{policy['id']}", json={**same, "labels": ["b", "a"]})
    assert response.status_code == 200 and response.json() == {**policy, "labels": ["a", "b"]}
    assert api.put(f"{POLICIES}/{policy['id']}", json={}).json() == policy
    assert _rows(world, policy["id"]) == before and world.audit_count() == events


def test_update_validates_and_changes_nothing_when_refused(api, world):
    policy = _create(api)
    other = _create(api, name="other")
    before = _rows(world, policy["id"])
    events = world.audit_count()
    url = f"{POLICIES}/{policy['id']}"
    detail = _error(api.put(url, json={"body": BROKEN, "description": "with a broken body"}))
    assert detail["type"] == "rego_compile_error" and detail["loc"] == ["body", "body"]
    assert _error(api.put(url, json={"name": None}))["loc"] == ["body", "name"]
    assert _error(api.put(url, json={"name": other["name"].upper()}))["loc"] == ["body", "name"]
    assert _error(api.put(url, json={"version": 7}))["loc"][:2] == ["body", "version"]
    assert _rows(world, policy["id"]) == before and world.audit_count() == events
    assert api.put(f"{POLICIES}/pol-00000000000000aa", json={"enabled": False}).status_code == 404


def test_delete_removes_versions_labels_and_attachments(api, world):
    stack = world.stack(labels=["env:prod"])
    policy = _create(api, labels=["env:prod"])
    api.put(f"{POLICIES}/{policy['id']}", json={"description": "v2"})
    assert (
        api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": policy["id"]}).status_code
        == 201
    )
    assert api.delete(f"{POLICIES}/{policy['id']}").status_code == 204
    assert _rows(world, policy["id"]) == {"policy": None, "versions": [], "labels": []}
    with world.ctx.session() as s:
        assert s.exec(select(StackPolicy)).all() == []
    assert api.get(f"{POLICIES}/{policy['id']}").status_code == 404
    assert api.delete(f"{POLICIES}/{policy['id']}").status_code == 404
    assert api.get(f"/api/v1/stacks/{stack['id']}/policies").json() == {"data": [], "count": 0}


# ----------------------------------------------------------------------------- attachments


def _stack_policies(api, stack_id: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"/api/v1/stacks/{stack_id}/policies")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return {p["name"]: p for p in body["data"]}


def _resolved(world, stack_id: str, type_: PolicyType | str = PolicyType.post_plan) -> list[str]:
    with world.ctx.session() as s:
        pairs = policy_service.policies_for_stack(s, stack_id, type_)
        for policy, version in pairs:
            assert version.policy_id == policy.id and version.version == policy.version
            assert version.body == policy.body
        return [policy.name for policy, _version in pairs]


def test_policies_apply_directly_to_all_stacks_and_by_label(api, admin, world, other_org, as_actor):
    prod = world.stack(labels=["env:prod", "team:net"])
    dev = world.stack(labels=["env:dev"])
    direct = _create(api, name="direct")
    _create(api, name="everywhere", applies_to_all=True, type="post_plan", body=WARN_ALWAYS)
    _create(api, name="prod-only", labels=["env:prod", "env:staging"])
    _create(api, name="disabled", applies_to_all=True, enabled=False)
    _create(api, name="approval", applies_to_all=True, type="approval", body=APPROVAL)
    _create(api, name="unattached")
    # Another organization's org-wide policy never reaches our stacks.
    as_actor(world.user(Role.admin, other_org)).post(
        POLICIES, json=policy_body(name="theirs", applies_to_all=True)
    )

    response = api.post(f"/api/v1/stacks/{prod['id']}/policies", json={"policy_id": direct["id"]})
    assert response.status_code == 201, response.text
    attached = response.json()
    assert attached["policy_id"] == direct["id"] and attached["via"] == ["direct"]
    assert attached["attached_by"] == admin.email and attached["attached_at"].endswith("Z")
    again = api.post(f"/api/v1/stacks/{prod['id']}/policies", json={"policy_id": direct["id"]})
    assert again.status_code == 409 and "already attached" in again.json()["detail"]

    assert _resolved(world, prod["id"]) == ["direct", "everywhere", "prod-only"]
    assert _resolved(world, prod["id"], "approval") == ["approval"]
    assert _resolved(world, prod["id"], PolicyType.pre_plan) == []
    assert _resolved(world, dev["id"]) == ["everywhere"]
    assert _resolved(world, "stk-00000000000000aa") == []

    listed = _stack_policies(api, prod["id"])
    assert sorted(listed) == ["approval", "direct", "disabled", "everywhere", "prod-only"]
    assert listed["prod-only"]["via"] == ["label"] and listed["prod-only"]["matched_labels"] == ["env:prod"]
    assert listed["prod-only"]["attached_by"] is None
    assert listed["everywhere"]["via"] == ["all"]
    assert listed["disabled"]["enabled"] is False  # listed, but not evaluated
    assert sorted(_stack_policies(api, dev["id"])) == ["approval", "disabled", "everywhere"]

    # Several ways at once, all of them reported.
    api.put(f"{POLICIES}/{direct['id']}", json={"applies_to_all": True, "labels": ["team:net"]})
    assert _stack_policies(api, prod["id"])["direct"]["via"] == ["direct", "all", "label"]

    assert api.delete(f"/api/v1/stacks/{prod['id']}/policies/{direct['id']}").status_code == 204
    assert _stack_policies(api, prod["id"])["direct"]["via"] == ["all", "label"]
    gone = api.delete(f"/api/v1/stacks/{prod['id']}/policies/{direct['id']}")
    assert gone.status_code == 404 and "not attached" in gone.json()["detail"]


def test_labels_changes_and_stack_deletion_follow_through(api, world):
    stack = world.stack(labels=["env:prod"])
    policy = _create(api, name="by-label", labels=["env:dev"])
    assert _resolved(world, stack["id"]) == []
    api.put(f"{POLICIES}/{policy['id']}", json={"labels": ["env:dev", "env:prod"]})
    assert _resolved(world, stack["id"]) == ["by-label"]
    api.patch(f"/api/v1/stacks/{stack['id']}", json={"labels": ["env:test"]})
    assert _resolved(world, stack["id"]) == []

    api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": policy["id"]})
    assert api.delete(f"/api/v1/stacks/{stack['id']}").status_code == 204
    with world.ctx.session() as s:
        assert s.exec(select(StackPolicy)).all() == []
    assert _rows(world, policy["id"])["policy"] is not None


def test_attach_refuses_unknown_foreign_and_login_policies(api, as_actor, world, other_org):
    stack = world.stack()
    url = f"/api/v1/stacks/{stack['id']}/policies"
    theirs = as_actor(world.user(Role.admin, other_org)).post(POLICIES, json=policy_body()).json()
    for policy_id in (theirs["id"], "pol-00000000000000aa"):
        response = api.post(url, json={"policy_id": policy_id})
        assert response.status_code == 404 and response.json()["detail"] == f"policy {policy_id} not found"
    assert _error(api.post(url, json={"policy_id": "nope"}))["loc"] == ["body", "policy_id"]

    login = _create(api, name="login", type="login", body=WARN_ALWAYS)
    assert _error(api.post(url, json={"policy_id": login["id"]}))["loc"] == ["body", "policy_id"]
    assert _error(api.put(f"{POLICIES}/{login['id']}", json={"applies_to_all": True}))["loc"] == [
        "body",
        "applies_to_all",
    ]
    assert _error(api.post(POLICIES, json=policy_body(name="l2", type="login", labels=["x"])))["loc"] == [
        "body",
        "labels",
    ]
    attached = _create(api, name="attached")
    api.post(url, json={"policy_id": attached["id"]})
    detail = _error(api.put(f"{POLICIES}/{attached['id']}", json={"type": "login"}))
    assert detail["loc"] == ["body", "type"] and "detach it" in detail["msg"]
    with world.ctx.session() as s:
        assert [a.policy_id for a in s.exec(select(StackPolicy)).all()] == [attached["id"]]


def test_stack_routes_of_another_org_are_404(api, as_actor, world, other_org):
    theirs = world.stack(other_org)
    ours = _create(api)
    url = f"/api/v1/stacks/{theirs['id']}/policies"
    assert api.get(url).status_code == 404
    assert api.post(url, json={"policy_id": ours["id"]}).status_code == 404
    assert api.delete(f"{url}/{ours['id']}").status_code == 404


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_a_body(api, member, as_actor):
    response = as_actor(member).post(EVALUATE, json={"body": DENY_DESTROY, "input": DESTROY_PLAN})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["deny"] == ["aws_s3_bucket.logs would be destroyed"]
    assert result["warn"] == [] and result["require_approval"] is False
    assert isinstance(result["required_approvals"], int)
    assert result["engine"] and result["duration_ms"] >= 0 and result["unsupported_builtins"] == []
    assert result["type"] == "post_plan" and result["policy_id"] is None and result["version"] is None

    clean = as_actor(member).post(EVALUATE, json={"body": DENY_DESTROY, "input": {"resource_changes": []}})
    assert clean.json()["deny"] == []


def test_evaluate_an_approval_policy(api):
    crucible = {"crucible": {"counts": {"add": 5, "change": 0, "destroy": 0}}}
    result = api.post(EVALUATE, json={"body": APPROVAL, "type": "approval", "input": crucible}).json()
    assert result["require_approval"] is True and result["required_approvals"] == 2
    assert result["type"] == "approval" and result["deny"] == []


def test_evaluate_a_saved_policy_uses_its_current_version(api, as_actor, member):
    policy = _create(api, type="pre_apply")
    result = as_actor(member).post(EVALUATE, json={"policy_id": policy["id"], "input": DESTROY_PLAN}).json()
    assert result["deny"] == ["aws_s3_bucket.logs would be destroyed"]
    assert result["policy_id"] == policy["id"] and result["version"] == 1 and result["type"] == "pre_apply"
    api.put(f"{POLICIES}/{policy['id']}", json={"body": WARN_ALWAYS})
    result = api.post(EVALUATE, json={"policy_id": policy["id"], "input": DESTROY_PLAN}).json()
    assert result["deny"] == [] and result["warn"] == ["review this plan"] and result["version"] == 2


def test_evaluate_reports_compile_and_evaluation_errors(api):
    detail = _error(api.post(EVALUATE, json={"body": BROKEN, "input": {}}))
    assert detail["loc"] == ["body", "body"] and detail["type"] == "rego_compile_error"
    assert isinstance(detail["line"], int) and isinstance(detail["column"], int)
    detail = _error(api.post(EVALUATE, json={"body": CONFLICT, "input": {}}))
    assert detail["loc"] == ["body", "body"] and detail["type"] == "rego_eval_error"
    assert detail["msg"].startswith("evaluation error: ")


@pytest.mark.parametrize(
    ("payload", "loc", "words"),
    [
        ({"body": DENY_DESTROY, "input": [1, 2]}, ["body", "input"], "must be a JSON object"),
        ({"body": DENY_DESTROY, "input": "{}"}, ["body", "input"], "not a string"),
        ({"body": DENY_DESTROY, "input": None}, ["body", "input"], "not null"),
        ({"body": DENY_DESTROY}, ["body", "input"], ""),
        ({"input": {}}, ["body"], "exactly one of body"),
        ({"body": DENY_DESTROY, "policy_id": "pol-00000000000000aa", "input": {}}, ["body"], "exactly one"),
        ({"body": DENY_DESTROY, "type": "sometimes", "input": {}}, ["body", "type"], ""),
        ({"policy_id": "pol-1", "input": {}}, ["body", "policy_id"], ""),
    ],
)
def test_evaluate_rejects_bad_requests(api, payload, loc, words):
    detail = _error(api.post(EVALUATE, json=payload))
    assert detail["loc"][: len(loc)] == loc and words in detail["msg"], detail


def test_evaluate_bounds_the_input(api, settings):
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(150):
        node["a"] = {}
        node = node["a"]
    detail = _error(api.post(EVALUATE, json={"body": DENY_DESTROY, "input": deep}))
    assert "nested more than" in detail["msg"]
    # Larger than CRUCIBLE_MAX_REQUEST_BYTES is fine here: a plan JSON has its own limit.
    big = {
        "resource_changes": [
            {"address": f"null_resource.r{n:07d}", "change": {"actions": ["create"]}} for n in range(25_000)
        ]
    }
    assert api.post(EVALUATE, json={"body": DENY_DESTROY, "input": big}).status_code == 200
    huge = {"blob": "x" * (settings.policy_input_max_bytes + 1)}
    response = api.post(EVALUATE, json={"body": DENY_DESTROY, "input": huge})
    assert response.status_code == 413 and "CRUCIBLE_POLICY_INPUT_MAX_BYTES" in response.json()["detail"]


def test_evaluate_a_policy_of_another_org_is_404(api, as_actor, world, other_org, viewer):
    theirs = as_actor(world.user(Role.admin, other_org)).post(POLICIES, json=policy_body()).json()
    response = api.post(EVALUATE, json={"policy_id": theirs["id"], "input": {}})
    assert response.status_code == 404 and response.json()["detail"] == f"policy {theirs['id']} not found"
    assert as_actor(viewer).post(EVALUATE, json={"body": DENY_DESTROY, "input": {}}).status_code == 403


# ----------------------------------------------------------------------------- isolation and roles


def test_another_org_cannot_see_or_touch_our_policies(api, as_actor, world, other_org):
    ours = _create(api, applies_to_all=True)
    them = as_actor(world.user(Role.admin, other_org))
    assert them.get(POLICIES).json() == {"data": [], "count": 0}
    url = f"{POLICIES}/{ours['id']}"
    for response in (
        them.get(url),
        them.put(url, json={"description": "mine now"}),
        them.delete(url),
        them.get(f"{url}/versions"),
        them.get(f"{url}/versions/1"),
    ):
        assert response.status_code == 404 and response.json()["detail"] == f"policy {ours['id']} not found"
    their_stack = world.stack(other_org)
    assert (
        them.post(f"/api/v1/stacks/{their_stack['id']}/policies", json={"policy_id": ours["id"]}).status_code
        == 404
    )
    assert _resolved(world, their_stack["id"]) == []
    assert api.get(url).json() == ours


def test_viewers_read_and_members_cannot_manage(api, as_actor, viewer, member, world):
    policy = _create(api)
    stack = world.stack()
    for actor in (viewer, member):
        client = as_actor(actor)
        assert client.get(POLICIES).status_code == 200
        assert client.get(f"{POLICIES}/{policy['id']}").status_code == 200
        assert client.get(f"/api/v1/stacks/{stack['id']}/policies").status_code == 200
        refused = client.post(POLICIES, json=policy_body(name="mine"))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert client.put(f"{POLICIES}/{policy['id']}", json={"enabled": False}).status_code == 403
        assert (
            client.post(
                f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": policy["id"]}
            ).status_code
            == 403
        )


# ----------------------------------------------------------------------------- audit


def test_every_mutation_is_audited_without_large_bodies(api, admin, world):
    stack = world.stack()
    policy = _create(api, labels=["env:prod"])
    pid = policy["id"]
    big = DENY_DESTROY + "# padding line\n" * 400  # > 4 KiB
    api.put(f"{POLICIES}/{pid}", json={"body": big, "name": "renamed"})
    api.put(f"{POLICIES}/{pid}", json={"labels": []})
    api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": pid})
    api.delete(f"/api/v1/stacks/{stack['id']}/policies/{pid}")
    api.delete(f"{POLICIES}/{pid}")

    events = _events(world)
    assert [e.action for e in events] == [
        "policy.create",
        "policy.update",
        "policy.update",
        "policy.attach",
        "policy.detach",
        "policy.delete",
    ]
    assert all(e.actor == admin.email and e.category == "policy" for e in events)
    create, edit, relabel, attach, detach, delete = events
    assert create.resource_id == pid and create.before is None
    assert create.after["body"] == DENY_DESTROY and create.after["version"] == 1
    assert create.after["labels"] == ["env:prod"] and create.after["body_sha256"] == policy["body_sha256"]

    assert set(edit.before) == {"name", "version", "body", "body_sha256", "body_bytes"}
    assert set(edit.after) == {"name", "version", "body_sha256", "body_bytes"}  # too large to copy
    assert edit.after["version"] == 2 and edit.after["body_bytes"] == len(big.encode())
    assert relabel.before == {"labels": ["env:prod"]} and relabel.after == {"labels": []}

    assert attach.resource_type == "stack" and attach.resource_id == stack["id"]
    assert attach.after == {"policy_id": pid, "policy_name": "renamed", "stack_name": stack["name"]}
    assert detach.before == attach.after and detach.resource_id == stack["id"]
    assert delete.before["version"] == 2 and "body" not in delete.before
    assert delete.before["attached_stacks"] == []


# ----------------------------------------------------------------------------- the input document


def test_input_document_puts_the_plan_first_and_crucible_beside_it(world):
    stack_id = world.stack(labels=["team:net", "env:prod"], branch="release", project_root="envs/prod")["id"]
    with world.ctx.session() as s:
        stack = s.get(Stack, stack_id)
        run = Run(
            id=new_id("run"),
            org_id=stack.org_id,
            stack_id=stack_id,
            type="tracked",
            exclusive=True,
            commit_sha="a" * 40,
            commit_message="tag the buckets",
            message="from the API",
            trigger="api",
            created_by="someone@example.test",
            created_at=utcnow(),
            plan_summary={"add": 2, "change": 1, "destroy": 0, "import": 4},
        )
        doc = policy_service.input_document(run, stack, ["team:net", "env:prod"], DESTROY_PLAN)
    assert doc["resource_changes"] == DESTROY_PLAN["resource_changes"] and doc["format_version"] == "1.2"
    assert doc["crucible"]["counts"] == {"add": 2, "change": 1, "destroy": 0}
    assert doc["crucible"]["stack"] == {
        "id": stack_id,
        "name": stack.name,
        "labels": ["env:prod", "team:net"],
        "branch": "release",
        "tool": "opentofu",
        "project_root": "envs/prod",
    }
    assert doc["crucible"]["run"]["commit"] == "a" * 40 and doc["crucible"]["run"]["type"] == "tracked"
    assert set(doc["crucible"]["run"]) >= {
        "id",
        "type",
        "trigger",
        "commit",
        "message",
        "created_by",
        "created_at",
    }


def test_the_documented_examples_compile_and_decide_as_documented(api):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    blocks = re.findall(r"```rego\n(.*?)```", doc, re.S)
    destroy, tags, approval = blocks[:3]
    for body in blocks[3:]:  # the other examples (trigger, login, validation ...) compile and run
        response = api.post(EVALUATE, json={"body": body, "input": {"crucible": {}}})
        assert response.status_code == 200, (body, response.text)
    plan = {
        "resource_changes": [
            {"address": "aws_s3_bucket.logs", "type": "aws_s3_bucket", "change": {"actions": ["delete"]}},
            {
                "address": "aws_s3_bucket.new",
                "type": "aws_s3_bucket",
                "change": {"actions": ["create"], "after": {"tags": {}}},
            },
        ],
        "crucible": {"run": {"type": "tracked"}, "counts": {"add": 15, "change": 5, "destroy": 1}},
    }
    results = {}
    for name, body, type_ in (
        ("destroy", destroy, "post_plan"),
        ("tags", tags, "post_plan"),
        ("approval", approval, "approval"),
    ):
        assert api.post(POLICIES, json={"name": name, "type": type_, "body": body}).status_code == 201
        response = api.post(EVALUATE, json={"body": body, "input": plan})
        assert response.status_code == 200, response.text
        results[name] = response.json()
    assert results["destroy"]["deny"] == ["aws_s3_bucket.logs would be destroyed; use a destroy run"]
    assert results["tags"]["warn"] == ["aws_s3_bucket.new has no owner tag"] and results["tags"]["deny"] == []
    assert results["approval"]["require_approval"] is True and results["approval"]["required_approvals"] == 2
    plan["crucible"]["run"]["type"] = "destroy"
    assert api.post(EVALUATE, json={"body": destroy, "input": plan}).json()["deny"] == []
