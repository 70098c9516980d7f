"""Backtesting: what a draft policy would have decided on the last real plans.

Before saving a change, an author replays the draft against the newest runs that stored a plan
JSON (of the stacks the policy applies to, or of the stacks named), next to what the current
version decides on the same inputs. Nothing is stored and no run changes.

Where the time goes: one short read transaction loads the runs, their stacks and the saved
policy; the plans are then read from the object store and evaluated with no transaction open,
a few runs at a time. Each evaluation has the usual time limit
(CRUCIBLE_POLICY_TIMEOUT_SECONDS), and the whole request a budget: once it is spent no new
run is started, and the runs left are returned as skipped, with a note saying so.

What is compared: the outcome at the hook, as enforcement judges it
(``enforcement.outcome_of``: ``error`` before ``deny``, then ``approval`` for approval
policies, then ``warn``, else ``allow``) and, for approval policies, the number of approvals.
Without a saved policy the draft is compared with no policy at all: any outcome but ``allow``
is a change.

Only runs the hook would have judged are replayed, as runner/job.py evaluates hooks: an
``approval`` policy only on a run that would apply (a tracked or destroy run whose plan has
changes), a ``pre_apply`` policy only on a run that reached its apply phase. The other runs
are skipped with the reason, so the counts are outcomes enforcement could have produced.

Inputs are the ones ``GET /runs/{id}/policy-input`` returns: sensitive values are redacted, so
a draft cannot read a secret out through its messages. A policy that tests a sensitive value
itself can therefore decide differently here than on the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.errors import FieldError
from backend.policies import enforcement, inputs
from backend.policies.engine import PolicyCompileError, PolicyEngine, PolicyEvalError
from backend.policies.models import PolicyType
from backend.policies.schemas import (
    BacktestCounts,
    BacktestDecision,
    BacktestRequest,
    BacktestResult,
    BacktestRun,
    BacktestSummary,
)
from backend.policies.service import compile_or_422, load_policy, stacks_for_policy
from backend.runs import lifecycle as lc
from backend.runs.models import Run
from backend.storage import ObjectStore, StorageError
from backend.timeutil import iso

BUDGET_SECONDS = 30.0
CONCURRENCY = 2  # leaves engine workers free for the runs being enforced meanwhile
MAX_MESSAGES = 10  # per decision and kind in the response; the counts are complete
MAX_MESSAGE_CHARS = 500
# The hooks of a run: what a backtest replays. Other types decide other things (logins,
# downstream stacks, the current state), not on a run's plan.
BACKTESTABLE = (PolicyType.pre_plan, PolicyType.post_plan, PolicyType.pre_apply, PolicyType.approval)

Sessions = Callable[..., AbstractContextManager[Session]]


@dataclass(frozen=True)
class _Version:
    body: str
    type: PolicyType


@dataclass(frozen=True)
class _Decided:
    """A decision with its complete message sets (the response gets them cut)."""

    outcome: str
    deny: list[str]
    warn: list[str]
    require_approval: bool
    required_approvals: int
    error: str | None
    duration_ms: float

    def public(self) -> BacktestDecision:
        return BacktestDecision(
            outcome=self.outcome,  # type: ignore[arg-type]
            deny=enforcement.clip(self.deny, max_messages=MAX_MESSAGES, max_chars=MAX_MESSAGE_CHARS),
            warn=enforcement.clip(self.warn, max_messages=MAX_MESSAGES, max_chars=MAX_MESSAGE_CHARS),
            deny_count=len(self.deny),
            warn_count=len(self.warn),
            require_approval=self.require_approval,
            required_approvals=self.required_approvals,
            error=self.error,
            duration_ms=self.duration_ms,
        )

    def effect(self) -> tuple[str, int]:
        """What the run would have experienced: the outcome, and how many approvals."""
        return self.outcome, self.required_approvals if self.outcome == "approval" else 0


NO_POLICY = _Decided("allow", [], [], False, 0, None, 0.0)


# Why a run is not replayed for a hook that enforcement would not have evaluated on it.
PLAN_ONLY_RUN = "not held: plan-only run"
NO_CHANGES = "not held: no changes"
NEVER_APPLIED = "never applied"
_HOOK_SCOPE = {
    PolicyType.approval: "runs evaluate approval policies only when they would apply (tracked and "
    "destroy runs whose plan has changes)",
    PolicyType.pre_apply: "runs evaluate pre_apply policies only when they reach their apply",
}


def not_judged(type_: PolicyType, run: Run) -> str | None:
    """Why enforcement (runner/job.py) would not have evaluated a ``type_`` policy on ``run``,
    or None if it would have: approval policies hold only runs that would apply (tracked or
    destroy, with changes), and pre_apply policies run in the apply phase only."""
    if type_ == PolicyType.approval:
        if run.type in lc.PLAN_ONLY:
            return PLAN_ONLY_RUN
        if not run.has_changes:
            return NO_CHANGES
    if type_ == PolicyType.pre_apply and lc.RunStatus.applying.value not in (run.status_timestamps or {}):
        return NEVER_APPLIED
    return None


def _decide(engine: PolicyEngine, version: _Version, doc: dict[str, Any], timeout_seconds: float) -> _Decided:
    started = time.perf_counter()
    try:
        d = engine.evaluate(version.body, doc, timeout_seconds=timeout_seconds)
    except (PolicyCompileError, PolicyEvalError) as exc:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return _Decided("error", [], [], False, 0, enforcement.error_text(exc), elapsed)
    return _Decided(
        enforcement.outcome_of(version.type.value, list(d.deny), list(d.warn), d.require_approval, None),
        list(d.deny),
        list(d.warn),
        d.require_approval,
        d.required_approvals,
        None,
        d.duration_ms,
    )


def _row(source: inputs.RunSource) -> BacktestRun:
    run = source.run
    return BacktestRun(
        run_id=run.id,
        stack_id=run.stack_id,
        stack_name=source.stack.name,
        run_type=run.type,
        run_status=run.status,
        created_at=iso(run.created_at) or "",
        commit_sha=run.commit_sha,
    )


@dataclass(frozen=True)
class _Plan:
    """What the read transaction hands to the evaluation."""

    draft: _Version
    current: _Version | None
    policy_id: str | None
    version: int | None
    enabled: bool | None
    stack_ids: list[str] | None
    sources: list[inputs.RunSource]
    notes: list[str]


def _load(session: Session, principal: Principal, request: BacktestRequest) -> _Plan:
    notes: list[str] = []
    current = policy = None
    stack_ids = list(dict.fromkeys(request.stack_ids)) if request.stack_ids else None
    if request.policy_id is not None:
        policy = load_policy(session, principal, request.policy_id)
        current = _Version(policy.body, PolicyType(policy.type))
        if stack_ids is None and not policy.applies_to_all:  # applies_to_all: every stack (None)
            stack_ids = stacks_for_policy(session, policy)
            if not stack_ids:
                notes.append(
                    f"policy {policy.name!r} applies to no stack yet: give stack_ids to backtest "
                    "it against their runs"
                )
        if not policy.enabled:
            notes.append(f"policy {policy.name!r} is disabled: its current version decides nothing on runs")
    type_ = request.type or (current.type if current else None)
    if type_ is None:
        raise FieldError("type", "give the draft's type (e.g. post_plan), or a policy_id to take its type")
    if type_ not in BACKTESTABLE:
        raise FieldError(
            "type",
            f"{type_.value} policies are not evaluated on runs' plans; backtesting covers "
            f"{', '.join(t.value for t in BACKTESTABLE)}",
        )
    runs = inputs.recent_plan_runs(session, principal, stack_ids, request.limit)
    return _Plan(
        draft=_Version(request.body, type_),
        current=current,
        policy_id=policy.id if policy else None,
        version=policy.version if policy else None,
        enabled=policy.enabled if policy else None,
        stack_ids=stack_ids,
        sources=inputs.sources_for(session, runs),
        notes=notes,
    )


def backtest(
    sessions: Sessions,
    objects: ObjectStore,
    principal: Principal,
    engine: PolicyEngine,
    request: BacktestRequest,
    *,
    timeout_seconds: float,
    max_input_bytes: int = inputs.DEFAULT_MAX_BYTES,
    budget_seconds: float = BUDGET_SECONDS,
) -> BacktestResult:
    """Replay ``request.body`` (and the saved policy's current version) on past plans.

    ``sessions(readonly=True)`` opens one short read transaction (``AppContext.session``);
    nothing else touches the database. Blocks for up to about ``budget_seconds`` plus one
    evaluation's ``timeout_seconds``: call it from a thread, not the event loop."""
    principal.require(Role.member, "backtesting policies")
    started = time.monotonic()
    deadline = started + budget_seconds
    # The draft is compiled before anything else: a syntax error is the common case and its
    # 422 (with line and column) needs no database.
    compile_or_422(engine, request.body)
    with sessions(readonly=True) as s:
        plan = _load(s, principal, request)

    out_of_budget: list[str] = []  # appended from the pool's threads (atomic)
    not_at_hook: list[str] = []  # runs the draft's hook would not have judged

    def replay(source: inputs.RunSource) -> BacktestRun:
        row = _row(source)
        if reason := not_judged(plan.draft.type, source.run):
            row.skipped = reason
            not_at_hook.append(row.run_id)
            return row
        if time.monotonic() >= deadline:
            row.skipped = f"not evaluated: the backtest's {budget_seconds:g} s budget was spent"
            out_of_budget.append(row.run_id)
            return row
        try:
            stored = inputs.load_plan(objects, source, max_input_bytes)
        except (inputs.PolicyInputTooLarge, inputs.PlanUnavailable) as exc:
            row.skipped = exc.message
            return row
        except StorageError as exc:
            row.skipped = f"the object store failed: {exc}"
            return row
        docs: dict[bool, dict[str, Any]] = {}

        def doc_for(type_: PolicyType) -> dict[str, Any]:
            key = type_ == PolicyType.pre_plan
            if key not in docs:
                docs[key] = inputs.build_input(source, stored, type_)
            return docs[key]

        draft = _decide(engine, plan.draft, doc_for(plan.draft.type), timeout_seconds)
        current = None
        # A current version of another type that its hook would not judge on this run decides
        # nothing here: the draft is compared with no policy.
        if plan.current is not None and not_judged(plan.current.type, source.run) is None:
            current = _decide(engine, plan.current, doc_for(plan.current.type), timeout_seconds)
        baseline = current or NO_POLICY
        row.draft = draft.public()
        row.current = current.public() if current else None
        row.changed = draft.effect() != baseline.effect()
        row.messages_changed = (draft.deny, draft.warn) != (baseline.deny, baseline.warn)
        return row

    if plan.sources:
        with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(plan.sources))) as pool:
            rows = list(pool.map(replay, plan.sources))
    else:
        rows = []

    budget_exceeded = bool(out_of_budget)
    notes = list(plan.notes)
    if budget_exceeded:
        notes.append(
            f"the backtest stopped after its {budget_seconds:g} s budget: {len(out_of_budget)} of "
            f"{len(rows)} runs "
            "were not evaluated; narrow it with stack_ids or a smaller limit"
        )
    if not_at_hook:
        notes.append(f"{len(not_at_hook)} of {len(rows)} runs were skipped: {_HOOK_SCOPE[plan.draft.type]}")
    if not rows and not plan.notes:
        notes.append("no past run of these stacks has a stored plan yet")
    return BacktestResult(
        engine=engine.name,
        type=plan.draft.type,
        policy_id=plan.policy_id,
        version=plan.version,
        policy_enabled=plan.enabled,
        stack_ids=plan.stack_ids,
        limit=request.limit,
        summary=_summary(rows, with_current=plan.current is not None),
        runs=rows,
        budget_seconds=budget_seconds,
        budget_exceeded=budget_exceeded,
        duration_ms=round((time.monotonic() - started) * 1000, 3),
        unsupported_builtins=engine.builtins_used_unsupported(request.body),
        notes=notes,
    )


def _counts(decisions: list[BacktestDecision]) -> BacktestCounts:
    return BacktestCounts(
        evaluated=len(decisions),
        would_deny=sum(1 for d in decisions if d.outcome == "deny"),
        would_warn=sum(1 for d in decisions if d.warn_count > 0 and d.outcome != "error"),
        would_require_approval=sum(1 for d in decisions if d.outcome == "approval"),
        errors=sum(1 for d in decisions if d.outcome == "error"),
    )


def _summary(rows: list[BacktestRun], *, with_current: bool) -> BacktestSummary:
    draft = _counts([r.draft for r in rows if r.draft is not None])
    current = _counts([r.current for r in rows if r.current is not None]) if with_current else None
    return BacktestSummary(
        **draft.model_dump(),
        runs=len(rows),
        skipped=sum(1 for r in rows if r.skipped),
        changed=sum(1 for r in rows if r.changed),
        current=current,
    )
