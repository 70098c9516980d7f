"""The OPA server engine against OPA's REST contract.

No OPA binary can be installed here, so most tests talk to a small HTTP server written from
OPA's REST API reference: it records every request and answers in OPA's documented shapes
(``PUT /v1/policies/{id}`` → ``{}`` or a 400 error object with locations; ``POST
/v1/data/{path}`` → ``{"result": ...}``, ``{}`` when undefined, 500 error objects). The
tests check the exact methods, paths, query strings, headers and bodies the engine sends.

``test_corpus_on_a_real_opa`` runs the whole conformance corpus against a real ``opa`` when
one is on PATH: there, OPA is the reference, so no case may fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend.policies.engine import OPA_SERVER, PolicyCompileError, PolicyEvalError, default_engine
from backend.policies.engines.adapt import DECISION_RULE
from backend.policies.engines.opa_server import OpaServerEngine

POLICY = (
    'package crucible\nimport rego.v1\n\ndeny contains "no destroys" if input.crucible.counts.destroy > 0\n'
)
DIGEST = hashlib.sha256(POLICY.encode()).hexdigest()[:24]
POLICY_PATH = f"/v1/policies/crucible-{DIGEST}"
DATA_PATH = f"/v1/data/crucible/p{DIGEST}/{DECISION_RULE}?strict-builtin-errors=true"
DECISION = {"deny": ["no destroys"], "warn": [], "require_approval": False, "required_approvals": 0}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeOpa:
    """Answers like OPA. ``routes`` maps (method, path-without-query) to a list of replies
    (status, body, delay); the last reply repeats."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], list[tuple[int, Any, float]]] = field(default_factory=dict)
    uploaded: dict[str, str] = field(default_factory=dict)

    def reply(self, method: str, path: str, *replies: tuple) -> None:
        self.routes[(method, path)] = [(*r, 0.0)[:3] for r in replies]

    def handle(self, req: Recorded) -> tuple[int, Any, float]:
        self.requests.append(req)
        key = (req.method, req.path.split("?", 1)[0])
        if key in self.routes:
            replies = self.routes[key]
            return replies.pop(0) if len(replies) > 1 else replies[0]
        if req.method == "PUT" and req.path.startswith("/v1/policies/"):
            self.uploaded[req.path.removeprefix("/v1/policies/")] = req.body.decode()
            return 200, {}, 0.0
        if req.method == "DELETE" and req.path.startswith("/v1/policies/"):
            self.uploaded.pop(req.path.removeprefix("/v1/policies/"), None)
            return 200, {}, 0.0
        if req.method == "POST" and req.path.startswith("/v1/data/"):
            return 200, {"result": DECISION}, 0.0
        return 404, {"code": "resource_not_found", "message": "not found"}, 0.0


@pytest.fixture
def fake_opa() -> Iterator[FakeOpa]:
    fake = FakeOpa()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload, delay = fake.handle(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if delay:
                time.sleep(delay)
            data = json.dumps(payload).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def test_evaluate_uploads_once_then_queries_the_decision(fake_opa):
    engine = OpaServerEngine(fake_opa.url)
    doc = {"resource_changes": [], "crucible": {"counts": {"add": 0, "change": 0, "destroy": 2}}}
    decision = engine.evaluate(POLICY, doc)
    assert decision.deny == ["no destroys"] and decision.warn == []
    assert not decision.require_approval and decision.required_approvals == 0

    put, post = fake_opa.requests
    assert (put.method, put.path) == ("PUT", POLICY_PATH)
    assert put.headers["content-type"] == "text/plain"
    module = put.body.decode()
    # the user's lines stay where they were; only the package moved to its own path
    assert module.splitlines()[0] == f"package crucible.p{DIGEST}"
    assert module.splitlines()[1:4] == POLICY.splitlines()[1:4]
    assert f"{DECISION_RULE} := {{" in module

    assert (post.method, post.path) == ("POST", DATA_PATH)
    assert post.headers["content-type"] == "application/json"
    # only the input keys the policy reads travel (it reads input.crucible, not resource_changes)
    assert post.json() == {"input": {"crucible": doc["crucible"]}}

    engine.evaluate(POLICY, doc)
    assert [r.method for r in fake_opa.requests] == ["PUT", "POST", "POST"]


def test_compile_error_carries_opa_location(fake_opa):
    fake_opa.reply(
        "PUT",
        POLICY_PATH,
        (
            400,
            {
                "code": "invalid_parameter",
                "message": "error(s) occurred while compiling module(s)",
                "errors": [
                    {
                        "code": "rego_unsafe_var_error",
                        "message": "var x is unsafe",
                        "location": {"file": f"crucible-{DIGEST}", "row": 4, "col": 35},
                    }
                ],
            },
        ),
    )
    engine = OpaServerEngine(fake_opa.url)
    with pytest.raises(PolicyCompileError) as info:
        engine.compile(POLICY)
    assert (info.value.message, info.value.line, info.value.column) == ("var x is unsafe", 4, 35)
    with pytest.raises(PolicyCompileError):
        engine.evaluate(POLICY, {})
    assert all(r.method == "PUT" for r in fake_opa.requests)  # never queried


def test_errors_in_crucibles_appended_text_have_no_location(fake_opa):
    fake_opa.reply(
        "PUT",
        POLICY_PATH,
        (
            400,
            {
                "code": "invalid_parameter",
                "message": "m",
                "errors": [{"message": "deep", "location": {"row": 99, "col": 1}}],
            },
        ),
    )
    with pytest.raises(PolicyCompileError) as info:
        OpaServerEngine(fake_opa.url).compile(POLICY)
    assert (info.value.line, info.value.column) == (None, None)


def test_static_checks_run_before_any_request(fake_opa):
    with pytest.raises(PolicyCompileError) as info:
        OpaServerEngine(fake_opa.url).compile(
            "package crucible\nimport rego.v1\nwarn contains cout([1]) if true\n"
        )
    assert (info.value.line, info.value.column) == (3, 15)
    assert fake_opa.requests == []


def test_evaluation_error_is_an_eval_error(fake_opa):
    fake_opa.reply(
        "POST",
        DATA_PATH.split("?")[0],
        (
            500,
            {
                "code": "internal_error",
                "message": "1 error occurred: crucible-x:4: eval_conflict_error: "
                "complete rules must not produce multiple outputs",
            },
        ),
    )
    with pytest.raises(PolicyEvalError, match="eval_conflict_error"):
        OpaServerEngine(fake_opa.url).evaluate(POLICY, {})


def test_undefined_decision_means_the_module_is_gone_and_is_reuploaded(fake_opa):
    engine = OpaServerEngine(fake_opa.url)
    engine.evaluate(POLICY, {})
    fake_opa.reply("POST", DATA_PATH.split("?")[0], (200, {}), (200, {"result": DECISION}))
    assert engine.evaluate(POLICY, {}).deny == ["no destroys"]
    assert [(r.method, r.path) for r in fake_opa.requests] == [
        ("PUT", POLICY_PATH),
        ("POST", DATA_PATH),
        ("POST", DATA_PATH),
        ("PUT", POLICY_PATH),
        ("POST", DATA_PATH),
    ]


def test_malformed_decision_is_an_eval_error(fake_opa):
    fake_opa.reply("POST", DATA_PATH.split("?")[0], (200, {"result": {"deny": "not a set"}}))
    with pytest.raises(PolicyEvalError, match="deny"):
        OpaServerEngine(fake_opa.url).evaluate(POLICY, {})


def test_slow_server_hits_the_timeout(fake_opa):
    fake_opa.reply("POST", DATA_PATH.split("?")[0], (200, {"result": DECISION}, 3.0))
    started = time.monotonic()
    with pytest.raises(PolicyEvalError, match=r"exceeded 0\.5 s"):
        OpaServerEngine(fake_opa.url).evaluate(POLICY, {}, timeout_seconds=0.5)
    assert time.monotonic() - started < 2.5


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpaServerEngine(f"http://127.0.0.1:{port}", retries=0)
    with pytest.raises(PolicyEvalError, match="unreachable"):
        engine.evaluate(POLICY, {}, timeout_seconds=2)


def test_bearer_token_is_sent(fake_opa):
    OpaServerEngine(fake_opa.url, token="s3cret").evaluate(POLICY, {})
    assert {r.headers.get("authorization") for r in fake_opa.requests} == {"Bearer s3cret"}


def test_two_policies_in_the_same_package_do_not_merge(fake_opa):
    engine = OpaServerEngine(fake_opa.url)
    other = POLICY.replace("no destroys", "something else")
    engine.evaluate(POLICY, {})
    engine.evaluate(other, {})
    packages = {body.splitlines()[0] for body in fake_opa.uploaded.values()}
    assert len(fake_opa.uploaded) == 2 and len(packages) == 2


def test_default_engine_picks_the_server_from_settings(fake_opa):
    class Settings:
        policy_engine = "auto"
        opa_url = fake_opa.url
        opa_token = None

    engine = default_engine(Settings())
    assert engine.name == OPA_SERVER
    assert engine.evaluate(POLICY, {}).deny == ["no destroys"]
    assert (
        engine.builtins_used_unsupported(
            'package crucible\nr := net.cidr_contains("10.0.0.0/8", "10.0.0.1")\n'
        )
        == []
    )


def test_url_validation():
    with pytest.raises(ValueError):
        OpaServerEngine("opa:8181")
    with pytest.raises(ValueError):
        OpaServerEngine("http://opa:8181/prefix")


# ---------------------------------------------------------------------------- a real OPA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def real_opa() -> Iterator[str]:
    binary = shutil.which("opa")
    if binary is None:
        pytest.skip("no opa binary on PATH")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _unit_module() -> Any:
    """tests/unit/test_policy_engines.py, which owns the corpus loader (tests/ is no package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "unit" / "test_policy_engines.py"
    spec = importlib.util.spec_from_file_location("_policy_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_on_a_real_opa(real_opa):
    unit = _unit_module()
    DECISION_FIELDS, load_input = unit.DECISION_FIELDS, unit.load_input
    engine = OpaServerEngine(real_opa)
    failures = []
    for case_id, policy, input_path, expected_path in unit.CASES:
        expected = json.loads(Path(expected_path).read_text())
        try:
            decision = engine.evaluate(policy.read_text(), load_input(input_path), timeout_seconds=30)
            got: Any = {k: getattr(decision, k) for k in DECISION_FIELDS}
        except (PolicyEvalError, PolicyCompileError) as exc:
            got = type(exc).__name__
        if "error" in expected:
            want: Any = expected["error"]
        else:
            want = {
                k: expected.get(k, [] if k in ("deny", "warn") else 0 if k == "required_approvals" else False)
                for k in DECISION_FIELDS
            }
        if got != want and "opa-server" not in expected.get("known_failures", {}):
            failures.append((case_id, got, want))
    assert failures == []


def test_real_opa_reports_compile_errors_with_lines(real_opa):
    with pytest.raises(PolicyCompileError) as info:
        OpaServerEngine(real_opa).compile(_unit_module().SYNTAX_ERROR_LINE_3)
    assert info.value.line == 3
