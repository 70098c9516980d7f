"""The stack page's Validation card in a real browser: a stack with state (pushed through
Terraform's http backend protocol) and a validation policy, validated with "Validate now"."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DB_PASSWORD = "e2e-validation-pw-3141"
REQUIRE_OWNER = """package crucible

deny contains msg if {
	some res in input.state.resources
	res.mode == "managed"
	some inst in res.instances
	not inst.attributes.tags.owner
	password := object.get(inst.attributes, "password", "-")
	msg := sprintf("%s.%s has no owner tag (password %s)", [res.type, res.name, password])
}
"""


def _state() -> bytes:
    def resource(type_: str, name: str, attributes: dict, sensitive: list | None = None) -> dict:
        return {
            "mode": "managed",
            "type": type_,
            "name": name,
            "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
            "instances": [
                {"schema_version": 0, "attributes": attributes, "sensitive_attributes": sensitive or []}
            ],
        }

    return json.dumps(
        {
            "version": 4,
            "terraform_version": "1.9.8",
            "serial": 3,
            "lineage": "e2e-validation",
            "outputs": {},
            "resources": [
                resource("aws_s3_bucket", "logs", {"id": "logs", "tags": {"owner": "ops"}}),
                resource(
                    "aws_db_instance",
                    "main",
                    {"id": "db-1", "password": DB_PASSWORD, "tags": {}},
                    [[{"type": "get_attr", "value": "password"}]],
                ),
            ],
        }
    ).encode()


def _post(page, path: str, data: dict) -> dict:
    resp = page.request.post(path, data=data)
    assert resp.status == 201, resp.text()
    return resp.json()


def test_validate_now_shows_the_deny_message(page, server, login):
    login()
    expect(page.get_by_test_id("page-title")).to_have_text("Dashboard")
    suffix = secrets.token_hex(3)
    stack_id = _post(
        page,
        "/api/v1/stacks",
        {
            "name": f"e2e-val-{suffix}",
            "repository_url": "https://git.example.com/a/b.git",
            "tool": "opentofu",
        },
    )["id"]
    token = _post(page, f"/api/v1/stacks/{stack_id}/tokens", {"name": "seed", "access": "write"})["token"]
    pushed = httpx.post(
        f"{server['base_url']}/api/v1/state/{stack_id}", auth=(stack_id, token), content=_state(), timeout=30
    )
    assert pushed.status_code == 200, pushed.text
    policy_id = _post(
        page, "/api/v1/policies", {"name": f"e2e-owner-{suffix}", "type": "validation", "body": REQUIRE_OWNER}
    )["id"]
    _post(page, f"/api/v1/stacks/{stack_id}/policies", {"policy_id": policy_id})

    page.goto(f"/stacks/{stack_id}")
    card = page.get_by_test_id("stack-validation-card")
    expect(card).to_be_visible()
    row = card.get_by_test_id("stack-validation-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"e2e-owner-{suffix}")

    card.get_by_test_id("stack-validation-run").click()

    expect(page.locator("[data-sonner-toast]", has_text="Validated: 1 deny").first).to_be_visible()
    expect(row).to_have_attribute("data-outcome", "deny")
    message = row.get_by_test_id("stack-validation-message")
    expect(message).to_have_text("aws_db_instance.main has no owner tag (password (sensitive))")
    expect(row).to_contain_text("serial 3")
    expect(row).to_contain_text(re.compile(rf"by {re.escape(server['email'])}"))
    assert DB_PASSWORD not in page.content()
