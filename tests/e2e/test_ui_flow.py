"""The operator's first session, in a real browser against the production build."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_protected_pages_redirect_to_login_and_bad_password_is_explained(page, server, login):
    page.goto("/stacks")
    expect(page).to_have_url(re.compile(r"/login/?\?next=%2Fstacks"))
    login(password="not-the-password")
    expect(page.get_by_test_id("login-error")).to_contain_text("Invalid email or password")
    # The cookie is httpOnly: nothing the page's scripts can read.
    assert "crucible_session" not in page.evaluate("document.cookie")


def test_stack_lifecycle_with_audit_trail(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    expect(page.get_by_test_id("user-email")).to_have_text(server["email"])

    # Create, with a field-level error first.
    page.get_by_test_id("nav-stacks").click()
    expect(page).to_have_url(re.compile(r"/stacks/?$"))
    page.get_by_test_id("stacks-new-button").click()
    page.get_by_test_id("stack-form-name-input").fill("network-prod")
    page.get_by_test_id("stack-form-repository-url-input").fill("ftp://example.com/repo")
    page.get_by_test_id("stack-form-submit").click()
    expect(page.get_by_test_id("stack-form-repository-url-error")).to_contain_text("repository URL must be")
    page.get_by_test_id("stack-form-repository-url-input").fill("https://git.example.com/acme/network.git")
    page.get_by_test_id("stack-form-project-root-input").fill("envs/prod")
    page.get_by_test_id("stack-form-labels-input").fill("env:prod, team:network")
    page.get_by_test_id("stack-form-submit").click()
    expect(page.get_by_test_id("stack-name")).to_have_text("network-prod")
    expect(page.get_by_test_id("stack-project-root")).to_have_text("envs/prod")
    expect(page.get_by_test_id("stack-labels")).to_contain_text("team:network")

    # Find it: a second stack, then search narrows the table to one row.
    page.goto("/stacks/new")
    page.get_by_test_id("stack-form-name-input").fill("dns-staging")
    page.get_by_test_id("stack-form-repository-url-input").fill("git@git.example.com:acme/dns.git")
    page.get_by_test_id("stack-form-submit").click()
    expect(page.get_by_test_id("stack-name")).to_have_text("dns-staging")
    page.goto("/stacks")
    # Other e2e tests share the server: look for these two among whatever else exists.
    for name in ("network-prod", "dns-staging"):
        expect(page.locator(f'[data-testid="stacks-row"][data-stack-name="{name}"]')).to_have_count(1)
    page.get_by_test_id("stacks-search-input").fill("netw")
    expect(page.get_by_test_id("stacks-row")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=netw"))
    page.get_by_test_id("stacks-row-link").click()
    expect(page.get_by_test_id("stack-name")).to_have_text("network-prod")

    # Edit.
    page.get_by_test_id("stack-edit-button").click()
    branch = page.get_by_test_id("stack-form-branch-input")
    expect(branch).to_have_value("main")
    branch.fill("release")
    page.get_by_test_id("stack-form-submit").click()
    expect(page.get_by_test_id("stack-branch")).to_have_text("release")

    # Delete needs the exact name typed.
    page.get_by_test_id("stack-delete-button").click()
    submit = page.get_by_test_id("stack-delete-submit")
    expect(submit).to_be_disabled()
    page.get_by_test_id("stack-delete-confirm-input").fill("network-pro")
    expect(submit).to_be_disabled()
    page.get_by_test_id("stack-delete-confirm-input").fill("network-prod")
    expect(submit).to_be_enabled()
    submit.click()
    expect(page).to_have_url(re.compile(r"/stacks/?$"))
    expect(page.locator('[data-testid="stacks-row"][data-stack-name="dns-staging"]')).to_have_count(1)
    expect(page.locator('[data-testid="stacks-row"][data-stack-name="network-prod"]')).to_have_count(0)

    # The audit log shows every step, newest first.
    page.get_by_test_id("nav-audit").click()
    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_contain_text("stack.delete")
    text = " ".join(rows.all_inner_texts())
    for action in ("stack.delete", "stack.update", "stack.create", "auth.login"):
        assert action in text, f"{action} missing from the audit page"


def test_logout_ends_the_session_server_side(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["crucible_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    page.get_by_test_id("logout-button").click()
    expect(page).to_have_url(re.compile(r"/login"))
    # Replaying the old cookie no longer works.
    resp = page.request.get("/api/v1/auth/me", headers={"Cookie": f"crucible_session={session['value']}"})
    assert resp.status == 401


def test_theme_toggle_switches_color_mode(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    html = page.locator("html")
    before = html.get_attribute("class") or ""
    page.get_by_test_id("theme-toggle").click()
    expect(html).not_to_have_class(before)


def test_every_ui_event_revalidates_the_session(page, server, login):
    """A session ended elsewhere (logout on another device) stops the open tab at its next event."""
    login()
    page.goto("/stacks")
    expect(page.get_by_test_id("page-title")).to_have_text("Stacks")
    # Let the page's own load events finish, so that the next event is the user's.
    expect(page.locator('[data-testid="stacks-table"], [data-testid="stacks-empty"]').first).to_be_visible()
    # End the session server-side through the API, with the same cookie, without a page load.
    resp = page.request.post("/api/v1/auth/logout")
    assert resp.status == 204
    page.get_by_test_id("stacks-search-input").fill("anything")
    expect(page).to_have_url(re.compile(r"/login"))


def test_narrow_screens_get_a_menu_instead_of_the_sidebar(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    page.set_viewport_size({"width": 700, "height": 900})
    expect(page.get_by_test_id("sidebar")).to_be_hidden()
    page.get_by_test_id("nav-menu-button").click()
    page.get_by_test_id("nav-menu-audit").click()
    expect(page.get_by_test_id("page-title")).to_have_text("Audit log")
