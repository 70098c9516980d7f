"""Policy use cases: authorize → validate → load → mutate → audit, in the caller's transaction.

Who may do what (as Spacelift: policies are "attachable entities" that only space admins
manage, and every reader sees them):
  viewer  read policies, their versions and which policies apply to a stack
  member  evaluate (the playground): it costs up to CRUCIBLE_POLICY_TIMEOUT_SECONDS of CPU
  admin   create, edit and delete policies; attach them to stacks and detach them

Versions: a policy's evaluated fields (body, type, enabled, description) are copied into a new
``policy_version`` row whenever one of them changes; name, ``applies_to_all`` and labels say
where it applies and are audited but not versioned. An edit that changes nothing writes
nothing. Audit events never carry more than AUDIT_BODY_MAX bytes of Rego: a larger body is
recorded as its SHA-256 and length (the text itself is in ``policy_version``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.errors import Conflict, FieldError, NotFound, ServiceError
from backend.policies import library as starter
from backend.policies.engine import PolicyCompileError, PolicyEngine, PolicyEvalError, default_engine
from backend.policies.models import Policy, PolicyLabel, PolicyType, PolicyVersion, StackPolicy
from backend.policies.schemas import (
    EvaluationResult,
    LibraryPolicyPublic,
    PolicyCreate,
    PolicyEvaluate,
    PolicyPublic,
    PolicySummary,
    PolicyUpdate,
    PolicyVersionPublic,
    PolicyVersionSummary,
    StackPolicyPublic,
)
from backend.runs.models import Run
from backend.stacks.models import Stack, StackLabel
from backend.stacks.service import load_stack
from backend.timeutil import iso, new_id, utcnow

MAX_PAGE = 200
AUDIT_BODY_MAX = 4096
VERSIONED = ("body", "type", "enabled", "description")
NON_NULLABLE = ("name", "type", "body", "description", "enabled", "applies_to_all", "labels")
# Login policies decide logins of the whole organization; stacks have nothing to do with them.
ORG_ONLY_TYPES = (PolicyType.login.value,)


# ---------------------------------------------------------------- errors


class PolicyCompileFailed(FieldError):
    """422 in FastAPI's error shape, with the engine's line and column."""

    def __init__(self, field: str, error: PolicyCompileError, where: str = "body"):
        super().__init__(field, f"the policy does not compile: {error.message}", where)
        self.line = error.line
        self.column = error.column

    def detail(self) -> list[dict]:
        item = {**super().detail()[0], "type": "rego_compile_error"}
        item["line"] = self.line
        item["column"] = self.column
        return [item]


class PolicyCheckFailed(FieldError):
    """422: the engine could not tell whether the policy compiles (it timed out, say)."""

    def __init__(self, field: str, error: PolicyEvalError):
        super().__init__(field, f"the policy could not be checked: {error.message}")

    def detail(self) -> list[dict]:
        return [{**super().detail()[0], "type": "rego_check_failed"}]


class PolicyEngineUnavailable(ServiceError):
    """503: no engine is configured or installed (a setting to fix, not the request)."""

    status_code = 503


class PolicyEvaluationFailed(FieldError):
    """422: the policy compiled but failed while it ran (an error, a conflict, the time limit)."""

    def __init__(self, field: str, error: PolicyEvalError):
        super().__init__(field, f"evaluation error: {error.message}")

    def detail(self) -> list[dict]:
        return [{**super().detail()[0], "type": "rego_eval_error"}]


# ---------------------------------------------------------------- mapping


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _labels_of(session: Session, policy_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {pid: [] for pid in policy_ids}
    if not policy_ids:
        return out
    rows = session.exec(
        select(PolicyLabel.policy_id, PolicyLabel.label)
        .where(col(PolicyLabel.policy_id).in_(policy_ids))
        .order_by(col(PolicyLabel.label))
    ).all()
    for policy_id, label in rows:
        out[policy_id].append(label)
    return out


def _summary_fields(policy: Policy, labels: list[str]) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "type": policy.type,
        "enabled": policy.enabled,
        "applies_to_all": policy.applies_to_all,
        "labels": labels,
        "version": policy.version,
        "body_sha256": sha256(policy.body),
        "body_bytes": len(policy.body.encode("utf-8")),
        "created_by": policy.created_by,
        "created_at": iso(policy.created_at) or "",
        "updated_by": policy.updated_by,
        "updated_at": iso(policy.updated_at) or "",
    }


def to_public(policy: Policy, labels: list[str]) -> PolicyPublic:
    return PolicyPublic(**_summary_fields(policy, labels), body=policy.body)


def to_summary(policy: Policy, labels: list[str]) -> PolicySummary:
    return PolicySummary(**_summary_fields(policy, labels))


def _version_fields(v: PolicyVersion, current: int) -> dict[str, Any]:
    return {
        "policy_id": v.policy_id,
        "version": v.version,
        "description": v.description,
        "type": v.type,
        "enabled": v.enabled,
        "body_sha256": sha256(v.body),
        "body_bytes": len(v.body.encode("utf-8")),
        "changed_by": v.changed_by,
        "created_at": iso(v.created_at) or "",
        "current": v.version == current,
    }


def _snapshot(policy: Policy, labels: list[str]) -> dict[str, Any]:
    """What the audit log keeps of a policy: everything but a large body (hash + length)."""
    size = len(policy.body.encode("utf-8"))
    doc: dict[str, Any] = {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "type": policy.type,
        "enabled": policy.enabled,
        "applies_to_all": policy.applies_to_all,
        "labels": list(labels),
        "version": policy.version,
        "body_sha256": sha256(policy.body),
        "body_bytes": size,
    }
    if size <= AUDIT_BODY_MAX:
        doc["body"] = policy.body
    return doc


# ---------------------------------------------------------------- checks


def engine_for(settings: Any) -> PolicyEngine:
    """The configured engine (CRUCIBLE_POLICY_ENGINE, CRUCIBLE_OPA_URL)."""
    try:
        return default_engine(settings)
    except PolicyEvalError as exc:
        raise PolicyEngineUnavailable(f"no policy engine is available: {exc.message}") from None


def compile_or_422(engine: PolicyEngine, source: str, field: str = "body") -> None:
    try:
        engine.compile(source)
    except PolicyCompileError as exc:
        raise PolicyCompileFailed(field, exc) from None
    except PolicyEvalError as exc:
        raise PolicyCheckFailed(field, exc) from None


def _check_org_only(type_: str, applies_to_all: bool, labels: list[str]) -> None:
    if type_ not in ORG_ONLY_TYPES:
        return
    if applies_to_all:
        raise FieldError(
            "applies_to_all", f"{type_} policies apply to the whole organization; they attach to no stack"
        )
    if labels:
        raise FieldError(
            "labels", f"{type_} policies apply to the whole organization; they attach to no stack"
        )


def _name_taken(session: Session, org_id: str, name: str, except_id: str | None = None) -> bool:
    stmt = select(Policy.id).where(Policy.org_id == org_id, func.lower(Policy.name) == name.lower())
    if except_id:
        stmt = stmt.where(Policy.id != except_id)
    return session.exec(stmt).first() is not None


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:  # a concurrent create of the same name got there first
        raise Conflict(f"a policy named {name!r} already exists in this organization") from None


def load_policy(session: Session, principal: Principal, policy_id: str, for_update: bool = False) -> Policy:
    # Editors lock the row (PostgreSQL; SQLite's BEGIN IMMEDIATE serializes writers anyway), so
    # two concurrent edits cannot both write version N + 1.
    policy = session.get(Policy, policy_id, with_for_update=for_update)
    # Another org's policy is indistinguishable from a missing one (in a path or a body).
    if policy is None or policy.org_id != principal.org_id:
        raise NotFound(f"policy {policy_id} not found")
    return policy


def _add_version(session: Session, policy: Policy, by: str) -> None:
    session.add(
        PolicyVersion(
            policy_id=policy.id,
            version=policy.version,
            body=policy.body,
            description=policy.description,
            type=policy.type,
            enabled=policy.enabled,
            changed_by=by,
            created_at=policy.updated_at,
        )
    )


# ---------------------------------------------------------------- policies


def list_policies(
    session: Session,
    principal: Principal,
    type_: PolicyType | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[PolicySummary], int]:
    principal.require(Role.viewer, "listing policies")
    stmt = select(Policy).where(Policy.org_id == principal.org_id)
    if type_ is not None:
        stmt = stmt.where(Policy.type == type_.value)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    page = session.exec(stmt.order_by(col(Policy.name), col(Policy.id)).offset(offset).limit(limit)).all()
    labels = _labels_of(session, [p.id for p in page])
    return [to_summary(p, labels[p.id]) for p in page], int(total)


def get_policy(session: Session, principal: Principal, policy_id: str) -> PolicyPublic:
    principal.require(Role.viewer, "viewing policies")
    policy = load_policy(session, principal, policy_id)
    return to_public(policy, _labels_of(session, [policy.id])[policy.id])


def create_policy(
    session: Session, principal: Principal, engine: PolicyEngine, body: PolicyCreate
) -> PolicyPublic:
    principal.require(Role.admin, "creating policies")
    _check_org_only(body.type.value, body.applies_to_all, body.labels)
    # Before the first statement: on SQLite that opens the write transaction, which compiling
    # (a network call with the OPA engine) should not hold.
    compile_or_422(engine, body.body)
    if _name_taken(session, principal.org_id, body.name):
        raise FieldError("name", f"a policy named {body.name!r} already exists in this organization")
    now = utcnow()
    policy = Policy(
        id=new_id("pol"),
        org_id=principal.org_id,
        name=body.name,
        description=body.description,
        type=body.type.value,
        body=body.body,
        enabled=body.enabled,
        applies_to_all=body.applies_to_all,
        version=1,
        created_by=principal.label,
        updated_by=principal.label,
        created_at=now,
        updated_at=now,
    )
    session.add(policy)
    _flush(session, body.name)
    _add_version(session, policy, principal.label)
    labels = sorted(body.labels)  # a set: kept and shown sorted
    for label in labels:
        session.add(PolicyLabel(policy_id=policy.id, label=label))
    session.flush()
    audit.record(
        session,
        principal,
        "policy.create",
        resource_type="policy",
        resource_id=policy.id,
        after=_snapshot(policy, labels),
    )
    return to_public(policy, labels)


def update_policy(
    session: Session, principal: Principal, engine: PolicyEngine, policy_id: str, body: PolicyUpdate
) -> PolicyPublic:
    principal.require(Role.admin, "editing policies")
    changes = body.model_dump(exclude_unset=True)
    for key in NON_NULLABLE:
        if key in changes and changes[key] is None:
            raise FieldError(key, f"{key} cannot be null; leave it out to keep the current value")
    if "type" in changes:
        changes["type"] = changes["type"].value
    policy = load_policy(session, principal, policy_id, for_update=True)
    labels = _labels_of(session, [policy.id])[policy.id]
    new_labels = sorted(changes.pop("labels", labels))  # a set: kept and shown sorted
    _check_org_only(
        changes.get("type", policy.type), changes.get("applies_to_all", policy.applies_to_all), new_labels
    )
    if changes.get("type") in ORG_ONLY_TYPES and policy.type not in ORG_ONLY_TYPES:
        attached = session.exec(
            select(func.count()).select_from(StackPolicy).where(StackPolicy.policy_id == policy.id)
        ).one()
        if attached:
            raise FieldError(
                "type",
                f"the policy is attached to {attached} stack(s); "
                f"detach it before making it a {changes['type']} policy",
            )
    if "name" in changes and _name_taken(session, principal.org_id, changes["name"], policy.id):
        raise FieldError("name", f"a policy named {changes['name']!r} already exists in this organization")
    changed = {k: v for k, v in changes.items() if getattr(policy, k) != v}
    if "body" in changed:
        compile_or_422(engine, changed["body"])
    if not changed and new_labels == labels:
        return to_public(policy, labels)

    before = _snapshot(policy, labels)
    for key, value in changed.items():
        setattr(policy, key, value)
    policy.updated_at = utcnow()
    policy.updated_by = principal.label
    if any(k in changed for k in VERSIONED):
        policy.version += 1
        _add_version(session, policy, principal.label)
    if new_labels != labels:
        session.execute(delete(PolicyLabel).where(col(PolicyLabel.policy_id) == policy.id))
        for label in new_labels:
            session.add(PolicyLabel(policy_id=policy.id, label=label))
    session.add(policy)
    _flush(session, policy.name)
    after = _snapshot(policy, new_labels)
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    audit.record(
        session,
        principal,
        "policy.update",
        resource_type="policy",
        resource_id=policy.id,
        before={k: before[k] for k in keys if k in before},
        after={k: after[k] for k in keys if k in after},
    )
    return to_public(policy, new_labels)


def delete_policy(session: Session, principal: Principal, policy_id: str) -> None:
    """Deletes the policy with its versions and attachments (disable it to keep the history)."""
    principal.require(Role.admin, "deleting policies")
    policy = load_policy(session, principal, policy_id, for_update=True)
    before = _snapshot(policy, _labels_of(session, [policy.id])[policy.id])
    attached = session.exec(select(StackPolicy.stack_id).where(StackPolicy.policy_id == policy.id)).all()
    before["attached_stacks"] = sorted(attached)
    for table in (StackPolicy, PolicyLabel, PolicyVersion):
        session.execute(delete(table).where(col(table.policy_id) == policy.id))
    session.delete(policy)
    session.flush()
    audit.record(
        session, principal, "policy.delete", resource_type="policy", resource_id=policy_id, before=before
    )


# ---------------------------------------------------------------- versions


def list_versions(
    session: Session, principal: Principal, policy_id: str, limit: int = 50, offset: int = 0
) -> tuple[list[PolicyVersionSummary], int]:
    """Newest first."""
    principal.require(Role.viewer, "viewing policies")
    policy = load_policy(session, principal, policy_id)
    total = session.exec(
        select(func.count()).select_from(PolicyVersion).where(PolicyVersion.policy_id == policy.id)
    ).one()
    rows = session.exec(
        select(PolicyVersion)
        .where(PolicyVersion.policy_id == policy.id)
        .order_by(col(PolicyVersion.version).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [PolicyVersionSummary(**_version_fields(v, policy.version)) for v in rows], int(total)


def get_version(session: Session, principal: Principal, policy_id: str, version: int) -> PolicyVersionPublic:
    principal.require(Role.viewer, "viewing policies")
    policy = load_policy(session, principal, policy_id)
    row = session.get(PolicyVersion, (policy.id, version))
    if row is None:
        raise NotFound(f"policy {policy_id} has no version {version} (the latest is {policy.version})")
    return PolicyVersionPublic(**_version_fields(row, policy.version), body=row.body)


# ---------------------------------------------------------------- attachments


def _applies_clause(org_id: str, stack_id: str):
    """Policies of ``org_id`` that apply to the stack: directly, org-wide or by a label."""
    direct = select(StackPolicy.policy_id).where(StackPolicy.stack_id == stack_id)
    by_label = (
        select(PolicyLabel.policy_id)
        .join(StackLabel, col(StackLabel.label) == col(PolicyLabel.label))
        .where(StackLabel.stack_id == stack_id)
    )
    return (
        col(Policy.org_id) == org_id,
        col(Policy.type).notin_(ORG_ONLY_TYPES),
        or_(col(Policy.applies_to_all), col(Policy.id).in_(direct), col(Policy.id).in_(by_label)),
    )


def policies_for_stack(
    session: Session, stack_id: str, type_: PolicyType | str
) -> list[tuple[Policy, PolicyVersion]]:
    """The enabled policies of ``type_`` that apply to the stack (attached to it, to every stack,
    or to one of its labels), each with its current version, ordered by name. No authorization:
    the runs enforcement calls it for the stack of the run it is executing."""
    stack = session.get(Stack, stack_id)
    if stack is None:
        return []
    type_value = type_.value if isinstance(type_, PolicyType) else PolicyType(type_).value
    rows = session.exec(
        select(Policy, PolicyVersion)
        .join(
            PolicyVersion,
            (col(PolicyVersion.policy_id) == col(Policy.id))
            & (col(PolicyVersion.version) == col(Policy.version)),
        )
        .where(*_applies_clause(stack.org_id, stack_id), Policy.type == type_value, col(Policy.enabled))
        .order_by(col(Policy.name), col(Policy.id))
    ).all()
    return [(policy, version) for policy, version in rows]


def stack_policies(session: Session, principal: Principal, stack_id: str) -> list[StackPolicyPublic]:
    """Every policy that applies to the stack, enabled or not, with how it applies."""
    principal.require(Role.viewer, "viewing stack policies")
    stack = load_stack(session, principal, stack_id)
    policies = session.exec(
        select(Policy)
        .where(*_applies_clause(stack.org_id, stack.id))
        .order_by(col(Policy.name), col(Policy.id))
    ).all()
    ids = [p.id for p in policies]
    direct = {
        a.policy_id: a
        for a in session.exec(
            select(StackPolicy).where(StackPolicy.stack_id == stack.id, col(StackPolicy.policy_id).in_(ids))
        ).all()
    }
    stack_labels = set(session.exec(select(StackLabel.label).where(StackLabel.stack_id == stack.id)).all())
    policy_labels = _labels_of(session, ids)
    out = []
    for p in policies:
        matched = [label for label in policy_labels[p.id] if label in stack_labels]
        attachment = direct.get(p.id)
        via = [
            kind
            for kind, applies in (
                ("direct", attachment is not None),
                ("all", p.applies_to_all),
                ("label", matched),
            )
            if applies
        ]
        out.append(
            StackPolicyPublic(
                policy_id=p.id,
                name=p.name,
                description=p.description,
                type=p.type,  # type: ignore[arg-type]
                enabled=p.enabled,
                version=p.version,
                via=via,  # type: ignore[arg-type]
                matched_labels=matched,
                attached_by=attachment.attached_by if attachment else None,
                attached_at=iso(attachment.created_at) if attachment else None,
            )
        )
    return out


def attach_policy(session: Session, principal: Principal, stack_id: str, policy_id: str) -> StackPolicyPublic:
    principal.require(Role.admin, "attaching policies")
    stack = load_stack(session, principal, stack_id)
    policy = load_policy(session, principal, policy_id)
    if policy.type in ORG_ONLY_TYPES:
        raise FieldError(
            "policy_id",
            f"{policy.type} policies apply to the whole organization and cannot be attached to a stack",
        )
    if session.get(StackPolicy, (stack.id, policy.id)) is not None:
        raise Conflict(f"policy {policy.id} is already attached to stack {stack.id}")
    session.add(
        StackPolicy(stack_id=stack.id, policy_id=policy.id, attached_by=principal.label, created_at=utcnow())
    )
    try:
        session.flush()
    except IntegrityError:  # attached concurrently
        raise Conflict(f"policy {policy.id} is already attached to stack {stack.id}") from None
    audit.record(
        session,
        principal,
        "policy.attach",
        resource_type="stack",
        resource_id=stack.id,
        after={"policy_id": policy.id, "policy_name": policy.name, "stack_name": stack.name},
    )
    return next(p for p in stack_policies(session, principal, stack.id) if p.policy_id == policy.id)


def detach_policy(session: Session, principal: Principal, stack_id: str, policy_id: str) -> None:
    principal.require(Role.admin, "detaching policies")
    stack = load_stack(session, principal, stack_id)
    attachment = session.get(StackPolicy, (stack.id, policy_id))
    policy = session.get(Policy, policy_id)
    if attachment is None or policy is None or policy.org_id != principal.org_id:
        raise NotFound(f"policy {policy_id} is not attached to stack {stack_id}")
    session.execute(
        delete(StackPolicy).where(
            col(StackPolicy.stack_id) == stack.id, col(StackPolicy.policy_id) == policy_id
        )
    )
    audit.record(
        session,
        principal,
        "policy.detach",
        resource_type="stack",
        resource_id=stack.id,
        before={"policy_id": policy.id, "policy_name": policy.name, "stack_name": stack.name},
    )


# ---------------------------------------------------------------- evaluation


def input_document(
    run: Run, stack: Stack, labels: list[str], plan: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document policies see as ``input`` (docs/policies.md): the plan JSON's own keys at
    the top level (none before planning), plus ``crucible`` with the run, the stack and the
    plan's counts."""
    doc = {k: v for k, v in (plan or {}).items() if k != "crucible"}
    summary = run.plan_summary or {}
    doc["crucible"] = {
        "run": {
            "id": run.id,
            "type": run.type,
            "trigger": run.trigger,
            "commit": run.commit_sha,
            "commit_message": run.commit_message,
            "branch": run.branch or stack.branch,
            "message": run.message,
            "created_by": run.created_by,
            "created_at": iso(run.created_at),
        },
        "stack": {
            "id": stack.id,
            "name": stack.name,
            "labels": sorted(labels),
            "branch": stack.branch,
            "tool": stack.tool,
            "project_root": stack.project_root,
        },
        "counts": {key: int(summary.get(key) or 0) for key in ("add", "change", "destroy")},
    }
    return doc


@dataclass(frozen=True)
class EvaluationSource:
    body: str
    type: PolicyType
    policy_id: str | None = None
    version: int | None = None


def evaluation_source(session: Session, principal: Principal, request: PolicyEvaluate) -> EvaluationSource:
    """What ``evaluate`` runs: the pasted body, or a saved policy's current version."""
    principal.require(Role.member, "evaluating policies")
    if request.policy_id is None:
        assert request.body is not None  # the schema requires one of the two
        return EvaluationSource(body=request.body, type=request.type or PolicyType.post_plan)
    policy = load_policy(session, principal, request.policy_id)
    return EvaluationSource(
        body=policy.body,
        type=request.type or PolicyType(policy.type),
        policy_id=policy.id,
        version=policy.version,
    )


def evaluate(
    principal: Principal,
    engine: PolicyEngine,
    source: EvaluationSource,
    input_doc: dict[str, Any],
    timeout_seconds: float,
) -> EvaluationResult:
    """Evaluate outside any transaction (it may take up to ``timeout_seconds``)."""
    principal.require(Role.member, "evaluating policies")
    field = "body" if source.policy_id is None else "policy_id"
    try:
        decision = engine.evaluate(source.body, input_doc, timeout_seconds=timeout_seconds)
    except PolicyCompileError as exc:
        raise PolicyCompileFailed(field, exc) from None
    except PolicyEvalError as exc:
        raise PolicyEvaluationFailed(field, exc) from None
    return EvaluationResult(
        deny=list(decision.deny),
        warn=list(decision.warn),
        require_approval=decision.require_approval,
        required_approvals=decision.required_approvals,
        trigger=list(decision.trigger),
        role=decision.role,
        engine=engine.name,
        duration_ms=decision.duration_ms,
        unsupported_builtins=engine.builtins_used_unsupported(source.body),
        type=source.type,
        policy_id=source.policy_id,
        version=source.version,
    )


# ---------------------------------------------------------------- starter library


def library(principal: Principal) -> list[LibraryPolicyPublic]:
    """The starter library (backend/policies/library), in its documented order."""
    principal.require(Role.viewer, "viewing the policy library")
    return [
        LibraryPolicyPublic(slug=p.slug, name=p.name, description=p.description, type=p.type, body=p.body)
        for p in starter.LIBRARY
    ]


def free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name 2``, ``name 3``, ... : the first not in ``taken`` (case-folded names)."""
    if name.casefold() not in taken:
        return name
    for n in range(2, 100):
        suffix = f" {n}"
        candidate = name[: 100 - len(suffix)].rstrip() + suffix
        if candidate.casefold() not in taken:
            return candidate
    return f"{name[:80]} {new_id('x')[-8:]}"


def _org_names(session: Session, org_id: str) -> set[str]:
    return {n.casefold() for n in session.exec(select(Policy.name).where(Policy.org_id == org_id)).all()}


def install_from_library(
    session: Session, principal: Principal, engine: PolicyEngine, slug: str, name: str | None = None
) -> PolicyPublic:
    """A new policy from the library: enabled, but attached to no stack (it changes nothing
    until an admin attaches it). Audited as any created policy (``policy.create``)."""
    principal.require(Role.admin, "installing library policies")
    item = starter.get(slug)
    if item is None:
        known = ", ".join(p.slug for p in starter.LIBRARY)
        raise NotFound(f"the policy library has no policy {slug!r} (it has: {known})")
    try:
        body = PolicyCreate(
            name=item.name if name is None else name,
            type=item.type,
            body=item.body,
            description=item.description,
        )
    except ValidationError as exc:
        raise FieldError("name", exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    try:
        return create_policy(session, principal, engine, body)
    except FieldError as exc:
        if exc.field != "name":
            raise
        suggestion = free_name(body.name, _org_names(session, principal.org_id))
        raise Conflict(
            f"a policy named {body.name!r} already exists in this organization: "
            f'install this one under another name, e.g. {{"name": "{suggestion}"}}'
        ) from None


# ---------------------------------------------------------------- where a policy applies


def stacks_for_policy(session: Session, policy: Policy) -> list[str]:
    """Ids of the stacks of the policy's organization it applies to (the inverse of
    ``_applies_clause``): every stack when ``applies_to_all``, else the stacks it is attached to
    or that carry one of its labels; none for organization-wide types (login). Sorted."""
    if policy.type in ORG_ONLY_TYPES:
        return []
    stmt = select(Stack.id).where(Stack.org_id == policy.org_id)
    if not policy.applies_to_all:
        direct = select(StackPolicy.stack_id).where(StackPolicy.policy_id == policy.id)
        by_label = (
            select(StackLabel.stack_id)
            .join(PolicyLabel, col(PolicyLabel.label) == col(StackLabel.label))
            .where(PolicyLabel.policy_id == policy.id)
        )
        stmt = stmt.where(or_(col(Stack.id).in_(direct), col(Stack.id).in_(by_label)))
    return list(session.exec(stmt.order_by(col(Stack.id))).all())
