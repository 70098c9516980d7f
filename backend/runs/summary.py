"""Run facts shown next to other resources (the stacks table's last run)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.runs.models import Run


def last_runs(session: Session, principal: Principal, stack_ids: list[str]) -> dict[str, tuple[str, str]]:
    """stack id → (id, status) of its newest run, for the given stacks of the caller's org."""
    principal.require(Role.viewer, "listing runs")
    if not stack_ids:
        return {}
    newest = (
        select(Run.stack_id, func.max(Run.created_at).label("at"))
        .where(Run.org_id == principal.org_id, col(Run.stack_id).in_(stack_ids))
        .group_by(col(Run.stack_id))
        .subquery()
    )
    rows = session.exec(
        select(Run.stack_id, Run.id, Run.status)
        .join(newest, (col(Run.stack_id) == newest.c.stack_id) & (col(Run.created_at) == newest.c.at))
        .order_by(col(Run.id))
    ).all()
    return {stack_id: (run_id, status) for stack_id, run_id, status in rows}
