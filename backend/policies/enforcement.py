"""Policies at a run's hooks: what to evaluate, evaluating it, recording and judging the results.

A worker executing a phase loads the phase's policies once (``load``, one short transaction):
the plan phase has ``pre_plan``, ``post_plan`` and ``approval``; the apply phase has
``pre_apply``. At each hook it builds the input document (``input_for``), evaluates every
policy of the hook outside any transaction (``evaluate``; it blocks, call it from a thread),
stores one ``RunPolicyResult`` per policy (``record``) and acts on the ``Verdict``:

- any ``deny`` message, at any hook, fails the run there with the messages;
- an evaluation error (a compile error in a saved policy, a runtime error, a timeout, an
  unreachable OPA server) fails the run too: policies fail closed;
- ``warn`` messages are shown on the run and in its log;
- ``require_approval``/``required_approvals`` of ``approval`` policies hold a run that would
  apply (tracked/destroy with changes) in ``pending_approval`` for the largest count asked.

No policy, no cost: a hook with nothing attached evaluates nothing and stores nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from backend.policies.engine import PolicyCompileError, PolicyEngine, PolicyEvalError
from backend.policies.models import Policy, PolicyType, PolicyVersion
from backend.policies.service import input_document, policies_for_stack
from backend.runs.models import Run, RunPolicyResult
from backend.stacks.models import Stack
from backend.stacks.service import labels_of
from backend.timeutil import utcnow

TRIGGER = PolicyType.trigger.value
HOOKS = {
    # A tracked run whose plan has no changes finishes in the plan phase: trigger policies too.
    "plan": (PolicyType.pre_plan.value, PolicyType.post_plan.value, PolicyType.approval.value, TRIGGER),
    "apply": (PolicyType.pre_apply.value, TRIGGER),
}
RUN_HOOKS = tuple(h for hooks in HOOKS.values() for h in hooks)
MAX_MESSAGES = 100  # per policy and kind: a runaway rule cannot flood the run record
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Check:
    """One policy to evaluate, as it was when the phase began."""

    policy_id: str
    name: str
    version: int
    body: str


@dataclass(frozen=True)
class PolicySet:
    """The policies of one phase of one run, by hook, and the ``crucible`` part of the input."""

    checks: dict[str, list[Check]]
    context: dict[str, Any]

    def for_hook(self, hook: str) -> list[Check]:
        return self.checks.get(hook, [])


@dataclass(frozen=True)
class Outcome:
    check: Check
    deny: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)
    require_approval: bool = False
    required_approvals: int = 0
    error: str | None = None
    engine: str = ""
    duration_ms: float = 0.0
    trigger: list[str] = field(default_factory=list)  # trigger policies: the stacks it names
    role: str | None = None  # login policies: the role it gives the login

    def result(self, hook: str) -> str:
        return outcome_of(hook, self.deny, self.warn, self.require_approval, self.error, self.trigger)


def outcome_of(
    hook: str,
    deny: list[str],
    warn: list[str],
    require_approval: bool,
    error: str | None,
    trigger: list[str] | None = None,
) -> str:
    """What a policy's decision at ``hook`` means for the run: ``error`` (it fails closed), ``deny``,
    ``approval`` (approval policies only), ``warn``, else ``allow``. Backtesting judges the same way.
    At the trigger hook the run is over: ``trigger`` when it names stacks, and a deny is only shown."""
    if error is not None:
        return "error"
    if hook == TRIGGER:
        return "trigger" if trigger else "warn" if deny or warn else "allow"
    if deny:
        return "deny"
    if hook == PolicyType.approval.value and require_approval:
        return "approval"
    if warn:
        return "warn"
    return "allow"


@dataclass(frozen=True)
class Verdict:
    """What a hook's outcomes mean for the run."""

    failure: str | None  # the run fails at the hook with this reason
    warnings: list[str]
    required_approvals: int


def load(session: Session, run_id: str, phase: str) -> PolicySet:
    """The enabled policies that apply to the run's stack for each hook of ``phase``."""
    run = session.get(Run, run_id)
    if run is None:
        return PolicySet({}, {})
    checks = {
        hook: [
            Check(policy_id=p.id, name=p.name, version=v.version, body=v.body)
            for p, v in policies_for_stack(session, run.stack_id, hook)
        ]
        for hook in HOOKS[phase]
    }
    if not any(checks.values()):
        return PolicySet({}, {})
    stack = session.get(Stack, run.stack_id)
    assert stack is not None  # runs cascade with their stack
    labels = labels_of(session, [stack.id])[stack.id]
    return PolicySet(checks, input_document(run, stack, labels)["crucible"])


def org_policies(session: Session, org_id: str, type_: PolicyType | str) -> list[Check]:
    """The enabled policies of ``type_`` that apply to the whole organization (``login``),
    at their current versions, ordered by name: one query, and nothing when there are none."""
    type_value = type_.value if isinstance(type_, PolicyType) else PolicyType(type_).value
    rows = session.exec(
        select(Policy.id, Policy.name, PolicyVersion.version, PolicyVersion.body)
        .join(
            PolicyVersion,
            (col(PolicyVersion.policy_id) == col(Policy.id))
            & (col(PolicyVersion.version) == col(Policy.version)),
        )
        .where(Policy.org_id == org_id, Policy.type == type_value, col(Policy.enabled))
        .order_by(col(Policy.name), col(Policy.id))
    ).all()
    return [Check(policy_id=pid, name=name, version=version, body=body) for pid, name, version, body in rows]


def input_for(
    policies: PolicySet,
    *,
    commit_sha: str | None = None,
    plan: dict[str, Any] | None = None,
    summary: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The input document at a hook: the plan's keys (once there is a plan) and ``crucible``,
    with the commit the workspace checked out and the plan's counts."""
    doc = {k: v for k, v in (plan or {}).items() if k != "crucible"}
    context = dict(policies.context)
    run = dict(context.get("run", {}))
    if commit_sha:
        run["commit"] = commit_sha
    context["run"] = run
    if summary is not None:
        context["counts"] = {key: int(summary.get(key) or 0) for key in ("add", "change", "destroy")}
    doc["crucible"] = context
    return doc


def clip(
    messages: list[str], *, max_messages: int = MAX_MESSAGES, max_chars: int = MAX_MESSAGE_CHARS
) -> list[str]:
    """At most ``max_messages`` messages of at most ``max_chars`` characters each; the last one
    says how many more there were."""
    out = [m if len(m) <= max_chars else m[: max_chars - 1] + "…" for m in messages]
    if len(out) > max_messages:
        out = [*out[: max_messages - 1], f"… and {len(out) - max_messages + 1} more"]
    return out


def error_text(exc: PolicyCompileError | PolicyEvalError) -> str:
    """A policy's failure as a run records it (``Outcome.error``)."""
    kind = "does not compile" if isinstance(exc, PolicyCompileError) else "could not be evaluated"
    return f"{kind}: {exc}"[:MAX_MESSAGE_CHARS]


def evaluate(
    engine: PolicyEngine, checks: list[Check], doc: dict[str, Any], timeout_seconds: float
) -> list[Outcome]:
    """Evaluate every check against ``doc``. Blocks; never raises for a policy's own failure.
    Engines that can evaluate several policies in one pass (``evaluate_many``) do: the input is
    then read once for all of them."""
    if not checks:
        return []
    started = time.perf_counter()
    many = getattr(engine, "evaluate_many", None)
    if many is not None:
        results = many([c.body for c in checks], doc, timeout_seconds=timeout_seconds)
    else:
        results = []
        for check in checks:
            try:
                results.append(engine.evaluate(check.body, doc, timeout_seconds=timeout_seconds))
            except (PolicyCompileError, PolicyEvalError) as exc:
                results.append(exc)
    share = (time.perf_counter() - started) * 1000 / len(checks)
    out = []
    for check, d in zip(checks, results, strict=True):
        if isinstance(d, (PolicyCompileError, PolicyEvalError)):
            out.append(Outcome(check, error=error_text(d), engine=engine.name, duration_ms=share))
            continue
        out.append(
            Outcome(
                check,
                deny=clip(list(d.deny)),
                warn=clip(list(d.warn)),
                require_approval=d.require_approval,
                required_approvals=d.required_approvals,
                engine=engine.name,
                duration_ms=d.duration_ms,
                trigger=clip(list(d.trigger)),
                role=d.role,
            )
        )
    return out


def failed_engine(checks: list[Check], message: str) -> list[Outcome]:
    """Outcomes for checks that could not run at all (no engine is available)."""
    return [Outcome(c, error=f"could not be evaluated: {message}"[:MAX_MESSAGE_CHARS]) for c in checks]


def record(
    session: Session,
    run_id: str,
    hook: str,
    outcomes: list[Outcome],
    triggered: dict[str, list[str]] | None = None,
) -> None:
    """Store the outcomes; ``triggered``: per policy id, the runs its trigger decision made."""
    now = utcnow()
    for o in outcomes:
        session.add(
            RunPolicyResult(
                run_id=run_id,
                hook=hook,
                policy_id=o.check.policy_id,
                policy_name=o.check.name,
                policy_version=o.check.version,
                outcome=o.result(hook),
                deny=o.deny,
                warn=o.warn,
                require_approval=o.require_approval,
                required_approvals=o.required_approvals,
                error=o.error,
                engine=o.engine,
                duration_ms=round(o.duration_ms, 3),
                triggered=(triggered or {}).get(o.check.policy_id, []),
                created_at=now,
            )
        )


def _label(o: Outcome) -> str:
    return f"policy {o.check.name!r} (version {o.check.version})"


def verdict(hook: str, outcomes: list[Outcome]) -> Verdict:
    if hook == TRIGGER:  # after the run: nothing a trigger policy says can fail it
        warnings = [f"{_label(o)}: {m}" for o in outcomes if o.error is None for m in (*o.deny, *o.warn)]
        return Verdict(failure=None, warnings=warnings, required_approvals=0)
    errors = [f"{_label(o)} {o.error}" for o in outcomes if o.error is not None]
    denials = [f"{_label(o)}: {m}" for o in outcomes if o.error is None for m in o.deny]
    parts = [*denials, *errors]  # an error fails closed: it denies as a deny does
    failure = f"denied at {hook}: " + "; ".join(parts) if parts else None
    warnings = [f"{_label(o)}: {m}" for o in outcomes if o.error is None for m in o.warn]
    required = 0
    if hook == PolicyType.approval.value:
        for o in outcomes:
            if o.error is None and o.require_approval:
                required = max(required, o.required_approvals or 1)
    return Verdict(failure=failure, warnings=warnings, required_approvals=required)
