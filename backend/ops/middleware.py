"""ASGI middleware: request size limit, Prometheus metrics and one structured access-log line."""

from __future__ import annotations

import json
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("crucible.http")


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
    if getattr(route, "path", None):
        # Routers included with a prefix report their own path; rebuild the full template.
        template = scope.get("path", "")
        for name, value in (scope.get("path_params") or {}).items():
            template = template.replace(f"/{value}", f"/{{{name}}}", 1)
        return template
    # Unmatched or served by the UI: bucket instead of exploding label cardinality.
    raw = scope.get("path", "")
    if raw.startswith("/api/"):
        return "/api/<unmatched>"
    if raw.startswith("/_event"):
        return "/_event"
    return "/<ui>"


class ObservabilityMiddleware:
    """Counts, times and logs every HTTP request; rejects bodies over the size limit with 413."""

    def __init__(self, app, metrics: Metrics, max_body: int):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder = {"status": 500}
        request_id = uuid.uuid4().hex[:16]

        # PostgreSQL cannot store NUL characters; refuse them up front instead of failing later.
        if b"%00" in scope.get("query_string", b"").lower() or "\x00" in scope.get("path", ""):
            await _send_json(send, 400, {"detail": "NUL characters are not allowed in the URL"})
            self._observe(scope, 400, start, request_id)
            return

        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if length is not None and (length < 0 or length > self.max_body):
            await _send_json(
                send,
                413 if length > 0 else 400,
                {
                    "detail": f"request body too large: the limit is {self.max_body} bytes"
                    if length > 0
                    else "invalid Content-Length header"
                },
            )
            status_holder["status"] = 413 if length > 0 else 400
            self._observe(scope, status_holder["status"], start, request_id)
            return

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        response_started = False

        async def send_wrapper(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            if not response_started:
                status_holder["status"] = 413
                await _send_json(
                    send,
                    413,
                    {"detail": f"request body too large: the limit is {self.max_body} bytes"},
                )
        finally:
            self._observe(scope, status_holder["status"], start, request_id)

    def _observe(self, scope, status: int, start: float, request_id: str) -> None:
        elapsed = time.perf_counter() - start
        route = _route_template(scope)
        method = scope.get("method", "")
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


class _BodyTooLarge(Exception):
    pass


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
