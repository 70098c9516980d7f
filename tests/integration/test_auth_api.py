"""Login (JSON and form), sessions, logout, rate limiting and API tokens."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from backend.auth.models import ApiToken, Membership, Role, User, UserSession
from backend.deps import SESSION_COOKIE
from backend.timeutil import utcnow

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
TOKENS = "/api/v1/tokens"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _session_cookie(response) -> tuple[str, dict[str, str]]:
    """The session cookie's value and its attributes (lower-cased names)."""
    headers = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(headers) == 1, headers
    morsel = SimpleCookie(headers[0])[SESSION_COOKIE]
    raw = headers[0].lower()
    flags = {k: str(v) for k, v in morsel.items() if v}
    flags["httponly"] = "httponly" in raw
    flags["secure"] = "secure" in raw
    return morsel.value, flags


def _session_rows(world, user_id: str) -> list[UserSession]:
    with world.ctx.session() as s:
        return list(s.exec(select(UserSession).where(UserSession.user_id == user_id)).all())


# ----------------------------------------------------------------------------- login


def test_json_login_sets_a_strict_http_only_session_cookie(client, world, settings):
    user = world.user(Role.member, login=False)
    response = client.post(LOGIN, json={"email": user.email.upper(), "password": user.password})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": user.id,
        "kind": "user",
        "label": user.email,
        "org_id": world.org_id,
        "role": "member",
    }
    value, flags = _session_cookie(response)
    assert flags["httponly"] is True
    assert flags["samesite"].lower() == "strict"
    assert flags["path"] == "/"
    assert flags["secure"] is False  # base_url is http://
    assert int(flags["max-age"]) == settings.session_ttl_hours * 3600
    # Only the SHA-256 of the cookie is stored.
    (row,) = _session_rows(world, user.id)
    assert row.id == hashlib.sha256(value.encode()).hexdigest() and value not in row.id
    assert client.get(ME).json()["id"] == user.id  # the client sends the cookie back


@pytest.mark.parametrize("settings_overrides", [{"base_url": "https://crucible.example.com"}], ids=["https"])
def test_cookie_is_secure_behind_https(client, world):
    user = world.user(login=False)
    _value, flags = _session_cookie(client.post(LOGIN, json={"email": user.email, "password": user.password}))
    assert flags["secure"] is True


def test_form_login_redirects_with_the_cookie(client, world):
    user = world.user(Role.viewer, login=False)
    response = client.post(
        LOGIN,
        data={"email": user.email, "password": user.password, "next": "/stacks?tab=runs"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/stacks?tab=runs"
    _value, flags = _session_cookie(response)
    assert flags["httponly"] is True and flags["samesite"].lower() == "strict"
    assert client.get(ME).json()["role"] == "viewer"


@pytest.mark.parametrize(
    "target", ["//evil.example", "https://evil.example/", "/\\evil.example", "stacks", ""]
)
def test_form_login_never_redirects_off_site(client, world, target):
    user = world.user(login=False)
    response = client.post(
        LOGIN, data={"email": user.email, "password": user.password, "next": target}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_form_login_with_bad_password_goes_back_to_the_form(client, world):
    user = world.user(login=False)
    response = client.post(
        LOGIN,
        data={"email": user.email, "password": "wrong password", "next": "/runs"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    query = parse_qs(location.query)
    assert query["error"] == ["invalid"]  # a code: the page owns the wording
    assert query["next"] == ["/runs"]
    assert "set-cookie" not in response.headers
    assert client.get(ME).status_code == 401


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "member@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": "wrong password"},
        {"email": "disabled@example.com", "password": "correct horse battery staple"},
    ],
    ids=["bad password", "unknown user", "disabled user"],
)
def test_failed_json_logins_all_look_the_same(client, world, credentials):
    world.user(Role.member, email="member@example.com", login=False)
    disabled = world.user(Role.member, email="disabled@example.com", login=False)
    with world.ctx.session() as s:
        s.get(User, disabled.id).disabled = True
    response = client.post(LOGIN, json=credentials)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid email or password"}
    assert "set-cookie" not in response.headers


def test_failed_login_of_a_known_user_is_audited(client, world):
    user = world.user(login=False)
    client.post(LOGIN, json={"email": user.email, "password": "wrong password"})
    (event,) = [e for e in world.audit_events() if e.action == "auth.login_failed"]
    assert event.resource_id == user.id and event.ip == "testclient"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"email": "a@b.co"}',
        b'{"email": "a@b.co", "password": "x", "otp": 1}',
        b'{"email": 1, "password": "x"}',
    ],
)
def test_malformed_json_login_is_a_422(client, body):
    response = client.post(LOGIN, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


# ----------------------------------------------------------------------------- sessions


def test_session_is_checked_on_every_request(world, as_actor):
    user = world.user(Role.admin)
    api = as_actor(user)
    assert api.get(ME).status_code == 200
    with world.ctx.session() as s:
        s.get(User, user.id).disabled = True
    assert api.get(ME).status_code == 401
    with world.ctx.session() as s:
        s.get(User, user.id).disabled = False
    assert api.get(ME).status_code == 200
    # Removing the membership ends access to the org at once.
    with world.ctx.session() as s:
        s.delete(s.exec(select(Membership).where(Membership.user_id == user.id)).one())
    assert api.get(ME).status_code == 401


def test_role_change_applies_to_existing_sessions(world, as_actor, stack_body):
    user = world.user(Role.admin)
    api = as_actor(user)
    with world.ctx.session() as s:
        s.exec(select(Membership).where(Membership.user_id == user.id)).one().role = "viewer"
    assert api.get(ME).json()["role"] == "viewer"
    assert api.post("/api/v1/stacks", json=stack_body()).status_code == 403


@pytest.mark.parametrize("cookie", ["", "garbage", "x" * 300])
def test_unknown_session_cookie_is_rejected(client, cookie):
    response = client.get(ME, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_session_is_rejected(world, as_actor):
    user = world.user()
    api = as_actor(user)
    assert api.get(ME).status_code == 200
    with world.ctx.session() as s:
        (row,) = s.exec(select(UserSession).where(UserSession.user_id == user.id)).all()
        row.expires_at = utcnow() - timedelta(seconds=1)
    response = api.get(ME)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_logout_ends_the_session_server_side(client, world):
    user = world.user(login=False)
    value, _ = _session_cookie(client.post(LOGIN, json={"email": user.email, "password": user.password}))
    other_session = world.login(user.email)  # e.g. another browser

    response = client.post("/api/v1/auth/logout")
    assert response.status_code == 204
    cleared = SimpleCookie(response.headers["set-cookie"])[SESSION_COOKIE]
    assert cleared.value == "" or cleared["max-age"] == "0"
    # Replaying the old cookie does not work: the session row is gone.
    assert client.get(ME, headers={"Cookie": f"{SESSION_COOKIE}={value}"}).status_code == 401
    remaining = _session_rows(world, user.id)
    assert [r.id for r in remaining] == [hashlib.sha256(other_session.encode()).hexdigest()]
    assert client.get(ME, headers={"Cookie": f"{SESSION_COOKIE}={other_session}"}).status_code == 200
    assert [e.action for e in world.audit_events()][-1] == "auth.logout"


def test_form_logout_redirects_to_login(world, app):
    user = world.user()
    with TestClient(app, headers=user.headers) as c:
        response = c.post("/api/v1/auth/logout", data={}, headers=FORM, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert c.get(ME).status_code == 401


# ----------------------------------------------------------------------------- rate limits

LOW_LIMITS = {
    "login_max_attempts_per_ip": 3,
    "login_max_failures_per_account": 2,
    "login_window_seconds": 600,
}


def _login(app, email: str, password: str, ip: str = "203.0.113.1", **kwargs):
    with TestClient(app, client=(ip, 40000)) as c:
        return c.post(LOGIN, json={"email": email, "password": password}, **kwargs)


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= LOW_LIMITS["login_window_seconds"]
    assert "try again later" in response.json()["detail"]


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
def test_logins_per_ip_are_limited(world, app):
    users = [world.user(login=False) for _ in range(4)]
    for user in users[:3]:  # successful logins count too
        assert _login(app, user.email, user.password).status_code == 200
    _assert_throttled(_login(app, users[3].email, users[3].password))
    # Another address is not affected.
    assert _login(app, users[3].email, users[3].password, ip="203.0.113.2").status_code == 200


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
def test_failed_logins_per_account_are_limited(world, app):
    victim = world.user(login=False)
    bystander = world.user(login=False)
    assert _login(app, victim.email, "wrong one", ip="203.0.113.1").status_code == 401
    assert _login(app, victim.email, "wrong two", ip="203.0.113.2").status_code == 401
    # Locked from every address, even with the right password...
    _assert_throttled(_login(app, victim.email, victim.password, ip="203.0.113.3"))
    _assert_throttled(_login(app, victim.email.upper(), victim.password, ip="203.0.113.4"))
    # ...while other accounts log in as usual.
    assert _login(app, bystander.email, bystander.password, ip="203.0.113.5").status_code == 200


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
def test_successful_login_resets_the_failure_count(world, app):
    user = world.user(login=False)
    assert _login(app, user.email, "wrong", ip="203.0.113.1").status_code == 401
    assert _login(app, user.email, user.password, ip="203.0.113.2").status_code == 200
    assert _login(app, user.email, "wrong", ip="203.0.113.3").status_code == 401
    assert _login(app, user.email, user.password, ip="203.0.113.4").status_code == 200


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
def test_throttled_form_login_redirects_with_retry_after(world, app):
    user = world.user(login=False)
    for _ in range(3):
        _login(app, user.email, "wrong")
    with TestClient(app, client=("203.0.113.1", 40000)) as c:
        response = c.post(
            LOGIN, data={"email": user.email, "password": user.password}, follow_redirects=False
        )
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["too_many"]
    assert 1 <= int(query["retry_after"][0]) <= LOW_LIMITS["login_window_seconds"]


# ----------------------------------------------------------------------------- tokens


def test_token_is_shown_once_and_only_its_argon2id_hash_is_stored(world, as_actor):
    api = as_actor(world.user(Role.admin))
    created = api.post(TOKENS, json={"name": "ci pipeline", "role": "member"})
    assert created.status_code == 201
    body = created.json()
    secret = body["token"]
    assert secret.startswith("cru_") and len(secret) > 40
    assert body["role"] == "member" and body["name"] == "ci pipeline" and body["revoked_at"] is None

    listed = api.get(TOKENS)
    assert [t["id"] for t in listed.json()["data"]] == [body["id"]]
    assert "token" not in listed.json()["data"][0]
    assert secret not in listed.text and secret[4:] not in listed.text
    with world.ctx.session() as s:
        row = s.get(ApiToken, body["id"])
    assert row.secret_hash.startswith("$argon2id$")
    assert row.prefix == secret[4:16]
    stored = " ".join(str(v) for v in row.model_dump().values())
    assert secret not in stored and secret[16:] not in stored
    assert all(secret not in str(e.after) for e in world.audit_events())


def test_token_authenticates_with_its_own_role(world, as_actor, stack_body):
    token = world.token(Role.viewer)
    api = as_actor(token)
    me = api.get(ME).json()
    assert me == {
        "id": token.id,
        "kind": "token",
        "label": token.label,
        "org_id": world.org_id,
        "role": "viewer",
    }
    assert api.get("/api/v1/stacks").status_code == 200
    assert api.post("/api/v1/stacks", json=stack_body()).status_code == 403
    with world.ctx.session() as s:
        assert s.get(ApiToken, token.id).last_used_at is not None


def test_revocation_is_immediate_even_for_a_cached_token(world, as_actor):
    admin = as_actor(world.user(Role.admin))
    token = world.token(Role.member)
    api = as_actor(token)
    assert api.get(ME).status_code == 200  # verified once: now in the process cache
    assert api.get(ME).status_code == 200
    assert admin.delete(f"{TOKENS}/{token.id}").status_code == 204
    assert api.get(ME).status_code == 401
    listed = admin.get(TOKENS).json()["data"]
    assert listed[0]["id"] == token.id and listed[0]["revoked_at"] is not None
    # Revoking twice is harmless and does not write a second event.
    assert admin.delete(f"{TOKENS}/{token.id}").status_code == 204
    assert [e.action for e in world.audit_events()].count("token.revoke") == 1


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer   ",
        "Token {token}",
        "{token}",
        "Bearer cru_nottherightsecret",
        "Bearer {token}x",
        "Bearer not-a-crucible-token",
        "Bearer cru_" + "a" * 300,
        "Bearer {prefix_only}",
    ],
)
def test_malformed_or_wrong_bearer_is_401(world, client, header):
    token = world.token(Role.admin)
    value = header.format(token=token.token, prefix_only=token.token[:16])
    response = client.get(ME, headers={"Authorization": value})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_bearer_scheme_is_case_insensitive(world, client):
    token = world.token(Role.viewer)
    assert client.get(ME, headers={"Authorization": f"bearer {token.token}"}).status_code == 200


def test_a_bad_bearer_header_is_not_rescued_by_a_session_cookie(world, client):
    user = world.user(Role.admin)
    response = client.get(ME, headers={**user.headers, "Authorization": "Bearer wrong"})
    assert response.status_code == 401


@pytest.mark.parametrize("kind", ["session", "token"])
@pytest.mark.parametrize("role", [Role.viewer, Role.member])
def test_non_admins_cannot_mint_tokens(world, as_actor, kind, role):
    """No escalation: a viewer or member cannot mint a token with more (or any) power."""
    api = as_actor(world.actor(kind, role))
    for wanted in ("viewer", "member", "admin"):
        assert api.post(TOKENS, json={"name": "escalate", "role": wanted}).status_code == 403
    with world.ctx.session() as s:
        assert [t.name for t in s.exec(select(ApiToken)).all() if t.name == "escalate"] == []


def test_admin_token_can_manage_tokens(world, as_actor):
    api = as_actor(world.token(Role.admin))
    created = api.post(TOKENS, json={"name": "child", "role": "admin"})
    assert created.status_code == 201
    assert api.delete(f"{TOKENS}/{created.json()['id']}").status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "role": "owner"}, "role"),
        ({"name": "ok", "scopes": ["all"]}, "scopes"),
        ({"name": "a\x01b"}, "name"),
        ({}, "name"),
    ],
)
def test_token_creation_validates_fields(world, as_actor, body, field):
    response = as_actor(world.user(Role.admin)).post(TOKENS, json=body)
    assert response.status_code == 422
    assert [tuple(e["loc"])[:2] for e in response.json()["detail"]] == [("body", field)]


# ----------------------------------------------------------------------------- users


def test_admin_creates_users_who_can_then_log_in(world, as_actor, client):
    api = as_actor(world.user(Role.admin))
    response = api.post(
        "/api/v1/users",
        json={"email": " New.Person@Example.com ", "password": "long enough pw", "role": "member"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["email"] == "new.person@example.com" and response.json()["role"] == "member"
    login = client.post(LOGIN, json={"email": "new.person@example.com", "password": "long enough pw"})
    assert login.status_code == 200 and login.json()["role"] == "member"
    duplicate = api.post(
        "/api/v1/users", json={"email": "NEW.person@example.com", "password": "long enough pw"}
    )
    assert duplicate.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "long enough pw"}, "email"),
        ({"email": "a@b.co", "password": "short"}, "password"),
        ({"email": "a@b.co", "password": "long enough pw", "role": "root"}, "role"),
    ],
)
def test_user_creation_validates_fields(world, as_actor, body, field):
    response = as_actor(world.user(Role.admin)).post("/api/v1/users", json=body)
    assert response.status_code == 422
    assert [tuple(e["loc"])[:2] for e in response.json()["detail"]] == [("body", field)]


# ----------------------------------------------------------------------------- password change

PASSWORD_URL = "/api/v1/auth/password"


def test_password_change_ends_every_session_and_swaps_the_password(world, as_actor, client):
    user = world.user(Role.member)
    other_browser = world.login(user.email)
    response = as_actor(user).post(
        PASSWORD_URL, json={"current_password": user.password, "new_password": "a brand new password"}
    )
    assert response.status_code == 204
    for cookie in (user.session, other_browser):
        assert client.get(ME, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}).status_code == 401
    assert _session_rows(world, user.id) == []
    assert client.post(LOGIN, json={"email": user.email, "password": user.password}).status_code == 401
    assert (
        client.post(LOGIN, json={"email": user.email, "password": "a brand new password"}).status_code == 200
    )
    assert "user.password_change" in [e.action for e in world.audit_events()]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_password": "not my password", "new_password": "a brand new password"}, "current_password"),
        ({"current_password": "correct horse battery staple", "new_password": "short"}, "new_password"),
        (
            {
                "current_password": "correct horse battery staple",
                "new_password": "correct horse battery staple",
            },
            "new_password",
        ),
    ],
)
def test_rejected_password_change_changes_nothing(world, as_actor, body, field):
    user = world.user(Role.member)
    events = world.audit_count()
    response = as_actor(user).post(PASSWORD_URL, json=body)
    assert response.status_code == 422
    assert [tuple(e["loc"]) for e in response.json()["detail"]] == [("body", field)]
    assert as_actor(user).get(ME).status_code == 200  # still logged in
    assert world.audit_count() == events


def test_tokens_have_no_password_to_change(world, as_actor):
    response = as_actor(world.token(Role.admin)).post(
        PASSWORD_URL, json={"current_password": "x", "new_password": "a brand new password"}
    )
    assert response.status_code == 403


def test_expired_sessions_are_purged_and_live_ones_kept(world):
    stale, fresh = world.user(), world.user()
    with world.ctx.session() as s:
        (row,) = s.exec(select(UserSession).where(UserSession.user_id == stale.id)).all()
        row.expires_at = utcnow() - timedelta(minutes=1)
    with world.ctx.session() as s:
        assert world.ctx.auth.purge_expired_sessions(s) == 1
    assert _session_rows(world, stale.id) == []
    assert len(_session_rows(world, fresh.id)) == 1


# ----------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_deeply_nested_login_body_is_a_client_error(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post(LOGIN, content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)


def test_long_user_agent_does_not_break_mutations(world, as_actor, stack_body):
    user = world.user(Role.member)
    api = as_actor(user)
    response = api.post("/api/v1/stacks", json=stack_body(), headers={"user-agent": "Agent/" + "x" * 400})
    assert response.status_code == 201, response.text
    assert len(world.audit_events()[-1].user_agent) <= 255


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_parallel_guesses_cannot_outrun_the_account_limit(world, app):
    """Attempts count before the slow password check, so a burst from many addresses is capped."""
    from concurrent.futures import ThreadPoolExecutor

    user = world.user(login=False)
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(lambda i: _login(app, user.email, "wrong", ip=f"198.51.100.{i}").status_code, range(8))
        )
    assert codes.count(401) <= LOW_LIMITS["login_max_failures_per_account"], codes
    assert codes.count(429) >= 8 - LOW_LIMITS["login_max_failures_per_account"], codes


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_cross_site_login_is_refused(world, app):
    user = world.user(login=False)
    with TestClient(app) as c:
        evil = c.post(
            LOGIN,
            data={"email": user.email, "password": user.password},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
            follow_redirects=False,
        )
        assert evil.status_code == 403
        assert SESSION_COOKIE not in evil.cookies
        same = c.post(
            LOGIN,
            data={"email": user.email, "password": user.password},
            headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
            follow_redirects=False,
        )
        assert same.status_code == 303 and SESSION_COOKIE in same.cookies


@pytest.mark.parametrize("settings_overrides", [LOW_LIMITS], ids=["low-limits"])
@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_password_change_guesses_are_throttled(world, as_actor):
    user = world.user()
    api = as_actor(user)
    codes = [
        api.post(
            "/api/v1/auth/password", json={"current_password": f"guess-{i}", "new_password": "x" * 12}
        ).status_code
        for i in range(4)
    ]
    assert codes[:2] == [422, 422] and codes[2:] == [429, 429], codes


@pytest.mark.parametrize(
    "settings_overrides", [{**LOW_LIMITS, "trusted_proxies": "10.0.0.0/8"}], ids=["behind-proxy"]
)
@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_behind_a_trusted_proxy_limits_and_audit_use_the_forwarded_address(world, app):
    """Without this, everyone behind the proxy would share one per-IP login budget."""
    users = [world.user(login=False) for _ in range(4)]

    def via_proxy(user, client: str):
        with TestClient(app, client=("10.1.2.3", 40000)) as c:
            return c.post(
                LOGIN,
                json={"email": user.email, "password": user.password},
                headers={"X-Forwarded-For": client},
            )

    for user in users[:3]:
        assert via_proxy(user, "198.51.100.10").status_code == 200
    assert via_proxy(users[3], "198.51.100.10").status_code == 429  # that client's budget is spent
    assert via_proxy(users[3], "198.51.100.11").status_code == 200  # another client behind the proxy
    ips = {e.ip for e in world.audit_events() if e.action == "auth.login"}
    assert ips == {"198.51.100.10", "198.51.100.11"}
