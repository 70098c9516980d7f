"""The runs REST API and the stack variables API, on SQLite and PostgreSQL.

Most tests put a run into the state they need the way a worker's reports would
(``runs_support.force_status``) and then act as a user; the log-streaming test drives a real
worker with a real Ansible playbook concurrently."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from backend.runs import execution, logs
from backend.runs.models import Run
from backend.stacks.models import StackVariable
from backend.timeutil import utcnow
from tests.integration.runs_support import (
    GitRepo,
    WorkerThread,
    chunk_count,
    copy_task,
    force_status,
    playbook,
    wait_for_status,
)

RUN_FIELDS = {
    "id",
    "stack_id",
    "stack_name",
    "triggered_by",
    "required_approvals",
    "type",
    "status",
    "commit_sha",
    "commit_message",
    "branch",
    "message",
    "trigger",
    "created_by",
    "created_at",
    "updated_at",
    "status_timestamps",
    "plan_summary",
    "has_changes",
    "failure_reason",
    "cancel_requested_at",
    "env_override_names",
    "retriggered_from",
    "has_plan_json",
    "actions",
}


@pytest.fixture
def managed(tmp_path: Path) -> Path:
    path = tmp_path / "managed"
    path.mkdir()
    return path


@pytest.fixture
def settings_overrides(managed: Path) -> dict[str, Any]:
    return {
        "worker_heartbeat_seconds": 0.5,
        "worker_heartbeat_timeout_seconds": 60,
        "local_runner_writable_paths": str(managed),
    }


@pytest.fixture
def stack(world) -> dict:
    return world.stack(branch="release")


def create(client, stack_id: str, **body: Any):
    return client.post(f"/api/v1/stacks/{stack_id}/runs", json=body)


def create_ok(client, stack_id: str, **body: Any) -> dict:
    response = create(client, stack_id, **body)
    assert response.status_code == 201, response.text
    return response.json()


def archive_log(ctx, run_id: str, phase: str, lines: list[str]) -> None:
    """What a worker does: append lines while the phase runs, archive them when it ends."""
    with ctx.session() as s:
        logs.append(s, run_id, phase, lines)
    with ctx.session() as s:
        logs.archive(s, ctx.objects, s.get(Run, run_id), phase)


def append_log(ctx, run_id: str, phase: str, lines: list[str]) -> None:
    with ctx.session() as s:
        logs.append(s, run_id, phase, lines)


# --------------------------------------------------------------------------- creating runs


def test_triggering_a_run_returns_it_queued(as_actor, member, stack):
    api = as_actor(member)
    body = {
        "type": "proposed",
        "commit": "ABCDEF1234567",
        "message": "  try the new subnet  ",
        "env": {"TF_VAR_region": "eu-west-1"},
    }
    response = create(api, stack["id"], **body)
    assert response.status_code == 201, response.text
    run = response.json()
    assert set(run) == RUN_FIELDS
    assert run["id"].startswith("run-") and run["stack_id"] == stack["id"]
    assert run["stack_name"] == stack["name"]
    assert (run["type"], run["status"], run["trigger"]) == ("proposed", "queued", "api")
    assert run["commit_sha"] == "abcdef1234567"  # normalized
    assert run["message"] == "try the new subnet"
    assert run["branch"] == "release"  # the stack's branch
    assert run["plan_summary"] is None and run["has_changes"] is None and run["failure_reason"] is None
    assert list(run["status_timestamps"]) == ["queued"]
    assert run["env_override_names"] == ["TF_VAR_region"]
    assert run["created_by"] == member.email
    assert run["retriggered_from"] is None and run["has_plan_json"] is False
    assert run["actions"] == ["cancel"]
    assert api.get(f"/api/v1/runs/{run['id']}").json() == run


def test_the_default_run_is_tracked_at_the_branch_head(as_actor, member, stack):
    run = create_ok(as_actor(member), stack["id"])
    assert (run["type"], run["commit_sha"], run["env_override_names"]) == ("tracked", None, [])


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        ({"type": "apply"}, ["body", "type"], "tracked"),
        ({"commit": "not-a-sha"}, ["body", "commit"], "hexadecimal"),
        ({"commit": "abc12"}, ["body", "commit"], "7 to 64"),
        ({"commit": "a" * 65}, ["body", "commit"], "64"),
        ({"env": {"1ABC": "x"}}, ["body", "env"], "not an environment variable name"),
        ({"env": {"A-B": "x"}}, ["body", "env"], "not an environment variable name"),
        ({"env": {"CRUCIBLE_TOKEN": "x"}}, ["body", "env"], "reserved"),
        ({"env": {"crucible_debug": "x"}}, ["body", "env"], "reserved"),
        ({"env": {"OK": "a\x00b"}}, ["body", "env"], "NUL"),
        ({"env": {"OK": "x" * 32_769}}, ["body", "env"], "longer than"),
        ({"env": {f"V{i}": "x" for i in range(101)}}, ["body", "env"], "100"),
        ({"env": ["A=1"]}, ["body", "env"], "dictionary"),
        ({"branch": "bad..branch"}, ["body", "branch"], "branch"),
        ({"message": "bell\x07"}, ["body", "message"], "control characters"),
        ({"type": "tracked", "force": True}, ["body", "force"], "Extra inputs"),
    ],
)
def test_invalid_run_requests_are_rejected_and_nothing_is_created(
    as_actor, member, world, stack, body, loc, says
):
    api = as_actor(member)
    before = world.audit_count()
    response = create(api, stack["id"], **body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][:2] == loc and says in d["msg"] for d in detail), detail
    assert api.get("/api/v1/runs").json()["count"] == 0
    assert world.audit_count() == before


def test_runs_on_unknown_or_foreign_stacks_are_404(as_actor, member, world, other_org):
    api = as_actor(member)
    missing = create(api, "stk-0000000000000000")
    assert missing.status_code == 404 and "stack stk-0000000000000000 not found" in missing.json()["detail"]
    foreign = world.stack(org_id=other_org)
    assert create(api, foreign["id"]).status_code == 404
    assert create(api, "not-a-stack-id").status_code == 422
    assert api.get("/api/v1/runs").json()["count"] == 0


def test_viewers_cannot_trigger_runs(as_actor, viewer, stack):
    response = create(as_actor(viewer), stack["id"])
    assert response.status_code == 403


# --------------------------------------------------------------------------- listing


def test_list_runs_filters_pages_and_counts(ctx, as_actor, admin, world, other_org):
    api = as_actor(admin)
    a, b = world.stack(), world.stack()
    queued = create_ok(api, a["id"])
    proposed = create_ok(api, a["id"], type="proposed")
    failed = create_ok(api, a["id"])
    force_status(ctx, failed["id"], "failed")
    waiting = create_ok(api, b["id"])
    force_status(ctx, waiting["id"], "unconfirmed")
    foreign_token = world.token("admin", org_id=other_org)
    create_ok(as_actor(foreign_token), world.stack(org_id=other_org)["id"])

    def ids(**params: Any) -> tuple[list[str], int]:
        response = api.get("/api/v1/runs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [r["id"] for r in body["data"]], body["count"]

    newest_first = [waiting["id"], failed["id"], proposed["id"], queued["id"]]
    assert ids() == (newest_first, 4)  # the other organization's run is not listed
    assert ids(stack_id=a["id"]) == (newest_first[1:], 3)
    assert ids(type="proposed") == ([proposed["id"]], 1)
    assert ids(status=["failed", "unconfirmed"]) == ([waiting["id"], failed["id"]], 2)
    assert ids(stack_id=a["id"], type="tracked", status="queued") == ([queued["id"]], 1)
    first_page, second_page = ids(limit=3), ids(limit=3, offset=3)
    assert first_page == (newest_first[:3], 4) and second_page == (newest_first[3:], 4)
    assert ids(offset=10) == ([], 4)
    for bad in ({"limit": 0}, {"limit": 201}, {"status": "bogus"}, {"type": "apply"}, {"stack_id": "x"}):
        assert api.get("/api/v1/runs", params=bad).status_code == 422, bad


# --------------------------------------------------------------------------- transitions


@pytest.mark.parametrize(
    ("status", "action", "says"),
    [
        ("queued", "confirm", "cannot confirm a run that is queued"),
        ("planning", "confirm", "cannot confirm a run that is planning"),
        ("finished", "confirm", "cannot confirm a run that is finished"),
        ("finished", "discard", "cannot discard a run that is finished"),
        ("queued", "discard", "cannot discard a run that is queued"),
        ("finished", "cancel", "already finished"),
        ("failed", "cancel", "already failed"),
        ("unconfirmed", "cancel", "discarded, not canceled"),
        ("queued", "delete", "cancel or discard it first"),
        ("planning", "delete", "cancel or discard it first"),
        ("unconfirmed", "delete", "cancel or discard it first"),
        ("planning", "retrigger", "wait until it ends"),
        ("planning", "force_cancel", "gracefully first"),
    ],
)
def test_illegal_transitions_are_409_and_change_nothing(
    ctx, as_actor, admin, world, stack, status, action, says
):
    api = as_actor(admin)
    run = create_ok(api, stack["id"])
    if status != "queued":
        force_status(ctx, run["id"], status)
    url = f"/api/v1/runs/{run['id']}"
    before, audit_before = api.get(url).json(), world.audit_count()
    if action == "delete":
        response = api.delete(url)
    elif action == "force_cancel":
        response = api.post(f"{url}/cancel", json={"force": True})
    else:
        response = api.post(f"{url}/{action}")
    assert response.status_code == 409, response.text
    assert says in response.json()["detail"]
    assert api.get(url).json() == before
    assert world.audit_count() == audit_before
    assert api.get("/api/v1/runs").json()["count"] == 1


def test_user_actions_move_runs_and_are_audited(ctx, as_actor, admin, member, world):
    user, boss = as_actor(member), as_actor(admin)
    # A stack each: a tracked run waiting for confirmation holds its stack.
    stacks = [world.stack()["id"] for _ in range(4)]

    queued = create_ok(user, stacks[0])
    canceled = user.post(f"/api/v1/runs/{queued['id']}/cancel").json()
    assert canceled["status"] == "canceled" and "canceled" in canceled["status_timestamps"]

    waiting = create_ok(user, stacks[1])
    force_status(ctx, waiting["id"], "unconfirmed")
    assert "confirm" not in user.get(f"/api/v1/runs/{waiting['id']}").json()["actions"]
    assert user.post(f"/api/v1/runs/{waiting['id']}/confirm").status_code == 403
    assert "confirm" in boss.get(f"/api/v1/runs/{waiting['id']}").json()["actions"]
    confirmed = boss.post(f"/api/v1/runs/{waiting['id']}/confirm").json()
    assert confirmed["status"] == "confirmed"

    dropped = create_ok(user, stacks[2])
    force_status(ctx, dropped["id"], "unconfirmed")
    assert user.post(f"/api/v1/runs/{dropped['id']}/discard").json()["status"] == "discarded"

    # An executing run is asked to stop; the worker reports when it has.
    busy = create_ok(user, stacks[3])
    force_status(ctx, busy["id"], "planning")
    asked = user.post(f"/api/v1/runs/{busy['id']}/cancel").json()
    assert asked["status"] == "planning" and asked["cancel_requested_at"] is not None
    assert "force_cancel" in asked["actions"] and "cancel" not in asked["actions"]
    too_soon = user.post(f"/api/v1/runs/{busy['id']}/cancel", json={"force": True})
    assert too_soon.status_code == 409 and "force-cancel is possible in" in too_soon.json()["detail"]
    with ctx.session() as s:  # the cool-off has passed
        row = s.get(Run, busy["id"])
        row.cancel_requested_at = utcnow() - timedelta(seconds=11)
        s.add(row)
    forced = user.post(f"/api/v1/runs/{busy['id']}/cancel", json={"force": True}).json()
    assert forced["status"] == "canceled"

    assert user.delete(f"/api/v1/runs/{forced['id']}").status_code == 403
    assert boss.delete(f"/api/v1/runs/{forced['id']}").status_code == 204
    again_run = user.post(f"/api/v1/runs/{canceled['id']}/retrigger").json()

    events = [
        (e.action, e.resource_id, e.actor, (e.before or {}).get("status"), (e.after or {}).get("status"))
        for e in world.audit_events()
        if e.category == "run"
    ]
    assert events == [
        ("run.create", queued["id"], member.email, None, "queued"),
        ("run.cancel", queued["id"], member.email, "queued", "canceled"),
        ("run.create", waiting["id"], member.email, None, "queued"),
        ("run.confirm", waiting["id"], admin.email, "unconfirmed", "confirmed"),
        ("run.create", dropped["id"], member.email, None, "queued"),
        ("run.discard", dropped["id"], member.email, "unconfirmed", "discarded"),
        ("run.create", busy["id"], member.email, None, "queued"),
        ("run.cancel", busy["id"], member.email, "planning", "planning"),
        ("run.force_cancel", busy["id"], member.email, "planning", "canceled"),
        ("run.delete", busy["id"], admin.email, "canceled", None),
        ("run.create", again_run["id"], member.email, None, "queued"),
    ]


# --------------------------------------------------------------------------- env overrides, retrigger


def test_asking_an_executing_run_to_cancel_twice_is_harmless(ctx, as_actor, member, stack):
    api = as_actor(member)
    run = create_ok(api, stack["id"])
    force_status(ctx, run["id"], "planning")
    first = api.post(f"/api/v1/runs/{run['id']}/cancel").json()
    again = api.post(f"/api/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["cancel_requested_at"] == first["cancel_requested_at"]
    assert again.json()["status"] == "planning"


def test_env_override_values_never_appear_in_any_response(ctx, as_actor, admin, world, stack):
    api = as_actor(admin)
    value = "hunter2-override-value"
    run = create(api, stack["id"], env={"TF_VAR_token": value, "MODE": "fast"})
    assert run.status_code == 201
    run_id = run.json()["id"]
    force_status(ctx, run_id, "failed")
    retriggered = api.post(f"/api/v1/runs/{run_id}/retrigger")
    assert retriggered.status_code == 201
    responses = [
        run,
        retriggered,
        api.get(f"/api/v1/runs/{run_id}"),
        api.get("/api/v1/runs"),
        api.get(f"/api/v1/runs/{run_id}/logs"),
        api.get("/api/v1/audit"),
        api.get("/api/v1/audit/export", params={"format": "json"}),
        api.get("/api/v1/audit/export", params={"format": "csv"}),
    ]
    for response in responses:
        assert response.status_code == 200 or response.status_code == 201, response.text
        assert value not in response.text, response.request.url
    assert retriggered.json()["env_override_names"] == ["MODE", "TF_VAR_token"]
    with ctx.session() as s:
        stored = s.get(Run, run_id).env_overrides_encrypted
    assert stored and value not in stored
    assert not [e for e in world.audit_events() if value in json.dumps([e.before, e.after])]

    # ...while the worker does get the values, for the retriggered run too.
    with ctx.session() as s:
        job = execution.claim(s, ctx.secret_box, "elsewhere.example:1:w", utcnow(), 3)
    assert job is not None and job.run_id == retriggered.json()["id"]
    assert job.env == {"TF_VAR_token": value, "MODE": "fast"}


def test_retrigger_makes_a_new_run_with_the_same_type_and_commit(ctx, as_actor, member, stack):
    api = as_actor(member)
    original = create_ok(api, stack["id"], type="proposed", message="why", commit="0123abcd0123abcd")
    force_status(ctx, original["id"], "finished")
    response = api.post(f"/api/v1/runs/{original['id']}/retrigger")
    assert response.status_code == 201, response.text
    copy = response.json()
    assert copy["id"] != original["id"] and copy["retriggered_from"] == original["id"]
    assert (copy["type"], copy["commit_sha"], copy["branch"], copy["message"]) == (
        "proposed",
        "0123abcd0123abcd",
        original["branch"],
        "why",
    )
    assert (copy["status"], copy["trigger"], copy["plan_summary"]) == ("queued", "retrigger", None)
    assert api.get(f"/api/v1/runs/{original['id']}").json()["status"] == "finished"
    assert api.get("/api/v1/runs").json()["count"] == 2


# --------------------------------------------------------------------------- delete, logs, plan


def test_delete_removes_the_run_its_log_chunks_and_its_objects(ctx, as_actor, admin, member, world, stack):
    api = as_actor(admin)
    doomed, kept = create_ok(api, stack["id"]), create_ok(api, stack["id"])
    for run in (doomed, kept):
        archive_log(ctx, run["id"], "plan", ["plan line"])
        append_log(ctx, run["id"], "apply", ["apply line still live"])
    plan_json = ctx.objects.put(f"runs/{doomed['id']}/plan.json", b"{}")
    with ctx.session() as s:
        row = s.get(Run, doomed["id"])
        row.artifacts = {**row.artifacts, "plan_json": {"key": plan_json.key, "sha256": plan_json.sha256}}
        s.add(row)
    force_status(ctx, doomed["id"], "failed")
    keys = [plan_json.key, logs.log_key(doomed["id"], "plan")]
    assert all(ctx.objects.exists(k) for k in keys)

    assert as_actor(member).delete(f"/api/v1/runs/{doomed['id']}").status_code == 403
    response = api.delete(f"/api/v1/runs/{doomed['id']}")
    assert response.status_code == 204 and response.content == b""

    assert api.get(f"/api/v1/runs/{doomed['id']}").status_code == 404
    assert api.get(f"/api/v1/runs/{doomed['id']}/logs").status_code == 404
    assert chunk_count(ctx, doomed["id"]) == 0
    assert not [k for k in keys if ctx.objects.exists(k)]
    assert api.delete(f"/api/v1/runs/{doomed['id']}").status_code == 404
    # Only that run went.
    assert [r["id"] for r in api.get("/api/v1/runs").json()["data"]] == [kept["id"]]
    assert api.get(f"/api/v1/runs/{kept['id']}/logs").text == "plan line\napply line still live\n"
    assert world.audit_events()[-1].action == "run.delete"


def test_logs_are_plain_text_phases_in_order(ctx, as_actor, viewer, member, world, stack, other_org):
    api = as_actor(member)
    run = create_ok(api, stack["id"])
    empty = as_actor(viewer).get(f"/api/v1/runs/{run['id']}/logs")
    assert empty.status_code == 200 and empty.text == ""
    assert empty.headers["content-type"] == "text/plain; charset=utf-8"

    archive_log(ctx, run["id"], "plan", ["[crucible] cloning", "", "PLAY RECAP ***"])
    append_log(ctx, run["id"], "apply", ["TASK [copy]"])
    append_log(ctx, run["id"], "apply", ["changed: [localhost]"])
    response = as_actor(viewer).get(f"/api/v1/runs/{run['id']}/logs")
    assert response.status_code == 200
    assert response.text == "[crucible] cloning\n\nPLAY RECAP ***\nTASK [copy]\nchanged: [localhost]\n"

    assert api.get("/api/v1/runs/run-0000000000000000/logs").status_code == 404
    foreign = as_actor(world.token("admin", org_id=other_org))
    assert foreign.get(f"/api/v1/runs/{run['id']}/logs").status_code == 404
    assert foreign.get(f"/api/v1/runs/{run['id']}").status_code == 404


def test_the_archived_log_reads_exactly_like_the_live_log(ctx, as_actor, member, stack):
    api = as_actor(member)
    run = create_ok(api, stack["id"])
    # What a colored Ansible diff of a CRLF file looks like (the \r is not at the end), and a
    # form feed from a tool's output.
    lines = ["\x1b[0;32m+line one\r\x1b[0m", "page\x0cbreak", "last"]
    append_log(ctx, run["id"], "plan", lines)
    live = api.get(f"/api/v1/runs/{run['id']}/logs").text
    assert live == "\n".join(lines) + "\n"
    with ctx.session() as s:
        logs.archive(s, ctx.objects, s.get(Run, run["id"]), "plan")
    assert api.get(f"/api/v1/runs/{run['id']}/logs").text == live


def test_the_plan_of_a_run_without_one_is_404_with_a_reason(ctx, as_actor, member, world):
    stack = world.stack(tool="ansible", repository_url="file:///srv/git/site")
    run = create_ok(as_actor(member), stack["id"])
    force_status(ctx, run["id"], "finished")
    response = as_actor(member).get(f"/api/v1/runs/{run['id']}/plan")
    assert response.status_code == 404
    assert "as Ansible does" in response.json()["detail"]


@pytest.mark.timeout(150)
def test_follow_streams_the_log_until_the_run_ends(ctx, as_actor, admin, world, managed, tmp_path):
    """A real worker runs a real playbook while the client follows the log: lines arrive while
    the run is still going (it waits for confirmation in the middle), the stream ends once the
    run has, and what was streamed is exactly the stored log."""
    target = managed / "motd"
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook(copy_task(target, "followed\n"))})
    stack = world.stack(tool="ansible", repository_url=repo.url)
    api, approver = as_actor(admin), as_actor(admin)
    streamed: list[str] = []
    with WorkerThread(ctx) as worker:
        run = create_ok(api, stack["id"])
        url = f"/api/v1/runs/{run['id']}/logs"
        with api.stream("GET", url, params={"follow": "true"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            for line in response.iter_lines():
                streamed.append(line)
                if line == "[crucible] waiting for confirmation":
                    # The stream is still open in the middle of the run.
                    assert approver.get(f"/api/v1/runs/{run['id']}").json()["status"] == "unconfirmed"
                    assert approver.post(f"/api/v1/runs/{run['id']}/confirm").status_code == 200
            ended_as = approver.get(f"/api/v1/runs/{run['id']}").json()["status"]
        wait_for_status(ctx, run["id"], "finished", worker=worker)

    assert ended_as == "finished"
    assert "[crucible] waiting for confirmation" in streamed
    assert streamed[-1] == "[crucible] applied"
    assert target.read_text() == "followed\n"
    assert streamed == api.get(url).text.splitlines()
    plan = api.get(f"/api/v1/runs/{run['id']}/plan")
    assert plan.status_code == 404 and "Ansible" in plan.json()["detail"]


def test_follow_of_a_finished_run_returns_its_whole_log(ctx, as_actor, member, stack):
    api = as_actor(member)
    run = create_ok(api, stack["id"])
    archive_log(ctx, run["id"], "plan", ["one", "two"])
    force_status(ctx, run["id"], "finished")
    response = api.get(f"/api/v1/runs/{run['id']}/logs", params={"follow": "true"})
    assert response.status_code == 200 and response.text == "one\ntwo\n"


# --------------------------------------------------------------------------- variables


def test_variables_can_be_set_listed_and_deleted_and_secrets_are_never_returned(ctx, as_actor, member, stack):
    api = as_actor(member)
    base = f"/api/v1/stacks/{stack['id']}/variables"
    secret = "s3cr3t-db-password"
    plain = api.put(f"{base}/TF_VAR_region", json={"value": "eu-west-1"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["value"] == "eu-west-1" and plain.json()["secret"] is False
    assert plain.json()["updated_by"] == member.email
    hidden = api.put(f"{base}/DB_PASSWORD", json={"value": secret, "secret": True})
    assert hidden.status_code == 200 and hidden.json()["value"] is None and hidden.json()["secret"] is True

    listed = api.get(base)
    assert listed.status_code == 200
    assert [(v["name"], v["value"], v["secret"]) for v in listed.json()["data"]] == [
        ("DB_PASSWORD", None, True),
        ("TF_VAR_region", "eu-west-1", False),
    ]
    assert listed.json()["count"] == 2
    for response in (hidden, listed, api.get("/api/v1/audit")):
        assert secret not in response.text
    with ctx.session() as s:
        stored = s.exec(select(StackVariable).where(StackVariable.name == "DB_PASSWORD")).one()
    assert secret not in stored.value_encrypted

    assert api.delete(f"{base}/TF_VAR_region").status_code == 204
    assert [v["name"] for v in api.get(base).json()["data"]] == ["DB_PASSWORD"]
    assert api.delete(f"{base}/TF_VAR_region").status_code == 404


def test_a_secret_variable_cannot_be_turned_plain(ctx, as_actor, member, stack):
    api = as_actor(member)
    url = f"/api/v1/stacks/{stack['id']}/variables/API_KEY"
    assert api.put(url, json={"value": "first-secret-value", "secret": True}).status_code == 200
    response = api.put(url, json={"value": "now-plain", "secret": False})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "secret"]
    assert "delete it and create it again" in response.json()["detail"][0]["msg"]
    # Still secret, still the old value (what a run receives).
    listed = api.get(f"/api/v1/stacks/{stack['id']}/variables").json()["data"]
    assert [(v["value"], v["secret"]) for v in listed] == [(None, True)]
    create_ok(api, stack["id"])
    with ctx.session() as s:
        job = execution.claim(s, ctx.secret_box, "elsewhere.example:1:w", utcnow(), 3)
    assert job.env["API_KEY"] == "first-secret-value" and job.secrets == ["first-secret-value"]
    # A secret may get a new (secret) value.
    assert api.put(url, json={"value": "rotated-secret", "secret": True}).json()["value"] is None


@pytest.mark.parametrize(
    ("name", "status"),
    [("CRUCIBLE_TOKEN", 422), ("crucible_x", 422), ("1ABC", 422), ("A-B", 422), ("x" * 129, 422)],
)
def test_variable_names_are_checked(as_actor, member, stack, name, status):
    response = as_actor(member).put(f"/api/v1/stacks/{stack['id']}/variables/{name}", json={"value": "v"})
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["path", "name"]


def test_variables_need_a_member_and_a_known_stack(as_actor, viewer, member, stack):
    url = f"/api/v1/stacks/{stack['id']}/variables/REGION"
    assert as_actor(viewer).put(url, json={"value": "v"}).status_code == 403
    assert as_actor(viewer).get(f"/api/v1/stacks/{stack['id']}/variables").status_code == 200
    missing = "/api/v1/stacks/stk-0000000000000000/variables"
    assert as_actor(member).put(f"{missing}/REGION", json={"value": "v"}).status_code == 404
    assert as_actor(member).get(missing).status_code == 404
    assert as_actor(member).put(url, json={"value": "v", "extra": 1}).status_code == 422


def test_the_audit_never_contains_a_secret_value(as_actor, admin, world, stack):
    api = as_actor(admin)
    base = f"/api/v1/stacks/{stack['id']}/variables"
    values = ["secret-one-value", "secret-two-value"]
    api.put(f"{base}/TOKEN", json={"value": values[0], "secret": True})
    api.put(f"{base}/TOKEN", json={"value": values[1], "secret": True})
    api.put(f"{base}/REGION", json={"value": "eu-west-1"})
    api.put(f"{base}/REGION", json={"value": "us-east-1"})
    assert api.delete(f"{base}/TOKEN").status_code == 204

    events = [e for e in world.audit_events() if e.action.startswith("stack.variable")]
    assert [(e.action, (e.after or e.before)["name"]) for e in events] == [
        ("stack.variable_set", "TOKEN"),
        ("stack.variable_set", "TOKEN"),
        ("stack.variable_set", "REGION"),
        ("stack.variable_set", "REGION"),
        ("stack.variable_delete", "TOKEN"),
    ]
    dumped = json.dumps([[e.before, e.after] for e in events])
    assert not [v for v in values if v in dumped]
    # Plain values are recorded, so a change can be reviewed.
    assert events[3].before["value"] == "eu-west-1" and events[3].after["value"] == "us-east-1"
    for response in (api.get("/api/v1/audit"), api.get("/api/v1/audit/export", params={"format": "csv"})):
        assert response.status_code == 200
        assert not [v for v in values if v in response.text]
