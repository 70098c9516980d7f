"""The OPA server engine: policies evaluated by an OPA server over its REST API.

Contract (OPA's REST API reference, v1):

- ``PUT /v1/policies/{id}`` with the module as ``text/plain`` uploads (and compiles) it: 200
  ``{}``, or 400 ``{"code", "message", "errors": [{"code", "message", "location": {"file",
  "row", "col"}}]}`` when it does not compile;
- ``POST /v1/data/{package path}/{rule}?strict-builtin-errors=true`` with ``{"input": ...}``
  evaluates: 200 ``{"result": ...}`` (no ``result`` when undefined), 400 for a bad input,
  500 ``{"code", "message", "errors"?}`` when evaluation fails.

Every policy version is uploaded once, under id ``crucible-<digest>`` and moved to its own
package ``crucible.p<digest>``: two policies that both say ``package crucible`` would
otherwise merge their ``deny`` rules into one document on the server. (So a policy must not
refer to its own rules through ``data.<package>``; plain rule names work everywhere.) What is
evaluated is the same generated decision rule the embedded engines evaluate (adapt.py).

The server owns its time limit: OPA has no per-request evaluation timeout, so a request that
exceeds ``timeout_seconds`` is abandoned by us (PolicyEvalError) while OPA may still be busy.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client.errors import RegoParseError
from opa_client.opa import OpaClient

from backend.policies.engine import OPA_SERVER, Decision, PolicyCompileError, PolicyEvalError, normalise
from backend.policies.engines import adapt as adapt_mod

POLICY_ID_PREFIX = "crucible-"
PACKAGE_ROOT = "crucible"
_UPLOADED_KEPT = 256


def _location(error: dict) -> tuple[int | None, int | None]:
    loc = error.get("location") or {}
    row, col = loc.get("row"), loc.get("col")
    return (row if isinstance(row, int) else None, col if isinstance(col, int) else None)


def _error_text(body: Any, fallback: str) -> str:
    if not isinstance(body, dict):
        return fallback
    details = [e.get("message") for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")]
    message = body.get("message") or fallback
    return f"{message}: {'; '.join(details)}" if details else str(message)


class OpaServerEngine:
    name = OPA_SERVER

    def __init__(self, url: str, *, token: str | None = None, retries: int = 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the OPA URL must look like http://opa:8181")
        if parts.path not in ("", "/"):
            raise ValueError("the OPA URL must not have a path: OPA serves its API at /v1")
        self.url = url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = parts.scheme == "https"
        self._token = token
        self._retries = retries
        self._clients: dict[float, OpaClient] = {}
        self._uploaded: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<OpaServerEngine {self.url}>"

    def _client(self, timeout: float) -> OpaClient:
        with self._lock:
            client = self._clients.get(timeout)
            if client is None:
                client = OpaClient(
                    host=self._host,
                    port=self._port,
                    ssl=self._ssl,
                    token=self._token,
                    retries=self._retries,
                    timeout=timeout,
                )
                self._clients[timeout] = client
            return client

    @staticmethod
    def _adapt(source: str) -> tuple[str, adapt_mod.Adapted]:
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        adapted = adapt_mod.adapt(source, package=f"{PACKAGE_ROOT}.p{digest}")
        return POLICY_ID_PREFIX + digest, adapted

    def _upload(self, policy_id: str, adapted: adapt_mod.Adapted, timeout: float) -> None:
        client = self._client(timeout)
        try:
            client.update_policy_from_string(adapted.text, policy_id, rego_compat=False)
        except RegoParseError as exc:
            errors = [e for e in exc.errors if isinstance(e, dict)]
            first = errors[0] if errors else {}
            line, col = _location(first)
            message = first.get("message") or exc.message or "the policy does not compile"
            if line is not None and line > adapted.user_lines:
                line = col = None
            raise PolicyCompileError(str(message), line, col) from None
        except requests.Timeout:
            raise PolicyEvalError(
                f"the OPA server at {self.url} did not answer within {timeout:g} s"
            ) from None
        except requests.RequestException as exc:
            raise PolicyEvalError(f"the OPA server at {self.url} is unreachable: {exc}") from None
        except ValueError:  # a 4xx/5xx whose body is not JSON
            raise PolicyEvalError(f"the OPA server at {self.url} refused the policy upload") from None
        with self._lock:
            self._uploaded[policy_id] = None
            self._uploaded.move_to_end(policy_id)
            stale = []
            while len(self._uploaded) > _UPLOADED_KEPT:
                stale.append(self._uploaded.popitem(last=False)[0])
        for old in stale:  # best effort: a leftover module costs the server a little memory
            with contextlib.suppress(Exception):
                client.delete_policy(old)

    def compile(self, source: str, *, timeout_seconds: float = 10.0) -> None:
        policy_id, adapted = self._adapt(source)
        self._upload(policy_id, adapted, timeout_seconds)

    def _query(self, adapted: adapt_mod.Adapted, input: dict, timeout: float) -> dict:
        client = self._client(timeout)
        try:
            return client.query_rule(
                input,
                adapted.package,
                adapt_mod.DECISION_RULE,
                query_params={"strict-builtin-errors": "true"},
            )
        except requests.HTTPError as exc:
            response = exc.response
            try:
                body = response.json() if response is not None else None
            except ValueError:
                body = None
            status = response.status_code if response is not None else "?"
            raise PolicyEvalError(_error_text(body, f"the OPA server answered HTTP {status}")) from None
        except requests.Timeout:
            raise PolicyEvalError(
                f"policy evaluation exceeded {timeout:g} s (OPA server at {self.url})"
            ) from None
        except requests.RequestException as exc:
            raise PolicyEvalError(f"the OPA server at {self.url} is unreachable: {exc}") from None
        except ValueError:
            raise PolicyEvalError(
                f"the OPA server at {self.url} answered with something that is not JSON"
            ) from None

    def evaluate(self, source: str, input: dict, *, timeout_seconds: float = 5.0) -> Decision:
        started = time.perf_counter()
        if not isinstance(input, dict):
            raise PolicyEvalError("the input must be a JSON object")
        policy_id, adapted = self._adapt(source)
        with self._lock:
            uploaded = policy_id in self._uploaded
        if not uploaded:
            self._upload(policy_id, adapted, timeout_seconds)
        doc = adapted.project(input)
        body = self._query(adapted, doc, timeout_seconds)
        if "result" not in body and uploaded:
            # The decision rule always has a value, so the module is gone: OPA restarted.
            self._upload(policy_id, adapted, timeout_seconds)
            body = self._query(adapted, doc, timeout_seconds)
        if "result" not in body:
            raise PolicyEvalError("the OPA server has no decision for this policy")
        return normalise(body["result"], (time.perf_counter() - started) * 1000)

    def builtins_used_unsupported(self, source: str) -> list[str]:
        # OPA is the reference implementation; unknown functions are compile errors already.
        return []
