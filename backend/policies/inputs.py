"""The input document of a past run, as a policy would see it, and the runs that have one.

``run_input_document`` rebuilds what ``service.input_document`` makes of a run: the stored plan
JSON's keys at the top level plus ``crucible`` (run, stack, counts). It serves the playground's
"load a past run" and backtesting. The plan is the one the run's worker stored in the object
store, with every sensitive value redacted as ``GET /runs/{id}/plan`` shows it: these documents
go back to members (and, through a policy's messages, so would a secret), so they never carry
more than a reader of the plan may see. Pulumi previews mask secrets themselves (``[secret]``)
and are used as stored.

Loading is split for callers that keep transactions short: ``load_run_source`` (database, in
the caller's transaction) and ``load_plan`` (object store only, outside any transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.config import Settings
from backend.errors import Conflict, NotFound, ServiceError
from backend.policies.models import PolicyType
from backend.policies.service import input_document
from backend.runs.models import Run
from backend.runs.plandiff import PlanFormatError, redact_plan
from backend.stacks.models import Stack
from backend.stacks.service import labels_of, load_stack
from backend.storage import ObjectCorrupted, ObjectNotFound, ObjectStore

DEFAULT_MAX_BYTES: int = Settings.model_fields["policy_input_max_bytes"].default
MAX_RECENT = 200


class PolicyInputTooLarge(ServiceError):
    """413: the stored plan is larger than CRUCIBLE_POLICY_INPUT_MAX_BYTES."""

    status_code = 413


class PlanUnavailable(Conflict):
    """409: the run says it has a plan, but the stored plan cannot be used (gone, corrupted,
    not JSON). Nothing the request can fix; the message says what happened."""


@dataclass(frozen=True)
class RunSource:
    """What a run's input document is built from, loaded in one transaction."""

    run: Run
    stack: Stack
    labels: list[str]

    @property
    def plan_entry(self) -> dict[str, Any] | None:
        entry = (self.run.artifacts or {}).get("plan_json")
        return entry if isinstance(entry, dict) and entry.get("key") else None


def has_plan(run: Run) -> bool:
    entry = (run.artifacts or {}).get("plan_json")
    return isinstance(entry, dict) and bool(entry.get("key"))


def load_run_source(session: Session, principal: Principal, run_id: str) -> RunSource:
    """The run (of the principal's organization), its stack and the stack's labels."""
    principal.require(Role.member, "reading a run's policy input")
    run = session.get(Run, run_id)
    # Another org's run is indistinguishable from a missing one.
    if run is None or run.org_id != principal.org_id:
        raise NotFound(f"run {run_id} not found")
    stack = load_stack(session, principal, run.stack_id)
    return RunSource(run=run, stack=stack, labels=labels_of(session, [stack.id])[stack.id])


def sources_for(session: Session, runs: list[Run]) -> list[RunSource]:
    """RunSources for runs already loaded (and authorized) by the caller, in their order."""
    stack_ids = sorted({r.stack_id for r in runs})
    stacks = {s.id: s for s in session.exec(select(Stack).where(col(Stack.id).in_(stack_ids))).all()}
    labels = labels_of(session, stack_ids)
    return [RunSource(run=r, stack=stacks[r.stack_id], labels=labels[r.stack_id]) for r in runs]


def load_plan(objects: ObjectStore, source: RunSource, max_bytes: int = DEFAULT_MAX_BYTES) -> dict | None:
    """The run's stored plan JSON, redacted; None when the run has none (it has not planned,
    or its tool has no machine-readable plan, as Ansible). No database access."""
    entry = source.plan_entry
    if entry is None:
        return None
    run_id = source.run.id
    size = entry.get("size")

    def too_large(n: int) -> PolicyInputTooLarge:
        return PolicyInputTooLarge(
            f"the plan of run {run_id} is {n} bytes, more than CRUCIBLE_POLICY_INPUT_MAX_BYTES "
            f"({max_bytes}): raise that setting to evaluate policies against it"
        )

    if isinstance(size, int) and size > max_bytes:
        raise too_large(size)
    try:
        data = objects.get(entry["key"])
    except ObjectNotFound:
        raise PlanUnavailable(
            f"the stored plan of run {run_id} is missing from the object store (key {entry['key']}); "
            "trigger the run again to get a new plan"
        ) from None
    except ObjectCorrupted as exc:
        raise PlanUnavailable(f"the stored plan of run {run_id} cannot be read: {exc}") from None
    if len(data) > max_bytes:
        raise too_large(len(data))
    try:
        plan = json.loads(data)
    except ValueError as exc:
        raise PlanUnavailable(f"the stored plan of run {run_id} is not valid JSON: {exc}") from None
    if not isinstance(plan, dict):
        raise PlanUnavailable(f"the stored plan of run {run_id} is not a JSON object")
    return redacted(plan)


def redacted(plan: dict) -> dict:
    """The plan as policies see it, in runs as in the playground and backtests: every sensitive
    value replaced, so no policy message can carry one into a log or a result."""
    try:
        return redact_plan(plan)
    except PlanFormatError:
        # Not an OpenTofu/Terraform plan (nor a Terragrunt plan set): a Pulumi preview, which
        # prints secrets as "[secret]" itself.
        return plan


def build_input(source: RunSource, plan: dict | None, type_: PolicyType | str | None = None) -> dict:
    """The input document. A ``pre_plan`` policy runs before the plan: no plan keys and zero
    counts, as it would have seen the run then."""
    if type_ is not None and PolicyType(type_) == PolicyType.pre_plan:
        doc = input_document(source.run, source.stack, source.labels, None)
        doc["crucible"]["counts"] = {"add": 0, "change": 0, "destroy": 0}
        return doc
    return input_document(source.run, source.stack, source.labels, plan)


def run_input_document(
    session: Session,
    principal: Principal,
    objects: ObjectStore,
    run_id: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict:
    """The policy input document of a past run (members and admins). A run without a stored
    plan gets the document without plan keys. The plan is read from the object store inside
    the caller's transaction: callers that care use load_run_source + load_plan."""
    source = load_run_source(session, principal, run_id)
    return build_input(source, load_plan(objects, source, max_bytes))


def recent_plan_runs(
    session: Session, principal: Principal, stack_ids: list[str] | None, limit: int
) -> list[Run]:
    """The newest runs (any status) with a stored plan JSON, of ``stack_ids`` (every stack of
    the organization when None), newest first. An unknown stack is a 404."""
    principal.require(Role.viewer, "listing runs")
    if not 1 <= limit <= MAX_RECENT:
        raise ServiceError(f"limit must be between 1 and {MAX_RECENT}, got {limit}")
    stmt = select(Run).where(Run.org_id == principal.org_id)
    if stack_ids is not None:
        wanted = list(dict.fromkeys(stack_ids))
        if not wanted:
            return []
        found = set(
            session.exec(
                select(Stack.id).where(col(Stack.id).in_(wanted), Stack.org_id == principal.org_id)
            ).all()
        )
        for stack_id in wanted:
            if stack_id not in found:  # another org's stack is indistinguishable from a missing one
                raise NotFound(f"stack {stack_id} not found")
        stmt = stmt.where(col(Run.stack_id).in_(wanted))
    # JSON_EXTRACT (SQLite) / ->> (PostgreSQL): NULL when the key is absent.
    stmt = stmt.where(col(Run.artifacts)["plan_json"].as_string().is_not(None))
    rows = session.exec(stmt.order_by(col(Run.created_at).desc(), col(Run.id).desc()).limit(limit)).all()
    return [r for r in rows if has_plan(r)]
