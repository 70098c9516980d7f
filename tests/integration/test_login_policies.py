"""Login policies: the organization's enabled ``login`` policies judge every login whose password
is right, before the session exists.

What users rely on: a deny refuses the login (403 for JSON, the form goes back to
``/login?error=denied``) and creates no session; ``role`` becomes the session's role, the lowest
when policies disagree; a broken policy refuses logins (fail closed) until
``crucible policies disable`` turns it off; a wrong password never reaches a policy; without
login policies nothing changes. Every decision is in the audit log."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from backend import cli
from backend.auth.models import Role, User, UserSession
from backend.policies import login as login_policies
from backend.policies import service as policy_service

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
POLICIES = "/api/v1/policies"
TOKENS = "/api/v1/tokens"  # admins only
HEADER = "package crucible\n\nimport rego.v1\n\n"

CORP_ONLY = """
deny contains "only corp.example accounts may sign in" if {
	not endswith(input.crucible.login.email, "@corp.example")
}
"""
DENY_ALL = 'deny contains "nobody signs in today" if true\n'
ADMINS_AS_VIEWERS = 'role := "viewer" if input.crucible.login.role == "admin"\n'
BROKEN = 'role := "superuser"\n'  # compiles; not a role, so every evaluation is an error


class CountingEngine:
    """The configured engine, counting the policies it evaluates (no ``evaluate_many``: one
    call per policy)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def evaluate(self, source, input, *, timeout_seconds=5.0):
        self.calls += 1
        return self.inner.evaluate(source, input, timeout_seconds=timeout_seconds)

    def compile(self, source):
        return self.inner.compile(source)

    def builtins_used_unsupported(self, source):
        return self.inner.builtins_used_unsupported(source)


@pytest.fixture
def engine(monkeypatch) -> CountingEngine:
    counting = CountingEngine(policy_service.engine_for(None))
    monkeypatch.setattr(login_policies, "engine_for", lambda _settings: counting)
    return counting


@pytest.fixture
def policy_admin(world, as_actor):
    """An admin signed in before any login policy exists, to manage them."""
    return as_actor(world.user(Role.admin, email="root@corp.example"))


def _policy(api, name: str, rules: str, **fields) -> dict:
    created = api.post(POLICIES, json={"name": name, "type": "login", "body": HEADER + rules, **fields})
    assert created.status_code == 201, created.text
    return created.json()


def _login(app, user, *, password: str | None = None, form: bool = False):
    """A fresh browser's login; returns (response, client) — the client keeps the cookie."""
    client = TestClient(app)
    creds = {"email": user.email, "password": password or user.password}
    if form:
        response = client.post(LOGIN, data={**creds, "next": "/runs"}, follow_redirects=False)
    else:
        response = client.post(LOGIN, json=creds)
    return response, client


def _sessions(world, user_id: str) -> list[UserSession]:
    with world.ctx.session() as s:
        return list(s.exec(select(UserSession).where(UserSession.user_id == user_id)).all())


def _events(world, action: str) -> list:
    return [e for e in world.audit_events() if e.action == action]


# ----------------------------------------------------------------------------- deny


def test_a_deny_refuses_a_json_login_and_creates_no_session(world, app, policy_admin):
    policy = _policy(policy_admin, "corp accounts only", CORP_ONLY)
    outsider = world.user(Role.member, email="eve@elsewhere.example", login=False)

    response, client = _login(app, outsider)
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "login denied by policy: only corp.example accounts may sign in"}
    assert "set-cookie" not in response.headers
    assert client.get(ME).status_code == 401
    assert _sessions(world, outsider.id) == []

    (event,) = _events(world, "auth.login_denied")
    assert (event.resource_id, event.actor, event.ip) == (outsider.id, outsider.email, "testclient")
    assert event.after["messages"] == ["only corp.example accounts may sign in"]
    (decided,) = event.after["policies"]
    assert decided["id"] == policy["id"] and decided["name"] == "corp accounts only"
    assert (decided["version"], decided["outcome"], decided["error"]) == (1, "deny", None)
    assert not [e for e in _events(world, "auth.login") if e.resource_id == outsider.id]

    insider = world.user(Role.member, email="ann@corp.example", login=False)
    response, client = _login(app, insider)
    assert response.status_code == 200, response.text
    assert client.get(ME).json()["role"] == "member"
    (allowed,) = [e for e in _events(world, "auth.login") if e.resource_id == insider.id]
    assert allowed.after["membership_role"] == "member" and allowed.after["role"] is None
    assert [(p["name"], p["outcome"]) for p in allowed.after["policies"]] == [("corp accounts only", "allow")]


def test_a_deny_sends_the_form_back_with_a_code_not_the_message(world, app, policy_admin):
    _policy(policy_admin, "corp accounts only", CORP_ONLY)
    outsider = world.user(Role.member, email="eve@elsewhere.example", login=False)

    response, client = _login(app, outsider, form=True)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"error": ["denied"], "next": ["/runs"]}
    assert "set-cookie" not in response.headers
    assert client.get(ME).status_code == 401
    assert _sessions(world, outsider.id) == []
    assert len(_events(world, "auth.login_denied")) == 1


def test_the_login_page_has_its_own_words_for_policy_refusals():
    from state.login import ERRORS

    assert "login policy refused" in ERRORS["denied"] and "administrator" in ERRORS["denied"]
    assert "could not be checked" in ERRORS["policy_error"]


def test_refused_logins_still_count_against_the_account_limit(world, app, policy_admin):
    _policy(policy_admin, "closed", DENY_ALL)
    user = world.user(Role.member, login=False)
    limit = world.ctx.settings.login_max_failures_per_account
    for _ in range(limit):
        assert _login(app, user)[0].status_code == 403
    over = _login(app, user)[0]
    assert over.status_code == 429 and "Retry-After" in over.headers


# ----------------------------------------------------------------------------- role


def test_a_policy_role_holds_for_the_session_and_a_new_login_without_it_is_admin_again(
    world, app, policy_admin
):
    policy = _policy(policy_admin, "admins as viewers", ADMINS_AS_VIEWERS)
    boss = world.user(Role.admin, login=False)

    response, downgraded = _login(app, boss)
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "viewer"
    assert downgraded.get(ME).json()["role"] == "viewer"
    refused = downgraded.get(TOKENS)
    assert refused.status_code == 403, refused.text
    assert "requires the admin role; you are viewer" in refused.json()["detail"]
    assert [s.role for s in _sessions(world, boss.id)] == ["viewer"]
    (event,) = [e for e in _events(world, "auth.login") if e.resource_id == boss.id]
    assert (event.after["membership_role"], event.after["role"]) == ("admin", "viewer")
    assert event.after["policies"][0]["role"] == "viewer"

    off = policy_admin.put(f"{POLICIES}/{policy['id']}", json={"enabled": False})
    assert off.status_code == 200, off.text
    response, restored = _login(app, boss)
    assert response.json()["role"] == "admin"
    assert restored.get(TOKENS).status_code == 200
    assert downgraded.get(TOKENS).status_code == 403  # the earlier session keeps its role


def test_when_policies_disagree_the_lowest_role_wins(world, app, policy_admin):
    _policy(policy_admin, "a admin", 'role := "admin"\n')
    _policy(policy_admin, "b viewer", 'role := "viewer"\n')
    _policy(policy_admin, "c member", 'role := "member"\n')
    _policy(policy_admin, "d silent", 'warn contains "noted" if true\n')
    user = world.user(Role.member, login=False)

    response, client = _login(app, user)
    assert response.status_code == 200, response.text
    assert client.get(ME).json()["role"] == "viewer"
    (event,) = [e for e in _events(world, "auth.login") if e.resource_id == user.id]
    roles = {p["name"]: p["role"] for p in event.after["policies"]}
    assert roles == {"a admin": "admin", "b viewer": "viewer", "c member": "member", "d silent": None}
    assert event.after["role"] == "viewer"


def test_policies_see_the_documented_input(world, app, policy_admin):
    _policy(policy_admin, "echo", "deny contains input.crucible if true\n")  # a message as JSON
    user = world.user(Role.admin, email="ops@corp.example", login=False)

    response, _client = _login(app, user)
    assert response.status_code == 403, response.text
    seen = json.loads(response.json()["detail"].removeprefix("login denied by policy: "))
    login = seen["login"]
    assert {k: login[k] for k in ("user_id", "email", "role", "ip", "user_agent")} == {
        "user_id": user.id,
        "email": "ops@corp.example",
        "role": "admin",
        "ip": "testclient",
        "user_agent": "testclient",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", login["time"])
    at = datetime.fromisoformat(login["time"].replace("Z", "+00:00"))
    assert (login["weekday"], login["hour"]) == (at.strftime("%A"), at.hour)
    with world.ctx.session() as s:
        org_name = world.ctx.auth.ensure_default_org(s).name
    assert seen["organization"] == {"id": world.org_id, "name": org_name}


# ----------------------------------------------------------------------------- failing closed


def test_a_broken_policy_refuses_logins_until_the_cli_disables_it(
    world, app, policy_admin, settings, monkeypatch
):
    broken = _policy(policy_admin, "broken", BROKEN)
    _policy(policy_admin, "fine", 'role := "member"\n')
    user = world.user(Role.admin, login=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger(login_policies.__name__).addHandler(handler)
    try:
        response, client = _login(app, user)
        form, _ = _login(app, user, form=True)
    finally:
        logging.getLogger(login_policies.__name__).removeHandler(handler)

    assert response.status_code == 403, response.text
    assert response.json()["detail"] == (
        "login refused: a login policy could not be evaluated ('broken'); ask an administrator"
    )
    assert client.get(ME).status_code == 401 and _sessions(world, user.id) == []
    assert parse_qs(urlsplit(form.headers["location"]).query)["error"] == ["policy_error"]
    event = _events(world, "auth.login_denied")[0]
    outcomes = {p["name"]: p for p in event.after["policies"]}
    assert outcomes["broken"]["outcome"] == "error"
    assert "could not be evaluated" in outcomes["broken"]["error"]
    assert "superuser" in outcomes["broken"]["error"]
    assert outcomes["fine"]["outcome"] == "allow"
    line = next(r.getMessage() for r in records if r.levelno == logging.WARNING)
    assert "'broken'" in line and broken["id"] in line and "crucible policies disable" in line

    # The way back in needs the server's configuration, not a login.
    monkeypatch.setenv("CRUCIBLE_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("CRUCIBLE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CRUCIBLE_SECRET_KEY", settings.effective_secret_key())
    monkeypatch.setattr("backend.logging_setup.configure_logging", lambda *a, **k: None)
    result = CliRunner().invoke(cli.app, ["policies", "disable", "BROKEN"])
    assert result.exit_code == 0, result.output
    assert f"disabled policy 'broken' ({broken['id']}, login)" in result.output
    again = CliRunner().invoke(cli.app, ["policies", "disable", broken["id"]])
    assert again.exit_code == 0 and "already disabled" in again.output
    missing = CliRunner().invoke(cli.app, ["policies", "disable", "no-such-policy"])
    assert missing.exit_code == 2 and "no policy has the id or name" in missing.output
    listed = CliRunner().invoke(cli.app, ["policies", "list", "--type", "login"])
    assert listed.exit_code == 0
    assert re.search(rf"{broken['id']}\s+\S+\s+login\s+disabled\s+broken", listed.output), listed.output

    (change,) = [e for e in _events(world, "policy.update") if e.resource_id == broken["id"]]
    assert (change.actor, change.actor_type) == ("system", "system")
    assert change.before["enabled"] is True and change.after["enabled"] is False
    response, client = _login(app, user)
    assert response.status_code == 200, response.text
    assert client.get(ME).json()["role"] == "member"  # "fine" still decides


def test_no_engine_fails_closed(world, app, policy_admin, monkeypatch):
    _policy(policy_admin, "any", 'role := "member"\n')
    user = world.user(Role.member, login=False)

    def unavailable(_settings):
        raise policy_service.PolicyEngineUnavailable("no policy engine is available: none installed")

    monkeypatch.setattr(login_policies, "engine_for", unavailable)
    response, _client = _login(app, user)
    assert response.status_code == 403
    assert "could not be evaluated ('any')" in response.json()["detail"]
    (event,) = _events(world, "auth.login_denied")
    assert "none installed" in event.after["policies"][0]["error"]


# ----------------------------------------------------------------------------- what is not evaluated


def test_a_disabled_policy_is_not_evaluated(world, app, policy_admin, engine):
    _policy(policy_admin, "closed", DENY_ALL, enabled=False)
    user = world.user(Role.member, login=False)
    response, _client = _login(app, user)
    assert response.status_code == 200, response.text
    assert engine.calls == 0
    (event,) = [e for e in _events(world, "auth.login") if e.resource_id == user.id]
    assert event.after is None  # no policy decided anything


def test_a_wrong_password_never_reaches_a_policy(world, app, policy_admin, engine):
    _policy(policy_admin, "closed", DENY_ALL)
    user = world.user(Role.member, login=False)
    disabled = world.user(Role.member, login=False)
    with world.ctx.session() as s:
        s.get(User, disabled.id).disabled = True

    wrong, _ = _login(app, user, password="not the password")
    nobody = TestClient(app).post(LOGIN, json={"email": "nobody@corp.example", "password": "x" * 12})
    off, _ = _login(app, disabled)
    for response in (wrong, nobody, off):
        assert response.status_code == 401
        assert response.json() == {"detail": "invalid email or password"}
    assert engine.calls == 0
    assert _events(world, "auth.login_denied") == []

    right, _ = _login(app, user)
    assert right.status_code == 403 and engine.calls == 1


def test_without_login_policies_logins_are_unchanged(world, app, policy_admin, engine):
    other = world.new_org()
    other_admin = world.user(Role.admin, other)
    api = TestClient(app, headers=other_admin.headers)
    _policy(api, "closed elsewhere", DENY_ALL)  # another organization's policy
    _policy(policy_admin, "a run policy", 'deny contains "x" if true\n', type="post_plan")
    user = world.user(Role.admin, login=False)

    response, client = _login(app, user)
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    assert client.get(TOKENS).status_code == 200
    assert engine.calls == 0
    assert [s.role for s in _sessions(world, user.id)] == [None]
    (event,) = [e for e in _events(world, "auth.login") if e.resource_id == user.id]
    assert event.after is None and event.before is None
    api.close()
