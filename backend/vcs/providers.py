"""What each provider's webhook looks like: which provider sent it (from the headers), whether
it carries the stack's secret (constant-time), and what it says, normalized into an ``Event``.

Pure functions over headers and bytes: no database, no I/O. Payload shapes follow each
provider's webhook documentation (GitHub, GitLab, Gitea/Gogs, Bitbucket Cloud, Azure DevOps
service hooks)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GITHUB = "github"
GITLAB = "gitlab"
GITEA = "gitea"
GOGS = "gogs"
BITBUCKET = "bitbucket"
AZURE = "azure_devops"
PROVIDERS = (GITHUB, GITLAB, GITEA, GOGS, BITBUCKET, AZURE)

ZERO_SHA = "0" * 40

# Headers kept with a stored delivery: what identifies and explains it, never credentials.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-instance",
    "x-gitlab-webhook-uuid",
    "x-gitea-event",
    "x-gitea-delivery",
    "x-gogs-event",
    "x-gogs-delivery",
    "x-event-key",
    "x-request-uuid",
    "x-hook-uuid",
)


class WebhookError(Exception):
    """A delivery Crucible cannot act on; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Event:
    """A delivery in provider-neutral terms."""

    provider: str
    name: str  # the provider's event name, e.g. "push", "Merge Request Hook", "git.push"
    kind: str = "other"  # push, pull_request, ping, other
    branch: str | None = None
    sha: str | None = None
    deleted: bool = False
    tag: str | None = None
    message: str | None = None  # the head commit's message, when the payload has it
    actor: str | None = None
    files: list[str] | None = None  # changed files; None: the payload carries no list
    repo: str | None = None  # where feedback goes: owner/name, project path, project/repo id
    pr_number: int | None = None
    pr_url: str | None = None
    pr_title: str | None = None
    pr_action: str | None = None
    pr_base: str | None = None
    same_repo: bool = True  # a PR from a fork: the head branch is not in the stack's repository
    ignore: str | None = None  # set when the event is one Crucible never acts on, with why
    extra: dict[str, Any] = field(default_factory=dict)


# --- detection ---------------------------------------------------------------------------------


def detect(headers: Mapping[str, str]) -> str:
    """The provider that sent a delivery, from its headers (lower-case names). Gitea and Gogs
    also send GitHub's headers, so they are looked at first; Azure DevOps sends no event
    header at all and is known by its basic credentials."""
    if "x-gitea-event" in headers:
        return GITEA
    if "x-gogs-event" in headers:
        return GOGS
    if "x-gitlab-event" in headers:
        return GITLAB
    if "x-event-key" in headers:
        return BITBUCKET
    if "x-github-event" in headers:
        return GITHUB
    if headers.get("authorization", "").lower().startswith("basic "):
        return AZURE
    raise WebhookError(
        400,
        "not a webhook Crucible knows: no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, "
        "X-Gogs-Event or X-Event-Key header, and no basic credentials (Azure DevOps)",
    )


def delivery_id(provider: str, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    """The provider's id of this delivery (the same on a redelivery), or a digest of the body
    for a provider that sends none."""
    names = {
        GITHUB: ("x-github-delivery",),
        GITEA: ("x-gitea-delivery", "x-github-delivery"),
        GOGS: ("x-gogs-delivery",),
        # GitLab keeps Idempotency-Key across its retries; the event UUID is new on each one.
        GITLAB: ("idempotency-key", "x-gitlab-event-uuid"),
        BITBUCKET: ("x-request-uuid",),
    }.get(provider, ())
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value[:200]
    if provider == AZURE and isinstance(payload, dict) and isinstance(payload.get("id"), str):
        return clean(payload["id"][:200])
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_name(provider: str, headers: Mapping[str, str], payload: Any) -> str:
    header = {
        GITHUB: "x-github-event",
        GITEA: "x-gitea-event",
        GOGS: "x-gogs-event",
        GITLAB: "x-gitlab-event",
        BITBUCKET: "x-event-key",
    }.get(provider)
    if header:
        return headers.get(header, "")[:100]
    if isinstance(payload, dict) and isinstance(payload.get("eventType"), str):
        return clean(payload["eventType"][:100])
    return ""


# --- verification ------------------------------------------------------------------------------


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _matches_any(given: str, expected: Iterable[str]) -> bool:
    """Constant-time: every candidate is compared, whatever the first one said."""
    ok = False
    for candidate in expected:
        ok |= hmac.compare_digest(given.encode(), candidate.encode())
    return ok


# Where each provider puts its credential, in the order they are looked at.
CREDENTIAL_HEADERS = {
    GITHUB: ("x-hub-signature-256",),
    GITEA: ("x-gitea-signature", "x-hub-signature-256", "x-gogs-signature"),
    GOGS: ("x-gogs-signature",),
    BITBUCKET: ("x-hub-signature",),
    GITLAB: ("x-gitlab-token",),
    AZURE: ("authorization",),
}


def missing_credential(provider: str, headers: Mapping[str, str]) -> str | None:
    """Why the delivery is unsigned, or None when it carries a credential (right or wrong)."""
    names = CREDENTIAL_HEADERS[provider]
    if any(headers.get(n, "").strip() for n in names):
        return None
    if provider == AZURE:
        return "unsigned: no basic credentials in the Authorization header"
    return f"unsigned: no {' or '.join(_title(n) for n in names)} header"


def _title(header: str) -> str:
    return "-".join(part.capitalize() for part in header.split("-"))


def verify(provider: str, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> str | None:
    """None when the delivery carries one of ``secrets`` (the current one, and the previous one
    during a rotation's grace period) the way its provider signs; else why not."""
    missing = missing_credential(provider, headers)
    if missing:
        return missing
    if not secrets:
        return "the stack has no webhook secret yet: open its Webhook settings to create one"
    if provider == GITLAB:
        if not _matches_any(headers["x-gitlab-token"], secrets):
            return "wrong X-Gitlab-Token: it is not this stack's webhook secret"
        return None
    if provider == AZURE:
        scheme, _, encoded = headers["authorization"].partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return "Azure DevOps deliveries carry the secret as the basic-auth password"
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "the Authorization header's basic credentials are not valid base64"
        _user, _, password = decoded.partition(":")
        if not _matches_any(password, secrets):
            return "wrong password in the basic credentials: it is not this stack's webhook secret"
        return None
    name = next(n for n in CREDENTIAL_HEADERS[provider] if headers.get(n, "").strip())
    given = headers[name].strip()
    if name in ("x-hub-signature-256", "x-hub-signature"):
        algo, _, given = given.partition("=")
        if algo.lower() != "sha256":
            return f"{_title(name)} must be an HMAC-SHA256 signature (sha256=<hex>)"
    digests = [_hmac_hex(s, body) for s in secrets]
    if not _matches_any(given.lower(), digests):
        return f"wrong signature in {_title(name)}: the payload was not signed with this stack's secret"
    return None


# --- parsing -----------------------------------------------------------------------------------


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def clean(value: str) -> str:
    """Payload text as the database can keep it: no NUL (PostgreSQL refuses it), no lone
    surrogates (not encodable)."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _str(value: Any) -> str | None:
    return clean(value) if isinstance(value, str) and value else None


INT_MAX = 2**31 - 1  # what an INTEGER column holds on every database


def _int(value: Any) -> int | None:
    """A positive number that fits the database, else None (a PR number is never 0 or 2**64)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= INT_MAX
    return value if ok else None


def _branch_of(ref: str | None) -> tuple[str | None, str | None]:
    """(branch, tag) of a git ref."""
    if not ref:
        return None, None
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/") :], None
    if ref.startswith("refs/tags/"):
        return None, ref[len("refs/tags/") :]
    return None, None


def _commit_files(commits: Any) -> list[str] | None:
    """Every path added, modified or removed by the pushed commits (GitHub, Gitea, GitLab)."""
    if not isinstance(commits, list) or not commits:
        return None  # a push with no commits listed (e.g. a force push to an older commit)
    files: list[str] = []
    listed = False  # Gogs' commits carry no file lists at all: unknown, not "nothing changed"
    for commit in commits:
        if not isinstance(commit, dict):
            return None
        for key in ("added", "modified", "removed"):
            paths = commit.get(key)
            if paths is None:
                continue
            if not isinstance(paths, list):
                return None
            listed = True
            files.extend(clean(p) for p in paths if isinstance(p, str))
    return sorted(set(files)) if listed else None


def _head_message(payload: dict, sha: str | None) -> str | None:
    message = _str(_get(payload, "head_commit", "message"))
    if message:
        return message
    commits = payload.get("commits")
    if isinstance(commits, list):
        for commit in reversed(commits):
            if isinstance(commit, dict) and (sha is None or commit.get("id") == sha):
                return _str(commit.get("message"))
    return None


def _github_like(provider: str, name: str, payload: dict) -> Event:
    """GitHub, and Gitea/Gogs, which send the same shapes."""
    event = Event(provider=provider, name=name, repo=_str(_get(payload, "repository", "full_name")))
    event.actor = (
        _str(_get(payload, "sender", "login"))
        or _str(_get(payload, "pusher", "name"))
        or _str(_get(payload, "pusher", "login"))
        or _str(_get(payload, "pusher", "username"))
    )
    if name == "ping":
        event.kind, event.ignore = "ping", "ping: the webhook reaches Crucible and is signed correctly"
        return event
    if name == "push":
        event.kind = "push"
        ref = _str(payload.get("ref"))
        event.branch, event.tag = _branch_of(ref)
        after = _str(payload.get("after"))
        event.deleted = bool(payload.get("deleted")) or after == ZERO_SHA
        event.sha = None if event.deleted else after
        event.message = _head_message(payload, event.sha)
        commits = payload.get("commits")
        event.files = _commit_files(commits)
        total = _int(payload.get("total_commits"))
        # Gitea/Gogs list only the last few commits (FeedMaxCommitNum, 5), GitHub at most 2048:
        # a longer push's file list is incomplete, so unknown.
        if isinstance(commits, list) and (len(commits) >= 2048 or (total or 0) > len(commits)):
            event.files = None
        if ref is None or after is None:
            event.ignore = "the push payload has no ref or after commit"
        return event
    if name == "pull_request":
        event.kind = "pull_request"
        pr = payload.get("pull_request") if isinstance(payload.get("pull_request"), dict) else {}
        event.pr_action = _str(payload.get("action"))
        event.pr_number = _int(pr.get("number")) or _int(payload.get("number"))
        event.pr_url = _str(pr.get("html_url"))
        event.pr_title = _str(pr.get("title"))
        event.sha = _str(_get(pr, "head", "sha"))
        # Gogs names the branches head_branch/base_branch and sends no head commit: its runs
        # plan the head branch's tip.
        event.branch = _str(_get(pr, "head", "ref")) or _str(pr.get("head_branch"))
        event.pr_base = _str(_get(pr, "base", "ref")) or _str(pr.get("base_branch"))
        head_repo = _get(pr, "head", "repo", "full_name") or _get(pr, "head_repo", "full_name")
        base_repo = _get(pr, "base", "repo", "full_name") or _get(pr, "base_repo", "full_name")
        event.same_repo = head_repo is None or head_repo == base_repo
        event.actor = _str(_get(payload, "sender", "login")) or _str(_get(pr, "user", "login"))
        # Gitea says "synchronized" where GitHub says "synchronize".
        if event.pr_action not in ("opened", "reopened", "synchronize", "synchronized"):
            event.ignore = (
                f"pull request {event.pr_action or 'event'}: only opened, reopened and new commits plan"
            )
        elif event.pr_number is None or (event.sha is None and (provider != GOGS or not event.branch)):
            event.ignore = "the pull request payload has no head commit or number"
        return event
    if name in ("delete", "create"):
        event.ignore = f"{name} events are not acted on (a push event follows branch changes)"
        return event
    event.ignore = f"{name or 'unnamed'} events are not acted on: only push and pull_request"
    return event


def _gitlab(name: str, payload: dict) -> Event:
    kind = _str(payload.get("object_kind")) or ""
    project = _get(payload, "project", "path_with_namespace")
    event = Event(
        provider=GITLAB, name=name, repo=_str(project) or _str(str(payload.get("project_id") or ""))
    )
    if kind in ("push", "tag_push"):
        event.kind = "push"
        ref = _str(payload.get("ref"))
        event.branch, event.tag = _branch_of(ref)
        after = _str(payload.get("after"))
        event.deleted = after == ZERO_SHA or ("checkout_sha" in payload and payload["checkout_sha"] is None)
        event.sha = None if event.deleted else after
        event.actor = _str(payload.get("user_username")) or _str(payload.get("user_name"))
        event.message = _head_message(payload, event.sha)
        files = _commit_files(payload.get("commits"))
        total = _int(payload.get("total_commits_count"))
        commits = payload.get("commits")
        # GitLab lists at most 20 commits: a longer push's file list would be incomplete.
        if files is not None and total is not None and isinstance(commits, list) and total > len(commits):
            files = None
        event.files = files
        if ref is None or after is None:
            event.ignore = "the push payload has no ref or after commit"
        return event
    if kind == "merge_request":
        event.kind = "pull_request"
        attrs = payload.get("object_attributes") if isinstance(payload.get("object_attributes"), dict) else {}
        action = _str(attrs.get("action"))
        event.pr_action = action
        event.pr_number = _int(attrs.get("iid"))
        event.pr_url = _str(attrs.get("url"))
        event.pr_title = _str(attrs.get("title"))
        event.sha = _str(_get(attrs, "last_commit", "id"))
        event.message = _str(_get(attrs, "last_commit", "message"))
        event.branch = _str(attrs.get("source_branch"))
        event.pr_base = _str(attrs.get("target_branch"))
        source, target = attrs.get("source_project_id"), attrs.get("target_project_id")
        event.same_repo = source is None or source == target
        event.actor = _str(_get(payload, "user", "username"))
        if action == "update" and not attrs.get("oldrev"):
            event.ignore = "merge request updated without new commits (title, labels, ...): nothing to plan"
        elif action not in ("open", "reopen", "update"):
            event.ignore = f"merge request {action or 'event'}: only open, reopen and new commits plan"
        elif event.sha is None or event.pr_number is None:
            event.ignore = "the merge request payload has no last commit or iid"
        return event
    event.ignore = f"{name or kind or 'unnamed'} events are not acted on: only pushes and merge requests"
    return event


def _preferred(items: list[Any], branch_of: Any, prefer_branch: str | None) -> Any:
    """Of the refs one push updated (``git push origin main feature``), the one on the stack's
    branch when there is one, else the last."""
    for item in items:
        if prefer_branch is not None and branch_of(item) == prefer_branch:
            return item
    return items[-1]


def _bitbucket_ref(change: dict) -> str | None:
    target = change.get("new") if isinstance(change.get("new"), dict) else change.get("old")
    return _str(target.get("name")) if isinstance(target, dict) else None


def _bitbucket(name: str, payload: dict, prefer_branch: str | None) -> Event:
    event = Event(provider=BITBUCKET, name=name, repo=_str(_get(payload, "repository", "full_name")))
    event.actor = _str(_get(payload, "actor", "nickname")) or _str(_get(payload, "actor", "display_name"))
    if name == "repo:push":
        event.kind = "push"
        changes = _get(payload, "push", "changes")
        changes = [c for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []
        if not changes:
            event.ignore = "the push payload lists no changes"
            return event
        change = _preferred(changes, _bitbucket_ref, prefer_branch)
        new, old = change.get("new"), change.get("old")
        target = new if isinstance(new, dict) else old if isinstance(old, dict) else {}
        ref_name, ref_type = _str(target.get("name")), _str(target.get("type"))
        if ref_type == "tag":
            event.tag = ref_name
        elif ref_type in ("branch", "named_branch"):
            event.branch = ref_name
        event.deleted = not isinstance(new, dict)
        if not event.deleted:
            event.sha = _str(_get(new, "target", "hash"))
            event.message = _str(_get(new, "target", "message"))
        if ref_name is None or (not event.deleted and event.sha is None):
            event.ignore = "the push payload has no branch or commit"
        return event
    if name in ("pullrequest:created", "pullrequest:updated"):
        event.kind = "pull_request"
        pr = payload.get("pullrequest") if isinstance(payload.get("pullrequest"), dict) else {}
        event.pr_action = name.split(":", 1)[1]
        event.pr_number = _int(pr.get("id"))
        event.pr_url = _str(_get(pr, "links", "html", "href"))
        event.pr_title = _str(pr.get("title"))
        event.sha = _str(_get(pr, "source", "commit", "hash"))
        event.branch = _str(_get(pr, "source", "branch", "name"))
        event.pr_base = _str(_get(pr, "destination", "branch", "name"))
        source = _get(pr, "source", "repository", "full_name")
        destination = _get(pr, "destination", "repository", "full_name")
        event.same_repo = source is None or source == destination
        if event.sha is None or event.pr_number is None:
            event.ignore = "the pull request payload has no source commit or id"
        return event
    event.ignore = f"{name or 'unnamed'} events are not acted on: only repo:push and pull requests"
    return event


def _azure(name: str, payload: dict, prefer_branch: str | None) -> Event:
    resource = payload.get("resource") if isinstance(payload.get("resource"), dict) else {}
    project = _str(_get(resource, "repository", "project", "name"))
    repo_name = _str(_get(resource, "repository", "name")) or _str(_get(resource, "repository", "id"))
    event = Event(provider=AZURE, name=name, repo=f"{project}/{repo_name}" if project and repo_name else None)
    if name == "git.push":
        event.kind = "push"
        updates = resource.get("refUpdates")
        updates = [u for u in updates if isinstance(u, dict)] if isinstance(updates, list) else []
        if not updates:
            event.ignore = "the push payload lists no ref updates"
            return event
        update = _preferred(updates, lambda u: _branch_of(_str(u.get("name")))[0], prefer_branch)
        event.branch, event.tag = _branch_of(_str(update.get("name")))
        new = _str(update.get("newObjectId"))
        event.deleted = new is None or new == ZERO_SHA
        event.sha = None if event.deleted else new
        event.actor = _str(_get(resource, "pushedBy", "uniqueName")) or _str(
            _get(resource, "pushedBy", "displayName")
        )
        commits = resource.get("commits")
        if isinstance(commits, list) and commits and isinstance(commits[0], dict):
            event.message = _str(commits[0].get("comment"))
        if update.get("name") is None:
            event.ignore = "the push payload has no ref name"
        return event
    if name in ("git.pullrequest.created", "git.pullrequest.updated"):
        event.kind = "pull_request"
        event.pr_action = name.rsplit(".", 1)[1]
        event.pr_number = _int(resource.get("pullRequestId"))
        event.pr_title = _str(resource.get("title"))
        event.sha = _str(_get(resource, "lastMergeSourceCommit", "commitId"))
        event.branch, _ = _branch_of(_str(resource.get("sourceRefName")))
        event.pr_base, _ = _branch_of(_str(resource.get("targetRefName")))
        event.actor = _str(_get(resource, "createdBy", "uniqueName"))
        fork = resource.get("forkSource")
        event.same_repo = not isinstance(fork, dict)
        if _str(resource.get("status")) not in (None, "active"):
            event.ignore = f"pull request {resource.get('status')}: only active pull requests plan"
        elif event.sha is None or event.pr_number is None:
            event.ignore = "the pull request payload has no source commit or id"
        return event
    event.ignore = f"{name or 'unnamed'} events are not acted on: only git.push and pull requests"
    return event


def parse(provider: str, name: str, payload: Any, prefer_branch: str | None = None) -> Event:
    """``prefer_branch``: the stack's branch, picked out of a push that updated several refs
    (Bitbucket, Azure DevOps; GitHub-like providers and GitLab send one delivery per ref)."""
    if not isinstance(payload, dict):
        raise WebhookError(400, "the payload must be a JSON object")
    if provider in (GITHUB, GITEA, GOGS):
        return _github_like(provider, name, payload)
    if provider == GITLAB:
        return _gitlab(name, payload)
    if provider == BITBUCKET:
        return _bitbucket(name, payload, prefer_branch)
    return _azure(name, payload, prefer_branch)
