"""Policy evaluation: one interface over the Rego engines Crucible can use.

A policy is one Rego v1 module (``package crucible`` by convention; ``import rego.v1`` is
recommended and added where an engine needs it). It may define any of

- ``deny``: set or array of messages; any message fails the run at that hook;
- ``warn``: set or array of messages, shown on the run;
- ``require_approval``: boolean; the run waits in ``pending_approval``;
- ``required_approvals``: integer, how many distinct approvers;
- ``trigger``: set or array of stack ids or names (trigger policies: the stacks to run next);
- ``role``: ``viewer``, ``member`` or ``admin`` (login policies: the role of this login).

Missing (or undefined) rules mean empty, false, 0 and no role. Messages are normalised to sorted lists of
strings; a message that is not a string (an object, say) becomes its JSON text. An approval
rule that sets only one of the two keys gets the other implied: ``require_approval`` with no
count needs 1 approval, a count above 0 requires approval.

Engines (docs/policies-engines.md has the measurements and the known gaps):

- ``opa-eval``: regorus (Rust) through the ``opa-eval`` package, embedded; the default.
- ``regopy``: rego-cpp (Microsoft) through ``regopy``, embedded.
- ``opa-server``: an OPA server over its REST API (``CRUCIBLE_OPA_URL``).

Embedded engines run in warm worker processes (``engines/sandbox.py``): an evaluation that
exceeds its time limit is killed, never waited for, and the worker has a memory limit.
``evaluate`` blocks the calling thread: call it from a thread pool, not the event loop.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

DECISION_KEYS = ("deny", "warn", "require_approval", "required_approvals", "trigger", "role")
ROLES = ("viewer", "member", "admin")
MAX_APPROVALS = 100  # more distinct approvers than any team has: a rule gone wrong

REGOPY = "regopy"
OPA_EVAL = "opa-eval"
OPA_SERVER = "opa-server"

# Chosen by bench/policy.py and the conformance corpus (docs/policies-engines.md).
DEFAULT_EMBEDDED = (OPA_EVAL, REGOPY)

# Spellings accepted for settings.policy_engine besides the engine names.
_ALIASES = {"regorus": OPA_EVAL, "opa": OPA_SERVER, "rego-cpp": REGOPY}

# Temporary bridge while backend/config.py has no such fields (see default_engine).
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MEMORY_LIMIT_MB = 2048


class PolicyCompileError(Exception):
    """The policy does not compile. ``line``/``column`` are 1-based, when the engine says."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        where = f"line {self.line}" + (f", column {self.column}" if self.column is not None else "")
        return f"{where}: {self.message}"

    def __reduce__(self):  # picklable across the worker boundary
        return (type(self), (self.message, self.line, self.column))


class PolicyEvalError(Exception):
    """Evaluation failed: a runtime error in the policy, a timeout, a crashed worker, an
    unreachable OPA server, or a decision of the wrong shape. Callers fail closed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (type(self), (self.message,))


@dataclass(frozen=True)
class Decision:
    deny: list[str]
    warn: list[str]
    require_approval: bool
    required_approvals: int
    duration_ms: float
    trigger: list[str] = field(default_factory=list)  # trigger policies: stacks to run next
    role: str | None = None  # login policies: the role this login gets

    def as_dict(self) -> dict[str, Any]:
        return {
            "deny": list(self.deny),
            "warn": list(self.warn),
            "require_approval": self.require_approval,
            "required_approvals": self.required_approvals,
            "trigger": list(self.trigger),
            "role": self.role,
            "duration_ms": self.duration_ms,
        }


@runtime_checkable
class PolicyEngine(Protocol):
    name: str

    def compile(self, source: str) -> None:
        """Raise PolicyCompileError (with line/column when known) if ``source`` does not compile."""

    def evaluate(self, source: str, input: dict, *, timeout_seconds: float = 5.0) -> Decision:
        """Evaluate ``source`` against ``input``; raise PolicyCompileError or PolicyEvalError."""

    def builtins_used_unsupported(self, source: str) -> list[str]:
        """Sorted builtins that ``source`` calls and this engine lacks."""


# ---------------------------------------------------------------------------- normalisation


def _message(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    """Engines disagree on 6 versus 6.0: integral floats become ints."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _messages(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        # A set or array is expected; an object of messages (`deny[id] := msg`) is accepted
        # for its values, which is what a reader of that policy means.
        value = list(value.values())
    if not isinstance(value, list | tuple):
        raise PolicyEvalError(
            f"`{key}` must be a set or array of messages, got {_type_name(value)}: "
            f"write `{key} contains msg if {{ ... }}`"
        )
    return sorted({_message(v) for v in value})


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def normalise(raw: Any, duration_ms: float) -> Decision:
    """A Decision from the decision object an engine returned."""
    if not isinstance(raw, dict):
        raise PolicyEvalError(f"the engine returned {_type_name(raw)} instead of a decision object")
    approval = raw.get("require_approval", False)
    if approval is None:
        approval = False
    if not isinstance(approval, bool):
        raise PolicyEvalError(f"`require_approval` must be a boolean, got {_type_name(approval)}")
    count = raw.get("required_approvals", 0)
    if count is None:
        count = 0
    if (
        isinstance(count, bool)
        or not isinstance(count, int | float)
        or not math.isfinite(count)
        or count != int(count)
        or not 0 <= count <= MAX_APPROVALS
    ):
        raise PolicyEvalError(
            f"`required_approvals` must be a whole number from 0 to {MAX_APPROVALS}, got {count!r}"
        )
    count = int(count)
    if approval and count == 0:
        count = 1
    role = raw.get("role")
    if role in (None, ""):
        role = None
    elif role not in ROLES:
        raise PolicyEvalError(f"`role` must be one of {', '.join(ROLES)}, got {_message(role)}")
    return Decision(
        deny=_messages("deny", raw.get("deny")),
        warn=_messages("warn", raw.get("warn")),
        require_approval=approval or count > 0,
        required_approvals=count,
        duration_ms=round(duration_ms, 3),
        trigger=_messages("trigger", raw.get("trigger")),
        role=role,
    )


# ---------------------------------------------------------------------------- engine choice

_lock = threading.Lock()
_embedded: dict[str, PolicyEngine] | None = None
_servers: dict[tuple[str, str | None], PolicyEngine] = {}


def _embedded_engines() -> dict[str, PolicyEngine]:
    global _embedded
    with _lock:
        if _embedded is None:
            from backend.policies.engines.embedded import importable_engines

            _embedded = importable_engines(memory_limit_mb=DEFAULT_MEMORY_LIMIT_MB)
        return _embedded


def opa_server_engine(url: str, token: str | None = None) -> PolicyEngine:
    """The (cached) OPA server engine for ``url``."""
    with _lock:
        key = (url, token)
        if key not in _servers:
            from backend.policies.engines.opa_server import OpaServerEngine

            _servers[key] = OpaServerEngine(url, token=token)
        return _servers[key]


def available_engines() -> dict[str, PolicyEngine]:
    """The embedded engines whose package imports, plus ``opa-server`` when CRUCIBLE_OPA_URL
    is set in the environment."""
    import os

    engines = dict(_embedded_engines())
    url = os.environ.get("CRUCIBLE_OPA_URL")
    if url:
        engines[OPA_SERVER] = opa_server_engine(url.rstrip("/"), os.environ.get("CRUCIBLE_OPA_TOKEN") or None)
    return engines


def default_engine(settings: Any = None) -> PolicyEngine:
    """The engine runs use.

    ``settings.policy_engine``: ``auto`` (default), an engine name (``opa-eval``, ``regopy``,
    ``opa-server``) or an alias (``regorus``, ``opa``). ``auto`` is the OPA server when
    ``settings.opa_url`` is set, else the first installed of DEFAULT_EMBEDDED.
    Without settings (a script, a test): ``auto`` with no OPA server.
    """
    choice = str(settings.policy_engine if settings is not None else "auto")
    choice = _ALIASES.get(choice, choice)
    opa_url = settings.opa_url if settings is not None else None
    token = settings.opa_token if settings is not None else None
    if hasattr(token, "get_secret_value"):
        token = token.get_secret_value()
    if choice == OPA_SERVER or (choice == "auto" and opa_url):
        if not opa_url:
            raise PolicyEvalError("the OPA server engine needs CRUCIBLE_OPA_URL")
        return opa_server_engine(str(opa_url).rstrip("/"), token or None)
    embedded = _embedded_engines()
    if choice == "auto":
        for name in DEFAULT_EMBEDDED:
            if name in embedded:
                return embedded[name]
        raise PolicyEvalError(
            "no Rego engine is installed: install opa-eval or regopy, or set CRUCIBLE_OPA_URL"
        )
    if choice not in embedded:
        raise PolicyEvalError(
            f"policy engine {choice!r} is not installed (installed: {', '.join(embedded) or 'none'})"
        )
    return embedded[choice]
