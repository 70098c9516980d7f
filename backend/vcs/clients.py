"""Calls back to the VCS: a commit status per run, and the one PR/MR comment per stack and pull
request that every re-plan edits in place.

One small client per provider over a shared ``httpx.Client``: they differ only in paths, bodies,
state words and auth headers. Transient trouble (connection errors, timeouts, 429, 5xx) is
retried with backoff inside one call; anything else fails at once with a ``VcsError`` whose
message says what the provider answered. No message, log line or repr ever holds the token.

States passed in are Crucible's neutral ones (``pending``, ``success``, ``failure``,
``canceled``); each client says them in its provider's words."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from backend.vcs.models import VcsComment

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ATTEMPTS = 3
BACKOFF_SECONDS = (0.5, 1.0)  # before the 2nd and 3rd attempt
DESCRIPTION_MAX = 140  # GitHub's limit, the tightest of them
ERROR_TEXT_MAX = 300

# (comment_id, thread_id, url): what a VcsComment row keeps.
Posted = tuple[str, str | None, str | None]


class VcsError(Exception):
    """A VCS call that failed; the message is safe to show on the run page. ``status`` is the
    provider's HTTP status, None when it could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


def check_address(url: str, allowed: Sequence[IPNetwork]) -> None:
    """The SSRF guard: the host must resolve only to public addresses, or to ones in
    CRUCIBLE_VCS_ALLOWED_NETWORKS (a self-hosted GitLab on 10.0.0.0/8, say). Loopback,
    link-local (cloud metadata), private and reserved addresses are refused by default."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return  # a DNS hiccup: the request fails as unreachable and is retried like one
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if any(ip in net for net in allowed):
            continue
        if not ip.is_global or ip.is_multicast:
            raise VcsError(
                f"the VCS host {host!r} resolves to {ip}, a non-public address: add its network to "
                "CRUCIBLE_VCS_ALLOWED_NETWORKS to allow it"
            )


def check_base_url(url: str) -> str:
    """The API base without a trailing slash; refuses what would send the token somewhere odd."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VcsError(f"the VCS base URL must be http(s)://host[/path], not {url[:100]!r}")
    if parts.username is not None or parts.password is not None:
        raise VcsError("the VCS base URL must not carry credentials: set the stack's VCS token instead")
    if parts.query or parts.fragment:
        raise VcsError("the VCS base URL must not have a query or fragment")
    return url.rstrip("/")


def _segments(repo: str, count: int, what: str) -> list[str]:
    parts = repo.split("/")
    if len(parts) != count or not all(parts):
        raise VcsError(f"repository {repo[:200]!r} is not {what}")
    return [quote(p, safe="") for p in parts]


def _provider_message(response: httpx.Response) -> str:
    """The provider's own explanation, from whichever field it uses (GitHub/Gitea/GitLab/Azure:
    ``message``, GitLab also ``error``, Bitbucket ``error.message``), else the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error_description") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message") or message
    text = str(message) if message else response.text.strip() or response.reason_phrase
    return text[:ERROR_TEXT_MAX] + ("…" if len(text) > ERROR_TEXT_MAX else "")


class VcsClient(ABC):
    """What every provider shares: the base URL check, auth header, retries and the
    create-or-edit logic of the comment."""

    name: ClassVar[str]
    default_base: ClassVar[str | None] = None
    states: ClassVar[dict[str, str]]

    def __init__(
        self,
        http: httpx.Client,
        token: str,
        base_url: str | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        base = base_url or self.default_base
        if not base:
            raise VcsError(f"{self.name} has no public API: set the stack's VCS base URL")
        self.base = check_base_url(base)
        self._http = http
        self._token = token
        self._headers = self._auth_headers(token)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base}>"

    @abstractmethod
    def _auth_headers(self, token: str) -> dict[str, str]: ...

    def _call(self, method: str, url: str, body: dict[str, Any], params: dict[str, str] | None = None) -> Any:
        """Send one request (with retries); the JSON answer, or {} when there is none."""
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(BACKOFF_SECONDS[attempt - 1])
            try:
                response = self._http.request(method, url, json=body, params=params, headers=self._headers)
            except httpx.TransportError as exc:  # connection refused, DNS, timeouts, resets
                error = VcsError(f"{self.name} is unreachable ({method} {url}): {type(exc).__name__} {exc}")
                continue
            if response.is_success:
                try:
                    return response.json() if response.content else {}
                except ValueError:
                    raise VcsError(
                        f"{self.name} answered {method} {url} with a body that is not JSON"
                    ) from None
            said = _provider_message(response)
            error = VcsError(
                f"{self.name} answered {response.status_code} to {method} {url}: {said}",
                status=response.status_code,
            )
            if response.status_code != 429 and response.status_code < 500:
                break
        raise VcsError(self._scrub(error.message), error.status)

    def _scrub(self, text: str) -> str:
        """A provider that echoes the request back must not put the token on the run page."""
        return text.replace(self._token, "***") if self._token else text

    def set_status(
        self, repo: str, sha: str, state: str, description: str, target_url: str, context: str
    ) -> None:
        self._set_status(repo, sha, self.states[state], description[:DESCRIPTION_MAX], target_url, context)

    def upsert_comment(self, repo: str, pr_number: int, body: str, existing: VcsComment | None) -> Posted:
        """Edit the stack's comment in place, or create it: when there is none yet, or when the
        edit finds it gone (someone deleted it)."""
        if existing is not None:
            try:
                return self._edit_comment(repo, pr_number, body, existing)
            except VcsError as exc:
                if exc.status != 404:
                    raise
        try:
            return self._create_comment(repo, pr_number, body)
        except (KeyError, IndexError, TypeError):
            # A 2xx without the comment's id: retrying would post the comment again.
            raise VcsError(f"{self.name} created the comment but answered without its id") from None

    @abstractmethod
    def _set_status(
        self, repo: str, sha: str, state: str, description: str, target_url: str, context: str
    ) -> None: ...

    @abstractmethod
    def _create_comment(self, repo: str, pr_number: int, body: str) -> Posted: ...

    @abstractmethod
    def _edit_comment(self, repo: str, pr_number: int, body: str, existing: VcsComment) -> Posted: ...


class GitHubClient(VcsClient):
    """GitHub and GitHub Enterprise (base like https://ghe.example.com/api/v3)."""

    name = "GitHub"
    default_base = "https://api.github.com"
    states = {"pending": "pending", "success": "success", "failure": "failure", "canceled": "error"}
    api = ""

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _repo(self, repo: str) -> str:
        return f"{self.base}{self.api}/repos/{'/'.join(_segments(repo, 2, 'owner/name'))}"

    def _set_status(self, repo, sha, state, description, target_url, context) -> None:
        body = {"state": state, "target_url": target_url, "description": description, "context": context}
        self._call("POST", f"{self._repo(repo)}/statuses/{quote(sha, safe='')}", body)

    def _create_comment(self, repo, pr_number, body) -> Posted:
        made = self._call("POST", f"{self._repo(repo)}/issues/{int(pr_number)}/comments", {"body": body})
        return str(made["id"]), None, made.get("html_url")

    def _edit_comment(self, repo, pr_number, body, existing) -> Posted:
        url = f"{self._repo(repo)}/issues/comments/{quote(existing.comment_id, safe='')}"
        edited = self._call("PATCH", url, {"body": body})
        return existing.comment_id, None, edited.get("html_url") or existing.url


class GiteaClient(GitHubClient):
    """Gitea (and Forgejo): GitHub's paths under /api/v1, its own state words and header."""

    name = "Gitea"
    default_base = None
    states = {"pending": "pending", "success": "success", "failure": "failure", "canceled": "error"}
    api = "/api/v1"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}", "Accept": "application/json"}


class GitLabClient(VcsClient):
    name = "GitLab"
    default_base = "https://gitlab.com"
    states = {"pending": "pending", "success": "success", "failure": "failed", "canceled": "canceled"}

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    def _project(self, repo: str) -> str:
        if not repo.strip("/") or "//" in repo:
            raise VcsError(f"repository {repo[:200]!r} is not a GitLab project path")
        return f"{self.base}/api/v4/projects/{quote(repo, safe='')}"

    def _set_status(self, repo, sha, state, description, target_url, context) -> None:
        body = {"state": state, "name": context, "target_url": target_url, "description": description}
        try:
            self._call("POST", f"{self._project(repo)}/statuses/{quote(sha, safe='')}", body)
        except VcsError as exc:
            # GitLab refuses pending → pending (planning, then waiting for confirmation): the
            # commit already shows that state, which is all that matters.
            if exc.status != 400 or "cannot transition status" not in exc.message.lower():
                raise

    def _note_url(self, repo: str, pr_number: int, note_id: str) -> str:
        return f"{self.base}/{repo}/-/merge_requests/{int(pr_number)}#note_{note_id}"

    def _create_comment(self, repo, pr_number, body) -> Posted:
        url = f"{self._project(repo)}/merge_requests/{int(pr_number)}/notes"
        note_id = str(self._call("POST", url, {"body": body})["id"])
        return note_id, None, self._note_url(repo, pr_number, note_id)

    def _edit_comment(self, repo, pr_number, body, existing) -> Posted:
        note = quote(existing.comment_id, safe="")
        self._call(
            "PUT", f"{self._project(repo)}/merge_requests/{int(pr_number)}/notes/{note}", {"body": body}
        )
        return existing.comment_id, None, self._note_url(repo, pr_number, existing.comment_id)


class BitbucketClient(VcsClient):
    """Bitbucket Cloud. A token with a colon is ``username:app_password`` (basic auth), any
    other an access token (bearer)."""

    name = "Bitbucket"
    default_base = "https://api.bitbucket.org"
    states = {"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED", "canceled": "STOPPED"}
    KEY_MAX = 40

    def _auth_headers(self, token: str) -> dict[str, str]:
        if ":" in token:
            return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
        return {"Authorization": f"Bearer {token}"}

    def _repo(self, repo: str) -> str:
        return f"{self.base}/2.0/repositories/{'/'.join(_segments(repo, 2, 'workspace/repo_slug'))}"

    @classmethod
    def status_key(cls, context: str) -> str:
        """Bitbucket keys a status by ``key`` (≤ 40 chars): a long context keeps its start and
        a digest, so the same stack always updates the same status."""
        if len(context) <= cls.KEY_MAX:
            return context
        return f"{context[: cls.KEY_MAX - 9]}-{hashlib.sha256(context.encode()).hexdigest()[:8]}"

    def _set_status(self, repo, sha, state, description, target_url, context) -> None:
        body = {
            "key": self.status_key(context),
            "state": state,
            "name": context,
            "url": target_url,
            "description": description,
        }
        self._call("POST", f"{self._repo(repo)}/commit/{quote(sha, safe='')}/statuses/build", body)

    def _create_comment(self, repo, pr_number, body) -> Posted:
        url = f"{self._repo(repo)}/pullrequests/{int(pr_number)}/comments"
        made = self._call("POST", url, {"content": {"raw": body}})
        return str(made["id"]), None, ((made.get("links") or {}).get("html") or {}).get("href")

    def _edit_comment(self, repo, pr_number, body, existing) -> Posted:
        comment = quote(existing.comment_id, safe="")
        url = f"{self._repo(repo)}/pullrequests/{int(pr_number)}/comments/{comment}"
        edited = self._call("PUT", url, {"content": {"raw": body}})
        return (
            existing.comment_id,
            None,
            ((edited.get("links") or {}).get("html") or {}).get("href") or existing.url,
        )


class AzureDevOpsClient(VcsClient):
    """Azure DevOps Services or Server; the base is the organization (or collection) URL and
    the repo ``Project/Repository``. The comment lives in a thread of its own."""

    name = "Azure DevOps"
    states = {"pending": "pending", "success": "succeeded", "failure": "failed", "canceled": "error"}
    PARAMS: ClassVar[dict[str, str]] = {"api-version": "7.1"}

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f":{token}".encode()).decode()}

    def _repo(self, repo: str) -> str:
        project, name = _segments(repo, 2, "Project/Repository")
        return f"{self.base}/{project}/_apis/git/repositories/{name}"

    def _set_status(self, repo, sha, state, description, target_url, context) -> None:
        body = {
            "state": state,
            "description": description,
            "targetUrl": target_url,
            "context": {"name": context, "genre": "crucible"},
        }
        self._call("POST", f"{self._repo(repo)}/commits/{quote(sha, safe='')}/statuses", body, self.PARAMS)

    def _thread_url(self, repo: str, pr_number: int, thread_id: str) -> str:
        project, name = _segments(repo, 2, "Project/Repository")
        return f"{self.base}/{project}/_git/{name}/pullrequest/{int(pr_number)}?discussionId={thread_id}"

    def _create_comment(self, repo, pr_number, body) -> Posted:
        thread = {"comments": [{"parentCommentId": 0, "content": body, "commentType": 1}], "status": 1}
        made = self._call(
            "POST", f"{self._repo(repo)}/pullRequests/{int(pr_number)}/threads", thread, self.PARAMS
        )
        thread_id = str(made["id"])
        return str(made["comments"][0]["id"]), thread_id, self._thread_url(repo, pr_number, thread_id)

    def _edit_comment(self, repo, pr_number, body, existing) -> Posted:
        if existing.thread_id is None:  # not an Azure comment: the stack changed provider
            raise VcsError("the stored comment has no thread", status=404)
        thread, comment = quote(existing.thread_id, safe=""), quote(existing.comment_id, safe="")
        url = f"{self._repo(repo)}/pullRequests/{int(pr_number)}/threads/{thread}/comments/{comment}"
        self._call("PATCH", url, {"content": body}, self.PARAMS)
        return existing.comment_id, existing.thread_id, self._thread_url(repo, pr_number, existing.thread_id)


CLIENTS: dict[str, type[VcsClient]] = {
    "github": GitHubClient,
    "gitlab": GitLabClient,
    "gitea": GiteaClient,
    "bitbucket": BitbucketClient,
    "azure_devops": AzureDevOpsClient,
}


def client_for(
    provider: str,
    http: httpx.Client,
    token: str,
    base_url: str | None = None,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> VcsClient:
    """The client for a stack's ``vcs_provider``; VcsError for an unknown one, a bad base or a
    base that resolves to an address the SSRF guard refuses."""
    try:
        cls = CLIENTS[provider]
    except KeyError:
        raise VcsError(f"unknown VCS provider {provider!r}: use one of {', '.join(CLIENTS)}") from None
    client = cls(http, token, base_url, sleep=sleep)
    check_address(client.base, allowed_networks)
    return client
