"""Login policies: the organization's enabled ``login`` policies judge every login whose password
is right, before its session exists (docs/policies.md#login-policies).

- any ``deny`` message refuses the login (403; the form goes back to ``/login?error=denied``);
- ``role`` becomes the session's role; when policies disagree the lowest role wins;
- a policy that cannot be evaluated refuses the login too (policies fail closed). An operator
  recovers from a broken policy with ``crucible policies disable <name-or-id>``, which needs
  the server's configuration, not a login.

Nothing here runs for a wrong password, an unknown or disabled user: ``Auth.login`` calls
``judge`` only after the password check succeeded. An organization without login policies pays
one small query (``enforcement.org_policies``) and starts no engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend.auth.models import Role
from backend.errors import Forbidden
from backend.policies import enforcement
from backend.policies.enforcement import Check, Outcome
from backend.policies.engine import DEFAULT_TIMEOUT_SECONDS
from backend.policies.models import PolicyType
from backend.policies.service import PolicyEngineUnavailable, engine_for
from backend.timeutil import as_utc, iso

log = logging.getLogger(__name__)

LOGIN = PolicyType.login.value
RECOVERY = "crucible policies disable <name-or-id>"
MAX_SHOWN = 10  # messages in a refusal's text; the audit event has up to AUDIT_MESSAGES
AUDIT_MESSAGES = 20
AUDIT_MESSAGE_CHARS = 500
DETAIL_CHARS = 2000


class LoginRefused(Forbidden):
    """403: a login policy refused a login whose password was right. ``code`` is what the login
    form's redirect carries (``denied``, ``policy_error``): the page has its own words for it."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoginAttempt:
    """A login whose password was right, as login policies see it."""

    user_id: str
    email: str
    role: Role  # the membership's
    org_id: str
    org_name: str
    ip: str | None
    user_agent: str | None
    at: datetime


def input_document(attempt: LoginAttempt) -> dict[str, Any]:
    at = as_utc(attempt.at)
    return {
        "crucible": {
            "login": {
                "user_id": attempt.user_id,
                "email": attempt.email,
                "role": attempt.role.value,
                "ip": attempt.ip,
                "user_agent": attempt.user_agent,
                "time": iso(at),
                "weekday": at.strftime("%A"),  # as Rego's time.weekday: "Monday"
                "hour": at.hour,
            },
            "organization": {"id": attempt.org_id, "name": attempt.org_name},
        }
    }


@dataclass(frozen=True)
class LoginVerdict:
    """What an organization's login policies decided about one login."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def denials(self) -> list[str]:
        return [m for o in self.outcomes if o.error is None for m in o.deny]

    @property
    def role(self) -> Role | None:
        """The lowest role any policy set (least privilege), or None: the membership's role."""
        roles = [Role(o.role) for o in self.outcomes if o.error is None and o.role]
        return min(roles, key=lambda r: r.rank) if roles else None

    @property
    def refused(self) -> bool:
        return bool(self.denials or self.errors)

    def refusal(self) -> LoginRefused | None:
        """The error a refused login answers with (None: the login goes ahead)."""
        if self.denials:
            shown = self.denials[:MAX_SHOWN]
            more = len(self.denials) - len(shown)
            text = "; ".join(shown) + (f"; … and {more} more" if more else "")
            return LoginRefused(f"login denied by policy: {text}"[:DETAIL_CHARS], "denied")
        if self.errors:
            names = ", ".join(repr(o.check.name) for o in self.errors)
            return LoginRefused(
                f"login refused: a login policy could not be evaluated ({names}); ask an administrator",
                "policy_error",
            )
        return None

    def audit(self) -> dict[str, Any]:
        """Which policy decided what, for the login's audit event: the deny messages, the role
        the session gets (None: the membership's) and each policy's decision."""
        return {
            "messages": _clip(self.denials),
            "role": self.role.value if self.role else None,
            "policies": [
                {
                    "id": o.check.policy_id,
                    "name": o.check.name,
                    "version": o.check.version,
                    "outcome": o.result(LOGIN),
                    "deny": _clip(o.deny),
                    "warn": _clip(o.warn),
                    "role": o.role,
                    "error": o.error,
                    "engine": o.engine,
                    "duration_ms": round(o.duration_ms, 3),
                }
                for o in self.outcomes
            ],
        }


def _clip(messages: list[str]) -> list[str]:
    return enforcement.clip(messages, max_messages=AUDIT_MESSAGES, max_chars=AUDIT_MESSAGE_CHARS)


def judge(settings: Any, checks: list[Check], attempt: LoginAttempt) -> LoginVerdict:
    """Evaluate ``checks`` (from ``enforcement.org_policies``) on the attempt. Blocks for up to
    CRUCIBLE_POLICY_TIMEOUT_SECONDS per policy: call it from a thread, outside any transaction.
    Never raises: whatever goes wrong is an error outcome, and the login is refused."""
    if not checks:
        return LoginVerdict()
    timeout = float(getattr(settings, "policy_timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
    try:
        engine = engine_for(settings)
        outcomes = enforcement.evaluate(engine, checks, input_document(attempt), timeout)
    except PolicyEngineUnavailable as exc:
        outcomes = enforcement.failed_engine(checks, exc.message)
    except Exception:  # a login must not go ahead on a crash of the engine's plumbing
        log.exception("login policies of organization %s crashed", attempt.org_id)
        outcomes = enforcement.failed_engine(checks, "internal error (see the server log)")
    verdict = LoginVerdict(outcomes)
    _log(verdict, attempt)
    return verdict


def _log(verdict: LoginVerdict, attempt: LoginAttempt) -> None:
    fields = {"user_id": attempt.user_id, "org_id": attempt.org_id, **verdict.audit()}
    if verdict.errors:
        failures = "; ".join(f"{o.check.name!r} (id {o.check.policy_id}) {o.error}" for o in verdict.errors)
        log.warning(
            "login of %s refused: login policy %s. Policies fail closed; if the policy is broken, "
            "fix it, or disable it on the server with `%s`",
            attempt.email,
            failures,
            RECOVERY,
            extra={"fields": fields},
        )
    elif verdict.denials:
        log.info("login of %s denied by login policy", attempt.email, extra={"fields": fields})
