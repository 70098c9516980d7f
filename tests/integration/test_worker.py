"""The worker end to end: real Ansible playbooks in real git repositories (file://), executed by
a real Worker (in a thread, or as a `crucible worker` process), on SQLite and PostgreSQL.

Users drive runs through the REST API, as they would; the tests look at what a user relies on:
the run's status and reason, the plan summary, the files the playbook manages, the stored log."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backend.queue import service as queue
from backend.runs import execution, logs
from backend.runs.models import Run
from backend.timeutil import utcnow
from runner.port import InProcessPort
from tests.conftest import TEST_SECRET_KEY
from tests.integration.runs_support import (
    GitRepo,
    WorkerThread,
    chunk_count,
    copy_task,
    env,
    eventually,
    git,
    live_chunks,
    load,
    log_text,
    playbook,
    processes_with,
    sleep_task,
    wait_for_file_task,
    wait_for_log,
    wait_for_status,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# What does not depend on the database runs on SQLite only, to keep Ansible's cost down; the
# queue, the reports, heartbeats and wake-ups are exercised on both.
SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"])
CRUCIBLE = REPO_ROOT / ".venv" / "bin" / "crucible"


@pytest.fixture
def managed(tmp_path: Path) -> Path:
    """The host directory the playbooks manage (the sandbox may write only there)."""
    path = tmp_path / "managed"
    path.mkdir()
    return path


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    """Per-test settings on top of the module's: parametrize it."""
    return {}


@pytest.fixture
def settings_overrides(managed: Path, extra_settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "worker_heartbeat_seconds": 0.5,
        "worker_heartbeat_timeout_seconds": 15,
        "cancel_grace_seconds": 2,
        "local_runner_writable_paths": str(managed),
        **extra_settings,
    }


@pytest.fixture
def api(as_actor, admin):
    return as_actor(admin)


def ansible_stack(world, tmp_path: Path, tasks: list[dict], **fields: Any) -> tuple[dict, GitRepo]:
    repo = GitRepo.create(
        tmp_path / f"repo-{len(list(tmp_path.glob('repo-*')))}", {"site.yml": playbook(*tasks)}
    )
    return world.stack(tool="ansible", repository_url=repo.url, **fields), repo


def trigger(api, stack: dict, **body: Any) -> dict:
    response = api.post(f"/api/v1/stacks/{stack['id']}/runs", json={"type": "tracked", **body})
    assert response.status_code == 201, response.text
    return response.json()


def workspace_dirs(settings, prefix: str) -> list[Path]:
    """The run's workspace directories (``<run id>-plan``, ``<run id>-apply``) still on disk."""
    root = settings.resolved_workspace_dir
    return sorted(root.glob(f"{prefix}*")) if root.exists() else []


# --------------------------------------------------------------------------- the core loop


def test_tracked_run_plans_waits_for_confirmation_then_applies(ctx, world, api, settings, managed, tmp_path):
    target = managed / "motd"
    stack, repo = ansible_stack(world, tmp_path, [copy_task(target, "hello from crucible\n")])
    head = repo.commit({"README": "docs\n"}, "second: add a readme")

    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        planned = wait_for_status(ctx, run["id"], "unconfirmed", worker=worker)

        assert planned.plan_summary["change"] == 1 and planned.has_changes is True
        assert not target.exists(), "the plan (check mode) must not change anything"
        assert planned.commit_sha == head and planned.commit_message == "second: add a readme"
        plan_log = log_text(ctx, run["id"])
        assert "--check --diff" in plan_log and "waiting for confirmation" in plan_log
        shown = api.get(f"/api/v1/runs/{run['id']}").json()
        assert shown["status"] == "unconfirmed" and "confirm" in shown["actions"]
        # The plan phase is over: its log sits in the object store, not in the database.
        entry = planned.artifacts["logs"]["plan"]
        assert b"PLAY RECAP" in ctx.objects.get(entry["key"])
        assert chunk_count(ctx, run["id"]) == 0
        assert workspace_dirs(settings, run["id"]) == []

        confirmed = api.post(f"/api/v1/runs/{run['id']}/confirm")
        assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
        done = wait_for_status(ctx, run["id"], "finished", worker=worker)

    assert target.read_text() == "hello from crucible\n"
    stamps = done.status_timestamps
    expected = ["queued", "preparing", "planning", "unconfirmed", "confirmed", "applying", "finished"]
    assert sorted(stamps, key=lambda k: stamps[k]) == expected
    assert set(done.artifacts["logs"]) == {"plan", "apply"}
    assert b"changed: [localhost]" in ctx.objects.get(done.artifacts["logs"]["apply"]["key"])
    assert chunk_count(ctx, run["id"]) == 0
    assert workspace_dirs(settings, run["id"]) == []
    text = api.get(f"/api/v1/runs/{run['id']}/logs").text
    assert text.index("--check --diff") < text.index("[crucible] applying with ansible-playbook")
    assert text.rstrip().endswith("[crucible] applied")


@SQLITE_ONLY
def test_proposed_run_stops_after_the_plan(ctx, world, api, managed, tmp_path):
    target = managed / "motd"
    stack, _ = ansible_stack(world, tmp_path, [copy_task(target, "proposed\n")])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack, type="proposed")
        done = wait_for_status(ctx, run["id"], "finished", worker=worker)
    assert done.plan_summary["change"] == 1 and done.has_changes is True
    assert not target.exists()
    assert not {"unconfirmed", "confirmed", "applying"} & set(done.status_timestamps)
    assert set(done.artifacts["logs"]) == {"plan"}


@SQLITE_ONLY
def test_a_plan_without_changes_finishes_at_once(ctx, world, api, managed, tmp_path):
    target = managed / "motd"
    target.write_text("already there\n")
    stack, _ = ansible_stack(world, tmp_path, [copy_task(target, "already there\n")])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        done = wait_for_status(ctx, run["id"], "finished", worker=worker)
    assert done.plan_summary["change"] == 0 and done.has_changes is False
    assert "unconfirmed" not in done.status_timestamps and "applying" not in done.status_timestamps
    assert "(no changes)" in log_text(ctx, run["id"])
    assert "confirm" not in api.get(f"/api/v1/runs/{run['id']}").json()["actions"]


def test_an_auto_apply_stack_applies_without_confirmation(ctx, world, api, managed, tmp_path):
    target = managed / "motd"
    stack, _ = ansible_stack(world, tmp_path, [copy_task(target, "auto\n")], auto_apply=True)
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        done = wait_for_status(ctx, run["id"], "finished", worker=worker)
    assert target.read_text() == "auto\n"
    assert "unconfirmed" not in done.status_timestamps
    assert {"confirmed", "applying"} <= set(done.status_timestamps)
    assert "auto-apply" in log_text(ctx, run["id"])


def test_tracked_runs_wait_their_turn_and_discard_frees_the_stack(ctx, world, api, managed, tmp_path):
    target = managed / "motd"
    stack, _ = ansible_stack(world, tmp_path, [copy_task(target, "x\n")])
    with WorkerThread(ctx) as worker:
        first = trigger(api, stack, message="first")
        wait_for_status(ctx, first["id"], "unconfirmed", worker=worker)
        second = trigger(api, stack, message="second")
        # A proposed run on the same stack is not blocked; once it has finished, the worker has
        # certainly looked at the older tracked run, and must have left it queued.
        probe = trigger(api, stack, type="proposed")
        wait_for_status(ctx, probe["id"], "finished", worker=worker)
        assert load(ctx, second["id"]).status == "queued"

        discarded = api.post(f"/api/v1/runs/{first['id']}/discard")
        assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
        wait_for_status(ctx, second["id"], "unconfirmed", worker=worker)
    assert not target.exists()
    assert (
        load(ctx, first["id"]).status_timestamps["discarded"]
        < load(ctx, second["id"]).status_timestamps["preparing"]
    )


@pytest.mark.slow
def test_cancel_stops_a_long_task_promptly_and_frees_the_stack(ctx, world, api, managed, tmp_path):
    token = f"crucible-cancel-{os.getpid()}-{time.monotonic_ns()}"
    tasks = [sleep_task(token, when="lookup('env', 'SLEEP') != ''"), copy_task(managed / "motd", "x\n")]
    stack, _ = ansible_stack(world, tmp_path, tasks)
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack, env={"SLEEP": "yes"})
        next_run = trigger(api, stack)
        eventually(lambda: processes_with(token), 60, "the long task to start")

        response = api.post(f"/api/v1/runs/{run['id']}/cancel")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "planning" and body["cancel_requested_at"] is not None
        assert "force_cancel" in body["actions"]

        canceled = wait_for_status(ctx, run["id"], "canceled", timeout=30, worker=worker)
        eventually(lambda: not processes_with(token), 15, "the canceled task's processes to be gone")
        assert canceled.failure_reason is None
        assert "the run was canceled" in log_text(ctx, run["id"])
        # The stack is free again: the next tracked run plans.
        wait_for_status(ctx, next_run["id"], "unconfirmed", worker=worker)
    assert not (managed / "motd").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra_settings", [{"worker_heartbeat_seconds": 0.5, "worker_heartbeat_timeout_seconds": 3}]
)
def test_an_auto_apply_longer_than_the_heartbeat_timeout_is_kept_alive_by_its_worker(
    ctx, world, api, settings, managed, tmp_path, monkeypatch
):
    # A slow disk: removing the plan's workspace takes a while, long enough for the worker to
    # claim the auto-apply before its plan job has ended (made certain here, not left to luck).
    rmtree = shutil.rmtree
    plan_root = settings.resolved_workspace_dir

    def slow_rmtree(path, *args, **kwargs):
        path = Path(path)
        if path.parent == plan_root and path.name.endswith("-plan") and path.exists():
            run_id = path.name.removesuffix("-plan")
            deadline = time.monotonic() + 30
            while load(ctx, run_id).status == "confirmed" and time.monotonic() < deadline:
                time.sleep(0.05)
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    token = f"crucible-longapply-{os.getpid()}-{time.monotonic_ns()}"
    target = managed / "motd"
    # The apply outlasts the heartbeat timeout twice over; the plan does not sleep.
    tasks = [sleep_task(token, seconds=6, when="not ansible_check_mode"), copy_task(target, "slow\n")]
    stack, _ = ansible_stack(world, tmp_path, tasks, auto_apply=True)
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        try:
            done = wait_for_status(ctx, run["id"], "finished", timeout=90, worker=worker)
            assert target.read_text() == "slow\n" and done.failure_reason is None
        finally:
            # With the bug the run is failed while its apply goes on: let that end first, so
            # nothing of it is left running when the worker stops.
            eventually(lambda: not processes_with(token), 30, "the apply's long task to end")
            eventually(lambda: not workspace_dirs(settings, run["id"]), 30, "the apply job's end")


@SQLITE_ONLY
def test_a_worker_that_shuts_down_fails_its_runs_and_stops_their_tools(ctx, world, api, tmp_path):
    token = f"crucible-shutdown-{os.getpid()}-{time.monotonic_ns()}"
    stack, _ = ansible_stack(world, tmp_path, [sleep_task(token)])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        eventually(lambda: processes_with(token), 60, "the long task to start")
        worker.stop()  # what SIGTERM does to `crucible worker`
    failed = load(ctx, run["id"])
    assert failed.status == "failed"
    assert failed.failure_reason == "the worker shut down while the run was executing; trigger it again"
    eventually(lambda: not processes_with(token), 15, "the task's processes to be gone")
    assert chunk_count(ctx, run["id"]) == 0  # its log was archived on the way out


@SQLITE_ONLY
def test_runs_use_the_exact_commit_they_planned(ctx, world, api, managed, tmp_path):
    target = managed / "version"
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook(copy_task(target, "v1\n"))}, "v1")
    first = git(repo.path, "rev-parse", "HEAD").strip()
    second = repo.commit({"site.yml": playbook(copy_task(target, "v2\n"))}, "v2")
    stack = world.stack(tool="ansible", repository_url=repo.url)

    with WorkerThread(ctx) as worker:
        # An explicit (abbreviated) commit that is not the branch head.
        pinned = trigger(api, stack, commit=first[:10])
        assert pinned["commit_sha"] == first[:10]
        planned = wait_for_status(ctx, pinned["id"], "unconfirmed", worker=worker)
        assert planned.commit_sha == first
        api.post(f"/api/v1/runs/{pinned['id']}/confirm")
        wait_for_status(ctx, pinned["id"], "finished", worker=worker)
        assert target.read_text() == "v1\n"

        # A push between plan and confirm does not change what is applied.
        head = trigger(api, stack)
        assert wait_for_status(ctx, head["id"], "unconfirmed", worker=worker).commit_sha == second
        repo.commit({"site.yml": playbook(copy_task(target, "v3\n"))}, "v3")
        api.post(f"/api/v1/runs/{head['id']}/confirm")
        applied = wait_for_status(ctx, head["id"], "finished", worker=worker)
    assert target.read_text() == "v2\n"
    apply_log = ctx.objects.get(applied.artifacts["logs"]["apply"]["key"]).decode()
    assert f"checked out {second[:12]} v2" in apply_log


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unreachable repository", "git clone failed: fatal: '/nonexistent/"),
        ("unknown branch", "Remote branch nope not found"),
        ("unknown commit", f"commit {'0' * 40} not found"),
        ("missing project root", "project root 'envs/nope' does not exist in the repository at"),
    ],
)
def test_git_failures_fail_the_run_at_preparing_with_gits_message(ctx, world, api, tmp_path, case, message):
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook({"ansible.builtin.ping": {}})})
    fields: dict[str, Any] = {"tool": "ansible", "repository_url": repo.url}
    body: dict[str, Any] = {}
    if case == "unreachable repository":
        fields["repository_url"] = f"file:///nonexistent/{tmp_path.name}.git"
    elif case == "unknown branch":
        fields["branch"] = "nope"
    elif case == "missing project root":
        fields["project_root"] = "envs/nope"
    else:
        body["commit"] = "0" * 40
    stack = world.stack(**fields)
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack, **body)
        failed = wait_for_status(ctx, run["id"], "failed", worker=worker)
    assert message in failed.failure_reason
    assert "preparing" in failed.status_timestamps and "planning" not in failed.status_timestamps
    assert f"ERROR: {failed.failure_reason}" in log_text(ctx, run["id"])
    assert workspace_dirs(ctx.settings, run["id"]) == []
    assert api.get(f"/api/v1/runs/{run['id']}").json()["failure_reason"] == failed.failure_reason


def test_a_failing_playbook_fails_the_run_with_the_step_and_exit_code(ctx, world, api, tmp_path):
    stack, _ = ansible_stack(world, tmp_path, [{"ansible.builtin.fail": {"msg": "no way"}}])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        failed = wait_for_status(ctx, run["id"], "failed", worker=worker)
    assert failed.failure_reason == "plan failed: ansible-playbook exited with code 2"
    assert "no way" in log_text(ctx, run["id"])


@SQLITE_ONLY
def test_a_run_is_reported_over_only_once_its_whole_log_is_stored(ctx, world, api, tmp_path, monkeypatch):
    """Whoever sees a run finished or failed (a CI script polling the API, then fetching the log)
    reads all of it: no lines are still on their way when the status changes."""
    at_report: dict[str, str] = {}
    for name in ("finish_planning", "fail"):
        original = getattr(InProcessPort, name)

        async def snapshot(self, run_id, *args, _original=original, _name=name, **kwargs):
            at_report[_name] = await asyncio.to_thread(log_text, ctx, run_id)
            return await _original(self, run_id, *args, **kwargs)

        monkeypatch.setattr(InProcessPort, name, snapshot)
    many = {"name": "many lines", "ansible.builtin.debug": {"msg": "{{ range(3000) | list }}"}}
    planned, _ = ansible_stack(world, tmp_path, [many])
    failing, _ = ansible_stack(world, tmp_path, [many, {"ansible.builtin.fail": {"msg": "no way"}}])
    with WorkerThread(ctx) as worker:
        finished = trigger(api, planned, type="proposed")
        failed = trigger(api, failing, type="proposed")
        wait_for_status(ctx, finished["id"], "finished", worker=worker)
        wait_for_status(ctx, failed["id"], "failed", worker=worker)
    assert "plan: +0 ~0 -0" in at_report["finish_planning"]
    assert at_report["finish_planning"] == log_text(ctx, finished["id"])
    assert "ERROR: plan failed" in at_report["fail"]
    assert at_report["fail"] == log_text(ctx, failed["id"])


def test_a_destroy_run_on_an_ansible_stack_fails_saying_why(ctx, world, api, tmp_path):
    stack, _ = ansible_stack(world, tmp_path, [{"ansible.builtin.ping": {}}])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack, type="destroy")
        failed = wait_for_status(ctx, run["id"], "failed", worker=worker)
    assert failed.failure_reason.startswith("Ansible has no destroy")


def test_secrets_are_masked_in_live_and_archived_logs_while_the_run_gets_them(
    ctx, world, api, managed, tmp_path
):
    target, gate = managed / "out", managed / "gate"
    content = f"a={env('SECRET_A')} b={env('SECRET_B')} p={env('PLAIN_V')} e={env('EXTRA')}\n"
    tasks = [
        copy_task(target, content),
        {"name": "show", "ansible.builtin.debug": {"msg": f"a={env('SECRET_A')} b={env('SECRET_B')}"}},
        wait_for_file_task(gate),
    ]
    stack, _ = ansible_stack(world, tmp_path, tasks)
    variables = {
        "SECRET_A": {"value": "s3cr3t-alpha-value", "secret": True},
        "SECRET_B": {"value": "s3cr3t-beta-original", "secret": True},
        "PLAIN_V": {"value": "plain-visible", "secret": False},
    }
    for name, body in variables.items():
        assert api.put(f"/api/v1/stacks/{stack['id']}/variables/{name}", json=body).status_code == 200
    secrets = ["s3cr3t-alpha-value", "s3cr3t-beta-original", "s3cr3t-beta-override"]

    with WorkerThread(ctx) as worker:
        # Overriding a secret keeps the new value secret; a new name is a plain override.
        run = trigger(api, stack, env={"SECRET_B": "s3cr3t-beta-override", "EXTRA": "extra-from-run"})
        wait_for_log(ctx, run["id"], "TASK [wait for the gate]")
        live = "\n".join(c.body for c in live_chunks(ctx, run["id"]))
        assert "p=plain-visible e=extra-from-run" in live  # the diff of the planned file content
        assert "a=*** b=***" in live
        assert not [s for s in secrets if s in live]

        gate.touch()
        planned = wait_for_status(ctx, run["id"], "unconfirmed", worker=worker)
        archived = ctx.objects.get(planned.artifacts["logs"]["plan"]["key"]).decode()
        assert "a=*** b=***" in archived and not [s for s in secrets if s in archived]
        api.post(f"/api/v1/runs/{run['id']}/confirm")
        wait_for_status(ctx, run["id"], "finished", worker=worker)

    assert (
        target.read_text() == "a=s3cr3t-alpha-value b=s3cr3t-beta-override p=plain-visible e=extra-from-run\n"
    )
    text = api.get(f"/api/v1/runs/{run['id']}/logs").text
    assert text.count("a=*** b=***") >= 2  # plan and apply
    for path in (ctx.settings.resolved_data_dir / "objects").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], f"a secret is stored in {path}"


@pytest.mark.parametrize(
    ("tool", "files", "binary", "hint"),
    [
        ("ansible", {"site.yml": playbook({"ansible.builtin.ping": {}})}, "ansible-playbook", "ansible-core"),
        ("opentofu", {"main.tf": "terraform {}\n"}, "tofu", "install OpenTofu"),
    ],
)
def test_a_missing_tool_fails_with_a_message_naming_the_binary(
    ctx, world, api, tmp_path, monkeypatch, tool, files, binary, hint
):
    # Crucible installed without the tool: its interpreter's directory (which the runner puts
    # first on PATH, as ansible-core is a dependency) does not have it, nor has the stack's PATH.
    stack_path = "/usr/bin:/bin"
    if shutil.which(binary, path=stack_path):
        pytest.skip(f"{binary} is installed on {stack_path}")
    bare_bin = tmp_path / "bare-bin"
    bare_bin.mkdir()
    monkeypatch.setattr(sys, "executable", str(bare_bin / "python3"))
    repo = GitRepo.create(tmp_path / "repo", files)
    stack = world.stack(tool=tool, repository_url=repo.url)
    response = api.put(f"/api/v1/stacks/{stack['id']}/variables/PATH", json={"value": stack_path})
    assert response.status_code == 200
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        failed = wait_for_status(ctx, run["id"], "failed", worker=worker)
    assert failed.failure_reason.startswith(f"{binary} not found on this server's PATH")
    assert hint in failed.failure_reason
    assert "planning" in failed.status_timestamps


@pytest.mark.slow
@SQLITE_ONLY
@pytest.mark.parametrize("extra_settings", [{"run_timeout_seconds": 10, "cancel_grace_seconds": 1}])
def test_a_run_that_outlives_its_timeout_fails_and_its_processes_are_stopped(ctx, world, api, tmp_path):
    token = f"crucible-timeout-{os.getpid()}-{time.monotonic_ns()}"
    stack, _ = ansible_stack(world, tmp_path, [sleep_task(token)])
    with WorkerThread(ctx) as worker:
        run = trigger(api, stack)
        failed = wait_for_status(ctx, run["id"], "failed", timeout=60, worker=worker)
    assert failed.failure_reason.startswith("the run timed out after 10 s")
    eventually(lambda: not processes_with(token), 15, "the timed-out task's processes to be gone")


# --------------------------------------------------------------------------- resilience


def _worker_process(settings, managed: Path, log: Path) -> subprocess.Popen:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CRUCIBLE_")},
        "CRUCIBLE_DATABASE_URL": settings.sqlalchemy_url,
        "CRUCIBLE_DATA_DIR": str(settings.resolved_data_dir),
        "CRUCIBLE_SECRET_KEY": TEST_SECRET_KEY,
        "CRUCIBLE_WORKER_HEARTBEAT_SECONDS": "0.5",
        "CRUCIBLE_WORKER_HEARTBEAT_TIMEOUT_SECONDS": "3",
        "CRUCIBLE_LOCAL_RUNNER_WRITABLE_PATHS": str(managed),
        "CRUCIBLE_LOG_FORMAT": "text",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(CRUCIBLE), "worker", "--concurrency", "1"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra_settings", [{"worker_heartbeat_seconds": 0.5, "worker_heartbeat_timeout_seconds": 3}]
)
def test_a_killed_worker_process_fails_its_run_and_the_stack_moves_on(
    ctx, world, api, settings, managed, tmp_path
):
    token = f"crucible-kill-{os.getpid()}-{time.monotonic_ns()}"
    tasks = [sleep_task(token, when="lookup('env', 'SLEEP') != ''"), copy_task(managed / "motd", "x\n")]
    stack, _ = ansible_stack(world, tmp_path, tasks)
    log = tmp_path / "worker.log"
    proc = _worker_process(settings, managed, log)
    try:
        doomed = trigger(api, stack, env={"SLEEP": "yes"})
        eventually(lambda: processes_with(token), 60, f"the worker process to start the long task ({log})")
        owner = load(ctx, doomed["id"]).worker_id
        assert owner and owner.split(":")[1] == str(proc.pid)
        follower = trigger(api, stack)

        with WorkerThread(ctx, concurrency=1) as survivor:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            failed = wait_for_status(ctx, doomed["id"], "failed", timeout=60)
            assert f"worker {owner} stopped responding" in failed.failure_reason
            # What it logged is kept, and moved to the object store like any finished log.
            eventually(lambda: chunk_count(ctx, doomed["id"]) == 0, 30, "the lost run's log to be archived")
            archived = load(ctx, doomed["id"]).artifacts["logs"]["plan"]
            assert b"TASK [sleep]" in ctx.objects.get(archived["key"])
            # Its sandboxed tool died with it rather than running on unsupervised.
            eventually(lambda: not processes_with(token), 15, "the killed worker's task to be gone")
            wait_for_status(ctx, follower["id"], "unconfirmed", worker=survivor)
            assert load(ctx, follower["id"]).worker_id is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("extra_settings", [{"worker_heartbeat_timeout_seconds": 300}])
def test_startup_reconciliation_fails_runs_of_dead_local_workers_at_once(ctx, world, api, tmp_path):
    dead_pid = _a_dead_pid()
    dead = f"{socket.gethostname()[:60]}:{dead_pid}:dead00"
    alive_here = f"{socket.gethostname()[:60]}:{os.getppid()}:live00"
    elsewhere = f"another-host.example:{dead_pid}:away00"
    stacks = {}
    for owner in (dead, alive_here, elsewhere):
        stack, _ = ansible_stack(world, tmp_path, [{"ansible.builtin.debug": {"msg": "ok"}}])
        run = trigger(api, stack)
        _claim_and_plan(ctx, run["id"], owner)
        stacks[owner] = (stack, run["id"])
    waiting = trigger(api, stacks[dead][0])
    with ctx.session() as s:  # what the dead worker had logged
        logs.append(s, stacks[dead][1], "plan", ["TASK [before the crash]"])

    with WorkerThread(ctx, concurrency=1) as worker:
        failed = wait_for_status(ctx, stacks[dead][1], "failed", timeout=30)
        assert f"worker {dead} stopped" in failed.failure_reason
        assert "planning" in failed.failure_reason
        eventually(lambda: chunk_count(ctx, stacks[dead][1]) == 0, 30, "the dead run's log to be archived")
        assert "TASK [before the crash]" in log_text(ctx, stacks[dead][1])
        # Its stack is free: the run queued behind it executes (no changes: it finishes).
        wait_for_status(ctx, waiting["id"], "finished", worker=worker)
        # A live process of this host and a worker of another host are not touched.
        assert load(ctx, stacks[alive_here][1]).status == "planning"
        assert load(ctx, stacks[elsewhere][1]).status == "planning"


def _a_dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _claim_and_plan(ctx, run_id: str, worker_id: str) -> None:
    """What a worker does when it takes the run and starts planning (then it 'dies')."""
    now = utcnow()
    with ctx.session() as s:
        claimed = queue.claim(s, worker_id, now)
        assert claimed is not None and claimed.id == run_id
    with ctx.session() as s:
        assert execution.start_planning(s, run_id, worker_id, now, "0" * 40, "msg") == "planning"
    with ctx.session() as s:
        assert s.get(Run, run_id).heartbeat_at is not None
