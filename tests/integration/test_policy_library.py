"""The starter library over REST: listing, one-click install, names, roles and audit."""

from __future__ import annotations

import json

import pytest
from policy_support import FIXTURES, PLAN_DESTROY
from sqlmodel import select

from backend.auth.models import Role
from backend.policies import library
from backend.policies.models import Policy

LIBRARY = "/api/v1/policies/library"
SLUGS = [p.slug for p in library.LIBRARY]


def install(slug: str) -> str:
    return f"{LIBRARY}/{slug}/install"


def _policy_names(world) -> list[str]:
    with world.ctx.session() as s:
        return sorted(s.exec(select(Policy.name)).all())


def test_the_library_lists_seven_policies_with_their_rego(as_actor, viewer):
    response = as_actor(viewer).get(LIBRARY)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["count"] == 7 == len(listing["data"])
    assert [p["slug"] for p in listing["data"]] == SLUGS
    by_slug = {p["slug"]: p for p in listing["data"]}
    assert set(SLUGS) == {
        "no_destroy_outside_destroy_runs",
        "blast_radius",
        "required_tags",
        "allowed_instance_types",
        "no_public_buckets",
        "approval_above_n_changes",
        "business_hours_applies",
    }
    for item in listing["data"]:
        assert set(item) == {"slug", "name", "description", "type", "body"}
        assert item["body"] == library.source(item["slug"]) and item["body"].startswith("# ")
        assert "package crucible" in item["body"]
        assert 20 < len(item["description"]) <= 2000 and item["name"]
    assert by_slug["approval_above_n_changes"]["type"] == "approval"
    assert by_slug["business_hours_applies"]["type"] == "pre_apply"
    assert by_slug["blast_radius"]["type"] == "post_plan"
    # Each description names the constants to edit, and they are in the Rego.
    assert "`max_changes`" in by_slug["blast_radius"]["description"]
    assert "max_changes := 50" in by_slug["blast_radius"]["body"]


def test_the_library_needs_a_login(client):
    assert client.get(LIBRARY).status_code == 401


def test_install_creates_an_enabled_policy_attached_to_nothing(as_actor, admin, world):
    api = as_actor(admin)
    stack = world.stack(labels=["env:prod"])
    response = api.post(install("no_destroy_outside_destroy_runs"))
    assert response.status_code == 201, response.text
    policy = response.json()
    item = library.get("no_destroy_outside_destroy_runs")
    assert item is not None
    assert policy["name"] == item.name == "No destroy outside destroy runs"
    assert policy["body"] == item.body and policy["type"] == "post_plan"
    assert policy["description"] == item.description
    assert policy["enabled"] is True and policy["applies_to_all"] is False and policy["labels"] == []
    assert policy["version"] == 1 and policy["created_by"] == admin.email
    assert api.get(f"/api/v1/policies/{policy['id']}").json() == policy
    assert api.get(f"/api/v1/stacks/{stack['id']}/policies").json() == {"data": [], "count": 0}
    events = [e for e in world.audit_events() if e.action.startswith("policy.")]
    assert [(e.action, e.resource_id, e.actor) for e in events] == [
        ("policy.create", policy["id"], admin.email)
    ]
    assert events[0].after["body"] == item.body and events[0].after["name"] == item.name

    # It decides as the corpus says once evaluated: a tracked run's deletes are denied.
    plan = json.loads((FIXTURES / PLAN_DESTROY).read_text())
    decision = api.post(
        "/api/v1/policies/evaluate",
        json={"policy_id": policy["id"], "input": {**plan, "crucible": {"run": {"type": "tracked"}}}},
    ).json()
    assert len(decision["deny"]) == 6 and "only destroy runs may delete resources" in decision["deny"][0]


def test_every_library_policy_installs(as_actor, admin, world):
    api = as_actor(admin)
    for slug in SLUGS:
        response = api.post(install(slug), json={})
        assert response.status_code == 201, (slug, response.text)
        assert response.json()["type"] == library.get(slug).type.value
    assert _policy_names(world) == sorted(p.name for p in library.LIBRARY)


def test_a_taken_name_is_409_with_a_free_name_to_use(as_actor, admin, world):
    api = as_actor(admin)
    assert api.post(install("blast_radius")).status_code == 201
    taken = api.post(install("blast_radius"))
    assert taken.status_code == 409
    detail = taken.json()["detail"]
    assert "'Blast radius limit' already exists" in detail and '{"name": "Blast radius limit 2"}' in detail
    # Names are unique ignoring case, as for any policy.
    assert api.post(install("blast_radius"), json={"name": "BLAST RADIUS LIMIT"}).status_code == 409
    renamed = api.post(install("blast_radius"), json={"name": "Blast radius limit 2"})
    assert renamed.status_code == 201 and renamed.json()["name"] == "Blast radius limit 2"
    assert '"Blast radius limit 3"' in api.post(install("blast_radius")).json()["detail"]
    custom = api.post(install("blast_radius"), json={"name": "  prod blast radius "})
    assert custom.status_code == 201 and custom.json()["name"] == "prod blast radius"
    assert _policy_names(world) == ["Blast radius limit", "Blast radius limit 2", "prod blast radius"]


def test_names_are_per_organization(as_actor, admin, world, other_org):
    assert as_actor(admin).post(install("required_tags")).status_code == 201
    assert as_actor(world.user(Role.admin, other_org)).post(install("required_tags")).status_code == 201


@pytest.mark.parametrize("slug", ["no_such_policy", "No-Destroy", "x" * 100])
def test_an_unknown_slug_is_404_naming_the_library(as_actor, admin, world, slug):
    response = as_actor(admin).post(install(slug))
    assert response.status_code == 404
    assert f"no policy {slug!r}" in response.json()["detail"] and "blast_radius" in response.json()["detail"]
    assert _policy_names(world) == []


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"name": "bad/name"}, ["body", "name"]),
        ({"name": "x" * 101}, ["body", "name"]),
        ({"name": "ok", "enabled": False}, ["body", "enabled"]),
        ([], ["body"]),
    ],
)
def test_install_rejects_bad_bodies(as_actor, admin, world, payload, loc):
    response = as_actor(admin).post(install("blast_radius"), json=payload)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][: len(loc)] == loc
    assert _policy_names(world) == []


def test_only_admins_install(as_actor, viewer, member, world):
    for actor in (viewer, member):
        refused = as_actor(actor).post(install("blast_radius"))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert as_actor(world.token(Role.member)).post(install("blast_radius")).status_code == 403
    assert as_actor(world.token(Role.admin)).post(install("blast_radius")).status_code == 201
    assert _policy_names(world) == ["Blast radius limit"]


def test_the_library_routes_do_not_shadow_policy_ids(as_actor, admin):
    api = as_actor(admin)
    created = api.post(install("no_public_buckets")).json()
    assert api.get(f"/api/v1/policies/{created['id']}").status_code == 200
    assert api.get("/api/v1/policies").json()["count"] == 1
    assert api.get("/api/v1/policies/librar").status_code == 422  # not a policy id
