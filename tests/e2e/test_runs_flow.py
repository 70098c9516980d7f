"""Runs in a real browser: a real Ansible playbook in a real git repo, planned, reviewed and
applied through the UI, with the live log streamed from the API."""

from __future__ import annotations

import re
import subprocess
import time
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
        content: "{content}\\n"
"""
SLOW_PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: a long task
      ansible.builtin.command: sleep {seconds}
      check_mode: false
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=e2e@crucible.test", "-c", "user.name=e2e", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def _repo(tmp_path: Path, playbook: str, message: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(playbook)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", message)
    return repo


def _commit(repo: Path, playbook: str, message: str) -> str:
    (repo / "site.yml").write_text(playbook)
    _git(repo, "commit", "-qam", message)
    return _git(repo, "rev-parse", "HEAD")


def _stack(page, name: str, repo: Path) -> str:
    resp = page.request.post(
        "/api/v1/stacks", data={"name": name, "repository_url": f"file://{repo}", "tool": "ansible"}
    )
    assert resp.status == 201, resp.text()
    return resp.json()["id"]


def _trigger(page, stack_id: str, run_type: str = "tracked", message: str = "") -> str:
    page.goto(f"/stacks/{stack_id}")
    page.get_by_test_id("stack-trigger-run-button").click()
    page.get_by_test_id(f"trigger-run-type-{run_type}").click()
    if message:
        page.get_by_test_id("trigger-run-message-input").fill(message)
    page.get_by_test_id("trigger-run-submit").click()
    expect(page).to_have_url(re.compile(r"/runs/run-[0-9a-f]{16}"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


def _status(page):
    return page.get_by_test_id("run-status")


def test_tracked_run_plans_waits_for_confirmation_and_applies(page, server, login, tmp_path):
    target = server["managed_dir"] / "tracked.txt"
    repo = _repo(tmp_path, PLAYBOOK.format(target=target, content="v1"), "write v1")
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, "e2e-tracked", repo)

    run_id = _trigger(page, stack_id, message="first rollout")
    expect(_status(page)).to_have_attribute("data-status", "unconfirmed", timeout=90_000)
    # The plan shows the change; nothing has been applied yet.
    expect(page.get_by_test_id("run-plan-summary")).to_have_attribute("data-change", "1")
    expect(page.get_by_test_id("run-commit-message")).to_have_text("write v1")
    expect(page.get_by_test_id("run-log")).to_contain_text("changed: [localhost]")
    expect(page.get_by_test_id("run-rail-step").nth(2)).to_have_attribute("data-state", "current")
    assert not target.exists()

    page.get_by_test_id("run-confirm-button").click()
    expect(_status(page)).to_have_attribute("data-status", "finished", timeout=90_000)
    assert target.read_text() == "v1\n"
    expect(page.get_by_test_id("run-log")).to_contain_text("[crucible] applied")
    expect(page.get_by_test_id("run-log-status")).to_have_text("ended")
    expect(page.get_by_test_id("run-rail-step").nth(4)).to_have_attribute("data-state", "done")

    # The runs list and the stack page show it.
    page.get_by_test_id("nav-runs").click()
    row = page.locator(f'[data-testid="runs-row"][data-run-id="{run_id}"]')
    expect(row.get_by_test_id("runs-row-status")).to_have_attribute("data-status", "finished")
    page.goto(f"/stacks/{stack_id}")
    expect(page.get_by_test_id("stack-runs-table").get_by_test_id("runs-row")).to_have_count(1)
    page.goto("/stacks")
    last = page.locator('[data-testid="stacks-row"][data-stack-name="e2e-tracked"]')
    expect(last.get_by_test_id("stacks-row-last-run")).to_have_attribute("data-status", "finished")

    # Proposed run of a new commit: it plans the change and stops; the file stays as it is.
    _commit(repo, PLAYBOOK.format(target=target, content="v2"), "write v2")
    _trigger(page, stack_id, run_type="proposed")
    expect(_status(page)).to_have_attribute("data-status", "finished", timeout=90_000)
    expect(page.get_by_test_id("run-plan-summary")).to_have_attribute("data-change", "1")
    expect(page.get_by_test_id("run-confirm-button")).to_have_count(0)
    assert target.read_text() == "v1\n"

    # A tracked run whose plan is discarded changes nothing either.
    _trigger(page, stack_id)
    expect(_status(page)).to_have_attribute("data-status", "unconfirmed", timeout=90_000)
    page.get_by_test_id("run-discard-button").click()
    expect(_status(page)).to_have_attribute("data-status", "discarded")
    expect(page.get_by_test_id("run-retrigger-button")).to_be_visible()
    assert target.read_text() == "v1\n"


def test_cancel_stops_a_long_task(page, server, login, tmp_path):
    seconds = 300 + int(time.time()) % 97  # a command line no other test runs
    repo = _repo(tmp_path, SLOW_PLAYBOOK.format(seconds=seconds), "a slow task")
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, "e2e-cancel", repo)
    _trigger(page, stack_id)
    expect(_status(page)).to_have_attribute("data-status", "planning", timeout=90_000)
    expect(page.get_by_test_id("run-log")).to_contain_text("TASK [a long task]", timeout=60_000)
    _wait_until(lambda: _running(f"sleep {seconds}"), "the task never started")

    page.get_by_test_id("run-cancel-button").click()
    expect(_status(page)).to_have_attribute("data-status", "canceled", timeout=60_000)
    expect(page.get_by_test_id("run-log")).to_contain_text("the run was canceled")
    _wait_until(lambda: not _running(f"sleep {seconds}"), "the task's process survived the cancel")


def _wait_until(check, message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.25)


def _running(cmdline: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{cmdline}$"], capture_output=True).returncode == 0
