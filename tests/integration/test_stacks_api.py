"""Stacks over REST: CRUD, search and paging, field-level validation, isolation, audit, atomicity."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from backend.audit import service as audit_service
from backend.auth.models import Role
from backend.stacks.models import Stack, StackLabel
from backend.stacks.schemas import NON_NULLABLE

STACKS = "/api/v1/stacks"
SNAPSHOT_KEYS = {
    "id",
    "name",
    "description",
    "repository_url",
    "branch",
    "project_root",
    "playbook",
    "tool",
    "tool_version",
    "runner",
    "runner_image",
    "auto_apply",
    "labels",
    "vcs_provider",
    "vcs_base_url",
    "vcs_token_set",
    "trigger_paths",
    "skip_message_patterns",
    "skip_actors",
}


@pytest.fixture
def api(as_actor, admin) -> TestClient:
    return as_actor(admin)


def _stack_events(world, stack_id: str) -> list:
    return [e for e in world.audit_events() if e.resource_id == stack_id]


def _db_stack(world, stack_id: str) -> tuple[Stack | None, list[str]]:
    with world.ctx.session() as s:
        labels = s.exec(select(StackLabel.label).where(StackLabel.stack_id == stack_id)).all()
        return s.get(Stack, stack_id), sorted(labels)


def _error_fields(response) -> list[tuple[Any, ...]]:
    assert response.status_code == 422, response.text
    return [tuple(err["loc"]) for err in response.json()["detail"]]


# ----------------------------------------------------------------------------- CRUD


def test_create_fills_defaults_and_can_be_read_back(api, admin, stack_body):
    response = api.post(STACKS, json=stack_body(labels=["env:prod", "team/net", "env:prod", " "]))
    assert response.status_code == 201, response.text
    stack = response.json()
    assert stack["id"].startswith("stk-")
    assert stack["branch"] == "main" and stack["project_root"] == "" and stack["runner"] == "local"
    assert stack["auto_apply"] is False and stack["tool_version"] is None and stack["runner_image"] is None
    assert stack["labels"] == ["env:prod", "team/net"]  # duplicates and blanks dropped
    assert stack["created_by"] == admin.email
    assert stack["created_at"] == stack["updated_at"] and stack["created_at"].endswith("Z")
    assert api.get(f"{STACKS}/{stack['id']}").json() == stack


def test_create_normalises_whitespace_and_paths(api, stack_body):
    body = stack_body(
        name="  spaced name  ",
        branch=" release/1.x ",
        project_root="./envs\\prod/",
        tool_version="",
        runner_image="  ",
    )
    stack = api.post(STACKS, json=body).json()
    assert stack["name"] == "spaced name"
    assert stack["branch"] == "release/1.x"
    assert stack["project_root"] == "envs/prod"
    assert stack["tool_version"] is None and stack["runner_image"] is None


def test_patch_changes_only_the_given_fields(api, world):
    original = world.stack(labels=["a"], tool_version="1.8.2", runner_image="ghcr.io/acme/runner:1")
    response = api.patch(f"{STACKS}/{original['id']}", json={"branch": "dev", "labels": ["b", "c"]})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["branch"] == "dev" and patched["labels"] == ["b", "c"]
    unchanged = {k: v for k, v in original.items() if k not in ("branch", "labels", "updated_at")}
    assert {k: patched[k] for k in unchanged} == unchanged
    assert patched["updated_at"] > original["updated_at"]
    assert api.get(f"{STACKS}/{original['id']}").json() == patched


def test_patch_null_clears_optional_fields(api, world):
    stack = world.stack(tool_version="1.8.2", runner_image="ghcr.io/acme/runner:1")
    patched = api.patch(f"{STACKS}/{stack['id']}", json={"tool_version": None, "runner_image": None}).json()
    assert patched["tool_version"] is None and patched["runner_image"] is None


def test_patch_without_changes_writes_nothing(api, world):
    stack = world.stack(labels=["x"])
    events = world.audit_count()
    response = api.patch(f"{STACKS}/{stack['id']}", json={"name": stack["name"], "labels": ["x"]})
    assert response.status_code == 200
    assert response.json()["updated_at"] == stack["updated_at"]
    assert world.audit_count() == events


def test_delete_removes_stack_and_labels(api, world):
    stack = world.stack(labels=["a", "b"])
    assert api.delete(f"{STACKS}/{stack['id']}").status_code == 204
    assert api.get(f"{STACKS}/{stack['id']}").status_code == 404
    assert _db_stack(world, stack["id"]) == (None, [])
    assert api.delete(f"{STACKS}/{stack['id']}").status_code == 404


def test_unknown_and_malformed_ids_are_404_and_422(api):
    assert api.get(f"{STACKS}/stk-0123456789abcdef").status_code == 404
    assert _error_fields(api.get(f"{STACKS}/not-an-id")) == [("path", "stack_id")]


# ----------------------------------------------------------------------------- listing


@pytest.fixture
def catalog(world) -> dict[str, dict]:
    # Names sort the same under C and natural-language collations.
    specs = {
        "net-prod": {"tool": "opentofu", "labels": ["env:prod", "team:net"], "description": "Core VPC"},
        "net-dev": {"tool": "opentofu", "labels": ["env:dev", "team:net"]},
        "db-prod": {
            "tool": "terraform",
            "labels": ["env:prod"],
            "repository_url": "git@github.com:acme/db.git",
        },
        "legacy": {"tool": "ansible", "labels": [], "description": "100% hand-made"},
        "edge": {"tool": "pulumi", "labels": ["env:prod"], "description": "CDN for NET traffic"},
    }
    return {name: world.stack(name=name, **spec) for name, spec in specs.items()}


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [s["name"] for s in response.json()["data"]]


def test_list_is_sorted_by_name_with_total_count(api, catalog):
    body = api.get(STACKS).json()
    assert body["count"] == len(catalog)
    assert [s["name"] for s in body["data"]] == sorted(catalog)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("net", ["edge", "net-dev", "net-prod"]),  # name or description, any case
        ("EDGE", ["edge"]),
        ("vpc", ["net-prod"]),
        ("acme/db", ["db-prod"]),  # repository URL
        ("%", ["legacy"]),  # LIKE wildcards are taken literally
        ("t_prod", []),
        ("nothing-matches", []),
    ],
)
def test_search(api, catalog, q, expected):
    assert _names(api.get(STACKS, params={"q": q})) == expected


def test_search_index_follows_renames_edits_and_deletes(api, catalog):
    net_prod = catalog["net-prod"]["id"]
    assert (
        api.patch(
            f"{STACKS}/{net_prod}", json={"name": "backbone", "description": "core routers"}
        ).status_code
        == 200
    )
    assert _names(api.get(STACKS, params={"q": "backbone"})) == ["backbone"]
    assert _names(api.get(STACKS, params={"q": "vpc"})) == []  # the old description is gone
    assert _names(api.get(STACKS, params={"q": "routers"})) == ["backbone"]
    assert api.delete(f"{STACKS}/{net_prod}").status_code == 204
    assert _names(api.get(STACKS, params={"q": "backbone"})) == []
    assert api.get(STACKS, params={"q": "net"}).json()["count"] == 2


def test_filter_by_tool_and_label_combine(api, catalog):
    assert _names(api.get(STACKS, params={"tool": "opentofu"})) == ["net-dev", "net-prod"]
    assert _names(api.get(STACKS, params={"label": "env:prod"})) == ["db-prod", "edge", "net-prod"]
    assert _names(api.get(STACKS, params={"label": "env:prod", "tool": "opentofu", "q": "net"})) == [
        "net-prod"
    ]
    assert _names(api.get(STACKS, params={"label": "env"})) == []  # exact label, not a prefix
    assert _error_fields(api.get(STACKS, params={"tool": "make"})) == [("query", "tool")]


def test_pagination_pages_through_everything_once(api, catalog):
    seen = []
    for offset in range(0, 6, 2):
        body = api.get(STACKS, params={"limit": 2, "offset": offset}).json()
        assert body["count"] == 5  # the total, not the page size
        seen += [s["name"] for s in body["data"]]
    assert seen == sorted(catalog)
    assert api.get(STACKS, params={"limit": 2, "offset": 10}).json() == {"data": [], "count": 5}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "ten"}, "limit"),
        ({"q": "x" * 101}, "q"),
        ({"label": "x" * 65}, "label"),
    ],
)
def test_list_rejects_bad_query_parameters(api, params, field):
    assert _error_fields(api.get(STACKS, params=params)) == [("query", field)]


# ----------------------------------------------------------------------------- validation

INVALID_CREATE = [
    ("empty name", {"name": ""}, "name"),
    ("blank name", {"name": "   "}, "name"),
    ("name with slash", {"name": "a/b"}, "name"),
    ("name too long", {"name": "n" * 101}, "name"),
    ("ftp url", {"repository_url": "ftp://example.com/repo.git"}, "repository_url"),
    ("javascript url", {"repository_url": "javascript:alert(1)"}, "repository_url"),
    ("relative file url", {"repository_url": "file://relative/path"}, "repository_url"),
    ("url without host", {"repository_url": "https:///org/repo"}, "repository_url"),
    ("url with space", {"repository_url": "https://example.com/a repo"}, "repository_url"),
    ("empty url", {"repository_url": ""}, "repository_url"),
    ("branch a..b", {"branch": "a..b"}, "branch"),
    ("branch starting with dash", {"branch": "-x"}, "branch"),
    ("branch ending .lock", {"branch": "main.lock"}, "branch"),
    ("branch with space", {"branch": "my branch"}, "branch"),
    ("branch with @{", {"branch": "a@{1}"}, "branch"),
    ("empty branch", {"branch": ""}, "branch"),
    ("project_root ../x", {"project_root": "../x"}, "project_root"),
    ("project_root a/../../x", {"project_root": "a/../../x"}, "project_root"),
    ("project_root /abs", {"project_root": "/abs"}, "project_root"),
    ("project_root windows ..", {"project_root": "..\\x"}, "project_root"),
    ("unknown tool", {"tool": "make"}, "tool"),
    ("bad tool version", {"tool_version": "1.0 beta"}, "tool_version"),
    ("bad runner", {"runner": "kubernetes"}, "runner"),
    ("bad image", {"runner_image": "Not An Image"}, "runner_image"),
    ("bad label", {"labels": ["-x"]}, "labels"),
    ("too many labels", {"labels": [f"l{i}" for i in range(51)]}, "labels"),
    ("control chars in description", {"description": "a\x00b"}, "description"),
    ("unknown field", {"owner": "me"}, "owner"),
    ("name of wrong type", {"name": 42}, "name"),
    ("auto_apply as string", {"auto_apply": "yes"}, "auto_apply"),
    ("auto_apply as number", {"auto_apply": 1}, "auto_apply"),
    ("labels as string", {"labels": "env:prod"}, "labels"),
    ("null name", {"name": None}, "name"),
]


@pytest.mark.parametrize(("case", "override", "field"), INVALID_CREATE, ids=[c[0] for c in INVALID_CREATE])
def test_create_rejects_invalid_field(api, world, stack_body, case, override, field):
    events = world.audit_count()
    response = api.post(STACKS, json=stack_body(**override))
    locs = _error_fields(response)
    assert locs[0][:2] == ("body", field), locs
    assert all(err["msg"] for err in response.json()["detail"])
    assert api.get(STACKS).json()["count"] == 0
    assert world.audit_count() == events


def test_create_reports_every_bad_field_at_once(api):
    response = api.post(STACKS, json={"name": "", "repository_url": "ftp://x", "tool": "make", "zzz": 1})
    assert {loc[:2] for loc in _error_fields(response)} == {
        ("body", "name"),
        ("body", "repository_url"),
        ("body", "tool"),
        ("body", "zzz"),
    }


def test_create_requires_name_repository_and_tool(api):
    assert {loc[:2] for loc in _error_fields(api.post(STACKS, json={}))} == {
        ("body", "name"),
        ("body", "repository_url"),
        ("body", "tool"),
    }


def test_malformed_json_is_a_422(api):
    response = api.post(STACKS, content=b"{bad", headers={"content-type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize("field", NON_NULLABLE)
def test_patch_rejects_null_for_required_fields(api, world, field):
    stack = world.stack()
    events = world.audit_count()
    response = api.patch(f"{STACKS}/{stack['id']}", json={field: None})
    assert _error_fields(response) == [("body", field)]
    assert "null" in response.json()["detail"][0]["msg"]
    assert api.get(f"{STACKS}/{stack['id']}").json() == stack
    assert world.audit_count() == events


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"branch": "a..b"}, "branch"),
        ({"project_root": "/etc"}, "project_root"),
        ({"repository_url": "ftp://x/y"}, "repository_url"),
        ({"id": "stk-0000000000000000"}, "id"),
        ({"org_id": "org-0000000000000000"}, "org_id"),
        ({"auto_apply": "true"}, "auto_apply"),
        ({"labels": [1]}, "labels"),
        ({"created_by": "someone"}, "created_by"),
    ],
)
def test_patch_rejects_invalid_and_read_only_fields(api, world, body, field):
    stack = world.stack()
    assert _error_fields(api.patch(f"{STACKS}/{stack['id']}", json=body))[0][:2] == ("body", field)
    assert api.get(f"{STACKS}/{stack['id']}").json() == stack


# ----------------------------------------------------------------------------- names


def test_duplicate_name_on_create_is_a_field_error(api, world, stack_body):
    world.stack(name="shared")
    for name in ("shared", "SHARED", " shared "):
        response = api.post(STACKS, json=stack_body(name=name))
        assert _error_fields(response) == [("body", "name")]
        assert "already exists" in response.json()["detail"][0]["msg"]
    assert api.get(STACKS).json()["count"] == 1


def test_rename_onto_another_stack_is_a_field_error(api, world):
    world.stack(name="taken")
    mine = world.stack(name="mine")
    assert _error_fields(api.patch(f"{STACKS}/{mine['id']}", json={"name": "Taken"})) == [("body", "name")]
    # Changing the case of one's own name is not a clash.
    assert api.patch(f"{STACKS}/{mine['id']}", json={"name": "MINE"}).json()["name"] == "MINE"


def test_same_name_is_fine_in_another_org(world, as_actor, other_org, stack_body):
    world.stack(name="network")
    other_admin = world.user(Role.admin, other_org)
    assert as_actor(other_admin).post(STACKS, json=stack_body(name="network")).status_code == 201


# ----------------------------------------------------------------------------- isolation


def test_orgs_never_see_each_others_stacks(world, as_actor, other_org):
    mine = world.stack(name="mine", labels=["shared-label"])
    theirs = world.stack(other_org, name="theirs", labels=["shared-label"])
    me = as_actor(world.user(Role.admin))
    them = as_actor(world.user(Role.admin, other_org))

    assert _names(me.get(STACKS)) == ["mine"]
    assert _names(them.get(STACKS, params={"label": "shared-label"})) == ["theirs"]
    assert _names(them.get(STACKS, params={"q": "mine"})) == []
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "stolen"}}), ("DELETE", {})):
        response = them.request(method, f"{STACKS}/{mine['id']}", **kwargs)
        assert response.status_code == 404, (method, response.text)
    assert me.get(f"{STACKS}/{mine['id']}").json() == mine
    assert them.get(f"{STACKS}/{theirs['id']}").json() == theirs


# ----------------------------------------------------------------------------- audit


def test_create_update_delete_are_audited_with_before_and_after(api, admin, world, stack_body):
    created = api.post(STACKS, json=stack_body(labels=["a"])).json()
    api.patch(
        f"{STACKS}/{created['id']}", json={"branch": "dev", "description": "changed", "name": created["name"]}
    )
    api.delete(f"{STACKS}/{created['id']}")

    create, update, delete = _stack_events(world, created["id"])
    assert [e.action for e in (create, update, delete)] == ["stack.create", "stack.update", "stack.delete"]
    for event in (create, update, delete):
        assert (event.actor, event.actor_type, event.actor_id) == (admin.email, "user", admin.id)
        assert event.org_id == world.org_id and event.resource_type == "stack"
        assert event.category == "stack"
    assert create.before is None
    assert set(create.after) == SNAPSHOT_KEYS
    assert create.after["labels"] == ["a"] and create.after["name"] == created["name"]
    # Only what changed, old and new.
    assert update.before == {"branch": "main", "description": ""}
    assert update.after == {"branch": "dev", "description": "changed"}
    assert delete.after is None
    assert set(delete.before) == SNAPSHOT_KEYS
    assert delete.before["branch"] == "dev" and delete.before["labels"] == ["a"]


def test_token_actions_are_audited_as_the_token(world, as_actor, stack_body):
    token = world.token(Role.member)
    created = as_actor(token).post(STACKS, json=stack_body()).json()
    assert created["created_by"] == token.label
    (event,) = _stack_events(world, created["id"])
    assert (event.actor, event.actor_type, event.actor_id) == (token.label, "token", token.id)


# ----------------------------------------------------------------------------- all or nothing


def test_rejected_update_changes_nothing(api, world):
    world.stack(name="taken")
    stack = world.stack(name="mine", labels=["keep"])
    events = world.audit_count()
    response = api.patch(
        f"{STACKS}/{stack['id']}", json={"labels": ["new"], "description": "new", "name": "taken"}
    )
    assert response.status_code == 422
    assert api.get(f"{STACKS}/{stack['id']}").json() == stack
    assert world.audit_count() == events


def test_failure_after_writing_rolls_everything_back(world, app, monkeypatch):
    """The mutation and its audit event commit together or not at all."""
    admin = world.user(Role.admin)
    stack = world.stack(labels=["keep"])
    events = world.audit_count()

    def broken_record(*args, **kwargs):
        raise RuntimeError("audit store failed")

    monkeypatch.setattr(audit_service, "record", broken_record)
    with TestClient(app, headers=admin.headers, raise_server_exceptions=False) as api:
        update = api.patch(f"{STACKS}/{stack['id']}", json={"labels": ["new"], "branch": "dev"})
        delete = api.delete(f"{STACKS}/{stack['id']}")
        create = api.post(
            STACKS, json={"name": "new", "repository_url": "https://x.test/r", "tool": "ansible"}
        )
    assert (update.status_code, delete.status_code, create.status_code) == (500, 500, 500)
    assert "audit store failed" not in update.text  # no internals in the response
    monkeypatch.undo()

    row, labels = _db_stack(world, stack["id"])
    assert row is not None and row.branch == "main" and labels == ["keep"]
    with world.ctx.session() as s:
        assert [st.name for st in s.exec(select(Stack)).all()] == [stack["name"]]
    assert world.audit_count() == events


@pytest.mark.parametrize(
    "db_kind",
    [
        "sqlite",
        pytest.param("postgres", marks=[pytest.mark.postgres]),
    ],
)
def test_users_with_long_emails_can_create_stacks(world, as_actor, stack_body, db_kind):
    user = world.user(Role.member, email="platform.engineering.team@infrastructure.example.com")
    response = as_actor(user).post(STACKS, json=stack_body())
    assert response.status_code == 201, response.text
    assert response.json()["created_by"] == user.email
