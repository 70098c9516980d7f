"""Validation policies: evaluated on demand and on a schedule against a stack's current state
(written through Terraform's http backend protocol), results stored per policy and shown to
every reader, sensitive values never in a message."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from backend.auth.models import Role
from backend.context import set_context
from backend.policies import validation
from backend.policies.models import StackValidation
from backend.tasks import validation_scheduler
from backend.timeutil import utcnow
from tests.aio import run_async
from tests.integration.test_state_protocol import TerraformClient, new_token

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
DB_PASSWORD = "hunter2-db-password-0x7f"

REQUIRE_OWNER = """package crucible

deny contains msg if {
\tsome res in input.state.resources
\tres.mode == "managed"
\tsome inst in res.instances
\tnot inst.attributes.tags.owner
\tmsg := sprintf("%s.%s has no owner tag", [res.type, res.name])
}
"""

# Tries to read secrets out through its messages.
LEAKY = """package crucible

warn contains msg if {
\tsome res in input.state.resources
\tres.type == "aws_db_instance"
\tsome inst in res.instances
\tmsg := sprintf("password of %s is %s", [res.name, inst.attributes.password])
}

warn contains msg if {
\tmsg := sprintf("output says %s", [input.state.outputs.db_password.value])
}
"""

# Every string of the state that still holds a secret, and how many values were hidden.
WALKER = """package crucible

deny contains value if {
\twalk(input.state, [_, value])
\tis_string(value)
\tcontains(value, "st4te")
}

hidden := [v | walk(input.state, [_, v]); v == "(sensitive)"]

warn contains sprintf("%d values hidden", [count(hidden)]) if true

warn contains json.marshal(inst.attributes.output) if {
\tsome res in input.state.resources
\tres.type == "terraform_data"
\tres.name == "db"
\tsome inst in res.instances
}
"""

CONTEXT = """package crucible

warn contains sprintf("stack %s labels %s", [stack.name, concat(",", stack.labels)]) if {
	stack := input.crucible.stack
}

deny contains "no state" if not input.state

warn contains sprintf("serial %d of %d resources", [s.serial, s.resource_count]) if {
\ts := input.crucible.state
}
"""

ALWAYS_WARN = """package crucible

warn contains "looked" if true
"""

CONFLICT = """package crucible

x := 1 if true

x := 2 if true

deny contains "never" if x == 3
"""


def aws_state(serial: int = 1, lineage: str = "val-lineage") -> bytes:
    """Two buckets (one tagged) and a database whose password Terraform marks sensitive."""

    def resource(type_: str, name: str, attributes: dict[str, Any], sensitive: list | None = None):
        return {
            "mode": "managed",
            "type": type_,
            "name": name,
            "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
            "instances": [
                {
                    "schema_version": 0,
                    "attributes": attributes,
                    "sensitive_attributes": sensitive or [],
                    "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjAifQ==",
                }
            ],
        }

    doc = {
        "version": 4,
        "terraform_version": "1.9.8",
        "serial": serial,
        "lineage": lineage,
        "outputs": {
            "db_password": {"value": DB_PASSWORD, "type": "string", "sensitive": True},
            "bucket": {"value": "logs-bucket", "type": "string"},
        },
        "resources": [
            resource("aws_s3_bucket", "logs", {"id": "logs-bucket", "tags": {"owner": "ops"}}),
            resource("aws_s3_bucket", "scratch", {"id": "scratch-bucket", "tags": {}}),
            resource(
                "aws_db_instance",
                "main",
                {"id": "db-1", "password": DB_PASSWORD, "tags": None, "note": f"pw={DB_PASSWORD}"},
                [[{"type": "get_attr", "value": "password"}]],
            ),
        ],
        "check_results": None,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


@pytest.fixture
def admin_api(as_actor, admin):
    return as_actor(admin)


@pytest.fixture
def member_api(as_actor, member):
    return as_actor(member)


@pytest.fixture
def viewer_api(as_actor, viewer):
    return as_actor(viewer)


def push_state(client, world, stack_id: str, data: bytes) -> None:
    """Write a state version the way Terraform's http backend does."""
    tf = TerraformClient(client, stack_id, new_token(world, stack_id, name=f"t-{world._n()}"))
    response = tf.put(data)
    assert response.status_code == 200, response.text


def make_policy(api, name: str, body: str, **fields: Any) -> str:
    response = api.post("/api/v1/policies", json={"name": name, "type": "validation", "body": body, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def attach(api, stack_id: str, policy_id: str) -> None:
    response = api.post(f"/api/v1/stacks/{stack_id}/policies", json={"policy_id": policy_id})
    assert response.status_code == 201, response.text


def validate(api, stack_id: str, status: int = 200) -> dict[str, Any]:
    response = api.post(f"/api/v1/stacks/{stack_id}/validate")
    assert response.status_code == status, response.text
    return response.json()


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert result["count"] == len(result["data"])
    return {r["policy_name"]: r for r in result["data"]}


def stored(world, stack_id: str) -> dict[str, StackValidation]:
    with world.ctx.session() as s:
        rows = s.exec(select(StackValidation).where(StackValidation.stack_id == stack_id)).all()
        return {r.policy_name: r for r in rows}


# --------------------------------------------------------------------------- on demand


def test_validate_now_reports_untagged_resources_and_every_reader_sees_it(
    client, world, admin_api, member_api, viewer_api, member
):
    stack_id = world.stack(name="net-prod", labels=["env:prod"])["id"]
    push_state(client, world, stack_id, aws_state(serial=7))
    owner = make_policy(admin_api, "require-owner", REQUIRE_OWNER)
    attach(admin_api, stack_id, owner)
    make_policy(admin_api, "looked", ALWAYS_WARN, labels=["env:prod"])
    events = len(world.audit_events())

    result = validate(member_api, stack_id)

    rows = by_name(result)
    assert list(rows) == ["looked", "require-owner"]  # by policy name
    denied = rows["require-owner"]
    assert denied["outcome"] == "deny"
    assert denied["deny"] == [
        "aws_db_instance.main has no owner tag",
        "aws_s3_bucket.scratch has no owner tag",
    ]
    assert denied["warn"] == [] and denied["error"] is None
    assert denied["policy_id"] == owner and denied["policy_version"] == 1
    assert denied["state_serial"] == 7
    assert denied["trigger"] == "manual" and denied["evaluated_by"] == member.email
    assert denied["engine"] and denied["duration_ms"] >= 0 and denied["evaluated_at"].endswith("Z")
    assert rows["looked"]["outcome"] == "warn" and rows["looked"]["warn"] == ["looked"]

    # Viewers read the results; nothing changed by reading them.
    listed = viewer_api.get(f"/api/v1/stacks/{stack_id}/validation")
    assert listed.status_code == 200 and listed.json() == result

    # One audit event for the manual run, with what each policy decided.
    new = world.audit_events()[events:]
    assert [e.action for e in new] == ["stack.validate"]
    assert new[0].resource_id == stack_id and new[0].actor == member.email
    assert new[0].after["state_serial"] == 7
    assert {r["policy_name"]: r["outcome"] for r in new[0].after["results"]} == {
        "looked": "warn",
        "require-owner": "deny",
    }


def test_a_new_evaluation_replaces_the_previous_one(client, world, admin_api, member_api):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state(serial=1))
    attach(admin_api, stack_id, make_policy(admin_api, "require-owner", REQUIRE_OWNER))
    first = by_name(validate(member_api, stack_id))["require-owner"]
    assert first["state_serial"] == 1 and len(first["deny"]) == 2

    state = json.loads(aws_state(serial=2))
    for res in state["resources"]:
        res["instances"][0]["attributes"]["tags"] = {"owner": "ops"}
    push_state(client, world, stack_id, json.dumps(state).encode())
    second = by_name(validate(member_api, stack_id))["require-owner"]
    assert second["outcome"] == "allow" and second["deny"] == [] and second["state_serial"] == 2
    assert second["evaluated_at"] >= first["evaluated_at"]
    assert len(stored(world, stack_id)) == 1  # one row per stack and policy


def test_sensitive_values_never_reach_a_policy(client, world, admin_api, member_api, viewer_api):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    attach(admin_api, stack_id, make_policy(admin_api, "leaky", LEAKY))

    result = validate(member_api, stack_id)

    leaky = by_name(result)["leaky"]
    assert leaky["warn"] == ["output says (sensitive)", "password of main is (sensitive)"]
    for text in (json.dumps(result), viewer_api.get(f"/api/v1/stacks/{stack_id}/validation").text):
        assert DB_PASSWORD not in text
    assert DB_PASSWORD not in repr(stored(world, stack_id)["leaky"].model_dump())


def test_real_terraform_state_is_redacted_where_terraform_repeats_a_secret(
    client, world, admin_api, member_api
):
    """state-v1.json (Terraform 1.11): terraform_data.db marks input.password sensitive and
    repeats it, unmarked, in output; a sensitive output holds it too."""
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, (FIXTURES / "state-v1.json").read_bytes())
    attach(admin_api, stack_id, make_policy(admin_api, "walker", WALKER))

    walker = by_name(validate(member_api, stack_id))["walker"]

    assert walker["error"] is None and walker["deny"] == []  # no string holds the secret
    hidden = [w for w in walker["warn"] if w.endswith("values hidden")]
    assert len(hidden) == 1 and int(hidden[0].split()[0]) >= 3
    output = json.loads(next(w for w in walker["warn"] if w.startswith("{")))
    # Dynamic values are unwrapped, as on the state page; the repeated secret is scrubbed.
    assert output == {
        "labels": {"owner": "data", "secret": "(sensitive)"},
        "name": "app",
        "password": "(sensitive)",
    }
    assert walker["state_serial"] == 10


def test_redacted_state_hides_marked_values_and_their_copies():
    state = json.loads(aws_state())
    redacted = validation.redacted_state(state)
    text = json.dumps(redacted)
    assert DB_PASSWORD not in text
    db = redacted["resources"][2]["instances"][0]
    assert db["attributes"]["password"] == "(sensitive)"
    assert db["attributes"]["note"] == "pw=(sensitive)"  # the same text elsewhere
    assert "private" not in db  # opaque provider data is left out
    assert db["sensitive_attributes"] == [[{"type": "get_attr", "value": "password"}]]
    assert redacted["outputs"]["db_password"]["value"] == "(sensitive)"
    assert redacted["outputs"]["bucket"]["value"] == "logs-bucket"
    assert redacted["serial"] == 1 and redacted["lineage"] == "val-lineage"
    assert state["outputs"]["db_password"]["value"] == DB_PASSWORD  # the input is not changed


def test_input_document_carries_the_stack_and_the_state_version(client, world, admin_api, member_api):
    stack_id = world.stack(name="dns", labels=["team:net", "env:prod"])["id"]
    attach(admin_api, stack_id, make_policy(admin_api, "context", CONTEXT))

    # No state yet: evaluated without state keys, serial null.
    before = by_name(validate(member_api, stack_id))["context"]
    assert before["state_serial"] is None
    assert before["deny"] == ["no state"]
    assert before["warn"] == ["stack dns labels env:prod,team:net"]

    push_state(client, world, stack_id, aws_state(serial=4))
    after = by_name(validate(member_api, stack_id))["context"]
    assert after["state_serial"] == 4 and after["deny"] == []
    assert "serial 4 of 3 resources" in after["warn"]


# --------------------------------------------------------------------------- what is evaluated


def test_only_enabled_validation_policies_that_apply_are_evaluated(client, world, admin_api, member_api):
    stack_id = world.stack(labels=["env:prod"])["id"]
    other_stack = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    attached = make_policy(admin_api, "attached", ALWAYS_WARN)
    attach(admin_api, stack_id, attached)
    make_policy(admin_api, "by-label", ALWAYS_WARN, labels=["env:prod"])
    make_policy(admin_api, "org-wide", ALWAYS_WARN, applies_to_all=True)
    attach(admin_api, stack_id, make_policy(admin_api, "disabled", ALWAYS_WARN, enabled=False))
    make_policy(admin_api, "unattached", ALWAYS_WARN)
    attach(admin_api, other_stack, make_policy(admin_api, "elsewhere", ALWAYS_WARN))
    plan_policy = admin_api.post(
        "/api/v1/policies", json={"name": "post-plan", "type": "post_plan", "body": ALWAYS_WARN}
    ).json()["id"]
    attach(admin_api, stack_id, plan_policy)

    assert set(by_name(validate(member_api, stack_id))) == {"attached", "by-label", "org-wide"}

    # A policy that stops applying loses its result at the next evaluation.
    assert admin_api.delete(f"/api/v1/stacks/{stack_id}/policies/{attached}").status_code == 204
    assert set(by_name(validate(member_api, stack_id))) == {"by-label", "org-wide"}
    assert set(stored(world, stack_id)) == {"by-label", "org-wide"}


def test_a_stack_without_validation_policies_gets_no_results(client, world, member_api):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    assert validate(member_api, stack_id) == {"data": [], "count": 0}
    assert member_api.get(f"/api/v1/stacks/{stack_id}/validation").json() == {"data": [], "count": 0}


def test_an_evaluation_error_is_stored_not_raised(client, world, admin_api, member_api):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    attach(admin_api, stack_id, make_policy(admin_api, "conflict", CONFLICT))
    attach(admin_api, stack_id, make_policy(admin_api, "fine", ALWAYS_WARN))

    rows = by_name(validate(member_api, stack_id))

    assert rows["conflict"]["outcome"] == "error"
    assert rows["conflict"]["error"].startswith("could not be evaluated: ")
    assert rows["conflict"]["deny"] == [] and rows["conflict"]["state_serial"] == 1
    assert rows["fine"]["outcome"] == "warn"  # one failing policy does not stop the others


@pytest.mark.parametrize("settings_overrides", [{"policy_input_max_bytes": 1024}])
def test_a_state_larger_than_the_input_limit_is_an_error_naming_the_setting(
    client, world, admin_api, member_api
):
    stack_id = world.stack()["id"]
    data = aws_state(serial=3)
    assert len(data) > 1024
    push_state(client, world, stack_id, data)
    attach(admin_api, stack_id, make_policy(admin_api, "require-owner", REQUIRE_OWNER))

    row = by_name(validate(member_api, stack_id))["require-owner"]

    assert row["outcome"] == "error" and row["state_serial"] == 3
    assert "CRUCIBLE_POLICY_INPUT_MAX_BYTES (1024)" in row["error"]
    assert f"is {len(data)} bytes" in row["error"]


# --------------------------------------------------------------------------- who may


def test_viewers_read_members_validate_other_orgs_see_nothing(
    client, world, admin_api, member_api, viewer_api, as_actor, other_org
):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    attach(admin_api, stack_id, make_policy(admin_api, "require-owner", REQUIRE_OWNER))
    events = len(world.audit_events())

    refused = viewer_api.post(f"/api/v1/stacks/{stack_id}/validate")
    assert refused.status_code == 403
    assert "member role" in refused.json()["detail"]
    assert stored(world, stack_id) == {} and len(world.audit_events()) == events

    validate(member_api, stack_id)
    assert viewer_api.get(f"/api/v1/stacks/{stack_id}/validation").json()["count"] == 1

    stranger = as_actor(world.user(Role.admin, other_org))
    missing = "stk-00000000000000aa"
    for path in (f"/api/v1/stacks/{stack_id}/validation", f"/api/v1/stacks/{missing}/validation"):
        response = stranger.get(path)
        assert response.status_code == 404
    foreign = stranger.post(f"/api/v1/stacks/{stack_id}/validate")
    assert foreign.status_code == 404
    assert foreign.json()["detail"] == f"stack {stack_id} not found"
    assert stored(world, stack_id)["require-owner"].trigger == "manual"


# --------------------------------------------------------------------------- the schedule


def _age(world, stack_id: str, hours: float) -> None:
    with world.ctx.session() as s:
        for row in s.exec(select(StackValidation).where(StackValidation.stack_id == stack_id)).all():
            row.evaluated_at = utcnow() - timedelta(hours=hours)
            s.add(row)


def test_the_scheduled_pass_validates_due_stacks_only(
    client, world, admin_api, member_api, as_actor, other_org
):
    never = world.stack(name="never")["id"]
    recent = world.stack(name="recent")["id"]
    stale = world.stack(name="stale")["id"]
    no_policy = world.stack(name="no-policy")["id"]
    for stack_id in (never, recent, stale, no_policy):
        push_state(client, world, stack_id, aws_state())
    owner = make_policy(admin_api, "require-owner", REQUIRE_OWNER)
    for stack_id in (never, recent, stale):
        attach(admin_api, stack_id, owner)
    validate(member_api, recent)
    validate(member_api, stale)
    _age(world, stale, hours=2)  # older than the default interval (3600 s)
    # Another organization's stack is validated too, as that organization's system.
    foreign = world.stack(other_org, name="foreign")["id"]
    foreign_api = as_actor(world.user(Role.admin, other_org))
    attach(foreign_api, foreign, make_policy(foreign_api, "foreign-policy", ALWAYS_WARN))
    events = len(world.audit_events())

    with world.ctx.session() as s:
        due = validation.due_stacks(s, 3600)
    assert [sid for _org, sid in due] == [*sorted([never, foreign]), stale]  # never validated first
    assert validation.run_scheduled(world.ctx) == 3

    for stack_id in (never, stale):
        row = stored(world, stack_id)["require-owner"]
        assert row.trigger == "schedule" and row.evaluated_by == "system" and row.outcome == "deny"
        assert row.state_serial == 1
    assert stored(world, recent)["require-owner"].trigger == "manual"  # not due: left alone
    assert stored(world, no_policy) == {}
    assert stored(world, foreign)["foreign-policy"].outcome == "warn"
    assert len(world.audit_events()) == events  # the schedule is not audited

    # Nothing is due any more; an hour later everything is.
    assert validation.run_scheduled(world.ctx) == 0
    assert validation.run_scheduled(world.ctx, now=utcnow() + timedelta(hours=1, minutes=1)) == 4


def test_the_scheduled_pass_clears_results_of_policies_that_no_longer_apply(
    client, world, admin_api, member_api
):
    stack_id = world.stack()["id"]
    policy_id = make_policy(admin_api, "require-owner", REQUIRE_OWNER)
    attach(admin_api, stack_id, policy_id)
    validate(member_api, stack_id)
    assert admin_api.put(f"/api/v1/policies/{policy_id}", json={"enabled": False}).status_code == 200

    assert validation.run_scheduled(world.ctx) == 1
    assert stored(world, stack_id) == {}
    assert validation.run_scheduled(world.ctx) == 0  # and the stack is not visited again


@pytest.mark.parametrize("settings_overrides", [{"validation_interval_seconds": 1}])
def test_the_scheduler_loop_runs_passes_and_stops_cleanly(client, world, admin_api):
    stack_id = world.stack()["id"]
    push_state(client, world, stack_id, aws_state())
    attach(admin_api, stack_id, make_policy(admin_api, "require-owner", REQUIRE_OWNER))

    async def run_for_a_while() -> None:
        task = asyncio.create_task(validation_scheduler(tick_seconds=0.05))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if stored(world, stack_id):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    set_context(world.ctx)
    try:
        run_async(run_for_a_while())
    finally:
        set_context(None)
    assert stored(world, stack_id)["require-owner"].trigger == "schedule"


@pytest.mark.parametrize("settings_overrides", [{"validation_interval_seconds": 0}])
def test_an_interval_of_zero_turns_the_schedule_off(world):
    set_context(world.ctx)
    try:
        run_async(asyncio.wait_for(validation_scheduler(tick_seconds=0.01), timeout=5))
    finally:
        set_context(None)


def test_an_unknown_trigger_is_refused(world):
    with pytest.raises(ValueError, match=re.escape("manual, schedule")):
        validation.validate_stack(
            world.ctx.session,
            world.ctx.objects,
            world.system(),
            None,  # type: ignore[arg-type]
            "stk-00000000000000aa",
            trigger="cron",
            timeout_seconds=1,
        )
