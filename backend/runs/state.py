"""Mapping between a Run row and the pure lifecycle state."""

from __future__ import annotations

from datetime import datetime

from backend.runs import lifecycle as lc
from backend.runs.models import Run
from backend.timeutil import as_utc, iso


def state_of(run: Run) -> lc.RunState:
    stamps = {
        lc.RunStatus(k): as_utc(datetime.fromisoformat(v.replace("Z", "+00:00")))
        for k, v in run.status_timestamps.items()
    }
    return lc.RunState(
        type=lc.RunType(run.type),
        status=lc.RunStatus(run.status),
        timestamps=stamps,
        cancel_requested_at=run.cancel_requested_at,
        failure_reason=run.failure_reason,
    )


def apply_state(run: Run, state: lc.RunState, now: datetime) -> None:
    run.status = state.status.value
    run.status_timestamps = {k.value: iso(v) for k, v in state.timestamps.items()}
    run.cancel_requested_at = state.cancel_requested_at
    run.failure_reason = state.failure_reason
    run.updated_at = now
