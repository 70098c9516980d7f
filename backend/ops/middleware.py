"""ASGI middleware: request size limit, Prometheus metrics and one structured access-log line."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("crucible.http")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "crucible_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crucible_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _route_template(scope) -> str:
    route = scope.get("route")
    route_path = getattr(route, "path", None)
    if route_path:
        # A router included with a prefix reports its own path ("/stacks/{stack_id}"): keep the
        # raw path's leading segments (the prefix) and append the template.
        raw = [p for p in scope.get("path", "").split("/") if p]
        tail = [p for p in route_path.split("/") if p]
        prefix = raw[: max(0, len(raw) - len(tail))]
        return "/" + "/".join(prefix + tail)
    # Unmatched or served by the UI: bucket instead of exploding label cardinality.
    raw = scope.get("path", "")
    if raw.startswith("/api/"):
        return "/api/<unmatched>"
    if raw.startswith("/_event"):
        return "/_event"
    return "/<ui>"


@dataclass(frozen=True)
class BodyLimit:
    """A route whose bodies may exceed the global limit (e.g. Terraform state uploads).

    ``streamed``: the route reads its body as a stream and enforces ``max_bytes`` itself, so the
    middleware only checks a declared Content-Length and never buffers a chunked body."""

    path: re.Pattern[str]
    methods: frozenset[str]
    max_bytes: int
    setting: str  # the variable that sets max_bytes, named in the 413 message
    streamed: bool = False

    def applies(self, scope) -> bool:
        return scope.get("method") in self.methods and bool(self.path.fullmatch(scope.get("path", "")))


class ObservabilityMiddleware:
    """Counts, times and logs every HTTP request; rejects bodies over the size limit with 413."""

    def __init__(self, app, metrics: Metrics, max_body: int, body_limits: Sequence[BodyLimit] = ()):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_limits = tuple(body_limits)

    def _limit_for(self, scope) -> tuple[int, str, bool]:
        """(limit, the setting naming it, whether the route streams its body itself)."""
        for limit in self.body_limits:
            if limit.applies(scope):
                return limit.max_bytes, limit.setting, limit.streamed
        return self.max_body, "CRUCIBLE_MAX_REQUEST_BYTES", False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder = {"status": 500}
        request_id = uuid.uuid4().hex[:16]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            rejection = self._reject_early(scope)
            if rejection is None:
                receive, rejection = await self._bounded_body(scope, receive)
            if rejection is not None:
                await _send_json(send_wrapper, *rejection)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(scope, status_holder["status"], start, request_id)

    def _reject_early(self, scope) -> tuple[int, dict] | None:
        # PostgreSQL cannot store NUL characters; refuse them up front instead of failing later.
        if b"%00" in scope.get("query_string", b"").lower() or "\x00" in scope.get("path", ""):
            return 400, {"detail": "NUL characters are not allowed in the URL"}
        max_body, setting, _streamed = self._limit_for(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, {"detail": "invalid Content-Length header"}
                if length < 0:
                    return 400, {"detail": "invalid Content-Length header"}
                if length > max_body:
                    return 413, _too_large(max_body, setting)
        return None

    async def _bounded_body(self, scope, receive):
        """A body without Content-Length (chunked) is read here, up to the limit, and replayed."""
        headers = dict(scope.get("headers", []))
        if b"content-length" in headers or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return receive, None
        if b"transfer-encoding" not in headers:
            return receive, None
        max_body, setting, streamed = self._limit_for(scope)
        if streamed:
            return receive, None  # the route counts while it streams; buffering here would defeat it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive, None  # client went away; let the app see the disconnect
            body = message.get("body", b"")
            size += len(body)
            if size > max_body:
                return receive, (413, _too_large(max_body, setting))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay, None

    def _observe(self, scope, status: int, start: float, request_id: str) -> None:
        elapsed = time.perf_counter() - start
        route = _route_template(scope)
        method = scope.get("method", "")
        if method not in _KNOWN_METHODS:
            method = "OTHER"  # the label set must not grow with what clients send
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(elapsed)
        if route != "/<ui>" or status >= 400:
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": method,
                        "path": scope.get("path"),
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                },
            )


def _too_large(limit: int, setting: str) -> dict:
    return {"detail": f"request body too large: the limit is {limit} bytes ({setting})"}


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
