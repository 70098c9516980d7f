"""Settings (members, API tokens, password) and the audit page, in a real browser."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_api_token_is_shown_once_works_and_revocation_is_immediate(page, server, login):
    login()
    page.get_by_test_id("nav-settings").click()
    page.get_by_test_id("settings-token-name-input").fill("ci-pipeline")
    page.get_by_test_id("settings-token-submit").click()
    value = page.get_by_test_id("settings-token-value")
    expect(value).to_contain_text("cru_")
    token = value.inner_text().strip()
    page.get_by_test_id("settings-token-done").click()
    expect(page.get_by_test_id("settings-token-value")).to_have_count(0)

    api = page.context.request
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}", "Cookie": ""})
    assert me.status == 200 and me.json()["label"] == "token:ci-pipeline"

    row = page.locator('[data-testid="settings-token-row"][data-token-name="ci-pipeline"]')
    row.get_by_test_id("settings-token-revoke").click()
    page.get_by_test_id("settings-token-revoke-confirm").click()
    expect(row.get_by_test_id("settings-token-status")).to_have_text("revoked")
    gone = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}", "Cookie": ""})
    assert gone.status == 401


def test_new_member_logs_in_and_changes_password(page, server, login):
    login()
    page.goto("/settings")
    page.get_by_test_id("settings-member-email-input").fill("dev@example.com")
    page.get_by_test_id("settings-member-password-input").fill("short")
    page.get_by_test_id("settings-member-submit").click()
    expect(page.get_by_test_id("settings-member-password-error")).to_contain_text("at least 10")
    page.get_by_test_id("settings-member-password-input").fill("initial-password-1")
    page.get_by_test_id("settings-member-submit").click()
    expect(page.locator('[data-member-email="dev@example.com"]')).to_have_count(1)

    page.get_by_test_id("logout-button").click()
    expect(page).to_have_url(re.compile(r"/login"))
    login(email="dev@example.com", password="initial-password-1")
    expect(page.get_by_test_id("user-role")).to_have_text("member")
    page.goto("/settings")
    expect(page.get_by_test_id("settings-tokens-admin-only")).to_be_visible()
    page.get_by_test_id("settings-current-password-input").fill("initial-password-1")
    page.get_by_test_id("settings-new-password-input").fill("a-better-password-2")
    page.get_by_test_id("settings-confirm-password-input").fill("a-better-password-2")
    page.get_by_test_id("settings-password-submit").click()
    expect(page.get_by_test_id("login-notice")).to_contain_text("Password changed")
    login(email="dev@example.com", password="initial-password-1")
    expect(page.get_by_test_id("login-error")).to_be_visible()
    login(email="dev@example.com", password="a-better-password-2")
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")


def test_audit_filters_live_in_the_url_and_export_matches(page, server, login):
    login()
    page.goto("/audit?category=auth")
    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_be_visible()
    actions = {a for a in page.get_by_test_id("audit-row-action").all_inner_texts()}
    assert actions and all(a.startswith("auth.") for a in actions), actions
    page.reload()
    expect(page.get_by_test_id("audit-row").first).to_be_visible()
    assert all(a.startswith("auth.") for a in page.get_by_test_id("audit-row-action").all_inner_texts())

    rows.first.get_by_test_id("audit-row-details").click()
    dialog = page.get_by_test_id("audit-details-dialog")
    expect(dialog.get_by_test_id("audit-details-hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    page.get_by_test_id("audit-details-close").click()
    expect(dialog).to_have_count(0)

    with page.expect_download() as dl:
        page.get_by_test_id("audit-export-json").click()
    exported = json.loads(Path(dl.value.path()).read_text())
    assert exported and all(e["category"] == "auth" for e in exported)
    with page.expect_download() as dl:
        page.get_by_test_id("audit-export-csv").click()
    table = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [r["id"] for r in table] == [str(e["id"]) for e in exported]
