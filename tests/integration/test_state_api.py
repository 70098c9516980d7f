"""State over REST: versions, download, diff/resources/outputs, lock status and force-unlock,
admin forced upload and rollback — and the service functions the UI calls directly. Every test
runs on SQLite + filesystem store and on PostgreSQL + S3 (moto's server)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from backend.auth.models import Role
from backend.state import service as state_service
from backend.state.models import StateLock
from tests.integration.test_state_protocol import (
    LOST,
    TerraformClient,
    failing_next_commit,
    lock_info,
    new_token,
    paired_store_settings,
    state_events,
    state_objects,
    tf_state,
    versions,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
SENSITIVE_VALUES = ("st4te-pw-initial", "st4te-pw-rotated")


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, db_kind: str) -> dict[str, Any]:
    return paired_store_settings(request, db_kind)


@pytest.fixture
def stack_id(world) -> str:
    return world.stack(name="net-prod")["id"]


@pytest.fixture
def tf(client, world, stack_id) -> TerraformClient:
    return TerraformClient(client, stack_id, new_token(world, stack_id))


@pytest.fixture
def admin_api(as_actor, admin):
    return as_actor(admin)


@pytest.fixture
def member_api(as_actor, member):
    return as_actor(member)


@pytest.fixture
def viewer_api(as_actor, viewer):
    return as_actor(viewer)


def base(stack_id: str) -> str:
    return f"/api/v1/stacks/{stack_id}/state"


def test_the_object_store_goes_with_the_database(ctx, db_kind):
    assert ctx.settings.object_store == {"sqlite": "filesystem", "postgres": "s3"}[db_kind]


# --------------------------------------------------------------------------- versions


def test_versions_are_listed_newest_first_with_paging(tf, viewer_api, stack_id):
    for serial in (1, 2, 5):
        assert tf.put(tf_state(serial, resources=serial)).status_code == 200
    listed = viewer_api.get(f"{base(stack_id)}/versions").json()
    assert listed["count"] == 3
    assert [v["serial"] for v in listed["data"]] == [5, 2, 1]
    assert [v["current"] for v in listed["data"]] == [True, False, False]
    newest = listed["data"][0]
    assert newest["resource_count"] == 5 and newest["lineage"] == "5e1f0c2a-lineage"
    assert newest["sha256"] == hashlib.sha256(tf_state(5, resources=5)).hexdigest()
    assert newest["created_by"] == "stack-token:t-write" and newest["created_at"].endswith("Z")
    page = viewer_api.get(f"{base(stack_id)}/versions", params={"limit": 1, "offset": 1}).json()
    assert [v["serial"] for v in page["data"]] == [2] and page["count"] == 3

    one = viewer_api.get(f"{base(stack_id)}/versions/2")
    assert one.status_code == 200 and one.json()["serial"] == 2 and one.json()["current"] is False
    missing = viewer_api.get(f"{base(stack_id)}/versions/3")
    assert missing.status_code == 404
    assert "no state version with serial 3" in missing.json()["detail"]
    assert viewer_api.get(f"{base(stack_id)}/versions/-1").status_code == 422


def test_another_orgs_stack_is_404_everywhere(tf, as_actor, world, stack_id, other_org):
    tf.put(tf_state(1))
    outsider = as_actor(world.user(Role.admin, other_org))
    for method, path in [
        ("GET", "/versions"),
        ("GET", "/versions/1"),
        ("GET", "/versions/1/download"),
        ("POST", "/versions/1/rollback"),
        ("GET", "/lock"),
        ("DELETE", "/lock"),
        ("GET", "/resources"),
        ("GET", "/outputs"),
        ("GET", "/diff"),
    ]:
        response = outsider.request(method, base(stack_id) + path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"stack {stack_id} not found"
    forced = outsider.post(f"{base(stack_id)}/versions", params={"force": "true"}, content=tf_state(1))
    assert forced.status_code == 404
    assert len(versions(world, stack_id)) == 1


def test_download_streams_the_bytes_for_members_and_is_audited(tf, member_api, viewer_api, world, stack_id):
    data = tf_state(3, resources=4)
    tf.put(data)
    response = member_api.get(f"{base(stack_id)}/versions/3/download")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == 'attachment; filename="net-prod-3.tfstate"'
    assert response.headers["content-length"] == str(len(data))
    (event,) = [e for e in state_events(world, stack_id) if e.action == "state.download"]
    assert event.after == {"version_id": versions(world, stack_id)[0].id, "serial": 3}

    refused = viewer_api.get(f"{base(stack_id)}/versions/3/download")
    assert refused.status_code == 403
    assert "downloading state requires the member role" in refused.json()["detail"]
    assert member_api.get(f"{base(stack_id)}/versions/4/download").status_code == 404


# --------------------------------------------------------------------------- forced upload, rollback


def test_forced_upload_breaks_the_rules_and_rewrites_the_serial(tf, admin_api, world, stack_id):
    tf.put(tf_state(7))
    foreign = tf_state(2, lineage="imported-from-elsewhere")
    response = admin_api.post(f"{base(stack_id)}/versions", params={"force": "true"}, content=foreign)
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["serial"], version["lineage"], version["forced"], version["current"]) == (
        8,
        "imported-from-elsewhere",
        True,
        True,
    )
    assert version["note"] == "forced upload (serial 2 stored as 8)"

    served = json.loads(tf.get().content)
    assert served["serial"] == 8 and served["lineage"] == "imported-from-elsewhere"
    assert served["resources"] == json.loads(foreign)["resources"]
    # Terraform carries on from there: its next write is serial 9 of the new lineage.
    assert tf.put(tf_state(9, lineage="imported-from-elsewhere")).status_code == 200
    (event,) = [e for e in state_events(world, stack_id) if e.action == "state.upload"]
    assert event.after["forced"] is True and event.after["original_serial"] == 2


def test_upload_without_force_follows_the_protocol_rules(tf, admin_api, stack_id):
    tf.put(tf_state(4))
    url = f"{base(stack_id)}/versions"
    lower = admin_api.post(url, content=tf_state(3))
    assert lower.status_code == 409 and "lower than the current serial 4" in lower.json()["detail"]
    same = admin_api.post(url, content=tf_state(4))
    assert same.status_code == 200 and same.json()["serial"] == 4
    higher = admin_api.post(url, content=tf_state(6))
    assert higher.status_code == 201 and higher.json()["forced"] is False
    assert tf.get().content == tf_state(6)  # stored as sent


def test_upload_refusals(tf, admin_api, member_api, world, stack_id):
    url = f"{base(stack_id)}/versions"
    assert member_api.post(url, params={"force": "true"}, content=tf_state(1)).status_code == 403
    bad = admin_api.post(url, params={"force": "true"}, content=b'{"version": 4}')
    assert bad.status_code == 400 and "field is missing" in bad.json()["detail"]
    assert admin_api.post(url, params={"force": "true"}, content=b"").status_code == 400
    assert tf.lock(lock_info(who="ci")).status_code == 200
    locked = admin_api.post(url, params={"force": "true"}, content=tf_state(1))
    assert locked.status_code == 409 and "locked by ci" in locked.json()["detail"]
    assert versions(world, stack_id) == []


@pytest.mark.parametrize("settings_overrides", [{"state_in_memory_max_bytes": 4096}], indirect=True)
def test_in_memory_paths_refuse_states_over_their_limit(tf, admin_api, stack_id):
    big = tf_state(1, resources=60)
    assert len(big) > 4096
    assert tf.put(big).status_code == 200  # the protocol streams: no such limit
    too_big = admin_api.post(f"{base(stack_id)}/versions", params={"force": "true"}, content=big)
    assert too_big.status_code == 413
    assert "CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES" in too_big.json()["detail"]
    for path in ("/diff", "/resources", "/outputs", "/versions/1/rollback"):
        method = "POST" if path.endswith("rollback") else "GET"
        response = admin_api.request(method, base(stack_id) + path)
        assert response.status_code == 413, (path, response.text)
        assert "CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES" in response.json()["detail"]


def test_rollback_makes_an_old_version_current_under_a_new_serial(tf, admin_api, member_api, world, stack_id):
    for serial in (1, 2, 3):
        tf.put(tf_state(serial, resources=serial))
    assert member_api.post(f"{base(stack_id)}/versions/1/rollback").status_code == 403

    response = admin_api.post(f"{base(stack_id)}/versions/1/rollback")
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["serial"], version["current"], version["note"]) == (4, True, "rollback of serial 1")
    assert version["resource_count"] == 1

    served = json.loads(tf.get().content)
    assert served == {**json.loads(tf_state(1, resources=1)), "serial": 4}
    assert [v.serial for v in versions(world, stack_id)] == [1, 2, 3, 4]
    assert tf.put(tf_state(5)).status_code == 200  # Terraform continues from the rollback
    (event,) = [e for e in state_events(world, stack_id) if e.action == "state.rollback"]
    assert event.after["rolled_back_to"] == 1 and event.after["serial"] == 4

    assert admin_api.post(f"{base(stack_id)}/versions/99/rollback").status_code == 404
    assert tf.lock().status_code == 200
    locked = admin_api.post(f"{base(stack_id)}/versions/2/rollback")
    assert locked.status_code == 409 and "force-unlock first" in locked.json()["detail"]


def test_a_rollback_restores_a_deleted_state(tf, admin_api, stack_id):
    tf.put(tf_state(1))
    tf.delete()
    assert tf.get().status_code == 204
    assert admin_api.post(f"{base(stack_id)}/versions/1/rollback").json()["serial"] == 2
    assert json.loads(tf.get().content)["serial"] == 2


def test_a_failed_rollback_transaction_removes_its_object(tf, admin_api, world, stack_id, monkeypatch):
    tf.put(tf_state(1))
    tf.put(tf_state(2))
    before = state_objects(world, stack_id)

    def boom(*_args, **_kwargs):
        raise state_service.Conflict("simulated failure after the object was written")

    monkeypatch.setattr(state_service, "_prune", boom)
    assert admin_api.post(f"{base(stack_id)}/versions/1/rollback").status_code == 409
    assert state_objects(world, stack_id) == before
    assert [v.serial for v in versions(world, stack_id)] == [1, 2]


@pytest.mark.parametrize("lands", [True, False], ids=["commit-landed", "commit-refused"])
def test_an_upload_whose_commit_fails_keeps_the_object_only_if_it_may_have_landed(
    world, stack_id, admin, monkeypatch, lands
):
    arm = failing_next_commit(monkeypatch, world.ctx.engine, lands=lands)
    limits = state_service.Limits.from_settings(world.ctx.settings)
    with pytest.raises(OperationalError, match=LOST), world.ctx.session() as s:
        who = world.ctx.auth.session_principal(s, admin.session)
        state_service.upload_state(
            s, world.ctx.objects, who, stack_id, tf_state(1), force=False, limits=limits
        )
        arm()
    stored = versions(world, stack_id)
    assert [v.serial for v in stored] == ([1] if lands else [])
    # Landed: its object stays. Refused: an object no version points to may stay (harmless).
    assert set(state_objects(world, stack_id)) >= {v.object_key for v in stored}


# --------------------------------------------------------------------------- lock


def test_lock_status_and_force_unlock(tf, admin_api, member_api, viewer_api, world, stack_id):
    url = f"{base(stack_id)}/lock"
    assert viewer_api.get(url).json() == {"locked": False, "lock": None}
    info = lock_info(who="alice@laptop", operation="OperationTypePlan")
    assert tf.lock(info).status_code == 200

    status = viewer_api.get(url).json()
    assert status["locked"] is True
    lock = status["lock"]
    assert {k: lock[k] for k in info} == info
    assert lock["locked_at"].endswith("Z") and 0 <= lock["age_seconds"] < 60
    assert lock["token_id"].startswith("stt-")

    assert member_api.delete(url).status_code == 403
    released = admin_api.delete(url)
    assert released.status_code == 200
    assert released.json()["unlocked"] is True and released.json()["lock"]["ID"] == info["ID"]
    with world.ctx.session() as s:
        assert s.get(StateLock, stack_id) is None
    (event,) = [e for e in state_events(world, stack_id) if e.action == "state.force_unlock"]
    assert event.before["ID"] == info["ID"] and event.before["Who"] == "alice@laptop"

    again = admin_api.delete(url)  # idempotent, and not audited twice
    assert again.status_code == 200 and again.json() == {"unlocked": False, "lock": None}
    assert len([e for e in state_events(world, stack_id) if e.action == "state.force_unlock"]) == 1
    # The old holder's unlock now finds nothing to do; its next write is not blocked.
    assert tf.unlock().status_code == 200


# --------------------------------------------------------------------------- contents


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _push_fixtures(tf) -> None:
    assert tf.put(_fixture("state-v1.json")).status_code == 200
    assert tf.put(_fixture("state-v2.json")).status_code == 200


def test_diff_between_versions_hides_sensitive_values(tf, viewer_api, stack_id):
    _push_fixtures(tf)
    response = viewer_api.get(f"{base(stack_id)}/diff", params={"from": 10, "to": 19})
    assert response.status_code == 200, response.text
    diff = response.json()
    assert (diff["from_serial"], diff["to_serial"]) == (10, 19)
    assert diff["summary"] == {"added": 3, "changed": 3, "removed": 2, "unchanged": 5}
    assert not any(secret in response.text for secret in SENSITIVE_VALUES)

    default = viewer_api.get(f"{base(stack_id)}/diff").json()  # current vs the one before
    assert (default["from_serial"], default["to_serial"]) == (10, 19)
    first = viewer_api.get(f"{base(stack_id)}/diff", params={"to": 10}).json()
    assert first["from_serial"] is None and first["summary"]["removed"] == 0
    assert viewer_api.get(f"{base(stack_id)}/diff", params={"from": 3}).status_code == 404


def test_resources_and_outputs_of_a_version(tf, viewer_api, stack_id):
    _push_fixtures(tf)
    listed = viewer_api.get(f"{base(stack_id)}/resources").json()
    assert listed["serial"] == 19 and listed["count"] == len(listed["data"]) == 11
    workers = viewer_api.get(
        f"{base(stack_id)}/resources", params={"type": "terraform_data", "address": "worker"}
    ).json()
    assert [r["address"] for r in workers["data"]] == [f"terraform_data.worker[{i}]" for i in range(3)]
    old = viewer_api.get(f"{base(stack_id)}/resources", params={"serial": 10}).json()
    assert old["serial"] == 10
    # Paged: the same order, a page at a time, with every type for the filter each time.
    pages = [
        viewer_api.get(f"{base(stack_id)}/resources", params={"limit": 4, "offset": o}).json()
        for o in (0, 4, 8)
    ]
    assert [len(p["data"]) for p in pages] == [4, 4, 3] and {p["count"] for p in pages} == {11}
    assert [r["address"] for p in pages for r in p["data"]] == [r["address"] for r in listed["data"]]
    assert pages[0]["types"] == sorted({r["type"] for r in listed["data"]})
    assert viewer_api.get(f"{base(stack_id)}/resources", params={"limit": 0}).status_code == 422

    outputs = viewer_api.get(f"{base(stack_id)}/outputs")
    assert outputs.status_code == 200
    body = outputs.json()
    assert body["serial"] == 19 and "db_password" in [o["name"] for o in body["data"]]
    assert not any(secret in outputs.text for secret in SENSITIVE_VALUES)
    assert not any(
        secret in viewer_api.get(f"{base(stack_id)}/resources").text for secret in SENSITIVE_VALUES
    )


def test_contents_of_a_stack_without_state_are_404(viewer_api, tf, stack_id):
    for path in ("/resources", "/outputs", "/diff"):
        response = viewer_api.get(base(stack_id) + path)
        assert response.status_code == 404 and "has no state yet" in response.json()["detail"]
    tf.put(tf_state(1))
    tf.delete()
    deleted = viewer_api.get(f"{base(stack_id)}/outputs")
    assert deleted.status_code == 404 and "deleted at" in deleted.json()["detail"]
    assert viewer_api.get(f"{base(stack_id)}/outputs", params={"serial": 1}).status_code == 200


def test_a_state_the_viewer_cannot_read_is_422_not_500(tf, viewer_api, stack_id):
    v3 = {"version": 3, "serial": 1, "lineage": "old", "modules": [{"path": ["root"], "resources": {}}]}
    assert tf.put(json.dumps(v3).encode()).status_code == 200  # accepted and served back as-is
    response = viewer_api.get(f"{base(stack_id)}/resources")
    assert response.status_code == 422
    assert "cannot be shown" in response.json()["detail"]


# --------------------------------------------------------------------------- the UI's entry points


def test_service_functions_take_a_session_and_a_principal(tf, world, stack_id, admin):
    for serial in (1, 2):
        tf.put(tf_state(serial))
    principal = world.ctx.auth.session_principal
    limits = state_service.Limits.from_settings(world.ctx.settings)
    with world.ctx.session() as s:
        who = principal(s, admin.session)
        data, count = state_service.list_versions(s, who, stack_id, limit=1, offset=0)
        assert count == 2 and [v.serial for v in data] == [2]
        assert state_service.get_version(s, who, stack_id, 1).serial == 1
        assert state_service.lock_status(s, who, stack_id).locked is False
        assert state_service.force_unlock(s, who, stack_id).unlocked is False
        objects = world.ctx.objects
        rolled = state_service.rollback(s, objects, who, stack_id, 1, limits=limits)
        assert rolled.serial == 3
        diff = state_service.diff_versions(s, objects, who, stack_id, 1, 3, limits=limits)
        assert diff["from_serial"] == 1 and diff["has_changes"] is False
        listed = state_service.resources(
            s, objects, who, stack_id, None, "null_resource", None, limits=limits
        )
        assert listed["serial"] == 3 and listed["count"] == 1
        assert [o["name"] for o in state_service.outputs(s, objects, who, stack_id, 2, limits=limits)] == [
            "name"
        ]
