from __future__ import annotations

import dataclasses
from datetime import timedelta

import reflex as rx

from backend.audit import service as audit_service
from backend.errors import ServiceError
from backend.runs import service as runs_service
from backend.stacks import service as stacks_service
from backend.timeutil import iso, utcnow
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db
from state.runs import RunRow, run_row

WAITING = ["unconfirmed", "pending_approval"]
LIVE = ["queued", "preparing", "planning", "confirmed", "applying"]
ENDED = ["finished", "failed"]


@dataclasses.dataclass
class ToolCount:
    tool: str = ""
    count: int = 0


@dataclasses.dataclass
class RecentEvent:
    action: str = ""
    actor: str = ""
    resource_id: str = ""
    at_rel: str = ""
    at_exact: str = ""


class DashboardState(AuthState):
    loading: bool = True
    stacks_total: int = 0
    members_total: int = 0
    events_24h: str = "0"
    by_tool: list[ToolCount] = []
    recent: list[RecentEvent] = []
    waiting_runs: list[RunRow] = []
    waiting_count: int = 0
    live_runs: list[RunRow] = []
    live_count: int = 0
    ended_runs: list[RunRow] = []
    busy_run: str = ""

    @rx.event
    async def load(self):
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            from backend.context import get_context

            since = audit_service.AuditFilter(since=utcnow() - timedelta(hours=24))
            events, n24 = audit_service.list_events(s, principal, since, limit=8)
            return (
                stacks_service.count_stacks(s, principal),
                stacks_service.count_by_tool(s, principal),
                len(get_context().auth.list_members(s, principal)),
                n24,
                events,
                _runs(s, principal),
            )

        total, by_tool, members, n24, events, runs = await run_db(_q, readonly=True)
        self._set_runs(runs)
        self.stacks_total, self.members_total = total, members
        self.events_24h = f"{audit_service.COUNT_CAP:,}+" if n24 > audit_service.COUNT_CAP else f"{n24:,}"
        self.by_tool = [ToolCount(t, n) for t, n in sorted(by_tool.items(), key=lambda kv: -kv[1])]
        self.recent = [
            RecentEvent(e.action, e.actor, e.resource_id or "", relative(e.at), exact(iso(e.at)))
            for e in events
        ]
        self.loading = False

    def _set_runs(self, runs) -> None:
        (waiting, nw), (live, nl), (ended, _n) = runs
        self.waiting_runs, self.waiting_count = [run_row(r) for r in waiting], nw
        self.live_runs, self.live_count = [run_row(r) for r in live], nl
        self.ended_runs = [run_row(r) for r in ended]

    async def _run_action(self, run_id: str, fn, done: str):
        self.busy_run = run_id
        try:
            principal = await self._principal()
        except SessionExpired:
            self.busy_run = ""
            return self._login_redirect()

        def _do(s):
            fn(s, principal, run_id)
            return _runs(s, principal)

        try:
            runs = await run_db(_do)
        except ServiceError as exc:
            self.busy_run = ""
            return rx.toast.error(exc.message)
        self._set_runs(runs)
        self.busy_run = ""
        return rx.toast.success(done)

    @rx.event
    async def confirm_run(self, run_id: str):
        return await self._run_action(run_id, runs_service.confirm_run, "Confirmed: the plan will be applied")

    @rx.event
    async def discard_run(self, run_id: str):
        return await self._run_action(run_id, runs_service.discard_run, "Plan discarded")


def _runs(s, principal):
    def q(statuses: list[str], limit: int):
        return runs_service.list_runs(s, principal, runs_service.RunQuery(statuses=statuses, limit=limit))

    return q(WAITING, 10), q(LIVE, 10), q(ENDED, 8)
