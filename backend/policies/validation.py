"""Validation policies: what a stack's enabled ``validation`` policies decide about its current state.

Runs judge a plan; validation judges what is deployed. On demand (``POST /stacks/{id}/validate``,
members and admins) and on a schedule (``run_scheduled``, every
CRUCIBLE_VALIDATION_INTERVAL_SECONDS), every enabled validation policy that applies to the
stack (attached, org-wide or by label) is evaluated against the stack's current state version.
The latest decision of each policy is kept in ``stack_validation`` (one row per stack and
policy, replaced by the next evaluation) and shown on the stack page. Validation blocks
nothing: a deny or an evaluation error is reported, never enforced.

Where the time goes, as in backtesting: one short read transaction loads the stack, its
policies and which state version is current; the state is then read from the object store,
redacted and evaluated in one pass (``enforcement.evaluate``) with no transaction open; one
write transaction stores the results (and, for a manual run, the ``stack.validate`` audit event).

The input document::

    {"state": {...the state file, sensitive values replaced by "(sensitive)"...},
     "crucible": {"stack": {"id", "name", "labels", "branch", "tool", "project_root"},
                  "state": {"serial", "lineage", "resource_count", "created_at"}}}

A stack without a current state gets no ``state`` key and ``crucible.state`` null; its results
record ``state_serial`` null.

Sensitive values never reach a policy (its messages are shown to viewers): an attribute listed
in its instance's ``sensitive_attributes`` and a sensitive output read "(sensitive)", and so does
every other occurrence of their text (Terraform repeats a sensitive ``terraform_data.input``
unmarked in ``output``). The marks are read exactly as the state page reads them
(``backend.state.diff``), in every form Terraform and OpenTofu write; a form it does not know
hides the whole instance. Dynamic values (``terraform_data.input``) are unwrapped as the state
page and ``terraform show -json`` show them, so the sensitive paths line up; the instances'
opaque ``private`` provider data is left out.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal, system_principal
from backend.errors import NotFound
from backend.policies import enforcement
from backend.policies.engine import PolicyEngine
from backend.policies.inputs import DEFAULT_MAX_BYTES
from backend.policies.models import Policy, PolicyType, StackValidation
from backend.policies.schemas import StackValidationPublic
from backend.policies.service import engine_for, policies_for_stack, stacks_for_policy
from backend.runs.plandiff import _hide
from backend.stacks.models import Stack
from backend.stacks.service import labels_of, load_stack
from backend.state import diff as state_diff
from backend.state.models import StateHead, StateVersion
from backend.storage import ObjectStore, StorageError
from backend.timeutil import as_utc, iso, utcnow

if TYPE_CHECKING:
    from backend.context import AppContext

log = logging.getLogger("crucible.validation")

VALIDATION = PolicyType.validation.value
TRIGGERS = ("manual", "schedule")

Sessions = Callable[..., AbstractContextManager[Session]]


# ---------------------------------------------------------------- the state, redacted


def redacted_state(state: Any) -> dict[str, Any]:
    """A copy of ``state`` (a parsed state file, format version 4) in which no sensitive value
    is left. Raises ``StateFormatError`` for anything the state page could not read either."""
    state_diff._load(state)  # the shape, checked as the state page checks it
    found: set[str] = set()
    resources = []
    for res in state.get("resources") or []:
        instances = []
        for raw in res["instances"]:
            inst = {k: v for k, v in raw.items() if k != "private"}
            key = "attributes" if raw.get("attributes") is not None else "attributes_flat"
            attributes = raw.get(key)
            if attributes is not None:
                if key == "attributes":
                    attributes = state_diff._unwrap_dynamic(attributes)
                marks = state_diff._marks(raw.get("sensitive_attributes"), attributes)
                inst[key] = _hide(attributes, marks, found)
            instances.append(inst)
        resources.append({**res, "instances": instances})
    outputs = {}
    for name, out in (state.get("outputs") or {}).items():
        sensitive = bool(out.get("sensitive"))  # any truthy flag hides, as on the state page
        outputs[name] = {**out, "value": _hide(out.get("value"), True, found)} if sensitive else out

    scrub = state_diff._scrubber(found)
    for res in resources:
        for inst in res["instances"]:
            for key in ("attributes", "attributes_flat", "identity"):
                if key in inst:
                    inst[key] = scrub(inst[key])
    doc = {k: v for k, v in state.items() if k not in ("resources", "outputs", "check_results")}
    doc["resources"] = resources
    doc["outputs"] = {
        name: {**out, "value": scrub(out.get("value"))} if "value" in out else out
        for name, out in outputs.items()
    }
    if "check_results" in state:
        doc["check_results"] = scrub(state["check_results"])
    return doc


# ---------------------------------------------------------------- loading and evaluating


@dataclass(frozen=True)
class _StateRef:
    """The current state version, as the read transaction saw it."""

    serial: int
    lineage: str
    resource_count: int
    created_at: datetime
    size: int
    object_key: str


@dataclass(frozen=True)
class _Source:
    stack_id: str
    stack: dict[str, Any]  # crucible.stack
    checks: list[enforcement.Check]
    state: _StateRef | None


class _Unreadable(Exception):
    """The state cannot be evaluated; the message says why and what to do."""


def _load(session: Session, principal: Principal, stack_id: str) -> _Source:
    stack = load_stack(session, principal, stack_id)
    labels = labels_of(session, [stack.id])[stack.id]
    checks = [
        enforcement.Check(policy_id=p.id, name=p.name, version=v.version, body=v.body)
        for p, v in policies_for_stack(session, stack.id, VALIDATION)
    ]
    head = session.get(StateHead, stack.id)
    version = session.get(StateVersion, head.current_version_id) if head and head.current_version_id else None
    ref = None
    if version is not None:
        ref = _StateRef(
            serial=version.serial,
            lineage=version.lineage,
            resource_count=version.resource_count,
            created_at=version.created_at,
            size=version.size,
            object_key=version.object_key,
        )
    context = {
        "id": stack.id,
        "name": stack.name,
        "labels": list(labels),
        "branch": stack.branch,
        "tool": stack.tool,
        "project_root": stack.project_root,
    }
    return _Source(stack_id=stack.id, stack=context, checks=checks, state=ref)


def _read_state(objects: ObjectStore, ref: _StateRef, max_bytes: int) -> dict[str, Any]:
    """The state's JSON, redacted. No database access."""

    def too_large(n: int) -> _Unreadable:
        return _Unreadable(
            f"the current state (serial {ref.serial}) is {n} bytes, more than "
            f"CRUCIBLE_POLICY_INPUT_MAX_BYTES ({max_bytes}): raise that setting to validate this stack"
        )

    if ref.size > max_bytes:
        raise too_large(ref.size)
    try:
        data = objects.get(ref.object_key)
    except StorageError as exc:
        raise _Unreadable(
            f"the current state (serial {ref.serial}) cannot be read from the object store: {exc}"
        ) from None
    if len(data) > max_bytes:
        raise too_large(len(data))
    try:
        return redacted_state(json.loads(data))
    except (ValueError, state_diff.StateFormatError) as exc:
        # StateFormatError is a ValueError; both say what is wrong with the file.
        raise _Unreadable(f"the current state (serial {ref.serial}) cannot be read: {exc}") from None


def input_document(source: _Source, state: dict[str, Any] | None) -> dict[str, Any]:
    """The document validation policies see as ``input`` (the module docstring has its shape)."""
    doc: dict[str, Any] = {}
    if state is not None:
        doc["state"] = state
    ref = source.state
    doc["crucible"] = {
        "stack": dict(source.stack),
        "state": None
        if ref is None
        else {
            "serial": ref.serial,
            "lineage": ref.lineage,
            "resource_count": ref.resource_count,
            "created_at": iso(ref.created_at),
        },
    }
    return doc


def _evaluate(
    objects: ObjectStore,
    engine: PolicyEngine,
    source: _Source,
    timeout_seconds: float,
    max_input_bytes: int,
) -> list[enforcement.Outcome]:
    try:
        state = _read_state(objects, source.state, max_input_bytes) if source.state is not None else None
    except _Unreadable as exc:
        return enforcement.failed_engine(source.checks, str(exc))
    return enforcement.evaluate(engine, source.checks, input_document(source, state), timeout_seconds)


# ---------------------------------------------------------------- recording


def _public(row: StackValidation) -> StackValidationPublic:
    return StackValidationPublic(
        policy_id=row.policy_id,
        policy_name=row.policy_name,
        policy_version=row.policy_version,
        state_serial=row.state_serial,
        outcome=row.outcome,  # type: ignore[arg-type]
        deny=list(row.deny or []),
        warn=list(row.warn or []),
        error=row.error,
        engine=row.engine,
        duration_ms=row.duration_ms,
        trigger=row.trigger,  # type: ignore[arg-type]
        evaluated_by=row.evaluated_by,
        evaluated_at=iso(row.evaluated_at) or "",
    )


def _rows(session: Session, stack_id: str) -> list[StackValidationPublic]:
    rows = session.exec(
        select(StackValidation)
        .where(StackValidation.stack_id == stack_id)
        .order_by(col(StackValidation.policy_name), col(StackValidation.policy_id))
        .execution_options(populate_existing=True)
    ).all()
    return [_public(r) for r in rows]


def _record(
    session: Session,
    principal: Principal,
    source: _Source,
    outcomes: list[enforcement.Outcome],
    trigger: str,
) -> list[StackValidationPublic]:
    stack = load_stack(session, principal, source.stack_id)  # deleted meanwhile: 404
    # What applies now: a policy detached, disabled or deleted while the state was evaluated
    # gets no row (and loses its old one); one attached meanwhile keeps its earlier result.
    applying = {p.id for p, _v in policies_for_stack(session, stack.id, VALIDATION)}
    kept = [o for o in outcomes if o.check.policy_id in applying]
    session.execute(
        delete(StackValidation).where(
            col(StackValidation.stack_id) == stack.id, col(StackValidation.policy_id).notin_(applying)
        )
    )
    serial = source.state.serial if source.state is not None else None
    now = utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for o in kept:
        values = {
            "stack_id": stack.id,
            "policy_id": o.check.policy_id,
            "policy_name": o.check.name,
            "policy_version": o.check.version,
            "state_serial": serial,
            "outcome": o.result(VALIDATION),
            "deny": list(o.deny),
            "warn": list(o.warn),
            "error": o.error,
            "engine": o.engine,
            "duration_ms": round(o.duration_ms, 3),
            "trigger": trigger,
            "evaluated_by": principal.label,
            "evaluated_at": now,
        }
        stmt = insert(StackValidation).values(**values)
        # Two evaluations of one stack at once (a click during the schedule's pass): the later
        # write wins, neither fails.
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["stack_id", "policy_id"],
                set_={k: stmt.excluded[k] for k in values if k not in ("stack_id", "policy_id")},
            )
        )
    if trigger == "manual":
        audit.record(
            session,
            principal,
            "stack.validate",
            resource_type="stack",
            resource_id=stack.id,
            after={
                "stack_name": stack.name,
                "state_serial": serial,
                "results": [
                    {
                        "policy_id": o.check.policy_id,
                        "policy_name": o.check.name,
                        "policy_version": o.check.version,
                        "outcome": o.result(VALIDATION),
                    }
                    for o in kept
                ],
            },
        )
    return _rows(session, stack.id)


# ---------------------------------------------------------------- use cases


def validate_stack(
    sessions: Sessions,
    objects: ObjectStore,
    principal: Principal,
    engine: PolicyEngine,
    stack_id: str,
    *,
    trigger: str = "manual",
    timeout_seconds: float,
    max_input_bytes: int = DEFAULT_MAX_BYTES,
) -> list[StackValidationPublic]:
    """Evaluate the stack's enabled validation policies against its current state now, store
    one result per policy and return the stack's results (ordered by policy name).

    ``sessions`` opens transactions (``AppContext.session``): one short read, one short write;
    the state is read and evaluated in between. Blocks for up to about ``timeout_seconds`` per
    policy: call it from a thread, not the event loop. Never raises for a policy's own failure
    or an unreadable state: those are stored as ``error`` results."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
    principal.require(Role.member, "validating a stack")
    with sessions(readonly=True) as s:
        source = _load(s, principal, stack_id)
    outcomes = _evaluate(objects, engine, source, timeout_seconds, max_input_bytes) if source.checks else []
    with sessions() as s:
        return _record(s, principal, source, outcomes, trigger)


def list_validations(session: Session, principal: Principal, stack_id: str) -> list[StackValidationPublic]:
    """The stack's latest validation results, ordered by policy name (every role: the messages
    carry no sensitive value)."""
    principal.require(Role.viewer, "viewing stack validations")
    stack = load_stack(session, principal, stack_id)
    return _rows(session, stack.id)


@dataclass(frozen=True)
class ValidationPolicy:
    policy_id: str
    name: str
    version: int


def validation_policies(session: Session, principal: Principal, stack_id: str) -> list[ValidationPolicy]:
    """The enabled validation policies that apply to the stack, ordered by name: what a
    validation would evaluate."""
    principal.require(Role.viewer, "viewing stack policies")
    stack = load_stack(session, principal, stack_id)
    return [
        ValidationPolicy(p.id, p.name, v.version)
        for p, v in policies_for_stack(session, stack.id, VALIDATION)
    ]


# ---------------------------------------------------------------- the schedule


def due_stacks(
    session: Session, interval_seconds: float, now: datetime | None = None
) -> list[tuple[str, str]]:
    """``(org_id, stack_id)`` of every stack, of every organization, that a scheduled pass
    validates: one of its enabled validation policies has no result yet or a result older than
    ``interval_seconds``, or it keeps results of policies that no longer apply (cleared then).
    Stacks never validated come first, then the longest unvalidated."""
    cutoff = as_utc(now or utcnow()) - timedelta(seconds=interval_seconds)
    applying: dict[str, set[str]] = {}
    policies = session.exec(select(Policy).where(Policy.type == VALIDATION, col(Policy.enabled))).all()
    for policy in policies:
        for stack_id in stacks_for_policy(session, policy):
            applying.setdefault(stack_id, set()).add(policy.id)
    results: dict[str, dict[str, datetime]] = {}
    for stack_id, policy_id, at in session.exec(
        select(StackValidation.stack_id, StackValidation.policy_id, StackValidation.evaluated_at)
    ).all():
        results.setdefault(stack_id, {})[policy_id] = as_utc(at)
    due: dict[str, datetime | None] = {}  # stack → its oldest result (None: a policy has none)
    for stack_id in applying.keys() | results.keys():
        wanted, have = applying.get(stack_id, set()), results.get(stack_id, {})
        if wanted - have.keys():
            due[stack_id] = None
        elif have.keys() - wanted or any(have[p] <= cutoff for p in wanted):
            due[stack_id] = min(have.values())
    if not due:
        return []
    orgs = dict(session.exec(select(Stack.id, Stack.org_id).where(col(Stack.id).in_(list(due)))).all())
    order = sorted(due, key=lambda sid: (due[sid] is not None, due[sid] or cutoff, sid))
    return [(orgs[sid], sid) for sid in order if sid in orgs]


def run_scheduled(
    ctx: AppContext, *, now: datetime | None = None, stop: threading.Event | None = None
) -> int:
    """One pass of the schedule: validate every due stack (``due_stacks``), one at a time, as
    the system (trigger ``schedule``, not audited: the results say who and when). Returns how
    many stacks were validated. A stack that fails is logged and skipped; ``stop`` (set on
    shutdown) ends the pass between two stacks. Blocks: call it from a thread."""
    settings = ctx.settings
    with ctx.session(readonly=True) as s:
        due = due_stacks(s, settings.validation_interval_seconds, now)
    if not due:
        return 0
    engine = engine_for(settings)  # PolicyEngineUnavailable: the caller logs it, nothing is stored
    done = 0
    for org_id, stack_id in due:
        if stop is not None and stop.is_set():
            break
        try:
            results = validate_stack(
                ctx.session,
                ctx.objects,
                system_principal(org_id),
                engine,
                stack_id,
                trigger="schedule",
                timeout_seconds=settings.policy_timeout_seconds,
                max_input_bytes=settings.policy_input_max_bytes,
            )
        except NotFound:  # deleted since the pass began
            continue
        except Exception:
            log.exception("validation of stack %s failed; it is retried on the next pass", stack_id)
            continue
        done += 1
        failing = [r for r in results if r.outcome in ("deny", "error")]
        if failing:
            log.info(
                "stack %s fails validation: %s",
                stack_id,
                "; ".join(f"{r.policy_name}: {r.outcome}" for r in failing),
                extra={"fields": {"stack_id": stack_id, "failing": len(failing)}},
            )
    return done


__all__ = [
    "TRIGGERS",
    "ValidationPolicy",
    "due_stacks",
    "input_document",
    "list_validations",
    "redacted_state",
    "run_scheduled",
    "validate_stack",
    "validation_policies",
]
