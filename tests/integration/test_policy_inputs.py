"""A past run's policy input (GET /runs/{id}/policy-input) and the runs that have a plan."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from policy_support import (
    FIXTURES,
    PLAN_CHANGES,
    PLAN_DESTROY,
    PLAN_NO_CHANGES,
    planned_run,
)
from runs_support import queued_run

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.errors import Forbidden, NotFound
from backend.policies import inputs
from backend.runs.models import Run
from backend.runs.plandiff import count_actions
from backend.timeutil import utcnow

# A sensitive variable's value in plan-changes.json (tests/fixtures/tofu/README.md).
SECRET = "s3cr3t-rotated-value"


def url(run_id: str) -> str:
    return f"/api/v1/runs/{run_id}/policy-input"


def principal(world, role: Role = Role.member, org_id: str | None = None) -> Principal:
    return Principal(
        kind="user",
        id=f"usr-{role.value}",
        label=f"{role.value}@x.test",
        org_id=org_id or world.org_id,
        role=role,
    )


def test_input_of_a_planned_run_is_the_redacted_plan_plus_crucible(world, as_actor, member):
    stack = world.stack(labels=["team:net", "env:prod"], branch="main", project_root="envs/prod")
    run_id = planned_run(world.ctx, stack["id"], PLAN_CHANGES)
    response = as_actor(member).get(url(run_id))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    plan = json.loads((FIXTURES / PLAN_CHANGES).read_text())
    assert set(doc) == set(plan) | {"crucible"}
    assert [rc["address"] for rc in doc["resource_changes"]] == [
        rc["address"] for rc in plan["resource_changes"]
    ]
    # The same redaction as GET /runs/{id}/plan: no secret leaves through a policy's input.
    assert SECRET in (FIXTURES / PLAN_CHANGES).read_text() and SECRET not in response.text
    shown = as_actor(member).get(f"/api/v1/runs/{run_id}/plan").json()
    assert doc["resource_changes"] == shown["resource_changes"]
    crucible = doc["crucible"]
    assert crucible["counts"] == count_actions(plan) == {"add": 7, "change": 2, "destroy": 3}
    assert crucible["stack"] == {
        "id": stack["id"],
        "name": stack["name"],
        "labels": ["env:prod", "team:net"],
        "branch": "main",
        "tool": "opentofu",
        "project_root": "envs/prod",
    }
    assert crucible["run"]["id"] == run_id and crucible["run"]["type"] == "tracked"
    assert len(crucible["run"]["commit"]) == 40 and crucible["run"]["created_at"].endswith("Z")


def test_pre_plan_input_has_no_plan_keys_and_zero_counts(world, as_actor, member):
    run_id = planned_run(world.ctx, world.stack()["id"], PLAN_DESTROY, run_type="destroy")
    doc = as_actor(member).get(url(run_id), params={"type": "pre_plan"}).json()
    assert set(doc) == {"crucible"}
    assert doc["crucible"]["counts"] == {"add": 0, "change": 0, "destroy": 0}
    assert doc["crucible"]["run"]["type"] == "destroy"
    full = as_actor(member).get(url(run_id), params={"type": "post_plan"}).json()
    assert full["crucible"]["counts"]["destroy"] == 6 and "resource_changes" in full
    bad = as_actor(member).get(url(run_id), params={"type": "sometimes"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "type"]


def test_runs_without_a_plan_get_crucible_alone(world, as_actor, member):
    stack_id = world.stack()["id"]
    with world.ctx.session() as s:
        queued = queued_run(s, stack_id, "proposed").id
    ansible_like = planned_run(world.ctx, stack_id, None, run_type="proposed")
    for run_id in (queued, ansible_like):
        response = as_actor(member).get(url(run_id))
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"crucible"}
        assert response.json()["crucible"]["run"]["id"] == run_id


def test_a_pulumi_preview_is_used_as_stored(world, as_actor, member):
    run_id = planned_run(world.ctx, world.stack(tool="pulumi")["id"], "pulumi/preview-changes.json")
    doc = as_actor(member).get(url(run_id)).json()
    assert "steps" in doc and doc["config"]["crucible-demo:dbPassword"] == "[secret]"


def test_who_may_read_it(world, as_actor, viewer, admin, other_org):
    run_id = planned_run(world.ctx, world.stack()["id"], PLAN_NO_CHANGES)
    refused = as_actor(viewer).get(url(run_id))
    assert refused.status_code == 403 and "member" in refused.json()["detail"]
    assert as_actor(admin).get(url(run_id)).status_code == 200
    theirs = as_actor(world.user(Role.admin, other_org)).get(url(run_id))
    assert theirs.status_code == 404 and theirs.json()["detail"] == f"run {run_id} not found"
    assert as_actor(admin).get(url("run-00000000000000aa")).status_code == 404
    assert as_actor(admin).get(url("run-1")).status_code == 422
    assert as_actor(world.actor("anonymous", None)).get(url(run_id)).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"policy_input_max_bytes": 4096}])
def test_a_plan_over_the_input_limit_is_413(world, as_actor, member):
    run_id = planned_run(world.ctx, world.stack()["id"], PLAN_CHANGES)
    response = as_actor(member).get(url(run_id))
    assert response.status_code == 413
    assert (
        "CRUCIBLE_POLICY_INPUT_MAX_BYTES" in response.json()["detail"]
        and "(4096)" in response.json()["detail"]
    )
    # Without a recorded size (older artifacts), the bytes read are checked instead.
    with world.ctx.session() as s:
        row = s.get(Run, run_id)
        row.artifacts = {"plan_json": {k: v for k, v in row.artifacts["plan_json"].items() if k != "size"}}
        s.add(row)
    assert as_actor(member).get(url(run_id)).status_code == 413


def test_a_stored_plan_that_is_gone_or_not_json_is_409(world, as_actor, member):
    stack_id = world.stack()["id"]
    gone = planned_run(world.ctx, stack_id, PLAN_NO_CHANGES, run_type="proposed")
    with world.ctx.session() as s:
        world.ctx.objects.delete(s.get(Run, gone).artifacts["plan_json"]["key"])
    response = as_actor(member).get(url(gone))
    assert response.status_code == 409 and "missing from the object store" in response.json()["detail"]

    garbled = planned_run(world.ctx, stack_id, PLAN_NO_CHANGES, run_type="proposed")
    info = world.ctx.objects.put(f"runs/{garbled}/plan.json", b"{not json")
    with world.ctx.session() as s:
        row = s.get(Run, garbled)
        row.artifacts = {"plan_json": {"key": info.key, "sha256": info.sha256, "size": info.size}}
        s.add(row)
    response = as_actor(member).get(url(garbled))
    assert response.status_code == 409 and "not valid JSON" in response.json()["detail"]


def test_run_input_document_matches_the_route(world, as_actor, member):
    run_id = planned_run(world.ctx, world.stack()["id"], PLAN_CHANGES)
    with world.ctx.session(readonly=True) as s:
        doc = inputs.run_input_document(s, principal(world), world.ctx.objects, run_id)
        with pytest.raises(Forbidden):
            inputs.run_input_document(s, principal(world, Role.viewer), world.ctx.objects, run_id)
    assert doc == as_actor(member).get(url(run_id)).json()


# ----------------------------------------------------------------------------- recent_plan_runs


def test_recent_plan_runs_newest_first_per_stack_or_org(world, other_org):
    a, b = world.stack()["id"], world.stack()["id"]
    theirs = world.stack(other_org)["id"]
    t0 = utcnow() - timedelta(hours=1)
    at = iter(t0 + timedelta(minutes=n) for n in range(100))
    a1 = planned_run(world.ctx, a, PLAN_CHANGES, at=next(at))
    b1 = planned_run(world.ctx, b, PLAN_DESTROY, run_type="destroy", at=next(at))
    planned_run(world.ctx, a, None, run_type="proposed", at=next(at))  # no plan JSON
    a2 = planned_run(world.ctx, a, PLAN_NO_CHANGES, run_type="proposed", at=next(at))
    with world.ctx.session() as s:
        queued_run(s, b, "proposed", at=next(at))  # not planned yet
    b2 = planned_run(world.ctx, b, PLAN_CHANGES, keep_holding=True, at=next(at))  # unconfirmed
    planned_run(world.ctx, theirs, PLAN_CHANGES, at=next(at))

    def ids(stack_ids, limit=50, who=None):
        with world.ctx.session(readonly=True) as s:
            return [r.id for r in inputs.recent_plan_runs(s, who or principal(world), stack_ids, limit)]

    assert ids(None) == [b2, a2, b1, a1]
    assert ids(None, limit=2) == [b2, a2]
    assert ids([a]) == [a2, a1]
    assert ids([b, b]) == [b2, b1]
    assert ids([a, b], limit=3) == [b2, a2, b1]
    assert ids([]) == []
    assert ids(None, who=principal(world, Role.viewer)) == [b2, a2, b1, a1]
    assert len(ids(None, who=principal(world, org_id=other_org))) == 1
    for unknown in (theirs, "stk-00000000000000aa"):
        with pytest.raises(NotFound, match=f"stack {unknown} not found"):
            ids([a, unknown])
