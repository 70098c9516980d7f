"""Where a policy applies, seen from the policy (service.stack_policies is the stack's view).

Read-only queries for the policies pages: the stacks a policy is attached to or reaches
through one of its labels, and per-policy counts of direct attachments for lists. Attaching
and detaching stay in ``service`` (they authorize as admin and write the audit trail).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.policies.models import PolicyLabel, StackPolicy
from backend.policies.service import ORG_ONLY_TYPES, load_policy
from backend.stacks.models import Stack, StackLabel
from backend.timeutil import iso

MAX_STACKS = 200


@dataclass
class PolicyStack:
    """A stack the policy applies to, and how: attached directly and/or by a matching label."""

    stack_id: str
    stack_name: str
    tool: str
    direct: bool
    matched_labels: list[str] = field(default_factory=list)
    attached_by: str | None = None
    attached_at: str | None = None


@dataclass
class PolicyReach:
    """The policy's stacks (direct attachments first, then by label, each by name), how many
    stacks the organization has (what ``applies_to_all`` reaches), and whether the list was
    cut at ``limit``."""

    stacks: list[PolicyStack]
    org_stacks: int
    applies_to_all: bool
    org_only: bool
    truncated: bool = False


def stacks_for_policy(
    session: Session, principal: Principal, policy_id: str, limit: int = MAX_STACKS
) -> PolicyReach:
    principal.require(Role.viewer, "viewing where a policy applies")
    policy = load_policy(session, principal, policy_id)
    org_stacks = int(
        session.exec(select(func.count()).select_from(Stack).where(Stack.org_id == principal.org_id)).one()
    )
    if policy.type in ORG_ONLY_TYPES:
        return PolicyReach([], org_stacks, False, True)

    direct_rows = session.exec(
        select(StackPolicy, Stack)
        .join(Stack, col(Stack.id) == col(StackPolicy.stack_id))
        .where(StackPolicy.policy_id == policy.id, Stack.org_id == principal.org_id)
        .order_by(col(Stack.name), col(Stack.id))
        .limit(limit + 1)
    ).all()
    label_rows = session.exec(
        select(Stack.id, Stack.name, Stack.tool, StackLabel.label)
        .join(StackLabel, col(StackLabel.stack_id) == col(Stack.id))
        .join(PolicyLabel, col(PolicyLabel.label) == col(StackLabel.label))
        .where(PolicyLabel.policy_id == policy.id, Stack.org_id == principal.org_id)
        .order_by(col(Stack.name), col(Stack.id), col(StackLabel.label))
    ).all()

    by_id: dict[str, PolicyStack] = {}
    for attachment, stack in direct_rows:
        by_id[stack.id] = PolicyStack(
            stack_id=stack.id,
            stack_name=stack.name,
            tool=stack.tool,
            direct=True,
            attached_by=attachment.attached_by,
            attached_at=iso(attachment.created_at),
        )
    for stack_id, name, tool, label in label_rows:
        row = by_id.get(stack_id)
        if row is None:
            row = by_id[stack_id] = PolicyStack(stack_id=stack_id, stack_name=name, tool=tool, direct=False)
        if label not in row.matched_labels:
            row.matched_labels.append(label)
    rows = sorted(by_id.values(), key=lambda r: (not r.direct, r.stack_name.lower(), r.stack_id))
    return PolicyReach(
        stacks=rows[:limit],
        org_stacks=org_stacks,
        applies_to_all=policy.applies_to_all,
        org_only=False,
        truncated=len(rows) > limit,
    )


def attachment_counts(session: Session, principal: Principal, policy_ids: list[str]) -> dict[str, int]:
    """How many stacks each policy is attached to directly (0 for the others)."""
    principal.require(Role.viewer, "listing policies")
    out = dict.fromkeys(policy_ids, 0)
    if not policy_ids:
        return out
    rows = session.exec(
        select(StackPolicy.policy_id, func.count())
        .join(Stack, col(Stack.id) == col(StackPolicy.stack_id))
        .where(col(StackPolicy.policy_id).in_(policy_ids), Stack.org_id == principal.org_id)
        .group_by(col(StackPolicy.policy_id))
    ).all()
    for policy_id, n in rows:
        out[policy_id] = int(n)
    return out
