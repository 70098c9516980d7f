"""Policies on the run page, in a real browser: a real Ansible run held by an approval policy
until two different approvers of the stack approve it, then confirmed and applied."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: write the managed file
      ansible.builtin.copy:
        dest: "{target}"
        content: "approved\\n"
"""
HEADER = "package crucible\n\nimport rego.v1\n\n"
PASSWORD = "reviewer-password-1"


def _repo(tmp_path: Path, target: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "needs review"]):
        if args[0] == "add":
            (repo / "site.yml").write_text(PLAYBOOK.format(target=target))
        subprocess.run(
            ["git", "-c", "user.email=e2e@crucible.test", "-c", "user.name=e2e", *args],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip
    return repo


def _post(page, path: str, data: dict) -> dict:
    resp = page.request.post(path, data=data)
    assert resp.status in (200, 201), resp.text()
    return resp.json()


def _as(browser, server, email: str):
    """A second browser session, logged in as ``email``."""
    context = browser.new_context(base_url=server["base_url"], viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/login")
    page.get_by_test_id("login-email-input").fill(email)
    page.get_by_test_id("login-password-input").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    return context, page


def test_two_approvers_release_a_run_an_approval_policy_holds(page, browser, server, login, tmp_path):
    target = server["managed_dir"] / "approved.txt"
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack = _post(
        page,
        "/api/v1/stacks",
        {"name": "e2e-approvals", "repository_url": f"file://{_repo(tmp_path, target)}", "tool": "ansible"},
    )
    reviewers = []
    for n in (1, 2):
        user = _post(page, "/api/v1/users", {"email": f"reviewer{n}@example.com", "password": PASSWORD})
        resp = page.request.put(f"/api/v1/stacks/{stack['id']}/approvers/{user['id']}")
        assert resp.status == 200, resp.text()
        reviewers.append(user["email"])
    changes = "input.crucible.counts.change > 0"
    for name, type_, rules in (
        ("two reviewers", "approval", f"require_approval if {changes}\nrequired_approvals := 2\n"),
        ("heads up", "post_plan", f'warn contains "this run changes a managed file" if {changes}\n'),
    ):
        policy = _post(page, "/api/v1/policies", {"name": name, "type": type_, "body": HEADER + rules})
        _post(page, f"/api/v1/stacks/{stack['id']}/policies", {"policy_id": policy["id"]})

    page.goto(f"/stacks/{stack['id']}")
    page.get_by_test_id("stack-trigger-run-button").click()
    page.get_by_test_id("trigger-run-type-tracked").click()
    page.get_by_test_id("trigger-run-submit").click()
    expect(page).to_have_url(re.compile(r"/runs/run-[0-9a-f]{16}"))
    run_url = page.url
    status = page.get_by_test_id("run-status")
    expect(status).to_have_attribute("data-status", "pending_approval", timeout=90_000)

    # What each policy decided is on the run page, with its messages.
    results = page.get_by_test_id("run-policy-result")
    expect(results).to_have_count(2)
    expect(page.get_by_test_id("run-policy-warn")).to_have_text("this run changes a managed file")
    outcomes = page.get_by_test_id("run-policy-outcome")
    expect(outcomes.first).to_have_attribute("data-outcome", "warn")
    expect(outcomes.nth(1)).to_have_attribute("data-outcome", "approval")
    expect(page.get_by_test_id("run-approvals-count")).to_have_text("0 of 2 approvals")
    expect(page.get_by_test_id("run-confirm-button")).to_have_count(0)

    first_ctx, first = _as(browser, server, reviewers[0])
    second_ctx, second = _as(browser, server, reviewers[1])
    try:
        first.goto(run_url)
        first.get_by_test_id("run-review-comment").fill("plan reviewed")
        first.get_by_test_id("run-approve-button").click()
        expect(first.get_by_test_id("run-approvals-count")).to_have_text("1 of 2 approvals")
        expect(first.get_by_test_id("run-status")).to_have_attribute("data-status", "pending_approval")
        expect(first.get_by_test_id("run-review")).to_contain_text(reviewers[0])
        expect(first.get_by_test_id("run-review")).to_contain_text("plan reviewed")
        # The same person cannot count twice; what they typed stays.
        first.get_by_test_id("run-review-comment").fill("again")
        first.get_by_test_id("run-approve-button").click()
        expect(first.get_by_text("approvals must come from different people")).to_be_visible()
        expect(first.get_by_test_id("run-review-comment")).to_have_value("again")
        assert not target.exists()

        second.goto(run_url)
        expect(second.get_by_test_id("run-approvals-count")).to_have_text("1 of 2 approvals")
        second.get_by_test_id("run-approve-button").click()
        expect(second.get_by_test_id("run-status")).to_have_attribute("data-status", "unconfirmed")
        expect(second.get_by_test_id("run-approvals-count")).to_have_text("2 of 2 approvals")
        second.get_by_test_id("run-confirm-button").click()
        finished = second.get_by_test_id("run-status")
        expect(finished).to_have_attribute("data-status", "finished", timeout=90_000)
    finally:
        first_ctx.close()
        second_ctx.close()
    assert target.read_text() == "approved\n"
    # The admin's page followed along.
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "finished", timeout=30_000)
    expect(page.get_by_test_id("run-review")).to_have_count(2)
