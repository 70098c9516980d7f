"""Feedback to the VCS against a local server that records every request and answers like the
providers do: exact paths, bodies and auth headers per provider, one PR comment edited in place
across re-plans, retries on 5xx, and a VCS that refuses or is down only ever costing a visible,
retried error (never the run)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json
import logging
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlmodel import select

from backend.context import AppContext, set_context
from backend.runs.models import Run, RunPolicyResult
from backend.stacks.models import Stack
from backend.timeutil import new_id, utcnow
from backend.vcs import feedback
from backend.vcs.clients import BitbucketClient, GitHubClient, VcsError, check_address, check_base_url
from backend.vcs.models import RunVcs, VcsComment
from tests.aio import run_async
from tests.integration.runs_support import force_status, load, queued_run

TOKEN = "tok-s3cret-value"
SHA = "a" * 40
BASE = "http://localhost:3000"

# --------------------------------------------------------------------------- a recording VCS


@dataclass
class Request:
    method: str
    path: str  # raw, as sent: GitLab's project path stays percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class RecordingVcs:
    """An HTTP server on 127.0.0.1 that records requests and answers them like a provider:
    statuses 201, created comments/notes/threads 201 with a new id (in every provider's shape),
    edits 200. ``fail(n, status, method=...)`` makes the next n matching requests fail."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    script: list[tuple[str | None, int, dict[str, Any]]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(101))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, times: int, status: int, body: dict[str, Any] | None = None, method: str | None = None):
        self.script += [(method, status, body or {"message": "upstream trouble"})] * times

    def answer(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            for i, (wanted, status, body) in enumerate(self.script):
                if wanted in (None, method):
                    del self.script[i]
                    return status, body
            if "/statuses" in path:
                return 201, {"id": next(self.ids)}
            n = int(path.rstrip("/").rsplit("/", 1)[-1]) if method != "POST" else next(self.ids)
            link = f"{self.url}/comment/{n}"
            return (201 if method == "POST" else 200), {
                "id": n,
                "html_url": link,
                "links": {"html": {"href": link}},
                "comments": [{"id": n + 1000}],  # Azure DevOps: a thread and its first comment
            }

    def calls(self, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if method in (None, r.method)]


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def _handle(self) -> None:
        vcs: RecordingVcs = self.server.vcs
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        vcs.requests.append(
            Request(
                self.command,
                path,
                dict(parse_qsl(query)),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
        )
        status, body = vcs.answer(self.command, path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PATCH = do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def vcs() -> Iterator[RecordingVcs]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    recorder = RecordingVcs(server)
    server.vcs = recorder  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- stacks and runs


def vcs_stack(world, provider: str | None, base_url: str | None, token: str | None = TOKEN) -> dict:
    """A stack with its VCS fields set directly in the database (as the settings API would)."""
    stack = world.stack()
    with world.ctx.session() as s:
        row = s.get(Stack, stack["id"])
        row.vcs_provider, row.vcs_base_url = provider, base_url
        if token is not None:
            row.vcs_token_encrypted = world.ctx.secret_box.encrypt(token, f"stack/{row.id}/vcs_token")
        s.add(row)
    return stack


def webhook_run(
    ctx: AppContext, stack: dict, repo: str, pr_number: int | None = None, provider: str = "github"
) -> str:
    """A run as the webhook receiver makes it: the run and its RunVcs row in one transaction."""
    with ctx.session() as s:
        run = queued_run(s, stack["id"], "proposed" if pr_number else "tracked")
        run.commit_sha = SHA
        s.add(
            RunVcs(
                run_id=run.id,
                stack_id=stack["id"],
                provider=provider,
                repo=repo,
                sha=SHA,
                pr_number=pr_number,
            )
        )
    return run.id


def set_run(ctx: AppContext, run_id: str, **fields: Any) -> None:
    """Move a run on where force_status cannot (confirm/apply), the way a worker's report does."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        for name, value in fields.items():
            setattr(run, name, value)
        s.add(run)


def add_policy_result(ctx: AppContext, run_id: str, outcome: str, **fields: Any) -> None:
    with ctx.session() as s:
        s.add(
            RunPolicyResult(
                run_id=run_id,
                hook="plan",
                policy_id=new_id("pol"),
                policy_name=fields.pop("policy_name", "no-public-buckets"),
                policy_version=1,
                outcome=outcome,
                **fields,
            )
        )


def vcs_row(ctx: AppContext, run_id: str) -> RunVcs:
    with ctx.session() as s:
        row = s.get(RunVcs, run_id)
        assert row is not None
        return row


def kept_comment(ctx: AppContext, stack: dict) -> VcsComment | None:
    with ctx.session() as s:
        return s.exec(select(VcsComment).where(VcsComment.stack_id == stack["id"])).first()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def dispatch(ctx: AppContext, now=None, sleeps: Sleeps | None = None) -> int:
    return feedback.dispatch_once(ctx, now=now, sleep=sleeps if sleeps is not None else Sleeps())


# --------------------------------------------------------------------------- each provider's API


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(secret.encode()).decode()


@dataclass(frozen=True)
class Api(ABC):
    """What one provider expects: base (from the server URL), repo, paths and bodies."""

    base: str  # appended to the server URL
    repo: str
    headers: dict[str, str]
    status_path: str
    states: tuple[str, str]  # pending, success in the provider's words
    comment_path: str
    edit_method: str
    query: dict[str, str] = field(default_factory=dict)

    @abstractmethod
    def status_body(self, state: str, description: str, url: str, context: str) -> dict[str, Any]: ...

    def comment_body(self, text: str) -> dict[str, Any]:
        return {"body": text}

    def edit_body(self, text: str) -> dict[str, Any]:
        return {"body": text}

    def text_of(self, request: Request) -> str:
        return request.body["body"]

    @abstractmethod
    def edit_path(self, comment: VcsComment) -> str: ...


class GitHubApi(Api):
    def status_body(self, state, description, url, context):
        return {"state": state, "target_url": url, "description": description, "context": context}

    def edit_path(self, comment):
        return self.comment_path.replace("/7/comments", f"/comments/{comment.comment_id}")


class GitLabApi(Api):
    def status_body(self, state, description, url, context):
        return {"state": state, "name": context, "target_url": url, "description": description}

    def edit_path(self, comment):
        return f"{self.comment_path}/{comment.comment_id}"


class BitbucketApi(Api):
    def status_body(self, state, description, url, context):
        return {"key": context, "state": state, "name": context, "url": url, "description": description}

    def comment_body(self, text):
        return {"content": {"raw": text}}

    edit_body = comment_body

    def text_of(self, request):
        return request.body["content"]["raw"]

    def edit_path(self, comment):
        return f"{self.comment_path}/{comment.comment_id}"


class AzureApi(Api):
    def status_body(self, state, description, url, context):
        return {
            "state": state,
            "description": description,
            "targetUrl": url,
            "context": {"name": context, "genre": "crucible"},
        }

    def comment_body(self, text):
        return {"comments": [{"parentCommentId": 0, "content": text, "commentType": 1}], "status": 1}

    def edit_body(self, text):
        return {"content": text}

    def text_of(self, request):
        body = request.body
        return body["comments"][0]["content"] if "comments" in body else body["content"]

    def edit_path(self, comment):
        return f"{self.comment_path}/{comment.thread_id}/comments/{comment.comment_id}"


APIS = {
    "github": GitHubApi(  # a GitHub Enterprise base, to see the API prefix kept
        "/api/v3",
        "acme/network",
        {
            "authorization": f"Bearer {TOKEN}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        },
        f"/api/v3/repos/acme/network/statuses/{SHA}",
        ("pending", "success"),
        "/api/v3/repos/acme/network/issues/7/comments",
        "PATCH",
    ),
    "gitlab": GitLabApi(
        "",
        "infra/team/network",
        {"private-token": TOKEN},
        f"/api/v4/projects/infra%2Fteam%2Fnetwork/statuses/{SHA}",
        ("pending", "success"),
        "/api/v4/projects/infra%2Fteam%2Fnetwork/merge_requests/7/notes",
        "PUT",
    ),
    "gitea": GitHubApi(
        "",
        "acme/network",
        {"authorization": f"token {TOKEN}"},
        f"/api/v1/repos/acme/network/statuses/{SHA}",
        ("pending", "success"),
        "/api/v1/repos/acme/network/issues/7/comments",
        "PATCH",
    ),
    "bitbucket": BitbucketApi(
        "",
        "acme/network",
        {"authorization": f"Bearer {TOKEN}"},
        f"/2.0/repositories/acme/network/commit/{SHA}/statuses/build",
        ("INPROGRESS", "SUCCESSFUL"),
        "/2.0/repositories/acme/network/pullrequests/7/comments",
        "PUT",
    ),
    "azure_devops": AzureApi(
        "/myorg",
        "Platform Team/network",
        {"authorization": _basic(f":{TOKEN}")},
        f"/myorg/Platform%20Team/_apis/git/repositories/network/commits/{SHA}/statuses",
        ("pending", "succeeded"),
        "/myorg/Platform%20Team/_apis/git/repositories/network/pullRequests/7/threads",
        "PATCH",
        {"api-version": "7.1"},
    ),
}


@pytest.mark.parametrize("provider", list(APIS))
def test_each_provider_gets_its_status_and_one_comment_edited_in_place(ctx, world, vcs, provider):
    api = APIS[provider]
    stack = vcs_stack(world, provider, vcs.url + api.base)
    context, first = f"crucible/{stack['name']}", webhook_run(ctx, stack, api.repo, 7, provider)

    assert dispatch(ctx) == 1  # queued: a pending status, no comment before the plan
    (pending,) = vcs.requests
    assert (pending.method, pending.path, pending.query) == ("POST", api.status_path, api.query)
    assert pending.headers.items() >= api.headers.items()
    assert pending.body == api.status_body(api.states[0], "planning…", f"{BASE}/runs/{first}", context)
    assert vcs_row(ctx, first).synced_status == "queued"

    force_status(ctx, first, "finished")  # a plan without changes
    assert dispatch(ctx) == 1
    status, created = vcs.requests[1:]
    assert status.body == api.status_body(api.states[1], "no changes", f"{BASE}/runs/{first}", context)
    assert (created.method, created.path, created.query) == ("POST", api.comment_path, api.query)
    assert created.headers.items() >= api.headers.items()
    text = api.text_of(created)
    assert created.body == api.comment_body(text)
    assert text.startswith(f"<!-- crucible:stack:{stack['id']} -->")
    assert f"`{stack['name']}`" in text and f"{BASE}/runs/{first}" in text and "No changes." in text
    row = vcs_row(ctx, first)
    assert row.done and row.synced_status == "finished" and row.attempts == 0
    assert row.status_result["ok"] and row.comment_result["ok"] and row.comment_result["url"]
    first_comment = kept_comment(ctx, stack)
    assert first_comment is not None and first_comment.pr_number == 7

    # A re-plan of the same pull request (new commits): the same comment, edited.
    second = webhook_run(ctx, stack, api.repo, 7, provider)
    add_policy_result(ctx, second, "warn", warn=["bucket | is public"])
    force_status(ctx, second, "finished")
    assert dispatch(ctx) == 1
    status, edited = vcs.requests[3:]
    assert status.body == api.status_body(
        api.states[1], "no changes, 1 policy warning", f"{BASE}/runs/{second}", context
    )
    assert (edited.method, edited.path, edited.query) == (
        api.edit_method,
        api.edit_path(first_comment),
        api.query,
    )
    assert edited.headers.items() >= api.headers.items()
    edited_text = api.text_of(edited)
    assert edited.body == api.edit_body(edited_text)
    assert second in edited_text and first not in edited_text
    assert "| no-public-buckets | plan | warn | bucket \\| is public |" in edited_text
    assert [r.path for r in vcs.calls("POST")].count(api.comment_path) == 1
    kept = kept_comment(ctx, stack)
    assert (kept.comment_id, kept.thread_id) == (first_comment.comment_id, first_comment.thread_id)


def test_a_tracked_run_goes_pending_then_success_and_is_then_done(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")
    seen: list[tuple[str, str]] = []

    def step() -> None:
        before = len(vcs.requests)
        assert dispatch(ctx) == 1
        assert dispatch(ctx) == 0  # nothing changed since: nothing sent
        seen.extend((r.body["state"], r.body["description"]) for r in vcs.requests[before:])

    step()
    force_status(ctx, run_id, "unconfirmed")
    step()
    set_run(ctx, run_id, status="applying")
    step()
    set_run(ctx, run_id, status="finished", plan_summary={"add": 2, "change": 1, "destroy": 0})
    step()
    assert seen == [
        ("pending", "planning…"),
        ("pending", "plan ready: +0 ~1 -0, waiting for confirmation"),
        ("pending", "applying…"),
        ("success", "applied: +2 ~1 -0"),
    ]
    assert not vcs.calls("PATCH") and all("/statuses/" in r.path for r in vcs.requests)  # no PR: no comment
    row = vcs_row(ctx, run_id)
    assert row.done and row.synced_status == "finished"
    with ctx.session() as s:
        assert feedback.feedback_of(s, run_id)["status_result"]["state"] == "success"


def test_a_failed_proposed_run_comments_its_failure_and_policy_denials(ctx, world, vcs):
    stack = vcs_stack(world, "gitea", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network", 3, "gitea")
    add_policy_result(ctx, run_id, "deny", deny=["no public buckets", "tags missing"])
    force_status(ctx, run_id, "failed")
    assert dispatch(ctx) == 1
    status, comment = vcs.requests
    assert status.body["state"] == "failure" and status.body["description"] == "the tool exited with code 1"
    assert "is **failed**" in comment.body["body"]
    assert "| no-public-buckets | plan | deny | no public buckets; tags missing |" in comment.body["body"]


def test_a_deleted_comment_is_created_again(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    with ctx.session() as s:
        s.add(VcsComment(stack_id=stack["id"], repo="acme/network", pr_number=7, comment_id="55"))
    run_id = webhook_run(ctx, stack, "acme/network", 7)
    force_status(ctx, run_id, "finished")
    vcs.fail(1, 404, {"message": "Not Found"}, method="PATCH")
    assert dispatch(ctx) == 1
    assert [(r.method, r.path) for r in vcs.requests[1:]] == [
        ("PATCH", "/repos/acme/network/issues/comments/55"),
        ("POST", "/repos/acme/network/issues/7/comments"),
    ]
    kept = kept_comment(ctx, stack)
    assert kept.comment_id == "102" and kept.url == f"{vcs.url}/comment/102"
    assert vcs_row(ctx, run_id).comment_result == {
        "ok": True,
        "error": None,
        "at": vcs_row(ctx, run_id).comment_result["at"],
        "url": f"{vcs.url}/comment/102",
    }


def test_an_older_run_finishing_late_leaves_the_newer_runs_comment_alone(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    older = webhook_run(ctx, stack, "acme/network", 7)
    newer = webhook_run(ctx, stack, "acme/network", 7)
    force_status(ctx, newer, "finished")
    assert dispatch(ctx) == 2  # the older one's pending status, the newer one's status + comment
    force_status(ctx, older, "finished")
    before = len(vcs.requests)
    assert dispatch(ctx) == 1
    assert [r.path for r in vcs.requests[before:]] == [f"/repos/acme/network/statuses/{SHA}"]
    assert vcs_row(ctx, older).comment_result["note"] == "a newer run owns the comment"
    assert vcs_row(ctx, older).done


# --------------------------------------------------------------------------- trouble at the VCS


def test_5xx_is_retried_with_backoff_within_one_attempt(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")
    vcs.fail(2, 502)
    sleeps = Sleeps()
    assert dispatch(ctx, sleeps=sleeps) == 1
    assert [r.path for r in vcs.requests] == [f"/repos/acme/network/statuses/{SHA}"] * 3
    assert sleeps == [0.5, 1.0]
    row = vcs_row(ctx, run_id)
    assert row.status_result["ok"] and row.attempts == 0 and row.synced_status == "queued"


def test_a_401_is_a_visible_error_the_run_never_sees(ctx, world, vcs, caplog):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")
    before = load(ctx, run_id)
    vcs.fail(1, 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com"})
    now = utcnow()
    with caplog.at_level(logging.DEBUG):
        assert dispatch(ctx, now=now) == 1
    assert len(vcs.requests) == 1  # a 4xx is not retried
    with ctx.session() as s:
        shown = feedback.feedback_of(s, run_id)
    error = shown["status_result"]["error"]
    assert (
        error == f"GitHub answered 401 to POST {vcs.url}/repos/acme/network/statuses/{SHA}: Bad credentials"
    )
    assert shown["status_result"]["ok"] is False and shown["attempts"] == 1
    assert shown["next_attempt_at"] == (now + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (shown["provider"], shown["repo"], shown["sha"], shown["done"]) == (
        "github",
        "acme/network",
        SHA,
        False,
    )
    assert TOKEN not in json.dumps(shown) and TOKEN not in caplog.text
    after = load(ctx, run_id)
    assert (after.status, after.updated_at, after.failure_reason) == (before.status, before.updated_at, None)


def test_a_vcs_that_is_down_is_retried_later_and_then_given_up_on(ctx, world, closed_port):
    stack = vcs_stack(world, "gitlab", f"http://127.0.0.1:{closed_port}")
    run_id = webhook_run(ctx, stack, "infra/network", provider="gitlab")
    now, sleeps = utcnow(), Sleeps()
    assert dispatch(ctx, now=now, sleeps=sleeps) == 1
    assert sleeps == [0.5, 1.0]  # three connection attempts
    row = vcs_row(ctx, run_id)
    assert (
        "GitLab is unreachable (POST" in row.status_result["error"]
        and "ConnectError" in row.status_result["error"]
    )
    assert row.attempts == 1 and row.next_attempt_at == now + timedelta(seconds=10)
    assert row.lease_until is None and row.synced_status is None and not row.done
    assert dispatch(ctx, now=now + timedelta(seconds=5)) == 0  # not due yet

    for attempts, wait in ((2, 30), (3, 120), (4, 600), (5, 1800)):
        now = vcs_row(ctx, run_id).next_attempt_at
        assert dispatch(ctx, now=now) == 1
        row = vcs_row(ctx, run_id)
        assert (row.attempts, row.next_attempt_at) == (attempts, now + timedelta(seconds=wait))
    assert dispatch(ctx, now=row.next_attempt_at) == 1  # the sixth: given up on this status
    row = vcs_row(ctx, run_id)
    assert row.status_result["error"].endswith("(gave up after 6 attempts)")
    assert (row.synced_status, row.attempts, row.next_attempt_at, row.done) == ("queued", 0, None, False)
    assert dispatch(ctx, now=utcnow() + timedelta(days=1)) == 0  # until the run moves on
    assert load(ctx, run_id).status == "queued"


def test_a_vcs_that_is_down_does_not_hold_up_other_stacks(ctx, world, closed_port, vcs):
    """One round: the first row of the dead VCS costs its three attempts, its other rows wait
    without calls, the healthy VCS is served; next round the healthy work still goes first."""
    dead = vcs_stack(world, "gitlab", f"http://127.0.0.1:{closed_port}")
    healthy = vcs_stack(world, "github", vcs.url)
    stuck = [webhook_run(ctx, dead, "infra/network", provider="gitlab") for _ in range(3)]
    served = webhook_run(ctx, healthy, "acme/network")
    sleeps = Sleeps()
    assert dispatch(ctx, sleeps=sleeps) == 4
    assert sleeps == [0.5, 1.0]  # only the first dead row tried to connect
    assert [vcs_row(ctx, r).attempts for r in stuck] == [1, 1, 1]
    assert "did not answer a moment ago" in vcs_row(ctx, stuck[2]).status_result["error"]
    assert vcs_row(ctx, served).status_result["ok"]
    later = webhook_run(ctx, healthy, "acme/network")
    assert feedback._due(ctx, utcnow() + timedelta(minutes=1), 20)[0] == later


def test_gitlab_refusing_pending_after_pending_counts_as_sent(ctx, world, vcs):
    stack = vcs_stack(world, "gitlab", vcs.url)
    run_id = webhook_run(ctx, stack, "infra/network", provider="gitlab")
    vcs.fail(1, 400, {"message": "Cannot transition status via :enqueue from :pending"})
    assert dispatch(ctx) == 1
    assert vcs_row(ctx, run_id).status_result["ok"]


def test_a_bug_on_one_row_is_recorded_and_the_others_still_go_out(ctx, world, vcs, monkeypatch, caplog):
    stack = vcs_stack(world, "github", vcs.url)
    broken, fine = webhook_run(ctx, stack, "acme/broken"), webhook_run(ctx, stack, "acme/fine")
    real = feedback.desired

    def desired(run: Run, *args: Any) -> tuple[str, str]:
        if run.id == broken:
            raise RuntimeError("boom")
        return real(run, *args)

    monkeypatch.setattr(feedback, "desired", desired)
    now = utcnow()
    with caplog.at_level(logging.ERROR, logger="crucible.vcs.feedback"):
        assert dispatch(ctx, now=now) == 2
    row = vcs_row(ctx, broken)
    assert row.status_result["error"] == "feedback failed: RuntimeError" and row.attempts == 1
    assert row.next_attempt_at == now + timedelta(seconds=10) and row.lease_until is None
    assert [r.path for r in vcs.requests] == [f"/repos/acme/fine/statuses/{SHA}"]
    assert vcs_row(ctx, fine).status_result["ok"] and "VCS feedback failed" in caplog.text


# --------------------------------------------------------------------------- settings that stop it


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The recording server listens on loopback, which the SSRF guard refuses by default."""
    return {"vcs_allowed_networks": "127.0.0.0/8"}


@pytest.mark.parametrize("settings_overrides", [{}, {"vcs_allowed_networks": "10.0.0.0/8"}])
def test_the_ssrf_guard_refuses_loopback_unless_allowed(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")
    assert dispatch(ctx) == 1
    row = vcs_row(ctx, run_id)
    assert (
        "non-public address" in row.status_result["error"]
        and "CRUCIBLE_VCS_ALLOWED_NETWORKS" in (row.status_result["error"])
    )
    assert row.done and not vcs.requests


@pytest.mark.parametrize("host", ["169.254.169.254", "10.1.2.3", "[::1]", "0.0.0.0"])
def test_the_ssrf_guard_refuses_non_public_addresses(host):
    with pytest.raises(VcsError, match="non-public address"):
        check_address(f"http://{host}/api", ())
    check_address(f"http://{host}/api", [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])


def test_a_stack_without_vcs_settings_records_that_feedback_is_off(ctx, world, vcs):
    stack = vcs_stack(world, None, None, token=None)
    run_id = webhook_run(ctx, stack, "acme/network")
    assert dispatch(ctx) == 1
    row = vcs_row(ctx, run_id)
    assert row.done and row.status_result["ok"] is False
    assert row.status_result["error"] == "feedback is off: set the stack's VCS provider and token"
    assert not vcs.requests


def test_a_token_that_does_not_decrypt_is_a_recorded_error(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    with ctx.session() as s:
        s.get(Stack, stack["id"]).vcs_token_encrypted = ctx.secret_box.encrypt(TOKEN, "stack/other/vcs_token")
    run_id = webhook_run(ctx, stack, "acme/network")
    assert dispatch(ctx) == 1
    row = vcs_row(ctx, run_id)
    assert row.done and "does not decrypt" in row.status_result["error"] and not vcs.requests


def test_a_base_url_with_credentials_is_refused(ctx, world, vcs):
    stack = vcs_stack(world, "gitea", vcs.url.replace("http://", "http://user:pw@"))
    run_id = webhook_run(ctx, stack, "acme/network", provider="gitea")
    assert dispatch(ctx) == 1
    assert "must not carry credentials" in vcs_row(ctx, run_id).status_result["error"] and not vcs.requests


@pytest.mark.parametrize(
    "url", ["ftp://git.example.com", "file:///etc", "https://", "https://x.example/?a=1"]
)
def test_base_urls_that_are_not_plain_http_are_refused(url):
    with pytest.raises(VcsError):
        check_base_url(url)


# --------------------------------------------------------------------------- leases and the loop


def test_a_leased_row_is_left_to_whoever_holds_it(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")
    now = utcnow()
    with ctx.session() as s:
        s.get(RunVcs, run_id).lease_until = now + timedelta(seconds=30)
    assert dispatch(ctx, now=now) == 0 and not vcs.requests
    assert dispatch(ctx, now=now + timedelta(seconds=31)) == 1 and len(vcs.requests) == 1


def test_concurrent_dispatchers_send_each_status_once(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    for _ in range(6):
        webhook_run(ctx, stack, "acme/network")
    start, handled = threading.Barrier(3), []

    def worker() -> None:
        start.wait()
        handled.append(dispatch(ctx))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(handled) == 6 and len(vcs.requests) == 6
    assert len({r.body["target_url"] for r in vcs.requests}) == 6


def test_the_background_task_keeps_statuses_in_step(ctx, world, vcs):
    stack = vcs_stack(world, "github", vcs.url)
    run_id = webhook_run(ctx, stack, "acme/network")

    async def run_for_a_while() -> None:
        task = asyncio.create_task(feedback.vcs_feedback_task(interval_seconds=0.02))
        for _ in range(250):
            await asyncio.sleep(0.02)
            if vcs_row(ctx, run_id).synced_status == "queued":
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    set_context(ctx)
    try:
        run_async(run_for_a_while())
    finally:
        set_context(None)
    assert vcs_row(ctx, run_id).status_result["ok"] and len(vcs.requests) == 1


def test_feedback_of_a_run_not_made_by_a_webhook_is_none(ctx, world):
    stack = world.stack()
    with ctx.session() as s:
        run = queued_run(s, stack["id"])
    with ctx.session() as s:
        assert feedback.feedback_of(s, run.id) is None


# --------------------------------------------------------------------------- pure parts


def _run(status: str, run_type: str = "tracked", **fields: Any) -> Run:
    return Run(
        id="run-1", org_id="org-1", stack_id="stk-1", type=run_type, exclusive=True, status=status, **fields
    )


CHANGES = {"add": 1, "change": 2, "destroy": 3}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (_run("queued"), ("pending", "planning…")),
        (_run("preparing"), ("pending", "planning…")),
        (_run("planning"), ("pending", "planning…")),
        (
            _run("pending_approval", plan_summary=CHANGES),
            ("pending", "plan ready: +1 ~2 -3, waiting for approval"),
        ),
        (
            _run("unconfirmed", plan_summary=CHANGES),
            ("pending", "plan ready: +1 ~2 -3, waiting for confirmation"),
        ),
        (_run("confirmed"), ("pending", "applying…")),
        (_run("applying"), ("pending", "applying…")),
        (_run("finished", plan_summary=CHANGES), ("success", "applied: +1 ~2 -3")),
        (_run("finished", "destroy", plan_summary=CHANGES), ("success", "applied: +1 ~2 -3")),
        (_run("finished", "proposed", plan_summary=CHANGES), ("success", "plan: +1 ~2 -3")),
        (_run("finished", "proposed", plan_summary=CHANGES, has_changes=False), ("success", "no changes")),
        (_run("failed", failure_reason="x" * 300), ("failure", "x" * 139 + "…")),
        (_run("failed"), ("failure", "net failed")),
        (_run("discarded"), ("canceled", "discarded")),
        (_run("canceled"), ("canceled", "canceled")),
    ],
)
def test_what_each_run_status_looks_like_on_the_commit(run, expected):
    assert feedback.desired(run, "net", []) == expected


def test_the_clients_say_states_in_their_own_words_and_keep_keys_short():
    assert GitHubClient.states["canceled"] == "error" and BitbucketClient.states["canceled"] == "STOPPED"
    key = BitbucketClient.status_key("crucible/" + "a-very-long-stack-name" * 3)
    assert len(key) == 40 and key == BitbucketClient.status_key("crucible/" + "a-very-long-stack-name" * 3)


def test_bitbucket_app_passwords_use_basic_auth(vcs):
    with httpx.Client(timeout=5) as http:
        client = BitbucketClient(http, "me:app-pass", vcs.url)
        client.set_status("ws/repo", SHA, "failure", "d", "u", "ctx")
    (request,) = vcs.requests
    assert request.headers["authorization"] == _basic("me:app-pass") and request.body["state"] == "FAILED"
    assert "app-pass" not in repr(client)
