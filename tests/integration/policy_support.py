"""Helpers for policy tests that need past runs with real plans (tests/fixtures): a run is
walked through planning and its plan stored exactly as a worker reports it."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path

from runs_support import FAKE_WORKER, force_status, queued_run

from backend.context import AppContext
from backend.runs import execution
from backend.runs import lifecycle as lc
from backend.runs.models import HOLDING, Run
from backend.runs.plandiff import PlanFormatError, count_actions, has_changes
from backend.runs.state import apply_state, state_of
from backend.timeutil import utcnow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PLAN_CHANGES = "tofu/plan-changes.json"  # deletes terraform_data.gone, replaces blue and db
PLAN_DESTROY = "tofu/plan-destroy.json"  # deletes everything
PLAN_NO_CHANGES = "tofu/plan-no-changes.json"  # deletes nothing


def planned_run(
    ctx: AppContext,
    stack_id: str,
    fixture: str | None,
    *,
    run_type: str = "tracked",
    at: datetime | None = None,
    keep_holding: bool = False,
) -> str:
    """A run of ``stack_id`` that planned ``fixture`` (a path under tests/fixtures; None: a tool
    without a plan JSON, as Ansible). A tracked/destroy run with changes waits for confirmation
    and so holds its stack; it is discarded afterwards unless ``keep_holding``, so that the
    stack can take the next run."""
    with ctx.session() as s:
        run = queued_run(s, stack_id, run_type, at=at)
        run.commit_sha = secrets.token_hex(20)
        run_id = run.id
    force_status(ctx, run_id, "planning")
    artifacts: dict = {}
    summary = {"add": 0, "change": 0, "destroy": 0}
    changes = False
    if fixture is not None:
        data = (FIXTURES / fixture).read_bytes()
        info = ctx.objects.put(f"runs/{run_id}/plan.json", data)
        artifacts["plan_json"] = {"key": info.key, "sha256": info.sha256, "size": info.size}
        plan = json.loads(data)
        try:
            summary, changes = count_actions(plan), has_changes(plan)
        except PlanFormatError:  # a Pulumi preview: the adapter counts its steps itself
            summary, changes = {"add": 1, "change": 0, "destroy": 0}, True
    with ctx.session() as s:
        status = execution.finish_planning(
            s, run_id, FAKE_WORKER, utcnow(), summary=summary, has_changes=changes, artifacts=artifacts
        )
    assert status is not None
    if status in HOLDING and not keep_holding:
        with ctx.session() as s:
            row = s.get(Run, run_id)
            assert row is not None
            now = utcnow()
            apply_state(row, lc.discard(state_of(row), now), now)
            s.add(row)
    return run_id
