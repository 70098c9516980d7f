"""Webhooks end to end: a signed delivery to an Ansible stack whose repository is a real local
git repository (file://) makes a run that a real Worker executes at exactly the commit the
payload names, not at whatever the branch's head is by then."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runs_support import (
    GitRepo,
    WorkerThread,
    copy_task,
    git,
    log_text,
    playbook,
    wait_for_status,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
# Ansible's cost does not depend on the database: SQLite only, as in test_worker.py.
pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"])


@pytest.fixture
def managed(tmp_path: Path) -> Path:
    """The host directory the playbooks manage (the sandbox may write only there)."""
    path = tmp_path / "managed"
    path.mkdir()
    return path


@pytest.fixture
def settings_overrides(managed: Path) -> dict[str, Any]:
    return {
        "worker_heartbeat_seconds": 0.5,
        "worker_heartbeat_timeout_seconds": 15,
        "local_runner_writable_paths": str(managed),
    }


@pytest.fixture
def api(as_actor, member):
    return as_actor(member)


def signed(name: str, secret: str, change) -> tuple[bytes, dict[str, str]]:
    doc = json.loads((FIXTURES / name).read_text())
    change(doc["payload"])
    body = json.dumps(doc["payload"]).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {**doc["headers"], "X-Hub-Signature-256": f"sha256={digest}"}


def commit_of(sha: str, message: str, modified: list[str]) -> dict[str, Any]:
    return {
        "id": sha,
        "distinct": True,
        "message": message,
        "author": {"name": "t", "email": "t@example.com", "username": "octocat"},
        "added": [],
        "removed": [],
        "modified": modified,
    }


def test_a_pushed_commit_is_planned_and_applied_even_after_the_branch_moved_on(
    ctx, world, client, api, as_actor, admin, managed, tmp_path
):
    target = managed / "version"
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook(copy_task(target, "v1\n"))}, "v1: first")
    first = git(repo.path, "rev-parse", "HEAD").strip()
    stack = world.stack(tool="ansible", repository_url=repo.url, trigger_paths=["site.yml"])
    secret = api.get(f"/api/v1/stacks/{stack['id']}/webhook").json()["secret"]
    # The branch moves on before the webhook for the first push arrives.
    second = repo.commit({"site.yml": playbook(copy_task(target, "v2\n"))}, "v2: second")
    assert second != first

    def push_of_first(p):
        p["before"], p["after"] = "0" * 40, first
        p["commits"] = [commit_of(first, "v1: first", ["site.yml"])]
        p["head_commit"] = p["commits"][0]

    body, headers = signed("github-push.json", secret, push_of_first)
    with WorkerThread(ctx) as worker:
        response = client.post(f"/api/v1/webhooks/{stack['id']}", content=body, headers=headers)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["outcome"] == "created", answer["reason"]
        planned = wait_for_status(ctx, answer["run_id"], "unconfirmed", worker=worker)
        assert planned.commit_sha == first and planned.commit_message == "v1: first"
        plan_log = log_text(ctx, answer["run_id"])
        assert f"checked out {first[:12]} v1: first" in plan_log and second[:12] not in plan_log
        assert not target.exists()

        confirmed = as_actor(admin).post(f"/api/v1/runs/{answer['run_id']}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        done = wait_for_status(ctx, answer["run_id"], "finished", worker=worker)

    assert target.read_text() == "v1\n"  # the pushed commit's playbook, not the branch head's
    assert done.trigger == "webhook" and done.created_by == "github webhook (octocat)"
    assert done.plan_summary["change"] == 1


def test_a_pull_request_is_planned_on_its_head_branch_and_nothing_is_applied(
    ctx, world, client, api, managed, tmp_path
):
    target = managed / "motd"
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook(copy_task(target, "main\n"))}, "main")
    git(repo.path, "checkout", "--quiet", "-b", "feature/vpc-flow-logs")
    head = repo.commit({"site.yml": playbook(copy_task(target, "from the pull request\n"))}, "feature: motd")
    git(repo.path, "checkout", "--quiet", "main")
    stack = world.stack(tool="ansible", repository_url=repo.url)
    secret = api.get(f"/api/v1/stacks/{stack['id']}/webhook").json()["secret"]

    def at_head(p):
        p["pull_request"]["head"]["sha"] = head

    body, headers = signed("github-pull_request-opened.json", secret, at_head)
    with WorkerThread(ctx) as worker:
        answer = client.post(f"/api/v1/webhooks/{stack['id']}", content=body, headers=headers).json()
        assert answer["outcome"] == "created", answer["reason"]
        done = wait_for_status(ctx, answer["run_id"], "finished", worker=worker)

    assert done.type == "proposed" and done.branch == "feature/vpc-flow-logs" and done.commit_sha == head
    assert done.plan_summary["change"] == 1 and set(done.artifacts["logs"]) == {"plan"}
    plan_log = log_text(ctx, answer["run_id"])
    assert f"checked out {head[:12]} feature: motd" in plan_log
    assert "from the pull request" in plan_log  # the check-mode diff shows the PR's content
    assert not target.exists()
