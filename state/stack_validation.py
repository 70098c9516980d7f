"""The stack page's Validation card: what the stack's validation policies last decided about
its current state, and "Validate now".

Thin over backend.policies.validation. Evaluating takes up to CRUCIBLE_POLICY_TIMEOUT_SECONDS
per policy, so "Validate now" is a background event off the UI loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import reflex as rx

from backend.context import get_context
from backend.errors import NotFound, ServiceError
from backend.policies import service, validation
from backend.policies.schemas import StackValidationPublic
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db, stack_id_from_path

log = logging.getLogger("crucible.ui.validation")

PENDING = "pending"  # an applying policy without a result yet


@dataclasses.dataclass
class ValidationRow:
    policy_id: str = ""
    policy_name: str = ""
    version: int = 0
    outcome: str = ""  # allow | warn | deny | error | pending
    deny: list[str] = dataclasses.field(default_factory=list)
    warn: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    serial: str = ""  # "serial 7", "no state"; "" while pending
    evaluated_rel: str = ""
    evaluated_exact: str = ""
    evaluated_by: str = ""  # who clicked, or "schedule"
    stale: bool = False  # the policy no longer applies: its result goes at the next evaluation


def _row(r: StackValidationPublic, stale: bool = False) -> ValidationRow:
    return ValidationRow(
        policy_id=r.policy_id,
        policy_name=r.policy_name,
        version=r.policy_version,
        outcome=r.outcome,
        deny=list(r.deny),
        warn=list(r.warn),
        error=r.error or "",
        serial="no state" if r.state_serial is None else f"serial {r.state_serial}",
        evaluated_rel=relative(r.evaluated_at),
        evaluated_exact=exact(r.evaluated_at),
        evaluated_by="schedule" if r.trigger == "schedule" else (r.evaluated_by or ""),
        stale=stale,
    )


def validation_rows(
    results: list[StackValidationPublic], policies: list[validation.ValidationPolicy]
) -> list[ValidationRow]:
    """One row per applying policy (its result, or pending), then results of policies that no
    longer apply; by policy name."""
    by_id = {r.policy_id: r for r in results}
    applying = {p.policy_id for p in policies}
    rows = [
        _row(by_id[p.policy_id])
        if p.policy_id in by_id
        else ValidationRow(policy_id=p.policy_id, policy_name=p.name, version=p.version, outcome=PENDING)
        for p in policies
    ]
    rows += [_row(r, stale=True) for r in results if r.policy_id not in applying]
    return sorted(rows, key=lambda row: (row.stale, row.policy_name.casefold(), row.policy_id))


def _summary(rows: list[ValidationRow]) -> str:
    counts = {
        k: sum(1 for r in rows if r.outcome == k and not r.stale) for k in ("deny", "warn", "error", "allow")
    }
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    return ", ".join(parts) or "nothing evaluated"


def schedule_text(interval_seconds: int) -> str:
    """How often the schedule validates (CRUCIBLE_VALIDATION_INTERVAL_SECONDS), for the card."""
    if interval_seconds <= 0:
        return "Against the current state, on demand (the schedule is off)"
    every = f"{interval_seconds} s"
    for one, many, size in (("day", "days", 86400), ("hour", "h", 3600), ("minute", "min", 60)):
        if interval_seconds % size == 0:
            n = interval_seconds // size
            every = one if n == 1 else f"{n} {many}"
            break
    return f"Against the current state, every {every} and on demand"


class StackValidationState(AuthState):
    stack_id: str = ""
    schedule: str = ""
    rows: list[ValidationRow] = []
    policy_count: int = 0
    loading: bool = True
    running: bool = False
    error: str = ""

    @rx.var
    def shown(self) -> bool:
        """The card shows when a validation policy applies or results exist."""
        return self.policy_count > 0 or len(self.rows) > 0

    @rx.var
    def never_evaluated(self) -> bool:
        return all(r.outcome == PENDING for r in self.rows)

    async def _fetch(self, principal, stack_id: str) -> None:
        def _q(s):
            return (
                validation.list_validations(s, principal, stack_id),
                validation.validation_policies(s, principal, stack_id),
            )

        results, policies = await run_db(_q, readonly=True)
        self.rows = validation_rows(results, policies)
        self.policy_count = len(policies)

    @rx.event
    async def load(self):
        """Chained from the stack page's load (the stack id is in the URL)."""
        stack_id = stack_id_from_path(self.router.url.path)
        self.stack_id, self.rows, self.policy_count, self.error = stack_id, [], 0, ""
        self.loading, self.running = True, False
        self.schedule = schedule_text(get_context().settings.validation_interval_seconds)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        try:
            await self._fetch(principal, stack_id)
        except ServiceError as exc:  # the stack page says "not found" itself
            self.error = "" if isinstance(exc, NotFound) else exc.message
        self.loading = False
        return None

    @rx.event(background=True)
    async def validate_now(self):
        async with self:
            if self.running:
                return None
            self.running = True
            stack_id = self.stack_id
            try:
                principal = await self._principal()
            except SessionExpired:
                self.running = False
                return self._login_redirect()
        ctx = get_context()

        def _validate():
            return validation.validate_stack(
                ctx.session,
                ctx.objects,
                principal,
                service.engine_for(ctx.settings),
                stack_id,
                trigger="manual",
                timeout_seconds=ctx.settings.policy_timeout_seconds,
                max_input_bytes=ctx.settings.policy_input_max_bytes,
            )

        try:
            await asyncio.to_thread(_validate)
        except ServiceError as exc:
            async with self:
                self.running = False
            return rx.toast.error(exc.message)
        except Exception as exc:  # a bug or an unavailable store: say so, never spin forever
            log.exception("validation failed")
            async with self:
                self.running = False
            return rx.toast.error(f"validation failed: {type(exc).__name__}: {exc}")
        async with self:
            try:
                await self._fetch(principal, stack_id)
            except ServiceError as exc:
                self.running = False
                return rx.toast.error(exc.message)
            self.running = False
            summary = _summary(self.rows)
        return rx.toast.success(f"Validated: {summary}")
