"""Runs of OpenTofu/Terraform stacks keep their state in Crucible's state backend.

A real worker runs real runs against a real HTTP server (uvicorn on a loopback port): each phase
gets a short-lived stack token in Terraform's TF_HTTP_* variables and a backend override file,
the tool locks, reads and writes the state over HTTP, and the token dies with the phase.

Two clients speak the protocol: ``tofu`` here is a small stand-in written from Terraform's
documentation of the http backend (no OpenTofu binary can be installed on this machine), and
the real ``terraform`` runs the same flow whenever it is on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlmodel import select

from backend.api import create_api
from backend.state.models import StateLock, StateToken, StateVersion
from tests.integration.runs_support import GitRepo, WorkerThread, log_text, wait_for_status

SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"])
PLAN_FIXTURE = Path(__file__).parents[1] / "fixtures" / "tofu" / "plan-changes.json"

# The stand-in: what Terraform's http backend client does around init / plan / show / apply.
FAKE_TOFU = r"""#!{python}
import base64, hashlib, json, os, sys, urllib.error, urllib.request, uuid

ADDRESS = os.environ["TF_HTTP_ADDRESS"]
AUTH = base64.b64encode(
    f"{{os.environ['TF_HTTP_USERNAME']}}:{{os.environ['TF_HTTP_PASSWORD']}}".encode()
).decode()


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", "Basic " + AUTH)
    for k, v in (headers or {{}}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def lock(operation):
    info = {{"ID": str(uuid.uuid4()), "Operation": operation, "Info": "", "Who": "runner@crucible",
             "Version": "1.8.0", "Created": "2026-12-01T00:00:00Z", "Path": ""}}
    status, body = call("LOCK", os.environ["TF_HTTP_LOCK_ADDRESS"], json.dumps(info).encode())
    if status != 200:
        sys.exit(f"Error acquiring the state lock: HTTP {{status}}: {{body.decode()}}")
    print(f"Acquiring state lock. This may take a few moments... ({{info['ID'][:8]}})")
    return info


def unlock(info):
    status, body = call("UNLOCK", os.environ["TF_HTTP_UNLOCK_ADDRESS"], json.dumps(info).encode())
    if status != 200:
        sys.exit(f"Error releasing the state lock: HTTP {{status}}: {{body.decode()}}")
    print("Releasing state lock. This may take a few moments...")


def current():
    status, body = call("GET", ADDRESS)
    if status == 204:
        return None
    if status != 200:
        sys.exit(f"Failed to get state: HTTP {{status}}: {{body.decode()}}")
    return json.loads(body)


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "init":
    override = open("crucible_backend_override.tf").read()
    assert 'backend "http"' in override, override
    print("Initializing the backend... Successfully configured the backend \"http\"!")
elif cmd == "plan":
    info = lock("OperationTypePlan")
    state = current()
    print(f"state serial before plan: {{None if state is None else state['serial']}}")
    if os.environ.get("FAKE_TOFU_TRY_WRITE"):
        status, _ = call("POST", ADDRESS + "?ID=" + info["ID"], b"{{}}")
        print(f"a write during plan got HTTP {{status}}")
    open(args[args.index("-out") + 1], "wb").write(json.dumps({{"destroy": "-destroy" in args}}).encode())
    unlock(info)
    print("Plan: 1 to add, 0 to change, 0 to destroy.")
elif cmd == "show":
    sys.stdout.write(open({plan_fixture!r}).read())
elif cmd == "apply":
    destroy = json.load(open(args[-1]))["destroy"]
    info = lock("OperationTypeApply")
    state = current()
    new = {{
        "version": 4, "terraform_version": "1.8.0",
        "serial": 1 if state is None else state["serial"] + 1,
        "lineage": str(uuid.uuid4()) if state is None else state["lineage"],
        "outputs": {{}},
        "resources": [] if destroy else [{{
            "mode": "managed", "type": "terraform_data", "name": "a",
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{{"schema_version": 0, "attributes": {{"id": "x", "input": "hello"}},
                            "sensitive_attributes": []}}],
        }}],
    }}
    body = json.dumps(new).encode()
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    status, reply = call("POST", ADDRESS + "?ID=" + info["ID"], body,
                         {{"Content-Type": "application/json", "Content-MD5": md5}})
    if status != 200:
        sys.exit(f"Failed to save state: HTTP {{status}}: {{reply.decode()}}")
    unlock(info)
    print("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")
else:
    sys.exit(f"fake tofu: unexpected command {{sys.argv[1:]}}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def state_port() -> int:
    return _free_port()


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    path = tmp_path / "fake-bin"
    path.mkdir()
    return path


@pytest.fixture
def settings_overrides(state_port: int, fake_bin: Path) -> dict[str, Any]:
    return {
        "state_backend_url": f"http://127.0.0.1:{state_port}",
        "worker_heartbeat_seconds": 0.5,
        # The local sandbox hides the host's /tmp, where the stand-in lives: let it see it.
        "local_runner_writable_paths": str(fake_bin),
    }


@pytest.fixture
def live_api(ctx, state_port: int) -> Iterator[str]:
    """The API on a real loopback port, where the runners' tools reach the state backend."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_api(ctx), host="127.0.0.1", port=state_port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{state_port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def api(as_actor, admin):
    return as_actor(admin)


@pytest.fixture
def fake_tofu_path(fake_bin: Path) -> str:
    bin_dir = fake_bin
    script = bin_dir / "tofu"
    # A copy next to it: the sandbox hides the host's /tmp, where a checkout may live.
    plan = shutil.copy(PLAN_FIXTURE, bin_dir / "plan.json")
    script.write_text(FAKE_TOFU.format(python=sys.executable, plan_fixture=str(plan)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def _trigger(api, stack: dict, **body: Any) -> dict:
    response = api.post(f"/api/v1/stacks/{stack['id']}/runs", json={"type": "tracked", **body})
    assert response.status_code == 201, response.text
    return response.json()


def _confirm(api, run: dict) -> None:
    response = api.post(f"/api/v1/runs/{run['id']}/confirm")
    assert response.status_code == 200, response.text


def _versions(api, stack: dict) -> list[dict]:
    response = api.get(f"/api/v1/stacks/{stack['id']}/state/versions")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _tokens_of(ctx, run_id: str) -> list[StateToken]:
    with ctx.session() as s:
        return list(s.exec(select(StateToken).where(StateToken.run_id == run_id)).all())


def _lock_of(ctx, stack: dict) -> StateLock | None:
    with ctx.session() as s:
        return s.get(StateLock, stack["id"])


@SQLITE_ONLY
def test_a_tracked_run_locks_and_writes_its_state_through_the_backend(
    ctx, world, api, live_api, tmp_path, fake_tofu_path
):
    repo = GitRepo.create(tmp_path / "repo", {"main.tf": 'resource "terraform_data" "a" {}\n'})
    stack = world.stack(tool="opentofu", repository_url=repo.url)
    assert (
        api.put(f"/api/v1/stacks/{stack['id']}/variables/PATH", json={"value": fake_tofu_path}).status_code
        == 200
    )

    with WorkerThread(ctx) as worker:
        run = _trigger(api, stack)
        wait_for_status(ctx, run["id"], "unconfirmed", worker=worker)
        plan_log = log_text(ctx, run["id"])
        assert f"state: Crucible's state backend at {live_api}/api/v1/state/{stack['id']}" in plan_log
        assert "Acquiring state lock" in plan_log and "Releasing state lock" in plan_log
        assert "state serial before plan: None" in plan_log
        assert _versions(api, stack) == []  # a plan writes nothing
        assert _lock_of(ctx, stack) is None
        plan_tokens = _tokens_of(ctx, run["id"])
        assert len(plan_tokens) == 1 and plan_tokens[0].revoked_at is not None  # gone with the phase

        _confirm(api, run)
        wait_for_status(ctx, run["id"], "finished", worker=worker)

    versions = _versions(api, stack)
    assert [(v["serial"], v["run_id"], v["resource_count"]) for v in versions] == [(1, run["id"], 1)]
    assert _lock_of(ctx, stack) is None
    tokens = _tokens_of(ctx, run["id"])
    assert len(tokens) == 2 and all(t.revoked_at is not None for t in tokens)
    assert {t.access for t in tokens} == {"write"}
    # The token never reached the log in clear (the stand-in prints nothing of it, and the
    # masker would hide it anyway); the log does say where the state went.
    full_log = log_text(ctx, run["id"])
    assert "Apply complete!" in full_log
    with ctx.session() as s:
        stored = s.exec(select(StateVersion).where(StateVersion.stack_id == stack["id"])).one()
    assert json.loads(ctx.objects.get(stored.object_key))["serial"] == 1


@SQLITE_ONLY
def test_a_proposed_run_may_lock_and_read_the_state_but_not_write_it(
    ctx, world, api, live_api, tmp_path, fake_tofu_path
):
    repo = GitRepo.create(tmp_path / "repo", {"main.tf": 'resource "terraform_data" "a" {}\n'})
    stack = world.stack(tool="opentofu", repository_url=repo.url)
    assert (
        api.put(f"/api/v1/stacks/{stack['id']}/variables/PATH", json={"value": fake_tofu_path}).status_code
        == 200
    )
    with WorkerThread(ctx) as worker:
        run = _trigger(api, stack, type="proposed", env={"FAKE_TOFU_TRY_WRITE": "1"})
        wait_for_status(ctx, run["id"], "finished", worker=worker)
    plan_log = log_text(ctx, run["id"])
    assert "Acquiring state lock" in plan_log and "Releasing state lock" in plan_log
    assert "a write during plan got HTTP 403" in plan_log
    assert _versions(api, stack) == []
    assert [t.access for t in _tokens_of(ctx, run["id"])] == ["plan"]


@SQLITE_ONLY
def test_ansible_runs_get_no_state_backend(ctx, world, api, live_api, tmp_path):
    from tests.integration.runs_support import playbook

    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook({"ansible.builtin.ping": {}})})
    stack = world.stack(tool="ansible", repository_url=repo.url)
    with WorkerThread(ctx) as worker:
        run = _trigger(api, stack, type="proposed")
        wait_for_status(ctx, run["id"], "finished", worker=worker)
    assert "state backend" not in log_text(ctx, run["id"])
    assert _tokens_of(ctx, run["id"]) == []


REAL_TERRAFORM = shutil.which("terraform")


@pytest.mark.skipif(REAL_TERRAFORM is None, reason="terraform is not on PATH")
@pytest.mark.parametrize("db_kind", ["sqlite", "postgres"])
def test_real_terraform_keeps_its_state_in_crucible(ctx, world, api, live_api, tmp_path, db_kind):
    repo = GitRepo.create(
        tmp_path / "repo",
        {
            "main.tf": 'variable "word" {\n  default = "one"\n}\n'
            'resource "terraform_data" "a" {\n  input = var.word\n}\n'
            'output "word" {\n  value = terraform_data.a.output\n}\n'
        },
    )
    stack = world.stack(tool="terraform", repository_url=repo.url)
    with WorkerThread(ctx) as worker:
        first = _trigger(api, stack)
        wait_for_status(ctx, first["id"], "unconfirmed", worker=worker, timeout=120)
        _confirm(api, first)
        wait_for_status(ctx, first["id"], "finished", worker=worker, timeout=120)
        assert [(v["serial"], v["resource_count"]) for v in _versions(api, stack)] == [(1, 1)]

        # A plan-only run against the stored state: nothing to change, nothing written.
        proposed = _trigger(api, stack, type="proposed")
        finished = wait_for_status(ctx, proposed["id"], "finished", worker=worker, timeout=120)
        assert finished.has_changes is False
        assert len(_versions(api, stack)) == 1

        repo.commit({"main.tf": (tmp_path / "repo" / "main.tf").read_text().replace('"one"', '"two"')}, "two")
        second = _trigger(api, stack)
        wait_for_status(ctx, second["id"], "unconfirmed", worker=worker, timeout=120)
        _confirm(api, second)
        wait_for_status(ctx, second["id"], "finished", worker=worker, timeout=120)

    versions = _versions(api, stack)
    assert [v["serial"] for v in versions][:1] == [max(v["serial"] for v in versions)]  # newest first
    assert versions[0]["run_id"] == second["id"]
    assert len({v["lineage"] for v in versions}) == 1
    outputs = api.get(f"/api/v1/stacks/{stack['id']}/state/outputs").json()
    assert "two" in json.dumps(outputs)
    assert _lock_of(ctx, stack) is None
    assert "TF_HTTP_PASSWORD" not in log_text(ctx, second["id"])


# ---------------------------------------------------------------------------- policies on real plans


@SQLITE_ONLY
def test_a_starter_policy_denies_a_recorded_tofu_plan_that_deletes(
    ctx, world, api, live_api, tmp_path, fake_tofu_path
):
    """post_plan sees the plan JSON the tool showed (the recorded OpenTofu plan deletes three
    resources), and the library's policy names each of them."""
    repo = GitRepo.create(tmp_path / "repo", {"main.tf": 'resource "terraform_data" "a" {}\n'})
    stack = world.stack(tool="opentofu", repository_url=repo.url)
    assert (
        api.put(f"/api/v1/stacks/{stack['id']}/variables/PATH", json={"value": fake_tofu_path}).status_code
        == 200
    )
    installed = api.post("/api/v1/policies/library/no_destroy_outside_destroy_runs/install")
    assert installed.status_code == 201, installed.text
    attached = api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": installed.json()["id"]})
    assert attached.status_code == 201, attached.text
    with WorkerThread(ctx) as worker:
        run = _trigger(api, stack)
        failed = wait_for_status(ctx, run["id"], "failed", worker=worker)
    assert failed.failure_reason.startswith("denied at post_plan: policy 'No destroy outside destroy runs'")
    (result,) = api.get(f"/api/v1/runs/{run['id']}/policy-results").json()["data"]
    assert result["outcome"] == "deny"
    assert [m.split(" ")[0] for m in result["deny"]] == [
        "terraform_data.blue",
        "terraform_data.db",
        "terraform_data.gone",
    ]
    assert _versions(api, stack) == []  # nothing was applied


@SQLITE_ONLY
def test_policies_never_see_the_plans_sensitive_values(ctx, world, api, live_api, tmp_path, fake_tofu_path):
    """A message built from a sensitive attribute carries "(sensitive)", in the log and in the
    stored result, as the playground and backtests show it."""
    repo = GitRepo.create(tmp_path / "repo", {"main.tf": 'resource "terraform_data" "a" {}\n'})
    stack = world.stack(tool="opentofu", repository_url=repo.url)
    path = f"/api/v1/stacks/{stack['id']}/variables/PATH"
    assert api.put(path, json={"value": fake_tofu_path}).status_code == 200
    body = (
        "package crucible\n\nimport rego.v1\n\n"
        'warn contains sprintf("%s: %v", [rc.address, rc.change.after.input]) if {\n'
        "\tsome rc in input.resource_changes\n"
        '\trc.address in {"terraform_data.token", "terraform_data.db"}\n}\n'
    )
    created = api.post("/api/v1/policies", json={"name": "echo", "type": "post_plan", "body": body})
    assert created.status_code == 201, created.text
    api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": created.json()["id"]})
    with WorkerThread(ctx) as worker:
        run = _trigger(api, stack, type="proposed")
        wait_for_status(ctx, run["id"], "finished", worker=worker)
    (result,) = api.get(f"/api/v1/runs/{run['id']}/policy-results").json()["data"]
    stored = json.dumps(result) + log_text(ctx, run["id"])
    assert "terraform_data.token: (sensitive)" in stored
    for secret in ("tok-9f8e7d6c5b4a-rotated", "s3cr3t-rotated-value"):
        assert secret not in stored


@pytest.mark.skipif(REAL_TERRAFORM is None, reason="terraform is not on PATH")
@SQLITE_ONLY
def test_policies_read_real_terraform_plans_at_post_plan_and_pre_apply(ctx, world, api, live_api, tmp_path):
    header = "package crucible\n\nimport rego.v1\n\n"
    main_tf = 'resource "terraform_data" "a" {\n  input = "%s"\n}\n'
    repo = GitRepo.create(tmp_path / "repo", {"main.tf": main_tf % "one"})
    stack = world.stack(tool="terraform", repository_url=repo.url)
    for name, type_, rules in (
        (
            "not two",
            "post_plan",
            'deny contains sprintf("%s may not become two", [rc.address]) if {\n'
            '\tsome rc in input.resource_changes\n\trc.change.after.input == "two"\n}\n',
        ),
        (
            "count creates",
            "pre_apply",
            "warn contains msg if {\n"
            '\tcreates := count([rc | some rc in input.resource_changes; "create" in rc.change.actions])\n'
            '\tmsg := sprintf("applying %d creates", [creates])\n}\n',
        ),
    ):
        created = api.post("/api/v1/policies", json={"name": name, "type": type_, "body": header + rules})
        assert created.status_code == 201, created.text
        assert api.post(f"/api/v1/stacks/{stack['id']}/policies", json={"policy_id": created.json()["id"]})
    with WorkerThread(ctx) as worker:
        first = _trigger(api, stack)
        wait_for_status(ctx, first["id"], "unconfirmed", worker=worker, timeout=120)
        _confirm(api, first)
        wait_for_status(ctx, first["id"], "finished", worker=worker, timeout=120)
        repo.commit({"main.tf": main_tf % "two"}, "two")
        second = _trigger(api, stack)
        denied = wait_for_status(ctx, second["id"], "failed", worker=worker, timeout=120)
    results = api.get(f"/api/v1/runs/{first['id']}/policy-results").json()["data"]
    assert [(r["hook"], r["outcome"], r["warn"]) for r in results] == [
        ("post_plan", "allow", []),
        ("pre_apply", "warn", ["applying 1 creates"]),
    ]
    assert (
        denied.failure_reason
        == "denied at post_plan: policy 'not two' (version 1): terraform_data.a may not become two"
    )
    assert [(v["serial"], v["run_id"]) for v in _versions(api, stack)] == [(1, first["id"])]
