"""The policy editor's backtest panel: replay a draft on the newest runs with a stored plan.

Thin over backend.policies.backtest. The replay can take up to its time budget (30 s), so it
runs as a background event off the UI loop; state keeps only the rows shown (at most 100 runs,
a few messages each) and a one-line summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import reflex as rx
from pydantic import ValidationError

from backend.context import get_context
from backend.errors import ServiceError
from backend.policies import backtest, service
from backend.policies.schemas import BacktestDecision, BacktestRequest, BacktestResult, BacktestRun
from backend.policies.service import PolicyCompileFailed
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative

LIMITS = ["10", "20", "50", "100"]
OUTCOME_LABELS = {
    "allow": "allow",
    "warn": "warn",
    "deny": "deny",
    "approval": "approval",
    "error": "error",
}

log = logging.getLogger("crucible.ui.backtest")


@dataclasses.dataclass
class BacktestRowView:
    run_id: str = ""
    run_href: str = ""
    stack_id: str = ""
    stack_name: str = ""
    run_type: str = ""
    run_status: str = ""
    created_rel: str = ""
    created_exact: str = ""
    commit_short: str = ""
    skipped: str = ""
    draft_outcome: str = ""  # allow | warn | deny | approval | error; "" when skipped
    draft_label: str = ""  # "approval (2)" for two approvers
    current_outcome: str = ""  # "" without a saved version (or when skipped)
    current_label: str = ""
    changed: bool = False
    messages: list[str] = dataclasses.field(default_factory=list)  # the draft's
    current_messages: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- conversions (pure)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def outcome_label(d: BacktestDecision | None) -> str:
    if d is None:
        return ""
    if d.outcome == "approval" and d.required_approvals > 1:
        return f"approval ({d.required_approvals})"
    return OUTCOME_LABELS.get(d.outcome, d.outcome)


def decision_messages(d: BacktestDecision | None) -> list[str]:
    """What the decision says, in the order a reader needs it: the error, denies, warnings."""
    if d is None:
        return []
    out = [f"error: {d.error}"] if d.error else []
    out += [f"deny: {m}" for m in d.deny]
    out += [f"warn: {m}" for m in d.warn]
    return out


def row_view(r: BacktestRun) -> BacktestRowView:
    return BacktestRowView(
        run_id=r.run_id,
        run_href=f"/runs/{r.run_id}",
        stack_id=r.stack_id,
        stack_name=r.stack_name,
        run_type=r.run_type,
        run_status=r.run_status,
        created_rel=relative(r.created_at),
        created_exact=exact(r.created_at),
        commit_short=(r.commit_sha or "")[:7],
        skipped=r.skipped or "",
        draft_outcome=r.draft.outcome if r.draft else "",
        draft_label=outcome_label(r.draft),
        current_outcome=r.current.outcome if r.current else "",
        current_label=outcome_label(r.current),
        changed=r.changed,
        messages=decision_messages(r.draft),
        current_messages=decision_messages(r.current),
    )


def summary_line(result: BacktestResult) -> str:
    """E.g. "This draft would have denied 3 of 20 past runs; the current version denies 1."."""
    s = result.summary
    if s.runs == 0:
        return "No past runs with a stored plan to replay."
    of = f"of {_plural(s.evaluated, 'past run')}"
    approval = result.type.value == "approval"
    if approval:
        text = f"This draft would have sent {s.would_require_approval} {of} to approval"
    else:
        text = f"This draft would have denied {s.would_deny} {of}"
    extras = []
    if s.would_warn:
        extras.append(f"warned on {s.would_warn}")
    if s.errors:
        extras.append(f"failed to evaluate on {s.errors}")
    if extras:
        text += " and " + " and ".join(extras)
    if s.current is not None:
        c = s.current
        if approval:
            text += f"; the current version sends {c.would_require_approval} to approval"
        else:
            text += f"; the current version denies {c.would_deny}"
        if c.errors:
            text += f" (and fails on {c.errors})"
        text += f". {_plural(s.changed, 'run')} would change"
    text += "."
    if s.skipped:
        text += f" {s.skipped} not evaluated."
    return text


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "request"
    return field, str(err.get("msg", "")).removeprefix("Value error, ")


class PolicyBacktestState(AuthState):
    loading: bool = False
    error: str = ""
    error_line: int = 0
    error_column: int = 0
    has_result: bool = False
    summary: str = ""
    notes: list[str] = []
    rows: list[BacktestRowView] = []
    has_current: bool = False
    budget_exceeded: bool = False
    engine: str = ""
    unsupported_builtins: list[str] = []
    duration: str = ""
    limit: str = "20"
    _seq: int = 0  # the latest request: an older one finishing late is dropped

    @rx.var
    def is_empty(self) -> bool:
        return self.has_result and len(self.rows) == 0

    @rx.var
    def limits(self) -> list[str]:
        return LIMITS

    @rx.event
    def set_limit(self, value: str):
        if value in LIMITS:
            self.limit = value

    @rx.event
    def clear(self):
        """Forget the last result (the editor calls it when another policy opens)."""
        self._seq += 1
        self.loading, self.has_result = False, False
        self._clear_result()

    def _clear_result(self) -> None:
        self.error, self.error_line, self.error_column = "", 0, 0
        self.summary, self.notes, self.rows = "", [], []
        self.has_current, self.budget_exceeded, self.engine = False, False, ""
        self.unsupported_builtins, self.duration = [], ""

    def _fail(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.loading, self.has_result = False, False
        self.error, self.error_line, self.error_column = message, line or 0, column or 0

    def _show(self, result: BacktestResult) -> None:
        self.loading, self.has_result = False, True
        self.summary = summary_line(result)
        self.notes = list(result.notes)
        self.rows = [row_view(r) for r in result.runs]
        self.has_current = result.policy_id is not None
        self.budget_exceeded = result.budget_exceeded
        self.engine = result.engine
        self.unsupported_builtins = list(result.unsupported_builtins)
        self.duration = f"{result.duration_ms / 1000:.1f} s"

    @rx.event(background=True)
    async def run_backtest(self, body: str, type_: str, policy_id: str):
        """Replay ``body`` (of type ``type_``; "" takes the saved policy's) on past plans, next
        to the current version of ``policy_id`` ("" for a policy not saved yet)."""
        async with self:
            self._seq += 1
            seq = self._seq
            self.loading = True
            self._clear_result()
            try:
                principal = await self._principal()
            except SessionExpired:
                self.loading = False
                return self._login_redirect()
            limit = int(self.limit) if self.limit in LIMITS else 20

        try:
            request = BacktestRequest(body=body, type=type_ or None, policy_id=policy_id or None, limit=limit)
        except ValidationError as exc:
            field, msg = _first_error(exc)
            async with self:
                if seq == self._seq:
                    self._fail(f"{field}: {msg}" if field != "body" else msg)
            return None

        ctx = get_context()

        def _replay() -> BacktestResult:
            return backtest.backtest(
                ctx.session,
                ctx.objects,
                principal,
                service.engine_for(ctx.settings),
                request,
                timeout_seconds=ctx.settings.policy_timeout_seconds,
                max_input_bytes=ctx.settings.policy_input_max_bytes,
            )

        try:
            result = await asyncio.to_thread(_replay)
        except PolicyCompileFailed as exc:
            async with self:
                if seq == self._seq:
                    self._fail(exc.message, exc.line, exc.column)
            return None
        except ServiceError as exc:
            async with self:
                if seq == self._seq:
                    self._fail(exc.message)
            return None
        except Exception as exc:  # a bug or an unavailable store: say so, never spin forever
            log.exception("backtest failed")
            async with self:
                if seq == self._seq:
                    self._fail(f"the backtest failed: {type(exc).__name__}: {exc}")
            return None
        async with self:
            if seq == self._seq:
                self._show(result)
        return None
