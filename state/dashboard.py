from __future__ import annotations

import dataclasses
from datetime import timedelta

import reflex as rx

from backend.audit import service as audit_service
from backend.stacks import service as stacks_service
from backend.timeutil import iso, utcnow
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db


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
            )

        total, by_tool, members, n24, events = await run_db(_q, readonly=True)
        self.stacks_total, self.members_total = total, members
        self.events_24h = f"{audit_service.COUNT_CAP:,}+" if n24 > audit_service.COUNT_CAP else f"{n24:,}"
        self.by_tool = [ToolCount(t, n) for t, n in sorted(by_tool.items(), key=lambda kv: -kv[1])]
        self.recent = [
            RecentEvent(e.action, e.actor, e.resource_id or "", relative(e.at), exact(iso(e.at)))
            for e in events
        ]
        self.loading = False
