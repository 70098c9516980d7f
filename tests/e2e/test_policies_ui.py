"""The policies pages in a real browser: the editor (compile errors with their line, versions,
diff), attaching to a stack, the playground and the starter library."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BROKEN = """package crucible

deny contains msg if {
	x :=
}
"""
V1 = """package crucible

deny contains msg if {
	some rc in input.resource_changes
	"delete" in rc.change.actions
	msg := sprintf("%s would be destroyed", [rc.address])
}
"""
V2 = (
    V1
    + """
warn contains msg if {
	input.crucible.counts.change > 10
	msg := "many in-place changes"
}
"""
)
PASTED = """package crucible

deny contains msg if {
	input.crucible.counts.destroy > 2
	msg := sprintf("%d destroys is too many", [input.crucible.counts.destroy])
}
"""
PASTED_INPUT = '{"crucible": {"counts": {"add": 0, "change": 0, "destroy": 3}}}'


def _pick(page, trigger_tid: str, option: str) -> None:
    page.get_by_test_id(trigger_tid).click()
    page.get_by_role("option", name=option, exact=True).click()


def _toast(page, text: str) -> None:
    expect(page.locator("[data-sonner-toast]", has_text=text).first).to_be_visible()


def test_policy_editor_versions_stacks_playground_and_library(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    suffix = secrets.token_hex(3)
    stack_name = f"e2e-pol-stack-{suffix}"
    repo = "https://git.example.com/acme/infra.git"
    stack = {"name": stack_name, "repository_url": repo, "tool": "opentofu"}
    resp = page.request.post("/api/v1/stacks", data=stack)
    assert resp.status == 201, resp.text()
    stack_id = resp.json()["id"]

    # The sidebar's Config group leads to the list; New policy opens the editor with a template.
    page.get_by_test_id("nav-policies").click()
    expect(page).to_have_url(re.compile(r"/policies/?$"))
    page.get_by_test_id("policies-new-button").click()
    expect(page.get_by_test_id("page-title")).to_have_text("New policy")
    body = page.get_by_test_id("policy-body-input")
    expect(body).to_have_value(re.compile(r"package crucible"))
    # Highlighted as typed: the textarea holds the text, a highlighted copy lies under it.
    highlight = page.get_by_test_id("policy-body-input-highlight")
    expect(highlight.locator("span.token.keyword", has_text=re.compile(r"^package$"))).to_have_count(1)

    # A compile error names its line (and marks it); nothing is saved and the draft stays.
    name = f"e2e-no-deletes-{suffix}"
    page.get_by_test_id("policy-form-name-input").fill(name)
    body.fill(BROKEN)
    expect(highlight.locator("span.token.keyword", has_text=re.compile(r"^contains$"))).to_have_count(1)
    expect(highlight).to_contain_text("x :=")
    page.get_by_test_id("policy-save").click()
    error = page.get_by_test_id("policy-compile-error")
    expect(error).to_have_attribute("data-line", "4")
    expect(error.get_by_test_id("policy-compile-error-location")).to_contain_text("Line 4")
    expect(page.get_by_test_id("policy-body-input-error-line")).to_have_attribute("data-line", "4")
    expect(body).to_have_value(BROKEN)
    expect(page.get_by_test_id("policy-form-name-input")).to_have_value(name)
    assert "/policies/new" in page.url

    # Fixed: saved as version 1 and opened at its own address.
    body.fill(V1)
    page.get_by_test_id("policy-save").click()
    expect(page).to_have_url(re.compile(r"/policies/pol-[0-9a-f]{16}$"))
    policy_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_test_id("policy-name")).to_have_text(name)
    expect(page.get_by_test_id("policy-version")).to_have_text("version 1")

    # Saving what is saved says so; an edit makes version 2.
    page.get_by_test_id("policy-save").click()
    _toast(page, "Nothing changed")
    page.get_by_test_id("policy-body-input").fill(V2)
    expect(page.get_by_test_id("policy-dirty")).to_be_visible()
    # The unsaved draft can be tried in the playground, and it is still there on the way back.
    page.get_by_test_id("policy-playground-button").click()
    expect(page).to_have_url(re.compile(r"/policies/test\?draft=1"))
    expect(page.get_by_test_id("playground-body-input")).to_have_value(V2)
    page.get_by_test_id("playground-draft-back").click()
    expect(page.get_by_test_id("policy-dirty")).to_be_visible()
    expect(page.get_by_test_id("policy-body-input")).to_have_value(V2)
    page.get_by_test_id("policy-save").click()
    expect(page.get_by_test_id("policy-version")).to_have_text("version 2")
    expect(page.get_by_test_id("policy-dirty")).to_have_count(0)

    # The backtest panel replays the editor's draft on past plans (whatever runs exist).
    page.get_by_test_id("backtest-run").click()
    expect(page.get_by_test_id("backtest-summary")).to_be_visible()

    # Versions: both listed, version 1's source and its diff against the current one.
    page.get_by_test_id("policy-tab-versions").click()
    expect(page).to_have_url(re.compile(r"\?tab=versions"))
    rows = page.get_by_test_id("policy-version-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-version", "2")
    v1 = page.locator('[data-testid="policy-version-row"][data-version="1"]')
    v1.get_by_test_id("policy-version-view").click()
    viewer = page.get_by_test_id("policy-version-viewer")
    expect(viewer).to_have_attribute("data-version", "1")
    expect(page.get_by_test_id("policy-version-body")).to_contain_text("would be destroyed")
    expect(page.get_by_test_id("policy-version-body")).not_to_contain_text("many in-place changes")
    v1.get_by_test_id("policy-version-diff").click()
    diff = page.get_by_test_id("policy-version-diff-lines")
    expect(diff.locator('[data-kind="add"]', has_text="warn contains msg if").first).to_be_visible()
    page.reload()  # the tab is in the URL
    expect(page.get_by_test_id("policy-tab-versions")).to_have_attribute("data-state", "active")

    # Attach to the stack, then detach; the API agrees each time.
    page.get_by_test_id("policy-tab-stacks").click()
    expect(page.get_by_test_id("policy-stacks-empty")).to_be_visible()
    _pick(page, "policy-attach-select", stack_name)
    page.get_by_test_id("policy-attach-submit").click()
    row = page.locator(f'[data-testid="policy-stack-row"][data-stack-name="{stack_name}"]')
    expect(row).to_be_visible()
    applied = page.request.get(f"/api/v1/stacks/{stack_id}/policies").json()["data"]
    assert [p["policy_id"] for p in applied] == [policy_id]
    row.get_by_test_id("policy-stack-detach").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("policy-stacks-empty")).to_be_visible()
    assert page.request.get(f"/api/v1/stacks/{stack_id}/policies").json()["data"] == []

    # The playground opens with this policy selected and evaluates its current version.
    page.get_by_test_id("policy-playground-button").click()
    expect(page).to_have_url(re.compile(rf"/policies/test\?policy={policy_id}"))
    expect(page.get_by_test_id("playground-policy-body")).to_contain_text("many in-place changes")
    page.get_by_test_id("playground-evaluate").click()
    expect(page.get_by_test_id("playground-verdict")).to_have_attribute("data-verdict", "deny")
    deny = page.get_by_test_id("playground-deny-message")
    expect(deny).to_have_text("aws_s3_bucket.logs would be destroyed")
    expect(page.get_by_test_id("playground-engine")).not_to_be_empty()

    # Pasted Rego against pasted JSON: a JSON mistake names its line first.
    page.get_by_test_id("playground-mode-paste").click()
    page.get_by_test_id("playground-body-input").fill(PASTED)
    page.get_by_test_id("playground-input").fill('{\n  "crucible": {,\n}')
    page.get_by_test_id("playground-evaluate").click()
    expect(page.get_by_test_id("playground-input-error")).to_have_attribute("data-line", "2")
    expect(page.get_by_test_id("playground-input-error")).to_contain_text("Not valid JSON")
    page.get_by_test_id("playground-input").fill(PASTED_INPUT)
    json_tokens = page.get_by_test_id("playground-input-highlight").locator("span.token.property")
    expect(json_tokens.first).to_have_text('"crucible"')
    page.get_by_test_id("playground-evaluate").click()
    expect(page.get_by_test_id("playground-input-error")).to_have_count(0)
    expect(deny).to_have_text("3 destroys is too many")
    expect(page.get_by_test_id("playground-duration")).to_contain_text("ms")

    # The list finds the policy by name, with its type and version.
    page.goto(f"/policies?q={suffix}")
    listed = page.locator(f'[data-testid="policies-row"][data-policy-name="{name}"]')
    expect(listed.get_by_test_id("policies-row-type")).to_have_attribute("data-type", "post_plan")
    expect(listed.get_by_test_id("policies-row-version")).to_have_text("v2")
    expect(page.get_by_test_id("policies-row")).to_have_count(1)

    # Starter library: read a policy's Rego, install it under a name of our own.
    page.get_by_test_id("policies-library-button").click()
    card = page.locator('[data-testid="policy-library-card"][data-slug="blast_radius"]')
    card.get_by_test_id("policy-library-view-rego").click()
    expect(card.get_by_test_id("policy-library-rego")).to_contain_text("max_changes")
    card.get_by_test_id("policy-library-install").click()
    installed_name = f"blast radius {suffix}"
    page.get_by_test_id("policy-library-install-name").fill(installed_name)
    page.get_by_test_id("policy-library-install-submit").click()
    expect(page).to_have_url(re.compile(r"/policies/pol-[0-9a-f]{16}$"))
    expect(page.get_by_test_id("policy-name")).to_have_text(installed_name)
    expect(page.get_by_test_id("policy-body-input")).to_have_value(re.compile(r"max_changes := 50"))

    # Delete behind the typed name.
    page.get_by_test_id("policy-delete-button").click()
    submit = page.get_by_test_id("policy-delete-submit")
    expect(submit).to_be_disabled()
    page.get_by_test_id("policy-delete-confirm-input").fill(installed_name)
    submit.click()
    expect(page).to_have_url(re.compile(r"/policies/?$"))
    expect(page.locator(f'[data-testid="policies-row"][data-policy-name="{installed_name}"]')).to_have_count(
        0
    )
