"""The run log viewer on the real run page: a real Ansible run's log streamed from
/api/v1/runs/{id}/logs?follow=true into the browser (never through Reflex state).

Checks what users see: lines appear while the run is live, ANSI colours are rendered (no raw
escape codes), following stops when the user scrolls up and "Jump to live" resumes it, search
counts and steps through matches, download gives the text without ANSI codes, and a 100,000-line
log loads and scrolls without blocking the page.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SGR = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"finished", "failed", "discarded", "canceled"}

LIVE_PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: many lines
      ansible.builtin.debug:
        msg: "{{ range(400) | list }}"
    - name: wait a little
      ansible.builtin.command: sleep 6
      check_mode: false
    - name: after the wait
      ansible.builtin.debug:
        msg: marker-after-wait
"""

BIG_PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: a hundred thousand lines
      ansible.builtin.debug:
        msg: "{{ range(100000) | list }}"
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=e2e@crucible.test", "-c", "user.name=e2e", *args],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip


def _repo(tmp_path: Path, playbook: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(playbook)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "log viewer e2e")
    return repo


def _proposed_run(page, name: str, repo: Path) -> str:
    """A proposed run ends after its plan, so the follow stream ends too."""
    resp = page.request.post(
        "/api/v1/stacks", data={"name": name, "repository_url": f"file://{repo}", "tool": "ansible"}
    )
    assert resp.status == 201, resp.text()
    stack_id = resp.json()["id"]
    resp = page.request.post(f"/api/v1/stacks/{stack_id}/runs", data={"type": "proposed"})
    assert resp.status == 201, resp.text()
    return resp.json()["id"]


def _open_run_page(page, run_id: str) -> None:
    resp = page.goto(f"/runs/{run_id}")
    assert resp is None or resp.status != 404, "the run page /runs/{id} is not served"
    page.get_by_test_id("run-log").wait_for(state="visible", timeout=30_000)


def _log_text(page, run_id: str) -> str:
    resp = page.request.get(f"/api/v1/runs/{run_id}/logs")
    assert resp.status == 200, resp.text()
    return resp.text()


def _viewport(page):
    return page.get_by_test_id("run-log-viewport")


def test_live_log_colours_follow_jump_search_download(page, server, login, tmp_path):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    run_id = _proposed_run(page, "e2e-log-viewer", _repo(tmp_path, LIVE_PLAYBOOK))
    _open_run_page(page, run_id)
    viewer = page.get_by_test_id("run-log")
    status = page.get_by_test_id("run-log-status")

    # Live: the first task's lines arrive while the run sleeps in the second task.
    expect(viewer).to_contain_text("TASK [wait a little]", timeout=90_000)
    expect(status).to_have_text("live")
    expect(viewer).to_have_attribute("data-following", "true")
    assert int(page.get_by_test_id("run-log-count").text_content()) > 400
    # Rows are virtualized: far fewer rendered than received.
    assert page.get_by_test_id("run-log-line").count() < 200

    # Colours are rendered as styles; no escape code reaches the text.
    text = viewer.text_content()
    assert "\x1b" not in text and "[0;3" not in text
    coloured = page.evaluate(
        "document.querySelectorAll('[data-testid=run-log-line] span[style*=color]').length"
    )
    assert coloured > 0, "Ansible's coloured output was not rendered in colour"

    # Scrolling up stops following; new lines do not pull the view down; "Jump to live" resumes.
    _viewport(page).evaluate("el => { el.scrollTop = 0; }")
    expect(viewer).to_have_attribute("data-following", "false")
    jump = page.get_by_test_id("run-log-jump")
    expect(jump).to_be_visible()
    expect(page.get_by_test_id("run-log-line").first).to_have_attribute("data-line", "1")
    count_before = int(page.get_by_test_id("run-log-count").text_content())
    expect(page.get_by_test_id("run-log-count")).not_to_have_text(str(count_before), timeout=60_000)
    assert _viewport(page).evaluate("el => el.scrollTop") == 0
    jump.click()
    expect(viewer).to_have_attribute("data-following", "true")
    expect(jump).to_be_hidden()

    # The stream ends when the run does; the viewer then holds exactly the server's log.
    expect(status).to_have_text("ended", timeout=90_000)
    expect(viewer).to_contain_text("marker-after-wait")
    plain = SGR.sub("", _log_text(page, run_id))
    lines = plain.split("\n")[:-1] if plain.endswith("\n") else plain.split("\n")
    expect(page.get_by_test_id("run-log-count")).to_have_text(str(len(lines)))
    at_bottom = _viewport(page).evaluate("el => el.scrollTop + el.clientHeight >= el.scrollHeight - 4")
    assert at_bottom

    # Search: "n of m", Enter steps forward, the active match is highlighted and in view.
    search = page.get_by_test_id("run-log-search")
    search.fill("task [")
    total = sum(line.lower().count("task [") for line in lines)
    assert total >= 3
    counter = page.get_by_test_id("run-log-search-count")
    expect(counter).to_have_text(re.compile(rf"^\d+ of {total}$"))
    first = int(counter.text_content().split(" of ")[0])
    search.press("Enter")
    expect(counter).to_have_text(f"{first % total + 1} of {total}")
    page.get_by_test_id("run-log-search-prev").click()
    expect(counter).to_have_text(f"{first} of {total}")
    active = viewer.locator("mark.lv-active")
    expect(active).to_have_text(re.compile("task \\[", re.I))
    expect(active).to_be_in_viewport()
    search.fill("no-such-text-anywhere")
    expect(counter).to_have_text("0 of 0")

    # Download: the received text without ANSI codes, named after the run.
    with page.expect_download() as info:
        page.get_by_test_id("run-log-download").click()
    download = info.value
    assert download.suggested_filename == f"run-{run_id}.log"
    assert Path(download.path()).read_text(encoding="utf-8") == plain


def test_hundred_thousand_lines_load_and_scroll(page, server, login, tmp_path):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    run_id = _proposed_run(page, "e2e-log-viewer-big", _repo(tmp_path, BIG_PLAYBOOK))
    # Open the page once the run is over: the whole log arrives in one burst.
    deadline = time.monotonic() + 240
    while (status := page.request.get(f"/api/v1/runs/{run_id}").json()["status"]) not in TERMINAL:
        assert time.monotonic() < deadline, f"the run is still {status}"
        time.sleep(1)
    log = _log_text(page, run_id)
    expected = len(log.rstrip("\n").split("\n"))
    assert expected > 100_000, f"the run's log has {expected} lines:\n{log[-3000:]}"

    page.add_init_script(
        "window.__long = []; new PerformanceObserver(l => l.getEntries()"
        ".forEach(e => window.__long.push(e.duration))).observe({type: 'longtask', buffered: true});"
    )
    _open_run_page(page, run_id)
    expect(page.get_by_test_id("run-log-count")).to_have_text(str(expected), timeout=60_000)
    expect(page.get_by_test_id("run-log-status")).to_have_text("ended")
    load_ms = page.evaluate("performance.now()")  # since the navigation started, an upper bound
    assert page.get_by_test_id("run-log-line").count() < 200
    # Parsing is sliced: no single task blocks the page for long (generous for busy CI hosts).
    longest = max(page.evaluate("window.__long"), default=0)
    assert longest < 1000, f"a {longest:.0f} ms long task while loading {expected} lines"

    # Jump around: the rows for the new position are there on the next frame.
    frames = page.evaluate(
        """() => new Promise(done => {
            const v = document.querySelector('[data-testid=run-log-viewport]');
            const times = []; let n = 0; let last = performance.now();
            function step() {
                const now = performance.now(); times.push(now - last); last = now;
                if (n++ >= 120) return done(times.slice(2));
                v.scrollTop = Math.random() * (v.scrollHeight - v.clientHeight);
                requestAnimationFrame(step);
            }
            requestAnimationFrame(step);
        })"""
    )
    frames.sort()
    median = frames[len(frames) // 2]
    assert median < 100, f"median frame {median:.0f} ms while scrolling {expected} lines"
    line = page.evaluate(
        """() => new Promise(done => {
            const v = document.querySelector('[data-testid=run-log-viewport]');
            const rowHeight = document.querySelector('[data-testid=run-log-line]').offsetHeight;
            v.scrollTop = 50000 * rowHeight;
            requestAnimationFrame(() => requestAnimationFrame(() => {
                const box = v.getBoundingClientRect();
                const row = document.elementFromPoint(box.left + 200, box.top + 5)
                    ?.closest('[data-testid=run-log-line]');
                done(row ? Number(row.dataset.line) : null);
            }));
        })"""
    )
    assert line == 50001
    print(f"\n{expected} lines: page + log loaded in {load_ms:.0f} ms, median frame {median:.1f} ms")
