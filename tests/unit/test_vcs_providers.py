"""Webhook deliveries as providers send them: which provider it is, whether it carries the stack's
secret (signature vectors computed here with hmac), and what it says (every recorded fixture,
parsed into the fields a run is made from)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from backend.vcs import providers as pv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
SECRET = "s3cr3t-webhook-key"
OLD_SECRET = "the-secret-before-rotation"
BODY = b'{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}'


def fixture(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(lower-case headers, payload) of a recorded delivery, as the API hands them to providers."""
    doc = json.loads((FIXTURES / name).read_text())
    return {k.lower(): v for k, v in doc["headers"].items()}, doc["payload"]


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parsed(name: str) -> pv.Event:
    headers, payload = fixture(name)
    return pv.parse(provider_of(name), pv.event_name(provider_of(name), headers, payload), payload)


def provider_of(name: str) -> str:
    headers, _ = fixture(name)
    if name.startswith("azure"):  # no event header: known by its credentials
        headers["authorization"] = basic("crucible", SECRET)
    return pv.detect(headers)


# ----------------------------------------------------------------------------- detection

DETECTED = [
    ("github-push.json", pv.GITHUB),
    ("gitlab-push.json", pv.GITLAB),
    ("gitlab-merge_request-open.json", pv.GITLAB),
    # Gitea sends X-Gitea-*, X-Gogs-* and X-GitHub-* headers: it is Gitea.
    ("gitea-push.json", pv.GITEA),
    ("gitea-pull_request-synchronized.json", pv.GITEA),
    ("gogs-push.json", pv.GOGS),
    ("bitbucket-push.json", pv.BITBUCKET),
    ("bitbucket-pullrequest-created.json", pv.BITBUCKET),
]


@pytest.mark.parametrize(("name", "provider"), DETECTED)
def test_the_provider_is_known_by_its_headers(name, provider):
    headers, _ = fixture(name)
    assert pv.detect(headers) == provider


def test_gogs_headers_without_gitea_ones_are_gogs_and_github_headers_alone_are_github():
    assert pv.detect({"x-gogs-event": "push", "x-github-event": "push"}) == pv.GOGS
    assert pv.detect({"x-github-event": "push", "x-github-delivery": "1"}) == pv.GITHUB


def test_azure_devops_is_known_by_basic_credentials():
    headers, _ = fixture("azure-git.push.json")
    assert pv.detect({**headers, "authorization": basic("crucible", SECRET)}) == pv.AZURE


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"authorization": "Bearer some-token"},
        {"x-hub-signature-256": "sha256=" + "0" * 64},  # a signature alone says nothing of who sent it
    ],
)
def test_unknown_senders_are_refused_with_400(headers):
    with pytest.raises(pv.WebhookError) as excinfo:
        pv.detect(headers)
    assert excinfo.value.status == 400
    assert "X-GitHub-Event" in excinfo.value.message


DELIVERY_IDS = [
    ("github-push.json", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ("gitea-push.json", "b1f3c9a2-4d5e-4f60-8a71-92b3c4d5e6f7"),
    ("gogs-push.json", "f96bcf7e-3d2c-4b1a-9e8f-7d6c5b4a3f21"),
    ("bitbucket-push.json", "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a4b"),
    ("azure-git.push.json", "03c164c2-8912-4d5e-8009-3707d5f83734"),  # the payload's id
]


@pytest.mark.parametrize(("name", "expected"), DELIVERY_IDS)
def test_the_delivery_id_is_the_providers(name, expected):
    headers, payload = fixture(name)
    provider = pv.AZURE if name.startswith("azure") else pv.detect(headers)
    assert pv.delivery_id(provider, headers, payload, b"{}") == expected


def test_without_a_delivery_id_the_body_digest_stands_in_and_long_ids_are_cut():
    body = b'{"a": 1}'
    digest = pv.delivery_id(pv.GITHUB, {"x-github-event": "push"}, {"a": 1}, body)
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    # The same bytes redelivered give the same id; other bytes another one.
    assert pv.delivery_id(pv.GITHUB, {}, {"a": 1}, body) == digest
    assert pv.delivery_id(pv.GITHUB, {}, {"a": 2}, b'{"a": 2}') != digest
    assert len(pv.delivery_id(pv.GITHUB, {"x-github-delivery": "x" * 500}, {}, body)) == 200


def test_event_names_come_from_the_header_or_azures_event_type():
    headers, payload = fixture("gitlab-merge_request-open.json")
    assert pv.event_name(pv.GITLAB, headers, payload) == "Merge Request Hook"
    headers, payload = fixture("bitbucket-pullrequest-created.json")
    assert pv.event_name(pv.BITBUCKET, headers, payload) == "pullrequest:created"
    _, payload = fixture("azure-git.pullrequest.updated.json")
    assert pv.event_name(pv.AZURE, {}, payload) == "git.pullrequest.updated"
    assert pv.event_name(pv.AZURE, {}, None) == ""


# ----------------------------------------------------------------------------- signatures

# provider, the header carrying the signature, how its value is written
HMAC_SIGNED = [
    (pv.GITHUB, "x-hub-signature-256", "sha256={}"),
    (pv.GITEA, "x-gitea-signature", "{}"),
    (pv.GITEA, "x-hub-signature-256", "sha256={}"),  # Gitea's GitHub-compatible header
    (pv.GOGS, "x-gogs-signature", "{}"),
    (pv.BITBUCKET, "x-hub-signature", "sha256={}"),
]


@pytest.mark.parametrize(("provider", "header", "form"), HMAC_SIGNED)
def test_an_hmac_sha256_of_the_exact_body_with_the_secret_verifies(provider, header, form):
    signature = form.format(hex_hmac(SECRET, BODY))
    assert pv.verify(provider, {header: signature}, BODY, [SECRET]) is None


@pytest.mark.parametrize(("provider", "header", "form"), HMAC_SIGNED)
def test_a_signature_with_another_secret_or_over_other_bytes_is_refused(provider, header, form):
    wrong_key = form.format(hex_hmac("not-the-secret", BODY))
    reason = pv.verify(provider, {header: wrong_key}, BODY, [SECRET])
    assert reason is not None and "wrong signature" in reason
    # Re-serialising the JSON changes the bytes: the signature is over what was sent.
    reformatted = json.dumps(json.loads(BODY), indent=2).encode()
    signed_original = form.format(hex_hmac(SECRET, BODY))
    assert pv.verify(provider, {header: signed_original}, reformatted, [SECRET]) is not None
    assert pv.verify(provider, {header: form.format("")}, BODY, [SECRET]) is not None


@pytest.mark.parametrize(("provider", "header", "form"), HMAC_SIGNED)
def test_the_previous_secret_verifies_while_it_is_among_the_valid_ones(provider, header, form):
    signed_with_old = {header: form.format(hex_hmac(OLD_SECRET, BODY))}
    assert pv.verify(provider, signed_with_old, BODY, [SECRET, OLD_SECRET]) is None
    # After the grace period the service passes the current secret only.
    assert pv.verify(provider, signed_with_old, BODY, [SECRET]) is not None


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (pv.GITHUB, "X-Hub-Signature-256"),
        (pv.GITEA, "X-Gitea-Signature"),
        (pv.GOGS, "X-Gogs-Signature"),
        (pv.BITBUCKET, "X-Hub-Signature"),
        (pv.GITLAB, "X-Gitlab-Token"),
        (pv.AZURE, "basic credentials"),
    ],
)
def test_a_delivery_without_a_credential_is_unsigned(provider, expected):
    for headers in ({}, {n: "  " for n in pv.CREDENTIAL_HEADERS[provider]}):
        reason = pv.missing_credential(provider, headers)
        assert reason is not None and reason.startswith("unsigned") and expected in reason
        assert pv.verify(provider, headers, BODY, [SECRET]) == reason


def test_github_sends_sha1_in_x_hub_signature_which_is_not_accepted():
    sha1 = "sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest()
    # The legacy header alone is no credential for GitHub ...
    assert pv.missing_credential(pv.GITHUB, {"x-hub-signature": sha1}) is not None
    # ... and a SHA-1 signature in either header is refused, even a correct one.
    reason = pv.verify(pv.GITHUB, {"x-hub-signature-256": sha1}, BODY, [SECRET])
    assert reason is not None and "HMAC-SHA256" in reason
    reason = pv.verify(pv.BITBUCKET, {"x-hub-signature": sha1}, BODY, [SECRET])
    assert reason is not None and "HMAC-SHA256" in reason
    # A sha256 digest under a sha1= label is refused too: the label is part of the format.
    mislabelled = "sha1=" + hex_hmac(SECRET, BODY)
    assert pv.verify(pv.GITHUB, {"x-hub-signature-256": mislabelled}, BODY, [SECRET]) is not None


def test_gitlab_sends_the_secret_itself_as_its_token():
    assert pv.verify(pv.GITLAB, {"x-gitlab-token": SECRET}, BODY, [SECRET]) is None
    assert pv.verify(pv.GITLAB, {"x-gitlab-token": OLD_SECRET}, BODY, [SECRET, OLD_SECRET]) is None
    reason = pv.verify(pv.GITLAB, {"x-gitlab-token": SECRET + "x"}, BODY, [SECRET])
    assert reason is not None and "X-Gitlab-Token" in reason
    # An HMAC of the body is not what GitLab sends.
    assert pv.verify(pv.GITLAB, {"x-gitlab-token": hex_hmac(SECRET, BODY)}, BODY, [SECRET]) is not None


@pytest.mark.parametrize("user", ["crucible", "", "ado-service-hook"])
def test_azure_devops_sends_the_secret_as_the_basic_auth_password(user):
    assert pv.verify(pv.AZURE, {"authorization": basic(user, SECRET)}, BODY, [SECRET]) is None
    assert pv.verify(pv.AZURE, {"authorization": basic(user, OLD_SECRET)}, BODY, [SECRET, OLD_SECRET]) is None
    assert pv.verify(pv.AZURE, {"authorization": basic(user, OLD_SECRET)}, BODY, [SECRET]) is not None


@pytest.mark.parametrize(
    "authorization",
    [
        basic(SECRET, "wrong"),  # the secret as the user name is not the password
        basic("crucible", ""),
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff\xfe:" + SECRET.encode()).decode(),  # not UTF-8
        "Bearer " + SECRET,
    ],
)
def test_azure_devops_credentials_that_do_not_carry_the_secret_are_refused(authorization):
    assert pv.verify(pv.AZURE, {"authorization": authorization}, BODY, [SECRET]) is not None


def test_a_stack_without_a_secret_verifies_nothing():
    signature = "sha256=" + hex_hmac(SECRET, BODY)
    reason = pv.verify(pv.GITHUB, {"x-hub-signature-256": signature}, BODY, [])
    assert reason is not None and "no webhook secret" in reason


def test_every_valid_secret_is_compared_whatever_the_first_one_says(monkeypatch):
    """Constant time: the comparison does not stop at the first match (nor use ==)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(pv.hmac, "compare_digest", counting)
    signature = "sha256=" + hex_hmac(SECRET, BODY)
    assert pv.verify(pv.GITHUB, {"x-hub-signature-256": signature}, BODY, [SECRET, OLD_SECRET]) is None
    assert len(calls) == 2
    calls.clear()
    assert pv.verify(pv.GITLAB, {"x-gitlab-token": SECRET}, BODY, [SECRET, OLD_SECRET]) is None
    assert len(calls) == 2


# ----------------------------------------------------------------------------- parsing

# What each recorded delivery says. Fields not listed keep the Event's defaults.
PARSED: list[tuple[str, dict[str, Any]]] = [
    (
        "github-push.json",
        {
            "kind": "push",
            "branch": "main",
            "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "actor": "octocat",
            "repo": "acme/network",
            "message": "Add VPC flow log variables\n\nThe module needs them for the new bucket.",
            # every commit's added, modified and removed files, once each
            "files": ["README.md", "docs/old-network.md", "envs/prod/main.tf", "modules/vpc/variables.tf"],
        },
    ),
    (
        "github-push-delete.json",
        {"kind": "push", "branch": "feature/old-vpc", "deleted": True, "sha": None, "actor": "octocat"},
    ),
    (
        "github-push-tag.json",
        {"kind": "push", "branch": None, "tag": "v1.4.0", "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"},
    ),
    (
        "github-pull_request-opened.json",
        {
            "kind": "pull_request",
            "pr_action": "opened",
            "pr_number": 42,
            "pr_title": "VPC flow logs",
            "pr_url": "https://github.com/acme/network/pull/42",
            "branch": "feature/vpc-flow-logs",
            "pr_base": "main",
            "sha": "e9d1c4f2a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3",
            "actor": "hubot",
            "repo": "acme/network",
            "same_repo": True,
            "ignore": None,
        },
    ),
    (
        "github-pull_request-synchronize.json",
        {
            "kind": "pull_request",
            "pr_action": "synchronize",
            "pr_number": 42,
            "sha": "7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b",
            "branch": "feature/vpc-flow-logs",
            "ignore": None,
        },
    ),
    ("github-ping.json", {"kind": "ping", "repo": "acme/network"}),
    (
        "gitlab-push.json",
        {
            "kind": "push",
            "branch": "main",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "actor": "jsmith",
            "repo": "infra/network",
            "message": "fixed readme\n",
            "files": ["CHANGELOG.md", "README.md", "envs/prod/dns.tf"],
        },
    ),
    (
        "gitlab-tag-push.json",
        {"kind": "push", "branch": None, "tag": "v1.0.0", "sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"},
    ),
    (
        "gitlab-push-delete.json",
        {"kind": "push", "branch": "feature/old-dns", "deleted": True, "sha": None, "files": None},
    ),
    (
        "gitlab-merge_request-open.json",
        {
            "kind": "pull_request",
            "pr_action": "open",
            "pr_number": 7,  # the iid users see (!7), not the global id
            "pr_title": "Lower the DNS TTL",
            "pr_url": "https://gitlab.example.com/infra/network/-/merge_requests/7",
            "branch": "feature/dns-ttl",
            "pr_base": "main",
            "sha": "1f2e3d4c5b6a79880f7e6d5c4b3a291807f6e5d4",
            "actor": "jsmith",
            "repo": "infra/network",
            "same_repo": True,
            "ignore": None,
        },
    ),
    (
        "gitlab-merge_request-update.json",
        {
            "kind": "pull_request",
            "pr_action": "update",
            "pr_number": 7,
            "sha": "2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d",
            "message": "Keep the apex TTL at one hour\n",
            "ignore": None,
        },
    ),
    (
        "gitea-push.json",
        {
            "provider": pv.GITEA,
            "kind": "push",
            "branch": "main",
            "sha": "bffeb74224043ba2feb48d137756c8a9331c449a",
            "actor": "alice",
            "repo": "infra/network",
            "message": "Pin the provider\n",
            "files": ["envs/office/main.tf", "envs/office/vpn.tf", "versions.tf"],
        },
    ),
    (
        "gitea-pull_request-synchronized.json",
        {
            "provider": pv.GITEA,
            "kind": "pull_request",
            "pr_action": "synchronized",
            "pr_number": 12,
            "branch": "feature/office-vpn",
            "pr_base": "main",
            "sha": "5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
            "actor": "alice",
            "ignore": None,
        },
    ),
    (
        "gogs-push.json",
        {
            "provider": pv.GOGS,
            "kind": "push",
            "branch": "main",
            "sha": "bffeb74224043ba2feb48d137756c8a9331c449b",
            "actor": "unknwon",
            "repo": "infra/network",
            "message": "Open port 443 on the edge firewall\n",
            # Gogs' documented commits list no files: unknown, not "nothing changed".
            "files": None,
        },
    ),
    (
        "gogs-pull_request-opened.json",
        {
            "provider": pv.GOGS,
            "kind": "pull_request",
            "pr_action": "opened",
            "pr_number": 3,
            # Gogs names the branches head_branch/base_branch and sends no head commit id.
            "branch": "feature/edge-443",
            "pr_base": "main",
            "actor": "unknwon",
            "repo": "infra/network",
        },
    ),
    (
        "bitbucket-push.json",
        {
            "kind": "push",
            "branch": "main",
            "sha": "3f2c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
            "actor": "emma",
            "repo": "acme/network",
            "message": "Add the staging subnet\n",
            "files": None,  # Bitbucket lists no files
        },
    ),
    (
        "bitbucket-push-delete.json",
        {"kind": "push", "branch": "feature/old-subnet", "deleted": True, "sha": None},
    ),
    (
        "bitbucket-pullrequest-created.json",
        {
            "kind": "pull_request",
            "pr_action": "created",
            "pr_number": 7,
            "pr_title": "Staging subnet",
            "pr_url": "https://bitbucket.org/acme/network/pull-requests/7",
            "branch": "feature/staging-subnet",
            "pr_base": "main",
            "sha": "d4c3b2a1f0e9",
            "actor": "emma",
            "repo": "acme/network",
            "same_repo": True,
            "ignore": None,
        },
    ),
    (
        "azure-git.push.json",
        {
            "provider": pv.AZURE,
            "kind": "push",
            "branch": "main",
            "sha": "33b55f7cb7e7e245323987634f960cf4a6e6bc74",
            "actor": "jamal@fabrikam.example",
            "repo": "Infrastructure/network",
            "message": "Tighten the NSG rules",
            "files": None,
        },
    ),
    (
        "azure-git.pullrequest.created.json",
        {
            "provider": pv.AZURE,
            "kind": "pull_request",
            "pr_action": "created",
            "pr_number": 1,
            "pr_title": "Peer with the shared-services VNet",
            "branch": "feature/peering",
            "pr_base": "main",
            "sha": "53d54ac915144006c2c9e90d2c7d3880920db49c",
            "actor": "jamal@fabrikam.example",
            "repo": "Infrastructure/network",
            "same_repo": True,
            "ignore": None,
        },
    ),
    (
        "azure-git.pullrequest.updated.json",
        {
            "kind": "pull_request",
            "pr_action": "updated",
            "pr_number": 1,
            "sha": "6e1f2d3c4b5a69788f7e6d5c4b3a29180f7e6d5c",
            "ignore": None,
        },
    ),
]


def test_every_fixture_is_covered():
    assert sorted(name for name, _ in PARSED) == sorted(
        p.name for p in FIXTURES.glob("*.json") if p.name != "gitlab-merge_request-update-no-oldrev.json"
    )


@pytest.mark.parametrize(("name", "expected"), PARSED, ids=[n for n, _ in PARSED])
def test_each_recorded_delivery_parses_into_what_it_says(name, expected):
    event = parsed(name)
    got = {field: getattr(event, field) for field in expected}
    assert got == expected


def test_the_event_name_is_kept():
    assert parsed("gitlab-push.json").name == "Push Hook"
    assert parsed("azure-git.push.json").name == "git.push"
    assert parsed("bitbucket-push.json").name == "repo:push"


# ----------------------------------------------------------------------------- ignored events


def _with(name: str, change) -> pv.Event:
    headers, payload = fixture(name)
    change(payload)
    provider = provider_of(name)
    return pv.parse(provider, pv.event_name(provider, headers, payload), payload)


def test_pings_and_events_crucible_does_not_act_on_are_ignored_with_the_reason():
    assert "ping" in parsed("github-ping.json").ignore
    for provider, name, payload in [
        (pv.GITHUB, "issues", {"action": "opened"}),
        (pv.GITHUB, "create", {"ref": "feature", "ref_type": "branch"}),
        (pv.GITEA, "release", {"action": "published"}),
        (pv.GITLAB, "Note Hook", {"object_kind": "note"}),
        (pv.GITLAB, "Pipeline Hook", {"object_kind": "pipeline"}),
        (pv.BITBUCKET, "repo:commit_status_updated", {}),
        (pv.BITBUCKET, "pullrequest:fulfilled", {"pullrequest": {"id": 7}}),
        (pv.AZURE, "workitem.updated", {"eventType": "workitem.updated"}),
    ]:
        event = pv.parse(provider, name, payload)
        assert event.ignore and (name in event.ignore or "not acted on" in event.ignore), (provider, name)


def test_a_gitlab_merge_request_edit_without_new_commits_is_ignored():
    event = parsed("gitlab-merge_request-update-no-oldrev.json")
    assert event.kind == "pull_request" and "without new commits" in event.ignore


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("github-pull_request-opened.json", lambda p: p.update(action="closed")),
        ("github-pull_request-opened.json", lambda p: p.update(action="labeled")),
        ("github-pull_request-opened.json", lambda p: p.update(action="edited")),
        ("gitlab-merge_request-open.json", lambda p: p["object_attributes"].update(action="merge")),
        ("gitlab-merge_request-open.json", lambda p: p["object_attributes"].update(action="close")),
        ("gitlab-merge_request-open.json", lambda p: p["object_attributes"].update(action="approved")),
        ("azure-git.pullrequest.updated.json", lambda p: p["resource"].update(status="completed")),
        ("azure-git.pullrequest.updated.json", lambda p: p["resource"].update(status="abandoned")),
    ],
)
def test_closed_merged_and_edited_pull_requests_are_ignored(name, change):
    event = _with(name, change)
    assert event.kind == "pull_request" and event.ignore


def test_pull_request_actions_that_bring_new_commits_are_acted_on():
    for action in ("opened", "reopened", "synchronize"):
        event = _with("github-pull_request-opened.json", lambda p, a=action: p.update(action=a))
        assert event.ignore is None, action
    reopened = _with(
        "gitlab-merge_request-open.json", lambda p: p["object_attributes"].update(action="reopen")
    )
    assert reopened.ignore is None


def test_a_pull_request_from_a_fork_says_so():
    def from_fork(p):
        p["pull_request"]["head"]["repo"] = {"full_name": "mallory/network"}

    assert _with("github-pull_request-opened.json", from_fork).same_repo is False

    def gitlab_fork(p):
        p["object_attributes"]["source_project_id"] = 99

    assert _with("gitlab-merge_request-open.json", gitlab_fork).same_repo is False

    def azure_fork(p):
        p["resource"]["forkSource"] = {"name": "refs/heads/feature/peering", "repository": {"id": "x"}}

    assert _with("azure-git.pullrequest.created.json", azure_fork).same_repo is False


def test_a_gitlab_push_of_more_commits_than_listed_has_no_file_list():
    # GitLab lists at most 20 commits: the files of the others are unknown.
    event = _with("gitlab-push.json", lambda p: p.update(total_commits_count=25))
    assert event.files is None and event.sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


def test_a_push_without_listed_commits_has_no_file_list():
    # e.g. a force push back to an older commit, or a new branch at an existing commit
    event = _with("github-push.json", lambda p: p.update(commits=[]))
    assert event.files is None and event.kind == "push" and event.ignore is None


def test_malformed_pushes_are_ignored_with_a_reason():
    assert _with("github-push.json", lambda p: p.pop("after")).ignore
    assert _with("gitlab-push.json", lambda p: p.pop("ref")).ignore
    assert _with("bitbucket-push.json", lambda p: p["push"].update(changes=[])).ignore
    assert _with("azure-git.push.json", lambda p: p["resource"].update(refUpdates=[])).ignore


@pytest.mark.parametrize("payload", [[], "push", 42, None, [{"ref": "refs/heads/main"}]])
def test_a_payload_that_is_not_a_json_object_is_a_400(payload):
    for provider in pv.PROVIDERS:
        with pytest.raises(pv.WebhookError) as excinfo:
            pv.parse(provider, "push", payload)
        assert excinfo.value.status == 400


@pytest.mark.parametrize("provider", pv.PROVIDERS)
def test_wrongly_typed_fields_never_raise(provider):
    """A verified payload is still input: odd types give an ignored event, never an exception."""
    odd: list[Any] = [None, 1, "x", [], {}, True, [1, "a"], {"a": None}]
    for name in ("push", "pull_request", "Push Hook", "Merge Request Hook", "repo:push", "git.push"):
        for value in odd:
            payload = {
                "ref": value,
                "after": value,
                "commits": value,
                "object_kind": "push" if name == "Push Hook" else "merge_request",
                "object_attributes": value,
                "pull_request": value,
                "pullrequest": value,
                "push": {"changes": value},
                "resource": {"refUpdates": value, "repository": value},
                "head_commit": value,
            }
            event = pv.parse(provider, name, payload)
            assert isinstance(event, pv.Event)
