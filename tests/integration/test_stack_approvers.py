"""Stack approvers: who besides admins may confirm a stack's runs."""

from __future__ import annotations

from backend.auth.models import Role
from tests.integration.test_rbac_matrix import make_run


def _approvers(client, stack_id):
    return [a["email"] for a in client.get(f"/api/v1/stacks/{stack_id}/approvers").json()["data"]]


def test_an_approver_confirms_that_stack_only(world, as_actor, admin, db_kind):
    member = world.user(Role.member)
    viewer = world.user(Role.viewer)
    stack_a = world.stack()["id"]
    run_a = make_run(world, world.org_id, "unconfirmed")
    with world.ctx.session() as s:  # make_run made its own stack: point the run at stack_a
        from backend.runs.models import Run

        s.get(Run, run_a).stack_id = stack_a
    run_b = make_run(world, world.org_id, "unconfirmed")
    as_admin, as_member, as_viewer = as_actor(admin), as_actor(member), as_actor(viewer)

    refused = as_member.post(f"/api/v1/runs/{run_a}/confirm")
    assert refused.status_code == 403 and "approver" in refused.json()["detail"]
    assert "confirm" not in as_member.get(f"/api/v1/runs/{run_a}").json()["actions"]

    for user in (member, viewer):
        assert as_admin.put(f"/api/v1/stacks/{stack_a}/approvers/{user.id}").status_code == 200
    assert as_admin.put(f"/api/v1/stacks/{stack_a}/approvers/{member.id}").status_code == 200  # idempotent
    assert _approvers(as_viewer, stack_a) == sorted([member.email, viewer.email])

    assert "confirm" in as_member.get(f"/api/v1/runs/{run_a}").json()["actions"]
    listed = {r["id"]: r["actions"] for r in as_member.get("/api/v1/runs").json()["data"]}
    assert "confirm" in listed[run_a] and "confirm" not in listed[run_b]
    confirmed = as_member.post(f"/api/v1/runs/{run_a}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    # Approving one stack grants nothing on another.
    assert as_member.post(f"/api/v1/runs/{run_b}/confirm").status_code == 403

    assert as_admin.delete(f"/api/v1/stacks/{stack_a}/approvers/{member.id}").status_code == 204
    assert _approvers(as_viewer, stack_a) == [viewer.email]
    assert as_admin.delete(f"/api/v1/stacks/{stack_a}/approvers/{member.id}").status_code == 404
    actions = [
        e.action for e in world.audit_events() if e.action.startswith(("stack.approver", "run.confirm"))
    ]
    assert actions.count("stack.approver_add") == 2 and "stack.approver_remove" in actions
    assert "run.confirm" in actions


def test_only_members_of_the_org_can_be_approvers(world, as_actor, admin):
    other_org = world.new_org("elsewhere")
    outsider = world.user(Role.member, other_org)
    stack = world.stack()["id"]
    resp = as_actor(admin).put(f"/api/v1/stacks/{stack}/approvers/{outsider.id}")
    assert resp.status_code == 422 and "not a member of this organization" in resp.text
    assert _approvers(as_actor(admin), stack) == []


def test_a_token_is_never_an_approver(world, as_actor):
    token = world.token(Role.member)
    run = make_run(world, world.org_id, "unconfirmed")
    assert as_actor(token).post(f"/api/v1/runs/{run}/confirm").status_code == 403
