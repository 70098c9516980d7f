"""The stack page's State tab in a real browser, fed through Terraform's real http backend
protocol (basic auth with a stack token): history, diff, explorer, outputs, lock, rollback and
tokens, with tabs kept in the URL."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state"
SECRETS = ("st4te-pw-initial", "st4te-pw-rotated")
# Read at import: the suite's autouse fixture drops CRUCIBLE_* variables before each test.


def _stack(page, name: str, tool: str = "opentofu") -> str:
    resp = page.request.post(
        "/api/v1/stacks",
        data={"name": name, "repository_url": "https://git.example.com/acme/infra.git", "tool": tool},
    )
    assert resp.status == 201, resp.text()
    return resp.json()["id"]


def _token(page, stack_id: str, name: str = "seed", access: str = "write") -> str:
    resp = page.request.post(f"/api/v1/stacks/{stack_id}/tokens", data={"name": name, "access": access})
    assert resp.status == 201, resp.text()
    return resp.json()["token"]


def _protocol(server, stack_id: str, token: str, method: str = "GET", path: str = "", **kwargs):
    """A request to the state endpoint exactly as Terraform's http backend makes it."""
    return httpx.request(
        method,
        f"{server['base_url']}/api/v1/state/{stack_id}{path}",
        auth=(stack_id, token),
        timeout=30,
        **kwargs,
    )


def _push(server, stack_id: str, token: str, fixture: str) -> None:
    resp = _protocol(server, stack_id, token, "POST", content=(FIXTURES / fixture).read_bytes())
    assert resp.status_code == 200, resp.text


def _lock_info(lock_id: str) -> bytes:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "alice@build-7",
            "Version": "1.11.4",
            "Created": "2026-01-01T10:00:00Z",
            "Path": "",
        }
    ).encode()


def _open_state_tab(page, stack_id: str) -> None:
    page.goto(f"/stacks/{stack_id}?tab=state")
    expect(page.get_by_test_id("stack-tab-state")).to_have_attribute("data-state", "active")
    expect(page.get_by_test_id("stack-state-lock-status")).to_be_visible()


def _no_secret_on_page(page) -> None:
    html = page.content()
    for secret in SECRETS:
        assert secret not in html, f"a sensitive value ({secret}) reached the page"


def _toasts_gone(page) -> None:
    """Toasts sit in the top-right corner (over buttons there) and pause under the pointer."""
    page.mouse.move(0, 0)
    expect(page.locator("[data-sonner-toast]")).to_have_count(0)


def _pick(page, trigger_tid: str, option: str) -> None:
    page.get_by_test_id(trigger_tid).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_state_tab_history_diff_explorer_outputs(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-{secrets.token_hex(3)}")
    token = _token(page, stack_id)

    # No state yet: the tab says how to point Terraform at Crucible, with this stack's address.
    _open_state_tab(page, stack_id)
    expect(page.get_by_test_id("stack-state-empty")).to_be_visible()
    expect(page.get_by_test_id("stack-state-empty-backend-config")).to_contain_text(
        f"/api/v1/state/{stack_id}"
    )
    expect(page.get_by_test_id("stack-state-lock-status")).to_have_text("Unlocked")

    _push(server, stack_id, token, "state-v1.json")  # serial 10
    _push(server, stack_id, token, "state-v2.json")  # serial 19
    page.reload()
    expect(page.get_by_test_id("stack-tab-state")).to_have_attribute("data-state", "active")

    # History, newest first, the current one marked.
    rows = page.get_by_test_id("stack-state-version-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-serial", "19")
    expect(rows.first.get_by_test_id("stack-state-version-current")).to_be_visible()
    expect(rows.first.get_by_test_id("stack-state-version-by")).to_have_text("token seed")
    expect(rows.nth(1)).to_have_attribute("data-serial", "10")
    expect(page.get_by_test_id("stack-state-versions-count")).to_have_text("1-2 of 2 versions")

    # The default diff: the previous version → the current one, in state wording.
    summary = page.get_by_test_id("stack-state-diff-summary")
    expect(summary).to_have_attribute("data-added", "3")
    expect(summary).to_have_attribute("data-removed", "2")
    expect(summary).to_have_attribute("data-changed", "3")
    diff = page.get_by_test_id("stack-state-diff")
    expect(diff.get_by_test_id("stack-state-diff-from-select")).to_contain_text("serial 10")
    expect(diff.get_by_test_id("stack-state-diff-to-select")).to_contain_text("serial 19")
    expect(diff.locator('[data-testid="plan-group"][data-action="create"]')).to_contain_text("3 added")
    expect(diff.locator('[data-testid="plan-group"][data-action="delete"]')).to_contain_text("2 removed")
    expect(diff.locator('[data-testid="plan-resource"][data-address="terraform_data.cache"]')).to_be_visible()
    db = diff.locator('[data-testid="plan-resource"][data-address="terraform_data.db"]')
    expect(db).to_have_attribute("data-action", "update")
    db.locator("summary").first.click()
    expect(db.get_by_test_id("plan-attr").first).to_be_visible()
    expect(
        diff.locator('[data-testid="stack-state-diff-output-row"][data-name="db_password"]')
    ).to_contain_text("sensitive")
    expect(diff.get_by_test_id("plan-download")).to_have_count(0)
    _no_secret_on_page(page)

    # The other way round: what was added is now removed.
    _pick(page, "stack-state-diff-from-select", "serial 19 · current")
    _pick(page, "stack-state-diff-to-select", "serial 10")
    expect(summary).to_have_attribute("data-added", "2")
    expect(summary).to_have_attribute("data-removed", "3")
    _no_secret_on_page(page)

    # A history row's Diff: serial 10 against nothing before it, everything added.
    rows.nth(1).get_by_test_id("stack-state-version-diff").click()
    expect(summary).to_have_attribute("data-removed", "0")
    expect(diff.get_by_test_id("stack-state-diff-from-select")).to_contain_text("nothing")

    # The explorer: the current version by default; filters narrow the list server-side.
    contents = page.get_by_test_id("stack-state-contents")
    expect(contents.get_by_test_id("stack-state-contents-version-select")).to_contain_text("serial 19")
    resources = contents.get_by_test_id("stack-state-resource-row")
    total = int(
        re.search(r"of (\d+)", contents.get_by_test_id("stack-state-resources-count").inner_text())[1]
    )
    expect(resources).to_have_count(total)
    assert total > 5
    contents.get_by_test_id("stack-state-resources-address-input").fill("worker")
    expect(resources).to_have_count(3)
    for i in range(3):
        expect(resources.nth(i)).to_have_attribute("data-address", re.compile(r"worker\[\d\]"))
    contents.get_by_test_id("stack-state-resources-clear").click()
    expect(resources).to_have_count(total)
    _pick(page, "stack-state-resources-type-filter", "terraform_remote_state")
    expect(resources).to_have_count(1)
    expect(resources.first).to_have_attribute("data-address", "data.terraform_remote_state.shared")
    _pick(page, "stack-state-resources-type-filter", "All types")
    expect(resources).to_have_count(total)

    # Open one instance: its attributes, sensitive ones hidden.
    contents.locator('[data-testid="stack-state-resource-row"][data-address="terraform_data.db"]').click()
    detail = contents.get_by_test_id("stack-state-resource-detail")
    expect(detail.get_by_test_id("stack-state-resource-detail-address")).to_have_text("terraform_data.db")
    hidden = detail.locator('[data-testid="stack-state-resource-attr"][data-sensitive="true"]')
    expect(hidden.first).to_be_visible()
    _no_secret_on_page(page)

    # Outputs: the sensitive one hidden, the others shown.
    outputs = page.get_by_test_id("stack-state-outputs")
    secret_out = outputs.locator('[data-testid="stack-state-output-row"][data-name="db_password"]')
    expect(secret_out).to_have_attribute("data-sensitive", "true")
    expect(secret_out.get_by_test_id("stack-state-output-value")).to_have_text("sensitive")
    region = outputs.locator('[data-testid="stack-state-output-row"][data-name="region"]')
    expect(region.get_by_test_id("stack-state-output-value")).to_have_text('"eu-west-1"')

    # Browse an older version from the history.
    rows.nth(1).get_by_test_id("stack-state-version-browse").click()
    expect(contents.get_by_test_id("stack-state-contents-version-select")).to_contain_text("serial 10")
    expect(
        contents.locator('[data-testid="stack-state-resource-row"][data-address="terraform_data.gone"]')
    ).to_be_visible()
    _no_secret_on_page(page)

    # Download: a plain link to the REST endpoint, authenticated by the session cookie.
    href = rows.first.get_by_test_id("stack-state-version-download").get_attribute("href")
    assert href == f"/api/v1/stacks/{stack_id}/state/versions/19/download"
    download = page.request.get(href)
    assert download.status == 200
    assert json.loads(download.body())["serial"] == 19


def test_lock_force_unlock_and_rollback(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-lock-{secrets.token_hex(3)}")
    token = _token(page, stack_id)
    _push(server, stack_id, token, "state-v1.json")
    _push(server, stack_id, token, "state-v2.json")

    # Terraform takes the lock; the tab shows who holds it.
    assert (
        _protocol(server, stack_id, token, "LOCK", content=_lock_info("lock-held-by-alice")).status_code
        == 200
    )
    _open_state_tab(page, stack_id)
    status = page.get_by_test_id("stack-state-lock-status")
    expect(status).to_have_text("Locked")
    expect(page.get_by_test_id("stack-state-lock-who")).to_have_text("alice@build-7")
    expect(page.get_by_test_id("stack-state-lock-operation")).to_have_text("OperationTypeApply")
    expect(page.get_by_test_id("stack-state-lock-id")).to_have_text("lock-held-by-alice")
    expect(page.get_by_test_id("stack-state-lock-age")).to_have_text("just now")  # taken seconds ago
    # Someone else's LOCK is refused while it is held.
    assert _protocol(server, stack_id, token, "LOCK", content=_lock_info("lock-of-bob")).status_code == 423

    # A rollback would race with the lock holder: refused, with the server's reason.
    page.get_by_test_id("stack-state-version-row").nth(1).get_by_test_id(
        "stack-state-version-rollback"
    ).click()
    page.get_by_test_id("stack-state-rollback-confirm").click()
    expect(page.get_by_text(re.compile("the state is locked by alice@build-7"))).to_be_visible()
    page.get_by_test_id("stack-state-rollback-cancel").click()
    expect(page.get_by_test_id("stack-state-rollback-dialog")).to_have_count(0)
    _toasts_gone(page)

    # The admin force-unlocks it behind a confirmation; the protocol can lock again.
    page.get_by_test_id("stack-state-force-unlock-button").click()
    expect(page.get_by_test_id("stack-state-force-unlock-dialog")).to_contain_text("lock-held-by-alice")
    page.get_by_test_id("stack-state-force-unlock-confirm").click()
    expect(status).to_have_text("Unlocked")
    expect(
        page.get_by_text("Unlocked: removed lock lock-held-by-alice held by alice@build-7")
    ).to_be_visible()
    expect(page.get_by_test_id("stack-state-force-unlock-button")).to_have_count(0)
    assert _protocol(server, stack_id, token, "LOCK", content=_lock_info("lock-of-bob")).status_code == 200
    page.get_by_test_id("stack-state-lock-refresh").click()
    expect(status).to_have_text("Locked")
    expect(page.get_by_test_id("stack-state-lock-id")).to_have_text("lock-of-bob")
    assert _protocol(server, stack_id, token, "UNLOCK", content=_lock_info("lock-of-bob")).status_code == 200
    page.get_by_test_id("stack-state-lock-refresh").click()
    expect(status).to_have_text("Unlocked")

    # Roll back to serial 10: a new current version (20) with its content; history refreshes.
    rows = page.get_by_test_id("stack-state-version-row")
    rows.nth(1).get_by_test_id("stack-state-version-rollback").click()
    dialog = page.get_by_test_id("stack-state-rollback-dialog")
    expect(dialog).to_contain_text("creates a new version with the content of serial 10")
    page.get_by_test_id("stack-state-rollback-confirm").click()
    expect(page.get_by_text("Rolled back: serial 20 now holds the content of serial 10")).to_be_visible()
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-serial", "20")
    expect(rows.first).to_have_attribute("data-current", "true")
    expect(rows.first.get_by_test_id("stack-state-version-note")).to_contain_text("rollback of serial 10")
    expect(rows.first.get_by_test_id("stack-state-version-by")).to_have_text(server["email"])
    # The current version's rollback button is not offered; the diff shows 19 → 20.
    expect(rows.first.get_by_test_id("stack-state-version-rollback")).to_have_count(0)
    expect(page.get_by_test_id("stack-state-diff-to-select")).to_contain_text("serial 20")
    expect(page.get_by_test_id("stack-state-diff-summary")).to_have_attribute("data-added", "2")
    # What Terraform reads now is serial 20 with 10's content.
    current = _protocol(server, stack_id, token).json()
    assert current["serial"] == 20
    assert "gone" in {r["name"] for r in current["resources"]}


def test_tokens_shown_once_work_and_revoke(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-tokens-{secrets.token_hex(3)}")
    _open_state_tab(page, stack_id)
    expect(page.get_by_test_id("stack-state-tokens-empty")).to_be_visible()

    page.get_by_test_id("stack-state-token-submit").click()
    expect(page.get_by_test_id("stack-state-token-name-error")).to_be_visible()
    page.get_by_test_id("stack-state-token-name-input").fill("laptop")
    _pick(page, "stack-state-token-access-select", "write: plan and apply")
    page.get_by_test_id("stack-state-token-submit").click()
    dialog = page.get_by_test_id("stack-state-token-dialog")
    expect(dialog).to_be_visible()
    value = page.get_by_test_id("stack-state-token-value").inner_text().strip()
    assert value.startswith("crus_")
    expect(page.get_by_test_id("stack-state-token-snippet")).to_contain_text(f'username       = "{stack_id}"')
    expect(page.get_by_test_id("stack-state-token-env")).to_contain_text(f"TF_HTTP_PASSWORD={value}")
    page.get_by_test_id("stack-state-token-done").click()
    expect(dialog).to_have_count(0)
    assert value not in page.content(), "the token must be shown only once"
    row = page.locator('[data-testid="stack-state-token-row"][data-token-name="laptop"]')
    expect(row).to_have_attribute("data-token-status", "active")
    expect(row.get_by_test_id("stack-state-token-access")).to_have_text("write")

    # It works against the protocol: no state yet (204), then a write and a read.
    assert _protocol(server, stack_id, value).status_code == 204
    _push(server, stack_id, value, "state-v1.json")
    assert _protocol(server, stack_id, value).status_code == 200
    page.reload()
    expect(row.get_by_test_id("stack-state-token-status")).to_have_text("active")
    expect(page.get_by_test_id("stack-state-version-row")).to_have_count(1)

    # Revoke, behind a confirmation: the next request is refused.
    row.get_by_test_id("stack-state-token-revoke").click()
    expect(page.get_by_test_id("stack-state-token-revoke-dialog")).to_contain_text("laptop")
    page.get_by_test_id("stack-state-token-revoke-confirm").click()
    expect(row).to_have_attribute("data-token-status", "revoked")
    expect(row.get_by_test_id("stack-state-token-revoke")).to_have_count(0)
    assert _protocol(server, stack_id, value).status_code == 401


def test_tabs_live_in_the_url(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-tabs-{secrets.token_hex(3)}")

    page.goto(f"/stacks/{stack_id}")
    expect(page.get_by_test_id("stack-tab-overview")).to_have_attribute("data-state", "active")
    expect(page.get_by_test_id("stack-runs-empty")).to_be_visible()
    page.get_by_test_id("stack-tab-state").click()
    expect(page).to_have_url(re.compile(rf"/stacks/{stack_id}/?\?tab=state$"))
    expect(page.get_by_test_id("stack-state-empty")).to_be_visible()
    expect(page.get_by_test_id("stack-runs-empty")).to_have_count(0)
    page.reload()
    expect(page.get_by_test_id("stack-tab-state")).to_have_attribute("data-state", "active")
    expect(page.get_by_test_id("stack-state-empty")).to_be_visible()
    page.get_by_test_id("stack-tab-overview").click()
    expect(page).to_have_url(re.compile(r"\?tab=overview$"))
    expect(page.get_by_test_id("stack-runs-empty")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("stack-tab-overview")).to_have_attribute("data-state", "active")
    expect(page.get_by_test_id("stack-branch")).to_have_text("main")

    # A stack whose tool keeps no Terraform state has no State tab; ?tab=state falls back.
    ansible = _stack(page, f"e2e-state-ansible-{secrets.token_hex(3)}", tool="ansible")
    page.goto(f"/stacks/{ansible}?tab=state")
    expect(page.get_by_test_id("stack-tab-overview")).to_have_attribute("data-state", "active")
    expect(page.get_by_test_id("stack-tab-state")).to_have_count(0)


def test_viewers_see_state_but_not_its_controls(page, server, login, browser):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-viewer-{secrets.token_hex(3)}")
    token = _token(page, stack_id, name="ci")
    _push(server, stack_id, token, "state-v1.json")
    _push(server, stack_id, token, "state-v2.json")
    assert (
        _protocol(server, stack_id, token, "LOCK", content=_lock_info("viewer-sees-this")).status_code == 200
    )
    email, password = f"viewer-{secrets.token_hex(3)}@crucible.test", secrets.token_urlsafe(16)
    resp = page.request.post("/api/v1/users", data={"email": email, "password": password, "role": "viewer"})
    assert resp.status == 201, resp.text()

    ctx = browser.new_context(base_url=server["base_url"], viewport={"width": 1366, "height": 900})
    try:
        viewer = ctx.new_page()
        viewer.goto("/login")
        viewer.get_by_test_id("login-email-input").fill(email)
        viewer.get_by_test_id("login-password-input").fill(password)
        viewer.get_by_test_id("login-submit").click()
        expect(viewer.get_by_test_id("page-title")).to_have_text("Dashboard")
        _open_state_tab(viewer, stack_id)
        expect(viewer.get_by_test_id("stack-state-lock-status")).to_have_text("Locked")
        expect(viewer.get_by_test_id("stack-state-version-row")).to_have_count(2)
        expect(viewer.get_by_test_id("stack-state-diff-summary")).to_have_attribute("data-added", "3")
        expect(viewer.get_by_test_id("stack-state-force-unlock-button")).to_have_count(0)
        expect(viewer.get_by_test_id("stack-state-version-rollback")).to_have_count(0)
        expect(viewer.get_by_test_id("stack-state-version-download")).to_have_count(0)
        expect(viewer.get_by_test_id("stack-state-version-download-disabled").first).to_be_disabled()
        expect(viewer.get_by_test_id("stack-state-token-submit")).to_have_count(0)
        expect(viewer.get_by_test_id("stack-state-tokens-readonly")).to_be_visible()
        ci = viewer.locator('[data-testid="stack-state-token-row"][data-token-name="ci"]')
        expect(ci).to_be_visible()
        expect(ci.get_by_test_id("stack-state-token-revoke")).to_have_count(0)
        # The REST download refuses viewers too (the link is hidden for a reason).
        refused = viewer.request.get(f"/api/v1/stacks/{stack_id}/state/versions/19/download")
        assert refused.status == 403
    finally:
        ctx.close()
    assert (
        _protocol(server, stack_id, token, "UNLOCK", content=_lock_info("viewer-sees-this")).status_code
        == 200
    )


def _big_state(instances: int) -> bytes:
    resources = [
        {
            "mode": "managed",
            "type": f"aws_thing_{i % 4}",
            "name": f"r{i:05d}",
            "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
            "instances": [
                {
                    "schema_version": 0,
                    "attributes": {"id": f"id-{i}", "tags": {"Name": f"n{i}"}, "password": "big-st4te-pw"},
                    "sensitive_attributes": [[{"type": "get_attr", "value": "password"}]],
                }
            ],
        }
        for i in range(instances)
    ]
    doc = {"version": 4, "terraform_version": "1.9.0", "serial": 1, "lineage": "big-lineage",
           "outputs": {}, "resources": resources}  # fmt: skip
    return json.dumps(doc).encode()


def test_explorer_pages_a_large_state(page, server, login):
    """10,000 instances: the explorer holds one page of 100 and pages on the server."""
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-big-{secrets.token_hex(3)}")
    token = _token(page, stack_id)
    resp = _protocol(server, stack_id, token, "POST", content=_big_state(10_000))
    assert resp.status_code == 200, resp.text

    _open_state_tab(page, stack_id)
    contents = page.get_by_test_id("stack-state-contents")
    rows = contents.get_by_test_id("stack-state-resource-row")
    count = contents.get_by_test_id("stack-state-resources-count")
    expect(count).to_have_text("1-100 of 10000 instances", timeout=30_000)
    expect(rows).to_have_count(100)
    expect(rows.first).to_have_attribute("data-address", "aws_thing_0.r00000")
    contents.get_by_test_id("stack-state-resources-next-page").click()
    expect(count).to_have_text("101-200 of 10000 instances")
    expect(rows.first).to_have_attribute("data-address", "aws_thing_0.r00400")  # by address
    _pick(page, "stack-state-resources-type-filter", "aws_thing_1")
    expect(count).to_have_text("1-100 of 2500 instances")
    contents.get_by_test_id("stack-state-resources-address-input").fill("r0999")
    expect(count).to_have_text("1-2 of 2 instances")  # r09993 and r09997 are aws_thing_1's
    expect(rows).to_have_count(2)
    # The diff against nothing lists what it can and says how much it left out.
    expect(page.get_by_test_id("stack-state-diff-summary")).to_have_attribute("data-added", "10000")
    expect(page.get_by_test_id("plan-resource")).to_have_count(300)
    assert "big-st4te-pw" not in page.content()


def _tiny_state(serial: int) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.11.4",
        "serial": serial,
        "lineage": "e2e-many-versions",
        "outputs": {},
        "resources": [
            {
                "mode": "managed",
                "type": "terraform_data",
                "name": "counter",
                "provider": 'provider["terraform.io/builtin/terraform"]',
                "instances": [{"schema_version": 0, "attributes": {"id": "c", "input": serial}}],
            }
        ]
        + (
            [
                {
                    "mode": "managed",
                    "type": "terraform_data",
                    "name": "early",
                    "provider": 'provider["terraform.io/builtin/terraform"]',
                    "instances": [{"schema_version": 0, "attributes": {"id": "e"}}],
                }
            ]
            if serial == 1
            else []
        ),
    }
    return json.dumps(doc, indent=2).encode()


def test_any_two_versions_compare_even_beyond_the_selects(page, server, login):
    """The selects offer the newest 200 serials; typed serials reach every version."""
    from state.stack_state import SERIAL_CHOICES

    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    stack_id = _stack(page, f"e2e-state-many-{secrets.token_hex(3)}")
    token = _token(page, stack_id)
    newest = SERIAL_CHOICES + 2
    with httpx.Client(base_url=server["base_url"], auth=(stack_id, token), timeout=30) as http:
        for serial in range(1, newest + 1):
            resp = http.post(f"/api/v1/state/{stack_id}", content=_tiny_state(serial))
            assert resp.status_code == 200, resp.text
    _open_state_tab(page, stack_id)
    diff = page.get_by_test_id("stack-state-diff")
    expect(diff.get_by_test_id("stack-state-diff-to-select")).to_contain_text(f"serial {newest}")
    page.get_by_test_id("stack-state-diff-from-select").click()
    expect(page.get_by_role("option", name="serial 3", exact=True)).to_be_visible()
    expect(page.get_by_role("option", name="serial 1", exact=True)).to_have_count(0)  # too old
    page.keyboard.press("Escape")

    # Serial 1 (not offered) against the current one: "early" existed only in serial 1.
    page.get_by_test_id("stack-state-compare-toggle").click()
    page.get_by_test_id("stack-state-compare-from-input").fill("1")
    page.get_by_test_id("stack-state-compare-to-input").fill(str(newest))
    page.get_by_test_id("stack-state-compare-submit").click()
    summary = page.get_by_test_id("stack-state-diff-summary")
    expect(summary).to_have_attribute("data-removed", "1")
    expect(summary).to_have_attribute("data-changed", "1")
    expect(diff.get_by_test_id("stack-state-diff-from-select")).to_contain_text("serial 1")
    expect(
        diff.locator('[data-testid="plan-resource"][data-address="terraform_data.early"]')
    ).to_have_attribute("data-action", "delete")

    # An empty "from" is the version just before: 1 → 2 removes "early" and changes the counter.
    page.get_by_test_id("stack-state-compare-from-input").fill("")
    page.get_by_test_id("stack-state-compare-to-input").fill("2")
    page.get_by_test_id("stack-state-compare-submit").click()
    expect(diff.get_by_test_id("stack-state-diff-to-select")).to_contain_text("serial 2")
    expect(diff.get_by_test_id("stack-state-diff-from-select")).to_contain_text("serial 1")
    expect(summary).to_have_attribute("data-removed", "1")

    # A serial that does not exist: the server's reason, nothing else changes.
    page.get_by_test_id("stack-state-compare-to-input").fill(str(newest + 50))
    page.get_by_test_id("stack-state-compare-submit").click()
    expect(diff.get_by_test_id("stack-state-diff-error")).to_contain_text(str(newest + 50))
    # No "to" at all: said next to the fields.
    page.get_by_test_id("stack-state-compare-to-input").fill("")
    page.get_by_test_id("stack-state-compare-submit").click()
    expect(page.get_by_test_id("stack-state-compare-error")).to_contain_text("serial to compare to")
