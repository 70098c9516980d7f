"""/health, /metrics, request size limits and request ids."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from backend import __version__
from backend.api import create_api
from backend.auth.models import Role
from backend.context import build_context
from backend.db import make_engine


def _samples(client: TestClient, name: str) -> list:
    text = client.get("/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def _count(client: TestClient, method: str, route: str, status: str) -> float:
    for sample in _samples(client, "crucible_http_requests_total"):
        if sample.labels == {"method": method, "route": route, "status": status}:
            return sample.value
    return 0.0


# ----------------------------------------------------------------------------- health


def test_health_reports_ok_without_credentials(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "database", "version", "uptime_seconds"}
    assert (body["status"], body["database"], body["version"]) == ("ok", "ok", __version__)
    assert isinstance(body["uptime_seconds"], int | float) and body["uptime_seconds"] >= 0


@pytest.fixture
def unreachable_app(settings, db_kind, tmp_path):
    """The app wired to a database that cannot be reached."""
    if db_kind == "sqlite":
        url = f"sqlite:///{tmp_path}/missing-dir/nested/crucible.db"
    else:
        url = settings.sqlalchemy_url.rsplit("/", 1)[0] + "/crucible_database_that_does_not_exist"
    engine = make_engine(url)
    ctx = build_context(settings, engine=engine)
    yield create_api(ctx)
    engine.dispose()


def test_health_is_503_when_the_database_is_unreachable(unreachable_app):
    with TestClient(unreachable_app) as c:
        response = c.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["version"]) == ("degraded", "unreachable", __version__)


def test_api_says_503_not_500_when_the_database_is_unreachable(unreachable_app):
    with TestClient(unreachable_app, raise_server_exceptions=False) as c:
        response = c.get(
            "/api/v1/stacks", headers={"Authorization": "Bearer cru_0123456789abxxxxxxxxxxxxxxxx"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "database" in response.json()["detail"]


# ----------------------------------------------------------------------------- metrics


def test_metrics_use_route_templates_not_raw_ids(world, as_actor, client):
    api = as_actor(world.user(Role.admin))
    ids = [world.stack()["id"] for _ in range(2)]
    for stack_id in ids:
        assert api.get(f"/api/v1/stacks/{stack_id}").status_code == 200
    assert api.get("/api/v1/stacks/stk-ffffffffffffffff").status_code == 404
    assert api.get("/api/v1/no-such-route").status_code == 404

    assert _count(client, "GET", "/api/v1/stacks/{stack_id}", "200") == 2
    assert _count(client, "GET", "/api/v1/stacks/{stack_id}", "404") == 1
    assert _count(client, "GET", "/api/<unmatched>", "404") == 1
    text = client.get("/metrics").text
    assert not any(stack_id in text for stack_id in [*ids, "stk-ffffffffffffffff"])
    assert "no-such-route" not in text


def test_metrics_include_a_latency_histogram(client):
    for _ in range(3):
        client.get("/health")
    samples = _samples(client, "crucible_http_request_duration_seconds_bucket")
    buckets = {s.labels["le"]: s.value for s in samples if s.labels["route"] == "/health"}
    assert buckets["+Inf"] == 3
    values = [buckets[k] for k in sorted(buckets, key=float)]
    assert values == sorted(values)  # cumulative
    (count,) = [
        s.value
        for s in _samples(client, "crucible_http_request_duration_seconds_count")
        if s.labels == {"method": "GET", "route": "/health"}
    ]
    assert count == 3


def test_metrics_content_type_is_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_metrics_label_is_the_template_even_when_the_id_repeats_a_segment(world, as_actor, client):
    api = as_actor(world.user(Role.admin))
    api.get("/api/v1/stacks/stacks")  # 422 (bad id), but the route matched
    assert _count(client, "GET", "/api/v1/stacks/{stack_id}", "422") == 1


# ----------------------------------------------------------------------------- body size


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": 2048}], ids=["limit-2k"])
def test_oversized_body_is_413(world, as_actor, stack_body):
    api = as_actor(world.user(Role.admin))
    small = api.post("/api/v1/stacks", json=stack_body(description="d" * 1000))
    assert small.status_code == 201
    big = api.post("/api/v1/stacks", json=stack_body(name="big", description="d" * 3000))
    assert big.status_code == 413
    assert "2048 bytes" in big.json()["detail"]
    assert api.get("/api/v1/stacks").json()["count"] == 1


def test_default_limit_applies_to_login_too(client):
    response = client.post(
        "/api/v1/auth/login", content=b"x" * 2_000_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("length", ["-1", "abc"])
def test_invalid_content_length_is_400(client, length):
    response = client.post("/api/v1/auth/login", content=b"{}", headers={"content-length": length})
    assert response.status_code == 400


def _chunks(total: int, size: int = 4096):
    for _ in range(total // size):
        yield b"x" * size


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": 2048}], ids=["limit-2k"])
def test_streamed_oversized_body_to_login_is_413(client):
    response = client.post(
        "/api/v1/auth/login", content=_chunks(64 * 1024), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": 2048}], ids=["limit-2k"])
def test_streamed_oversized_body_to_a_json_route_is_413(world, as_actor):
    api = as_actor(world.user(Role.admin))
    response = api.post(
        "/api/v1/stacks", content=_chunks(64 * 1024), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


# ----------------------------------------------------------------------------- request ids


def test_every_response_carries_a_fresh_request_id(client):
    responses = [
        client.get("/health"),
        client.get("/api/v1/auth/me"),
        client.get("/api/v1/nope"),
        client.post("/api/v1/auth/login", json={}),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(i and re.fullmatch(r"[0-9a-f]{16}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_rejected_bodies_carry_a_request_id_too(client):
    response = client.post(
        "/api/v1/auth/login", content=b"x" * 2_000_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers.get("x-request-id", ""))


def test_unknown_http_methods_share_one_metrics_label(client):
    for i in range(3):
        client.request(f"XMETH{i}", "/api/v1/stacks")
    methods = {s.labels["method"] for s in _samples(client, "crucible_http_requests_total")}
    assert not any(m.startswith("XMETH") for m in methods), methods
    assert "OTHER" in methods
