"""Audit log: filters in the URL, keyset pagination (newest first), details dialog, export links."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

import reflex as rx

from backend.audit import service
from backend.audit.api import CATEGORIES
from backend.errors import ServiceError
from backend.timeutil import iso
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db

PAGE_SIZE = 50
ALL = "all"
EXPORT_URL = "/api/v1/audit/export"


@dataclasses.dataclass
class AuditRow:
    id: int = 0
    at_rel: str = ""
    at_exact: str = ""
    actor: str = ""
    actor_type: str = ""
    action: str = ""
    category: str = ""
    resource_type: str = ""
    resource_id: str = ""
    ip: str = ""


@dataclasses.dataclass
class AuditDetail:
    id: int = 0
    at_exact: str = ""
    actor: str = ""
    actor_type: str = ""
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    ip: str = ""
    user_agent: str = ""
    before: str = ""
    after: str = ""
    prev_hash: str = ""
    hash: str = ""


def _pretty(value) -> str:
    return "" if value is None else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _day(value: str | None) -> str:
    """A ``YYYY-MM-DD`` string, or "" when the value is not a valid date."""
    value = (value or "").strip()[:10]
    try:
        return date.fromisoformat(value).isoformat() if len(value) == 10 else ""
    except ValueError:
        return ""


def _start_of(day: str, plus_days: int = 0) -> datetime | None:
    if not day:
        return None
    try:
        return datetime.combine(date.fromisoformat(day) + timedelta(days=plus_days), time.min, tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


class AuditState(AuthState):
    rows: list[AuditRow] = []
    count: int = 0
    actors: list[str] = []
    actor: str = ALL
    category: str = ALL
    since: str = ""
    until: str = ""
    # Keyset pagination: ``before_id`` 0 is the newest page; ``cursors`` holds the cursors of the
    # newer pages we came from, so "Newer" can go back exactly.
    before_id: int = 0
    cursors: list[int] = []
    has_older: bool = False
    loading: bool = True
    details_open: bool = False
    detail: AuditDetail = AuditDetail()
    # Backend-only: the before/after/hash of the rows on screen, sent only when a row is opened.
    _details: dict[str, dict] = {}

    # ------------------------------------------------------------ derived

    @rx.var
    def filtered(self) -> bool:
        return self.actor != ALL or self.category != ALL or bool(self.since) or bool(self.until)

    @rx.var
    def has_newer(self) -> bool:
        return self.before_id != 0

    @rx.var
    def count_label(self) -> str:
        if self.count > service.COUNT_CAP:
            return f"{service.COUNT_CAP:,}+ events"
        return f"{self.count:,} event{'' if self.count == 1 else 's'}"

    @rx.var
    def range_label(self) -> str:
        if not self.rows:
            return ""
        start = len(self.cursors) * PAGE_SIZE + 1  # approximate if newer events arrived meanwhile
        return f"Showing {start}\u2013{start + len(self.rows) - 1}"

    @rx.var
    def invalid_range(self) -> bool:
        return bool(self.since) and bool(self.until) and self.since > self.until

    def _filter_params(self) -> dict[str, str]:
        params = {}
        if self.actor != ALL:
            params["actor"] = self.actor
        if self.category != ALL:
            params["category"] = self.category
        if self.since:
            params["since"] = self.since
        if self.until:
            params["until"] = self.until
        return params

    def _export_url(self, fmt: str) -> str:
        # The API takes instants; "until" is inclusive of its day, so pass the next midnight.
        params = {"format": fmt}
        if self.actor != ALL:
            params["actor"] = self.actor
        if self.category != ALL:
            params["category"] = self.category
        since, until = _start_of(self.since), _start_of(self.until, 1)
        if since:
            params["since"] = iso(since)[:19] + "Z"
        if until:
            params["until"] = iso(until)[:19] + "Z"
        return f"{EXPORT_URL}?{urlencode(params)}"

    @rx.var(deps=["actor", "category", "since", "until"], auto_deps=False)
    def export_csv_url(self) -> str:
        return self._export_url("csv")

    @rx.var(deps=["actor", "category", "since", "until"], auto_deps=False)
    def export_json_url(self) -> str:
        return self._export_url("json")

    # ------------------------------------------------------------ loading

    @rx.event
    async def load(self):
        """on_load: filters come from the URL so that reloads and shared links keep them."""
        params = self.router.url.query_parameters
        self.actor = (params.get("actor") or "").strip()[:254] or ALL
        self.category = params.get("category") if params.get("category") in CATEGORIES else ALL
        self.since = _day(params.get("since"))
        self.until = _day(params.get("until"))
        self.before_id, self.cursors, self.details_open = 0, [], False
        self.loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        try:
            actors = await run_db(lambda s: service.list_actors(s, principal))
        except ServiceError as exc:
            self.loading = False
            return rx.toast.error(exc.message)
        if self.actor != ALL and self.actor not in actors:
            actors = sorted([*actors, self.actor])
        self.actors = actors
        return await self._fetch()

    async def _fetch(self):
        self.loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        f = service.AuditFilter(
            actor=None if self.actor == ALL else self.actor,
            category=None if self.category == ALL else self.category,
            since=_start_of(self.since),
            until=_start_of(self.until, 1),
        )
        before_id = self.before_id or None

        def _q(s):
            # One extra row tells whether an older page exists.
            return service.list_events(s, principal, f, limit=PAGE_SIZE + 1, before_id=before_id)

        try:
            events, count = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.loading = False
            return rx.toast.error(exc.message)
        self.has_older = len(events) > PAGE_SIZE
        events = events[:PAGE_SIZE]
        rows, details = [], {}
        for ev in events:
            doc = service.to_public(ev)
            rows.append(
                AuditRow(
                    id=doc["id"] or 0,
                    at_rel=relative(doc["at"]),
                    at_exact=exact(doc["at"]),
                    actor=doc["actor"],
                    actor_type=doc["actor_type"],
                    action=doc["action"],
                    category=doc["category"],
                    resource_type=doc["resource_type"] or "",
                    resource_id=doc["resource_id"] or "",
                    ip=doc["ip"] or "",
                )
            )
            details[str(doc["id"])] = {
                "user_agent": doc["user_agent"] or "",
                "before": _pretty(doc["before"]),
                "after": _pretty(doc["after"]),
                "prev_hash": doc["prev_hash"],
                "hash": doc["hash"],
            }
        self.rows, self._details, self.count = rows, details, count
        self.loading = False

    def _url(self) -> str:
        params = self._filter_params()
        return "/audit" + ("?" + urlencode(params) if params else "")

    async def _apply(self, reset_page: bool = True):
        if reset_page:
            self.before_id, self.cursors = 0, []
        # Keep filters in the URL (shareable), without a page reload.
        yield rx.call_script(f"window.history.replaceState(null, '', {json.dumps(self._url())})")
        out = await self._fetch()
        if out is not None:
            yield out

    # ------------------------------------------------------------ filters

    @rx.event
    async def set_actor(self, value: str):
        self.actor = value if value in self.actors else ALL
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_category(self, value: str):
        self.category = value if value in CATEGORIES else ALL
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_since(self, value: str):
        self.since = _day(value)
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_until(self, value: str):
        self.until = _day(value)
        async for ev in self._apply():
            yield ev

    @rx.event
    async def clear_filters(self):
        self.actor, self.category, self.since, self.until = ALL, ALL, "", ""
        async for ev in self._apply():
            yield ev

    # ------------------------------------------------------------ pages

    @rx.event
    async def older(self):
        if not self.has_older or not self.rows:
            return
        self.cursors.append(self.before_id)
        self.before_id = self.rows[-1].id
        async for ev in self._apply(reset_page=False):
            yield ev

    @rx.event
    async def newer(self):
        if self.before_id == 0:
            return
        self.before_id = self.cursors.pop() if self.cursors else 0
        async for ev in self._apply(reset_page=False):
            yield ev

    # ------------------------------------------------------------ details

    @rx.event
    def open_details(self, event_id: int):
        row = next((r for r in self.rows if r.id == event_id), None)
        extra = self._details.get(str(event_id))
        if row is None or extra is None:
            return
        self.detail = AuditDetail(
            id=row.id,
            at_exact=row.at_exact,
            actor=row.actor,
            actor_type=row.actor_type,
            action=row.action,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            ip=row.ip,
            user_agent=extra["user_agent"],
            before=extra["before"],
            after=extra["after"],
            prev_hash=extra["prev_hash"],
            hash=extra["hash"],
        )
        self.details_open = True

    @rx.event
    def set_details_open(self, value: bool):
        self.details_open = value
