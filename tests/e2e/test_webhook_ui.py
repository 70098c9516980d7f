"""The stack page's Webhook tab in a real browser: reveal the secret, receive a signed GitHub
push, see the delivery and its run, replay it, rotate the secret, and edit the stack's VCS
settings in the stack form."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _push(sha: str) -> bytes:
    return json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 39 + "1",
            "after": sha,
            "repository": {"full_name": "acme/infra"},
            "pusher": {"name": "alice"},
            "sender": {"login": "alice"},
            "head_commit": {"id": sha, "message": "Tighten the bucket policy"},
            "commits": [
                {
                    "id": sha,
                    "message": "Tighten the bucket policy",
                    "added": [],
                    "modified": ["main.tf"],
                    "removed": [],
                }
            ],
        }
    ).encode()


def _deliver(server, stack_id: str, secret: str, body: bytes) -> httpx.Response:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{server['base_url']}/api/v1/webhooks/{stack_id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "User-Agent": "GitHub-Hookshot/e2e",
        },
        timeout=30,
    )


def _toast(page, text: str):
    return page.locator("[data-sonner-toast]", has_text=text).first


def test_webhook_tab_reveal_deliver_replay_rotate_and_edit(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    created = page.request.post(
        "/api/v1/stacks",
        data={
            "name": f"e2e-hook-{secrets.token_hex(3)}",
            "repository_url": "https://git.example.com/acme/infra.git",
            "tool": "opentofu",
        },
    )
    assert created.status == 201, created.text()
    stack_id = created.json()["id"]

    # The tab lives in the URL; the endpoint shows without revealing anything.
    page.goto(f"/stacks/{stack_id}?tab=webhook")
    expect(page.get_by_test_id("stack-tab-webhook")).to_have_attribute("data-state", "active")
    tab = page.get_by_test_id("stack-webhook-tab")
    expect(tab.get_by_test_id("stack-webhook-url")).to_have_text(
        f"{server['base_url']}/api/v1/webhooks/{stack_id}"
    )
    # The e2e server's base URL is localhost: the tab says no provider can reach it.
    expect(tab.get_by_test_id("stack-webhook-url-local")).to_contain_text("CRUCIBLE_BASE_URL")
    expect(tab.get_by_test_id("stack-webhook-secret-hidden")).to_be_visible()
    expect(tab.get_by_test_id("stack-webhook-deliveries-empty")).to_contain_text("No deliveries yet")
    expect(tab.get_by_test_id("stack-webhook-trigger-paths")).to_have_text("every change")
    expect(tab.get_by_test_id("stack-webhook-feedback-off")).to_be_visible()
    # Setup steps per provider.
    tab.get_by_test_id("stack-webhook-setup-gitlab").click()
    steps = tab.get_by_test_id("stack-webhook-setup-steps")
    expect(steps).to_have_attribute("data-provider", "gitlab")
    expect(steps).to_contain_text("Secret token")
    tab.get_by_test_id("stack-webhook-setup-azure-devops").click()
    expect(steps).to_contain_text("Basic authentication password")

    # Reveal: the same secret the API gives.
    tab.get_by_test_id("stack-webhook-reveal").click()
    shown = tab.get_by_test_id("stack-webhook-secret")
    expect(shown).to_be_visible()
    api = page.request.get(f"/api/v1/stacks/{stack_id}/webhook")
    assert api.status == 200, api.text()
    secret = api.json()["secret"]
    expect(shown).to_have_text(secret)

    # A signed push to the tracked branch starts a run.
    sha = secrets.token_hex(20)
    answer = _deliver(server, stack_id, secret, _push(sha))
    assert answer.status_code == 202, answer.text
    assert answer.json()["outcome"] == "created", answer.json()
    run_id = answer.json()["run_id"]

    tab.get_by_test_id("stack-webhook-deliveries-refresh").click()
    rows = tab.get_by_test_id("stack-webhook-delivery-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-outcome", "created")
    expect(rows.first.get_by_test_id("stack-webhook-delivery-outcome")).to_have_text("created")
    link = rows.first.get_by_test_id("stack-webhook-delivery-run-link")
    expect(link).to_have_text(run_id)
    expect(link).to_have_attribute("href", f"/runs/{run_id}")

    # The delivery's headers and payload.
    rows.first.get_by_test_id("stack-webhook-delivery-view").click()
    dialog = page.get_by_test_id("stack-webhook-delivery-dialog")
    expect(dialog.get_by_test_id("stack-webhook-delivery-payload")).to_contain_text(
        '"ref": "refs/heads/main"'
    )
    expect(dialog.get_by_test_id("stack-webhook-delivery-headers")).to_contain_text("x-github-event")
    expect(dialog).not_to_contain_text(answer.request.headers["X-Hub-Signature-256"])
    dialog.get_by_test_id("stack-webhook-delivery-close").click()
    expect(dialog).to_have_count(0)

    # Replay: a second entry, marked as a replay, with its own run.
    rows.first.get_by_test_id("stack-webhook-delivery-replay").click()
    expect(_toast(page, "Replayed: created run")).to_be_visible()
    expect(rows).to_have_count(2)
    expect(rows.first.get_by_test_id("stack-webhook-delivery-replay-of")).to_be_visible()
    expect(rows.first).to_have_attribute("data-outcome", "created")
    expect(rows.first.get_by_test_id("stack-webhook-delivery-run-link")).not_to_have_text(run_id)
    expect(rows.nth(1).get_by_test_id("stack-webhook-delivery-replay-of")).to_have_count(0)

    # Rotate: a new secret; the old one keeps working for the grace period.
    tab.get_by_test_id("stack-webhook-rotate-button").click()
    rotate = page.get_by_test_id("stack-webhook-rotate-dialog")
    expect(rotate).to_contain_text("24 hours")
    rotate.get_by_test_id("stack-webhook-rotate-confirm").click()
    expect(_toast(page, "New secret made")).to_be_visible()
    expect(shown).not_to_have_text(secret)
    expect(tab.get_by_test_id("stack-webhook-previous-valid-until")).to_contain_text("UTC")
    rotated = page.request.get(f"/api/v1/stacks/{stack_id}/webhook").json()
    assert rotated["secret"] != secret
    expect(shown).to_have_text(rotated["secret"])

    # The run page of a webhook-made run has a VCS feedback card.
    page.goto(f"/runs/{run_id}")
    card = page.get_by_test_id("run-vcs-card")
    expect(card).to_be_visible()
    expect(card.get_by_test_id("run-vcs-provider")).to_have_text("github")
    expect(card.get_by_test_id("run-vcs-repo")).to_have_text("acme/infra")

    # The stack form's VCS section; the tab shows what was saved.
    page.goto(f"/stacks/{stack_id}/edit")
    page.get_by_test_id("stack-form-vcs-provider-select").click()
    page.get_by_test_id("stack-form-vcs-provider-option-gitlab").click()
    # A closed local port: the feedback sender fails fast instead of calling gitlab.com.
    page.get_by_test_id("stack-form-vcs-base-url-input").fill("http://127.0.0.1:9")
    page.get_by_test_id("stack-form-vcs-token-input").fill("glpat-e2e-not-a-real-token")
    page.get_by_test_id("stack-form-trigger-paths-input").fill("envs/prod/**\n!oops")
    page.get_by_test_id("stack-form-skip-actors-input").fill("renovate[bot], dependabot[bot]")
    page.get_by_test_id("stack-form-submit").click()
    expect(page.get_by_test_id("stack-form-trigger-paths-error")).to_contain_text("'!' is not supported")
    page.get_by_test_id("stack-form-trigger-paths-input").fill("envs/prod/**\nmodules/**/*.tf")
    page.get_by_test_id("stack-form-submit").click()
    expect(page).to_have_url(re.compile(rf"/stacks/{stack_id}$"))
    expect(page.get_by_test_id("stack-vcs-provider")).to_have_text("gitlab")

    page.get_by_test_id("stack-tab-webhook").click()
    expect(page).to_have_url(re.compile(r"\?tab=webhook$"))
    tab = page.get_by_test_id("stack-webhook-tab")
    expect(tab.get_by_test_id("stack-webhook-vcs-provider")).to_have_text("GitLab")
    expect(tab.get_by_test_id("stack-webhook-trigger-paths")).to_contain_text("envs/prod/**")
    expect(tab.get_by_test_id("stack-webhook-trigger-paths")).to_contain_text("modules/**/*.tf")
    expect(tab.get_by_test_id("stack-webhook-skip-actors")).to_contain_text("dependabot[bot]")
    expect(tab.get_by_test_id("stack-webhook-vcs-base-url")).to_have_text("http://127.0.0.1:9")
    expect(tab.get_by_test_id("stack-webhook-vcs-token")).to_have_text("set")
    expect(tab.get_by_test_id("stack-webhook-feedback-off")).to_have_count(0)
    expect(tab.get_by_test_id("stack-webhook-setup-steps")).to_have_attribute("data-provider", "gitlab")

    # Editing again keeps the token unless asked; "Remove token" clears it.
    page.goto(f"/stacks/{stack_id}/edit")
    expect(page.get_by_test_id("stack-form-vcs-token-set")).to_be_visible()
    expect(page.get_by_test_id("stack-form-trigger-paths-input")).to_have_value(
        "envs/prod/**\nmodules/**/*.tf"
    )
    page.get_by_test_id("stack-form-vcs-remove-token-checkbox").click()
    page.get_by_test_id("stack-form-submit").click()
    expect(page).to_have_url(re.compile(rf"/stacks/{stack_id}$"))
    stack = page.request.get(f"/api/v1/stacks/{stack_id}").json()
    assert stack["vcs_provider"] == "gitlab"
    assert stack["vcs_token_set"] is False
    assert stack["trigger_paths"] == ["envs/prod/**", "modules/**/*.tf"]
