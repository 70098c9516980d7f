"""VCS webhooks over HTTP, as providers call them: every provider's push and pull request through
the real endpoint, verification (401/404/400/413), the delivery log, redeliveries (also at
once), secret rotation with its grace period, replays, who may see what, the audit trail, the
stack's VCS fields, and a fuzz of the endpoint. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlmodel import select
from starlette.testclient import TestClient

from backend import tasks
from backend.auth.models import Role
from backend.context import set_context
from backend.stacks.models import Stack
from backend.timeutil import utcnow
from backend.vcs.models import RunVcs, WebhookDelivery

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
STACKS = "/api/v1/stacks"
UNKNOWN_STACK = "stk-0000000000000000"
# Headers that carry a credential: never kept in the delivery log.
CREDENTIALS = {
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitea-signature",
    "x-gogs-signature",
    "x-gitlab-token",
    "authorization",
}
# Headers that name a delivery: a fresh value makes a new delivery of the same payload.
DELIVERY_HEADERS = (
    "X-GitHub-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",
    "X-Request-UUID",
)
PROVIDER_NAMES = {
    "github": "github",
    "gitlab": "gitlab",
    "gitea": "gitea",
    "gogs": "gogs",
    "bitbucket": "bitbucket",
    "azure": "azure_devops",
}


# --------------------------------------------------------------------------- deliveries


def provider_of(name: str) -> str:
    return PROVIDER_NAMES[name.split("-", 1)[0]]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def credential(provider: str, body: bytes, secret: str) -> dict[str, str]:
    """What the provider adds to a delivery signed with ``secret``, as its docs say."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if provider == "gitea":  # Gitea signs in every header it knows, SHA-1 in X-Hub-Signature
        sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        return {
            "X-Gitea-Signature": digest,
            "X-Gogs-Signature": digest,
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-Hub-Signature": f"sha1={sha1}",
        }
    if provider == "gogs":
        return {"X-Gogs-Signature": digest}
    if provider == "bitbucket":
        return {"X-Hub-Signature": f"sha256={digest}"}
    if provider == "gitlab":
        return {"X-Gitlab-Token": secret}
    return {"Authorization": basic("crucible", secret)}


@dataclass
class Delivery:
    provider: str
    headers: dict[str, str]
    body: bytes
    payload: Any


def delivery(
    name: str,
    secret: str | None,
    change: Callable[[dict], Any] | None = None,
    *,
    fresh: bool = True,
    body: bytes | None = None,
) -> Delivery:
    """A recorded delivery, changed by ``change``, with a fresh delivery id (unless not
    ``fresh``), signed with ``secret`` (None: unsigned) over the exact bytes sent."""
    doc = json.loads((FIXTURES / name).read_text())
    headers, payload = doc["headers"], doc["payload"]
    provider = provider_of(name)
    if fresh:
        for header in DELIVERY_HEADERS:
            if header in headers:
                headers[header] = str(uuid.uuid4())
        if provider == "azure_devops":
            payload["id"] = str(uuid.uuid4())
    if change is not None:
        change(payload)
    if body is None:
        body = json.dumps(payload).encode()
    if secret is not None:
        headers.update(credential(provider.split("_")[0], body, secret))
    return Delivery(provider, headers, body, payload)


def post(client: TestClient, stack_id: str, d: Delivery):
    return client.post(f"/api/v1/webhooks/{stack_id}", content=d.body, headers=d.headers)


@dataclass
class Hook:
    stack: dict[str, Any]
    secret: str

    @property
    def id(self) -> str:
        return self.stack["id"]


@pytest.fixture
def api(as_actor, member) -> TestClient:
    return as_actor(member)


def make_hook(world, api: TestClient, **fields: Any) -> Hook:
    stack = world.stack(**fields)
    revealed = api.get(f"{STACKS}/{stack['id']}/webhook")
    assert revealed.status_code == 200, revealed.text
    return Hook(stack, revealed.json()["secret"])


@pytest.fixture
def hook(world, api) -> Hook:
    return make_hook(world, api)


def runs_of(api: TestClient, stack_id: str) -> list[dict]:
    response = api.get("/api/v1/runs", params={"stack_id": stack_id, "limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def log_of(api: TestClient, stack_id: str, **params: Any) -> dict:
    response = api.get(f"{STACKS}/{stack_id}/webhook/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def run_vcs(ctx, run_id: str) -> RunVcs | None:
    with ctx.session() as s:
        return s.get(RunVcs, run_id)


def stored_deliveries(ctx, stack_id: str) -> list[WebhookDelivery]:
    with ctx.session() as s:
        return list(s.exec(select(WebhookDelivery).where(WebhookDelivery.stack_id == stack_id)).all())


# --------------------------------------------------------------------------- pushes and PRs

PUSHES = [
    ("github-push.json", "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "octocat", "acme/network"),
    ("gitlab-push.json", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "jsmith", "infra/network"),
    ("gitea-push.json", "bffeb74224043ba2feb48d137756c8a9331c449a", "alice", "infra/network"),
    ("gogs-push.json", "bffeb74224043ba2feb48d137756c8a9331c449b", "unknwon", "infra/network"),
    ("bitbucket-push.json", "3f2c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "emma", "acme/network"),
    (
        "azure-git.push.json",
        "33b55f7cb7e7e245323987634f960cf4a6e6bc74",
        "jamal@fabrikam.example",
        "Infrastructure/network",
    ),
]


@pytest.mark.parametrize(("name", "sha", "actor", "repo"), PUSHES, ids=[p[0] for p in PUSHES])
def test_a_signed_push_starts_a_tracked_run_at_the_pushed_commit(
    ctx, client, api, hook, name, sha, actor, repo
):
    d = delivery(name, hook.secret)
    response = post(client, hook.id, d)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["outcome"] == "created" and answer["delivery"].startswith("whd-")
    assert answer["reason"].startswith("push to main at ")

    run = api.get(f"/api/v1/runs/{answer['run_id']}").json()
    assert run["type"] == "tracked" and run["status"] == "queued"
    assert run["commit_sha"] == sha and run["branch"] == "main"
    assert run["trigger"] == "webhook"
    assert run["created_by"] == f"{d.provider} webhook ({actor})"
    assert [r["id"] for r in runs_of(api, hook.id)] == [run["id"]]

    vcs = run_vcs(ctx, run["id"])
    assert vcs is not None
    assert (vcs.provider, vcs.repo, vcs.sha, vcs.pr_number) == (d.provider, repo, sha, None)

    log = log_of(api, hook.id)
    assert log["count"] == 1
    entry = log["data"][0]
    assert entry["id"] == answer["delivery"] and entry["outcome"] == "created"
    assert entry["run_id"] == run["id"] and entry["status_code"] == 202 and entry["provider"] == d.provider
    assert entry["replayable"] is True and entry["payload"] is None  # the list carries no payloads
    assert not CREDENTIALS & set(entry["headers"])
    one = api.get(f"/api/v1/webhooks/deliveries/{entry['id']}").json()
    assert one["payload"] == d.body.decode()


PRS = [
    (
        "github-pull_request-opened.json",
        "e9d1c4f2a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3",
        "feature/vpc-flow-logs",
        42,
    ),
    (
        "github-pull_request-synchronize.json",
        "7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b",
        "feature/vpc-flow-logs",
        42,
    ),
    ("gitlab-merge_request-open.json", "1f2e3d4c5b6a79880f7e6d5c4b3a291807f6e5d4", "feature/dns-ttl", 7),
    ("gitlab-merge_request-update.json", "2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d", "feature/dns-ttl", 7),
    (
        "gitea-pull_request-synchronized.json",
        "5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
        "feature/office-vpn",
        12,
    ),
    # Gogs' pull request payload names the head branch but carries no head commit id.
    ("gogs-pull_request-opened.json", None, "feature/edge-443", 3),
    ("bitbucket-pullrequest-created.json", "d4c3b2a1f0e9", "feature/staging-subnet", 7),
    ("azure-git.pullrequest.created.json", "53d54ac915144006c2c9e90d2c7d3880920db49c", "feature/peering", 1),
    ("azure-git.pullrequest.updated.json", "6e1f2d3c4b5a69788f7e6d5c4b3a29180f7e6d5c", "feature/peering", 1),
]


@pytest.mark.parametrize(("name", "sha", "branch", "number"), PRS, ids=[p[0] for p in PRS])
def test_a_signed_pull_request_starts_a_proposed_run_at_its_head(
    ctx, client, api, hook, name, sha, branch, number
):
    d = delivery(name, hook.secret)
    response = post(client, hook.id, d)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["outcome"] == "created", answer["reason"]
    run = api.get(f"/api/v1/runs/{answer['run_id']}").json()
    assert run["type"] == "proposed" and run["branch"] == branch and run["trigger"] == "webhook"
    assert run["commit_sha"] == sha
    assert run["message"].startswith(f"pull request #{number}")
    if sha is not None:
        vcs = run_vcs(ctx, run["id"])
        assert vcs is not None and vcs.sha == sha and vcs.pr_number == number and vcs.provider == d.provider


def test_the_github_pull_request_keeps_its_url_for_feedback(ctx, client, hook):
    answer = post(client, hook.id, delivery("github-pull_request-opened.json", hook.secret)).json()
    vcs = run_vcs(ctx, answer["run_id"])
    assert (
        vcs is not None
        and vcs.repo == "acme/network"
        and vcs.pr_url == "https://github.com/acme/network/pull/42"
    )


SKIPS = [
    ("github-push-delete.json", "branch feature/old-vpc was deleted"),
    ("github-push-tag.json", "tag v1.4.0: tags start no runs"),
    ("github-ping.json", "ping"),
    ("gitlab-tag-push.json", "tag v1.0.0: tags start no runs"),
    ("gitlab-push-delete.json", "branch feature/old-dns was deleted"),
    ("gitlab-merge_request-update-no-oldrev.json", "without new commits"),
    ("bitbucket-push-delete.json", "branch feature/old-subnet was deleted"),
]


def test_events_that_start_nothing_are_202_skipped_with_the_reason(client, api, hook):
    for name, reason in SKIPS:
        response = post(client, hook.id, delivery(name, hook.secret))
        assert response.status_code == 202, (name, response.text)
        answer = response.json()
        assert answer["outcome"] == "skipped" and reason in answer["reason"], (name, answer)
        assert answer["run_id"] is None
        entry = log_of(api, hook.id)["data"][0]
        assert entry["id"] == answer["delivery"], name
        assert entry["outcome"] == "skipped" and reason in entry["reason"] and entry["replayable"] is True
    assert runs_of(api, hook.id) == []


OTHER_BRANCH = [p[0] for p in PUSHES] + ["github-pull_request-opened.json", "gitlab-merge_request-open.json"]


def test_events_for_another_branch_are_skipped_naming_both(world, client, api):
    hook = make_hook(world, api, branch="production")
    for name in OTHER_BRANCH:
        answer = post(client, hook.id, delivery(name, hook.secret)).json()
        assert answer["outcome"] == "skipped", (name, answer)
        assert "main" in answer["reason"] and "this stack tracks production" in answer["reason"], name
    assert runs_of(api, hook.id) == []


def test_the_stacks_filters_skip_and_a_replay_after_fixing_them_plans(world, client, api):
    hook = make_hook(world, api, trigger_paths=["envs/staging/**"], skip_actors=["renovate[bot]"])
    skipped = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    assert skipped["outcome"] == "skipped" and "trigger paths (envs/staging/**)" in skipped["reason"]

    def by_renovate(p):
        p["sender"]["login"] = "renovate[bot]"
        p["commits"][0]["modified"] = ["envs/staging/main.tf"]

    bot = post(client, hook.id, delivery("github-push.json", hook.secret, by_renovate)).json()
    assert bot["outcome"] == "skipped" and bot["reason"] == "renovate[bot] is in the stack's skip actors"

    def skip_ci(p):
        p["commits"][0]["modified"] = ["envs/staging/main.tf"]
        p["head_commit"]["message"] = "Docs [skip ci]"

    ci = post(client, hook.id, delivery("github-push.json", hook.secret, skip_ci)).json()
    assert ci["outcome"] == "skipped" and "[skip ci]" in ci["reason"]
    assert runs_of(api, hook.id) == []

    # Replays use the stack's settings as they are now.
    patched = api.patch(f"{STACKS}/{hook.id}", json={"trigger_paths": ["envs/prod/**"]})
    assert patched.status_code == 200, patched.text
    replay = api.post(f"/api/v1/webhooks/deliveries/{skipped['delivery']}/replay")
    assert replay.status_code == 201, replay.text
    assert replay.json()["outcome"] == "created" and replay.json()["replay_of"] == skipped["delivery"]
    assert [r["commit_sha"] for r in runs_of(api, hook.id)] == ["0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"]


# --------------------------------------------------------------------------- verification

SIGNED = ["github-push.json", "gitlab-push.json", "gitea-push.json", "gogs-push.json", "bitbucket-push.json"]


def test_unsigned_deliveries_get_the_same_401_for_real_and_unknown_stacks(ctx, client, api, hook):
    for name in SIGNED:
        d = delivery(name, None)
        real, unknown = post(client, hook.id, d), post(client, UNKNOWN_STACK, d)
        assert real.status_code == unknown.status_code == 401, name
        assert real.json() == unknown.json() and real.json()["detail"].startswith("unsigned"), name
    assert runs_of(api, hook.id) == [] and stored_deliveries(ctx, hook.id) == []


def test_an_azure_delivery_without_credentials_learns_nothing_about_the_stack(client, api, hook):
    d = delivery("azure-git.push.json", None)
    real, unknown = post(client, hook.id, d), post(client, UNKNOWN_STACK, d)
    assert real.status_code == unknown.status_code and real.status_code in (400, 401)
    assert real.json() == unknown.json()
    assert runs_of(api, hook.id) == []


def test_a_signed_delivery_for_an_unknown_stack_is_404(client, hook):
    for name, *_ in PUSHES:
        response = post(client, UNKNOWN_STACK, delivery(name, hook.secret))
        assert response.status_code == 404, (name, response.text)


def test_a_wrong_signature_is_401_and_logged_as_rejected_without_payload(ctx, client, api, hook):
    for n, (name, *_) in enumerate(PUSHES, start=1):
        d = delivery(name, "not-" + hook.secret)
        response = post(client, hook.id, d)
        assert response.status_code == 401, (name, response.text)
        assert "wrong" in response.json()["detail"], name

        log = log_of(api, hook.id)
        assert log["count"] == n, name
        entry = log["data"][0]
        assert entry["provider"] == d.provider, name
        assert entry["outcome"] == "rejected" and entry["status_code"] == 401 and "wrong" in entry["reason"]
        assert entry["replayable"] is False and not CREDENTIALS & set(entry["headers"]), name
        assert api.get(f"/api/v1/webhooks/deliveries/{entry['id']}").json()["payload"] is None
        assert api.post(f"/api/v1/webhooks/deliveries/{entry['id']}/replay").status_code == 409
    assert runs_of(api, hook.id) == []
    stored = stored_deliveries(ctx, hook.id)
    assert len(stored) == len(PUSHES) and all(d.payload is None and d.payload_bytes == 0 for d in stored)


def test_rejected_deliveries_kept_per_window_are_capped(ctx, client, api, hook):
    statuses = {post(client, hook.id, delivery("github-push.json", "wrong")).status_code for _ in range(53)}
    assert statuses == {401}  # every one is refused ...
    assert log_of(api, hook.id, outcome="rejected")["count"] == 50  # ... not every one is kept
    assert post(client, hook.id, delivery("github-push.json", hook.secret)).status_code == 202


NOT_OBJECTS = [
    (b'{"ref": "refs/heads/main", ', "not valid JSON"),
    (b"\xff\xfe not even text", "not valid JSON"),
    (b'["refs/heads/main"]', "JSON object"),
    (b"", "not valid JSON"),
]


def test_a_signed_delivery_that_is_not_a_json_object_is_400_and_kept(ctx, client, api, hook):
    for body, reason in NOT_OBJECTS:
        response = post(client, hook.id, delivery("gitlab-push.json", hook.secret, body=body))
        assert response.status_code == 400, (body, response.text)
        assert reason in response.json()["detail"]
        entry = log_of(api, hook.id)["data"][0]
        assert entry["outcome"] == "rejected" and entry["status_code"] == 400 and reason in entry["reason"]
        assert entry["payload_bytes"] == len(body)
    assert runs_of(api, hook.id) == []


def test_a_sender_that_is_no_known_provider_is_400(client, hook):
    response = client.post(f"/api/v1/webhooks/{hook.id}", json={"ref": "refs/heads/main"})
    assert response.status_code == 400 and "X-GitHub-Event" in response.json()["detail"]


@pytest.mark.parametrize("settings_overrides", [{"webhook_max_bytes": 4096, "max_request_bytes": 2048}])
def test_the_webhook_size_limit_is_its_own(ctx, client, api, hook):
    def padded(size: int) -> Callable[[dict], None]:
        def change(p):
            p["head_commit"]["message"] = "x"
            p["head_commit"]["message"] += "x" * (size - len(json.dumps(p)))

        return change

    # Above CRUCIBLE_MAX_REQUEST_BYTES but within CRUCIBLE_WEBHOOK_MAX_BYTES: accepted.
    ok = delivery("github-push.json", hook.secret, padded(4000))
    assert 2048 < len(ok.body) <= 4096
    assert post(client, hook.id, ok).status_code == 202

    big = delivery("github-push.json", hook.secret, padded(5000))
    assert len(big.body) > 4096
    response = post(client, hook.id, big)
    assert response.status_code == 413 and "CRUCIBLE_WEBHOOK_MAX_BYTES" in response.text
    assert log_of(api, hook.id)["count"] == 1 and len(runs_of(api, hook.id)) == 1


@pytest.mark.parametrize("number", [2**31, 2**63])
def test_a_pull_request_number_out_of_the_databases_range_is_answered_and_logged(client, api, hook, number):
    """Only a holder of the secret can send it, but the answer must still be a 202 with the
    delivery in the log, not a 5xx (or a 422 that drops the delivery)."""

    def huge(p):
        p["number"] = p["pull_request"]["number"] = number

    response = post(client, hook.id, delivery("github-pull_request-opened.json", hook.secret, huge))
    assert response.status_code == 202, response.text
    assert log_of(api, hook.id)["count"] == 1


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\x1b[31m"])
def test_nul_surrogates_and_escapes_in_a_signed_payload_are_logged_not_500(client, api, hook, bad):
    """PostgreSQL refuses NUL in text and a lone surrogate cannot be encoded: neither may lose
    the delivery or answer 5xx, wherever in the payload it is."""

    def poison(p):
        p["ref"] = f"refs/heads/main{bad}"
        p["sender"]["login"] = f"octo{bad}cat"
        p["repository"]["full_name"] = f"acme/{bad}"

    response = post(client, hook.id, delivery("github-push.json", hook.secret, poison))
    assert response.status_code == 202, response.text
    logged = log_of(api, hook.id)["data"]
    assert len(logged) == 1 and logged[0]["outcome"] == "skipped"
    assert "\x00" not in logged[0]["reason"]


def test_a_pull_request_updated_without_new_commits_is_not_planned_twice(ctx, client, api, hook):
    """Azure DevOps (and Bitbucket) say "updated" for votes and edits too: one plan per head
    commit; a replay still plans again when asked."""
    first = post(client, hook.id, delivery("azure-git.pullrequest.updated.json", hook.secret))
    assert first.json()["outcome"] == "created", first.text
    again = post(client, hook.id, delivery("azure-git.pullrequest.updated.json", hook.secret))
    assert again.status_code == 202 and again.json()["outcome"] == "skipped"
    assert "already planned at" in again.json()["reason"] and first.json()["run_id"] in again.json()["reason"]
    replayed = api.post(f"/api/v1/webhooks/deliveries/{again.json()['delivery']}/replay")
    assert replayed.json()["outcome"] == "created"
    assert len(runs_of(api, hook.id)) == 2


def test_deliveries_past_their_retention_are_purged_and_their_runs_stay(ctx, client, api, hook):
    old = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    new = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    with ctx.session() as s:
        s.get(WebhookDelivery, old["delivery"]).received_at = utcnow() - timedelta(days=31)
    set_context(ctx)
    try:
        assert tasks._purge_once()["deliveries"] == 1  # the default keeps 30 days
    finally:
        set_context(None)
    assert [d["id"] for d in log_of(api, hook.id)["data"]] == [new["delivery"]]
    assert {r["id"] for r in runs_of(api, hook.id)} == {old["run_id"], new["run_id"]}


# --------------------------------------------------------------------------- redeliveries


def test_a_redelivery_is_200_duplicate_and_processed_once(ctx, client, api, hook):
    for n, (name, *_) in enumerate(PUSHES, start=1):
        d = delivery(name, hook.secret)
        first = post(client, hook.id, d)
        assert first.status_code == 202 and first.json()["outcome"] == "created", name
        again = post(client, hook.id, d)
        assert again.status_code == 200, (name, again.text)
        answer = again.json()
        assert answer["outcome"] == "duplicate", name
        assert answer["delivery"] == first.json()["delivery"] and answer["run_id"] == first.json()["run_id"]
        assert "already processed: created" in answer["reason"]
        post(client, hook.id, d)
        assert len(runs_of(api, hook.id)) == n, name
        log = log_of(api, hook.id)
        assert log["count"] == n and log["data"][0]["duplicates"] == 2, name


def test_a_new_delivery_of_the_same_payload_is_not_a_duplicate(client, api, hook):
    for _ in range(2):
        assert post(client, hook.id, delivery("github-push.json", hook.secret)).json()["outcome"] == "created"
    assert len(runs_of(api, hook.id)) == 2


def test_a_gitlab_resend_is_a_duplicate(client, api, hook):
    """GitLab's "Resend request" keeps the Idempotency-Key ("consistent across webhook
    retries") but sends a new X-Gitlab-Event-UUID."""
    d = delivery("gitlab-push.json", hook.secret)
    assert post(client, hook.id, d).json()["outcome"] == "created"
    resent = Delivery(d.provider, {**d.headers, "X-Gitlab-Event-UUID": str(uuid.uuid4())}, d.body, d.payload)
    response = post(client, hook.id, resent)
    assert response.status_code == 200 and response.json()["outcome"] == "duplicate"
    assert len(runs_of(api, hook.id)) == 1


def test_a_redelivery_of_a_skipped_delivery_is_a_duplicate_too(client, api, hook):
    d = delivery("github-ping.json", hook.secret)
    assert post(client, hook.id, d).json()["outcome"] == "skipped"
    again = post(client, hook.id, d)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert "already processed: skipped" in again.json()["reason"]


def test_delivery_ids_are_per_stack(world, client, api):
    first, second = make_hook(world, api), make_hook(world, api)
    d = delivery("github-push.json", first.secret)
    assert post(client, first.id, d).json()["outcome"] == "created"
    same_id = delivery("github-push.json", second.secret, fresh=False)
    same_id.headers["X-GitHub-Delivery"] = d.headers["X-GitHub-Delivery"]
    assert post(client, second.id, same_id).json()["outcome"] == "created"


COPIES = 6


def send_at_once(app, stack_id: str, d: Delivery, copies: int = COPIES) -> list[tuple[int, dict]]:
    """``copies`` identical deliveries, released together from threads of their own."""
    barrier = threading.Barrier(copies)
    answers: list[tuple[int, dict]] = []
    errors: list[BaseException] = []
    clients = [TestClient(app) for _ in range(copies)]

    def send(c: TestClient) -> None:
        try:
            barrier.wait(10)
            response = post(c, stack_id, d)
            answers.append((response.status_code, response.json()))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors, errors
    return answers


def test_identical_deliveries_arriving_at_once_start_one_run(app, ctx, api, hook):
    answers = send_at_once(app, hook.id, delivery("github-push.json", hook.secret))
    assert sorted(status for status, _ in answers) == [200] * (COPIES - 1) + [202]
    created = [a for status, a in answers if status == 202]
    assert created[0]["outcome"] == "created"
    assert {a["outcome"] for status, a in answers if status == 200} == {"duplicate"}
    assert {a["run_id"] for _, a in answers} == {created[0]["run_id"]}
    assert {a["delivery"] for _, a in answers} == {created[0]["delivery"]}
    assert [r["id"] for r in runs_of(api, hook.id)] == [created[0]["run_id"]]
    assert len(stored_deliveries(ctx, hook.id)) == 1


def test_every_copy_of_a_delivery_arriving_at_once_is_counted_as_a_redelivery(app, api, hook):
    """The log's ``duplicates`` says how often the provider redelivered: copies that lost the
    race to the first one count as much as later ones."""
    send_at_once(app, hook.id, delivery("github-push.json", hook.secret))
    (entry,) = log_of(api, hook.id)["data"]
    assert entry["duplicates"] == COPIES - 1


# --------------------------------------------------------------------------- rotation


def test_the_webhook_answers_its_url_and_a_stable_secret(api, hook, settings):
    shown = api.get(f"{STACKS}/{hook.id}/webhook").json()
    assert shown["url"] == f"{settings.base_url.rstrip('/')}/api/v1/webhooks/{hook.id}"
    assert shown["secret"] == hook.secret and len(hook.secret) >= 32
    assert shown["previous_valid_until"] is None and shown["rotated_at"] is None


def test_after_a_rotation_the_old_secret_verifies_during_the_grace_period(client, api, hook):
    rotated = api.post(f"{STACKS}/{hook.id}/webhook/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"] != hook.secret and new["rotated_at"]
    until = datetime.fromisoformat(new["previous_valid_until"].replace("Z", "+00:00"))
    assert abs(until - (utcnow() + timedelta(hours=24))) < timedelta(minutes=5)
    assert api.get(f"{STACKS}/{hook.id}/webhook").json()["secret"] == new["secret"]

    old = post(client, hook.id, delivery("github-push.json", hook.secret))
    assert old.status_code == 202 and old.json()["outcome"] == "created"
    current = post(client, hook.id, delivery("gitlab-push.json", new["secret"]))
    assert current.status_code == 202 and current.json()["outcome"] == "created"

    # Only the secret just replaced is kept: after a second rotation the first one is gone.
    third = api.post(f"{STACKS}/{hook.id}/webhook/rotate").json()["secret"]
    assert post(client, hook.id, delivery("github-push.json", hook.secret)).status_code == 401
    assert post(client, hook.id, delivery("github-push.json", new["secret"])).status_code == 202
    assert post(client, hook.id, delivery("github-push.json", third)).status_code == 202


@pytest.mark.parametrize("settings_overrides", [{"webhook_secret_grace_hours": 0}])
def test_after_the_grace_period_only_the_new_secret_verifies(client, api, hook):
    new = api.post(f"{STACKS}/{hook.id}/webhook/rotate").json()
    assert new["previous_valid_until"] is None  # no grace period open
    old = post(client, hook.id, delivery("github-push.json", hook.secret))
    assert old.status_code == 401
    assert log_of(api, hook.id, outcome="rejected")["count"] == 1
    assert post(client, hook.id, delivery("github-push.json", new["secret"])).status_code == 202
    assert post(client, hook.id, delivery("azure-git.push.json", hook.secret)).status_code == 401


def test_rotating_before_any_reveal_makes_the_first_secret(world, client, api):
    stack = world.stack()
    first = api.post(f"{STACKS}/{stack['id']}/webhook/rotate")
    assert first.status_code == 200 and first.json()["previous_valid_until"] is None
    assert post(client, stack["id"], delivery("github-push.json", first.json()["secret"])).status_code == 202


# --------------------------------------------------------------------------- replays and the log


def test_a_replay_is_a_new_entry_and_a_new_run(world, client, api, member, hook):
    original = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    response = api.post(f"/api/v1/webhooks/deliveries/{original['delivery']}/replay")
    assert response.status_code == 201, response.text
    replay = response.json()
    assert replay["id"] != original["delivery"] and replay["replay_of"] == original["delivery"]
    assert replay["outcome"] == "created" and replay["run_id"] not in (None, original["run_id"])
    assert replay["replayed_by"] == member.email

    runs = {r["id"]: r for r in runs_of(api, hook.id)}
    assert set(runs) == {original["run_id"], replay["run_id"]}
    second = runs[replay["run_id"]]
    assert (
        second["commit_sha"] == "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c" and second["trigger"] == "webhook"
    )
    assert second["created_by"] == f"github webhook (octocat), replayed by {member.email}"

    log = log_of(api, hook.id)
    assert log["count"] == 2 and {e["id"] for e in log["data"]} == {original["delivery"], replay["id"]}
    assert next(e for e in log["data"] if e["id"] == original["delivery"])["duplicates"] == 0
    # A replay is asked for: replaying again is never a duplicate.
    again = api.post(f"/api/v1/webhooks/deliveries/{original['delivery']}/replay")
    assert again.status_code == 201 and again.json()["outcome"] == "created"


def test_replaying_an_unknown_delivery_is_404_and_a_malformed_id_422(api):
    assert api.post("/api/v1/webhooks/deliveries/whd-0000000000000000/replay").status_code == 404
    assert api.post("/api/v1/webhooks/deliveries/not-an-id/replay").status_code == 422
    assert api.get("/api/v1/webhooks/deliveries/whd-0000000000000000").status_code == 404


def test_the_log_is_newest_first_filtered_by_outcome_and_paged(client, api, hook):
    post(client, hook.id, delivery("github-push.json", hook.secret))
    post(client, hook.id, delivery("github-ping.json", hook.secret))
    post(client, hook.id, delivery("github-push.json", "wrong"))
    log = log_of(api, hook.id)
    assert log["count"] == 3
    assert [e["outcome"] for e in log["data"]] == ["rejected", "skipped", "created"]
    assert log_of(api, hook.id, outcome="skipped")["count"] == 1
    page = log_of(api, hook.id, limit=1, offset=1)
    assert page["count"] == 3 and [e["outcome"] for e in page["data"]] == ["skipped"]
    assert (
        api.get(f"{STACKS}/{hook.id}/webhook/deliveries", params={"outcome": "duplicate"}).status_code == 422
    )


# --------------------------------------------------------------------------- who may see what


def test_viewers_read_the_log_but_not_the_secret(world, client, as_actor, viewer, hook):
    as_viewer = as_actor(viewer)
    original = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    forbidden = as_viewer.get(f"{STACKS}/{hook.id}/webhook")
    assert forbidden.status_code == 403 and hook.secret not in forbidden.text
    assert as_viewer.post(f"{STACKS}/{hook.id}/webhook/rotate").status_code == 403
    assert as_viewer.post(f"/api/v1/webhooks/deliveries/{original['delivery']}/replay").status_code == 403
    assert as_viewer.get(f"{STACKS}/{hook.id}/webhook/deliveries").json()["count"] == 1
    assert as_viewer.get(f"/api/v1/webhooks/deliveries/{original['delivery']}").status_code == 200
    viewer_token = as_actor(world.token(Role.viewer))
    assert viewer_token.get(f"{STACKS}/{hook.id}/webhook").status_code == 403
    member_token = as_actor(world.token(Role.member))
    assert member_token.get(f"{STACKS}/{hook.id}/webhook").json()["secret"] == hook.secret


def test_another_orgs_member_finds_nothing(world, client, as_actor, other_org, hook):
    stranger = as_actor(world.user(Role.admin, other_org))
    original = post(client, hook.id, delivery("github-push.json", hook.secret)).json()
    for response in (
        stranger.get(f"{STACKS}/{hook.id}/webhook"),
        stranger.post(f"{STACKS}/{hook.id}/webhook/rotate"),
        stranger.get(f"{STACKS}/{hook.id}/webhook/deliveries"),
        stranger.get(f"/api/v1/webhooks/deliveries/{original['delivery']}"),
        stranger.post(f"/api/v1/webhooks/deliveries/{original['delivery']}/replay"),
    ):
        assert response.status_code == 404, response.text
        assert hook.secret not in response.text


def test_anonymous_callers_cannot_read_the_secret(client, hook):
    assert client.get(f"{STACKS}/{hook.id}/webhook").status_code == 401
    assert client.get(f"{STACKS}/{hook.id}/webhook/deliveries").status_code == 401


def test_reveals_rotations_and_replays_are_audited_without_the_secret(world, client, api, member):
    stack = world.stack()
    secret = api.get(f"{STACKS}/{stack['id']}/webhook").json()["secret"]
    api.get(f"{STACKS}/{stack['id']}/webhook")
    new_secret = api.post(f"{STACKS}/{stack['id']}/webhook/rotate").json()["secret"]
    original = post(client, stack["id"], delivery("github-push.json", new_secret)).json()
    replay = api.post(f"/api/v1/webhooks/deliveries/{original['delivery']}/replay").json()

    events = [e for e in world.audit_events() if e.resource_id == stack["id"] or e.action == "webhook.replay"]
    by_member = [(e.action, e.actor) for e in events if e.actor == member.email]
    assert by_member == [
        ("stack.webhook.create", member.email),
        ("stack.webhook.reveal", member.email),
        ("stack.webhook.rotate", member.email),
        ("webhook.replay", member.email),
    ]
    rotate = next(e for e in events if e.action == "stack.webhook.rotate")
    assert rotate.after["previous_valid_until"]
    replayed = next(e for e in events if e.action == "webhook.replay")
    assert replayed.after["delivery"] == original["delivery"] and replayed.after["replay"] == replay["id"]
    assert replayed.after["run_id"] == replay["run_id"]
    dumped = json.dumps([[e.before, e.after] for e in world.audit_events()])
    assert secret not in dumped and new_secret not in dumped


# --------------------------------------------------------------------------- the stack's VCS fields


BAD_FIELDS = [
    ("vcs_base_url", "ftp://gitlab.example.com"),
    ("vcs_base_url", "gitlab.example.com"),
    ("vcs_base_url", "https://oauth2:glpat-abc@gitlab.example.com"),
    ("vcs_base_url", "https://user@gitlab.example.com"),
    ("vcs_base_url", "https://gitlab.example.com/?private_token=x"),
    ("vcs_base_url", "javascript:alert(1)"),
    ("trigger_paths", ["../secrets/**"]),
    ("trigger_paths", ["envs/../../etc/passwd"]),
    ("trigger_paths", ["!envs/**"]),
    ("trigger_paths", ["envs/\x00"]),
    ("vcs_provider", "svn"),
    ("vcs_token", "ghp_ with space"),
    ("skip_actors", ["bad\nactor"]),
]


def test_vcs_fields_are_validated(api, stack_body):
    for field, value in BAD_FIELDS:
        response = api.post(STACKS, json=stack_body(**{field: value}))
        assert response.status_code == 422, (field, value, response.text)
        assert [err["loc"][-1] for err in response.json()["detail"]] == [field], (field, value)
    assert api.get(STACKS).json()["count"] == 0


def test_vcs_fields_are_normalised(api, stack_body):
    response = api.post(
        STACKS,
        json=stack_body(
            vcs_provider="gitlab",
            vcs_base_url=" https://gitlab.example.com/ ",
            trigger_paths=["envs/prod/**", " ", "envs/prod/**", " *.tf "],
            skip_actors=["renovate[bot]", "renovate[bot]"],
        ),
    )
    assert response.status_code == 201, response.text
    stack = response.json()
    assert stack["vcs_base_url"] == "https://gitlab.example.com"
    assert stack["trigger_paths"] == ["envs/prod/**", "*.tf"]
    assert stack["skip_actors"] == ["renovate[bot]"]
    assert stack["skip_message_patterns"] == ["[skip ci]", "[ci skip]"]  # the default


def test_the_vcs_token_is_write_only(world, ctx, api, stack_body):
    token = "ghp_" + "A1b2C3d4" * 4
    created = api.post(STACKS, json=stack_body(vcs_provider="github", vcs_token=token))
    assert created.status_code == 201, created.text
    stack = created.json()
    assert stack["vcs_token_set"] is True and "vcs_token" not in stack
    for response in (api.get(f"{STACKS}/{stack['id']}"), api.get(STACKS), created):
        assert token not in response.text
    with ctx.session() as s:
        row = s.get(Stack, stack["id"])
        assert row is not None and row.vcs_token_encrypted and token not in row.vcs_token_encrypted

    replaced = api.patch(f"{STACKS}/{stack['id']}", json={"vcs_token": "glpat-" + "z" * 20})
    assert replaced.status_code == 200 and replaced.json()["vcs_token_set"] is True
    removed = api.patch(f"{STACKS}/{stack['id']}", json={"vcs_token": None})
    assert removed.status_code == 200 and removed.json()["vcs_token_set"] is False
    dumped = json.dumps([[e.before, e.after] for e in world.audit_events()])
    assert token not in dumped and "glpat-" + "z" * 20 not in dumped


def test_the_token_cannot_be_pointed_at_another_host_without_being_given_again(api, stack_body):
    """Else a member could redirect an admin's token to a host that collects it."""
    created = api.post(STACKS, json=stack_body(vcs_provider="gitlab", vcs_token="glpat-" + "a" * 20)).json()
    url = f"{STACKS}/{created['id']}"
    for change in ({"vcs_base_url": "https://collector.example"}, {"vcs_provider": "gitea"}):
        refused = api.patch(url, json=change)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "vcs_token"]
        assert "needs the token again" in refused.json()["detail"][0]["msg"]
    assert api.get(url).json()["vcs_base_url"] is None
    same = api.patch(url, json={"vcs_provider": "gitlab", "description": "unchanged provider is fine"})
    assert same.status_code == 200, same.text
    moved = api.patch(
        url, json={"vcs_base_url": "https://gitlab.example.com", "vcs_token": "glpat-" + "b" * 20}
    )
    assert moved.status_code == 200 and moved.json()["vcs_base_url"] == "https://gitlab.example.com"


# --------------------------------------------------------------------------- fuzzing

FUZZ_HEADERS = [
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-Gitlab-Event",
    "X-Gitlab-Token",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",
    "X-Gitea-Event",
    "X-Gitea-Delivery",
    "X-Gitea-Signature",
    "X-Gogs-Event",
    "X-Gogs-Delivery",
    "X-Gogs-Signature",
    "X-Event-Key",
    "X-Request-UUID",
    "Authorization",
    "Content-Type",
]
EVENT_NAMES = [
    "push",
    "pull_request",
    "ping",
    "issues",
    "Push Hook",
    "Tag Push Hook",
    "Merge Request Hook",
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "git.push",
]
ALLOWED = {200, 202, 400, 401, 404, 413, 422}
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
# Payload strings also carry NUL, control characters and lone surrogates (JSON escapes them).
any_text = st.text(st.characters(exclude_categories=()), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=5),
    max_leaves=20,
)


@st.composite
def fuzzed_fixture(draw) -> bytes:
    """A recorded payload with some leaves replaced by random values."""
    name = draw(st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.json"))))
    payload = json.loads((FIXTURES / name).read_text())["payload"]
    for _ in range(draw(st.integers(0, 4))):
        node = payload
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            if isinstance(node[key], dict) and node[key]:
                node = node[key]
            else:
                node[key] = draw(json_values)
                break
    return json.dumps(payload).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    fuzzed_fixture(),
    fuzzed_fixture(),
)


# What each provider sends (event and credential header): most examples start from one, so that
# signed ones get past verification into parsing and the database.
PROFILES = [
    ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256"],
    ["X-Gitlab-Event", "X-Gitlab-Event-UUID", "X-Gitlab-Token"],
    ["X-Gitea-Event", "X-Gitea-Delivery", "X-Gitea-Signature"],
    ["X-Gogs-Event", "X-Gogs-Delivery", "X-Gogs-Signature"],
    ["X-Event-Key", "X-Request-UUID", "X-Hub-Signature"],
    ["Authorization"],
    [],
]
header_values = st.one_of(text, st.sampled_from(EVENT_NAMES))


@st.composite
def fuzzed_headers(draw) -> dict[str, str]:
    headers = {name: draw(header_values) for name in draw(st.sampled_from(PROFILES))}
    headers.update(draw(st.dictionaries(st.sampled_from(FUZZ_HEADERS), header_values, max_size=4)))
    for name in ("X-GitHub-Event", "X-Gitea-Event", "X-Gogs-Event", "X-Gitlab-Event", "X-Event-Key"):
        if name in headers and draw(st.booleans()):
            headers[name] = draw(st.sampled_from(EVENT_NAMES))
    for name in DELIVERY_HEADERS:  # mostly new deliveries, sometimes a redelivery
        if name in headers and draw(st.booleans()):
            headers[name] = str(draw(st.uuids()))
    return headers


@hypothesis_settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    headers=fuzzed_headers(),
    body=bodies,
    signing=st.sampled_from(["right", "right", "right", "none", "wrong"]),
    target=st.sampled_from(["stack", "stack", "stack", "unknown", "random"]),
    random_id=st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=60),
)
def test_fuzzed_deliveries_never_cause_a_server_error(app, hook, headers, body, signing, target, random_id):
    headers = dict(headers)
    if signing != "none":
        secret = hook.secret if signing == "right" else "wrong-secret"
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for header in ("X-Hub-Signature-256", "X-Hub-Signature"):
            if header in headers:
                headers[header] = f"sha256={digest}"
        for header in ("X-Gitea-Signature", "X-Gogs-Signature"):
            if header in headers:
                headers[header] = digest
        if "X-Gitlab-Token" in headers:
            headers["X-Gitlab-Token"] = secret
        if "Authorization" in headers:
            headers["Authorization"] = basic("crucible", secret)
    stack_id = {"stack": hook.id, "unknown": UNKNOWN_STACK, "random": random_id}[target]
    c = TestClient(app, raise_server_exceptions=False)
    try:
        response = c.post(f"/api/v1/webhooks/{stack_id}", content=body, headers=headers)
    finally:
        c.close()
    assert response.status_code in ALLOWED, (response.status_code, response.text)
