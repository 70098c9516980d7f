"""Runs list, run page (status, rail, plan, actions) and the trigger-run dialog.

The live log never passes through this state: the run page's log viewer streams it from
/api/v1/runs/{id}/logs. This state holds metadata only and refreshes it while the run moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from datetime import datetime
from urllib.parse import urlencode

import reflex as rx
from pydantic import ValidationError

from backend.errors import NotFound, ServiceError
from backend.runs import lifecycle as lc
from backend.runs import reviews, service
from backend.runs.schemas import ApprovalsPublic, PolicyResultsPublic, RunCreate, RunPublic
from backend.stacks import service as stacks_service
from backend.storage import StorageError
from backend.timeutil import as_utc, utcnow
from backend.vcs.feedback import FEEDBACK_OFF, feedback_of
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db

PAGE_SIZE = 25
ALL = "all"
STATUSES = [s.value for s in lc.RunStatus]
TYPES = [t.value for t in lc.RunType]
ACTIVE = [s.value for s in lc.RunStatus if s not in lc.TERMINAL]
WATCH_SECONDS = 1.0
# A run that waits for people (confirmation, approvals) may wait for days: look less often.
WAITING_FOR_PEOPLE = ("unconfirmed", "pending_approval")
WAITING_WATCH_SECONDS = 5.0
WATCH_MAX_SECONDS = 4 * 3600
TRIGGER_LABELS = {
    "api": "the API",
    "ui": "the UI",
    "retrigger": "re-trigger",
    "webhook": "a webhook",
    "policy": "a trigger policy",
}


@dataclasses.dataclass
class RunRow:
    id: str = ""
    stack_id: str = ""
    stack_name: str = ""
    type: str = ""
    status: str = ""
    commit: str = ""
    commit_message: str = ""
    message: str = ""
    created_by: str = ""
    add: int = 0
    change: int = 0
    destroy: int = 0
    has_summary: bool = False
    has_changes: bool = False
    created_rel: str = ""
    created_exact: str = ""


@dataclasses.dataclass
class RailStep:
    key: str = ""
    label: str = ""
    state: str = "pending"  # done | current | failed | skipped | pending
    duration: str = ""


def run_row(r: RunPublic) -> RunRow:
    summary = r.plan_summary
    return RunRow(
        id=r.id,
        stack_id=r.stack_id,
        stack_name=r.stack_name,
        type=r.type.value,
        status=r.status.value,
        commit=(r.commit_sha or "")[:8],
        commit_message=(r.commit_message or "").split("\n", 1)[0][:120],
        message=r.message,
        created_by=r.created_by or "",
        add=summary.add if summary else 0,
        change=summary.change if summary else 0,
        destroy=summary.destroy if summary else 0,
        has_summary=summary is not None,
        has_changes=bool(r.has_changes),
        created_rel=relative(r.created_at),
        created_exact=exact(r.created_at),
    )


def _ts(r: RunPublic, status: str) -> datetime | None:
    value = r.status_timestamps.get(status)
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    secs = max(0, int((end - start).total_seconds()))
    return f"{secs // 60} min {secs % 60} s" if secs >= 60 else f"{secs} s"


def rail(r: RunPublic) -> list[RailStep]:
    """The five-step rail: queued → planning → review → applying → done."""
    status = r.status.value
    t = {s: _ts(r, s) for s in STATUSES}
    plan_only = r.type in lc.PLAN_ONLY
    reached_review = t["unconfirmed"] or t["pending_approval"]
    end = t["finished"] or t["failed"] or t["discarded"] or t["canceled"]
    steps = [
        RailStep("queued", "Queued", duration=_span(t["queued"], t["preparing"] or end)),
        RailStep(
            "planning", "Planning", duration=_span(t["preparing"], reached_review or t["confirmed"] or end)
        ),
        RailStep("review", "Review", duration=_span(reached_review, t["confirmed"] or end)),
        RailStep("applying", "Applying", duration=_span(t["applying"], end if t["applying"] else None)),
        RailStep("done", "Done"),
    ]
    current = {
        "queued": 0,
        "preparing": 1,
        "planning": 1,
        "pending_approval": 2,
        "unconfirmed": 2,
        "confirmed": 3,
        "applying": 3,
    }.get(status)
    if current is None:  # terminal: where did it stop?
        if t["applying"]:
            current = 3
        elif reached_review:
            current = 2
        elif t["preparing"]:
            current = 1
        else:
            current = 0
        if status == "finished":
            current = 4
    for i, step in enumerate(steps):
        if i < current:
            step.state = "done"
        elif i == current:
            step.state = "current"
    if status == "finished":
        steps[4].state = "done"
        for i in (2, 3):  # plan-only runs and no-change plans never reach review/apply
            if not (reached_review if i == 2 else t["applying"]):
                steps[i].state = "skipped"
    elif status in ("failed", "canceled", "discarded"):
        steps[current].state = "failed"
        steps[4].label = status.capitalize()
    if plan_only:
        steps[2].state = steps[3].state = "skipped"
    return steps


@dataclasses.dataclass
class DiffAttr:
    path: str = ""
    change: str = ""
    before: str = ""
    after: str = ""
    before_folded: bool = False
    after_folded: bool = False
    before_preview: str = ""
    after_preview: str = ""
    forces: bool = False


@dataclasses.dataclass
class DiffResource:
    address: str = ""
    action: str = ""
    reason: str = ""
    attrs: list[DiffAttr] = dataclasses.field(default_factory=list)
    attr_count: int = 0
    hidden_attrs: int = 0


@dataclasses.dataclass
class DiffGroup:
    action: str = ""
    count: int = 0
    resources: list[DiffResource] = dataclasses.field(default_factory=list)


MAX_DIFF_RESOURCES = 300
MAX_DIFF_ATTRS = 200


def _shown(value, flagged: bool) -> str:
    """A JSON value as the diff shows it: strings quoted, objects indented, markers bare."""
    if value is None:
        return ""
    if flagged and value in ("(sensitive)", "(known after apply)"):
        return value
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, indent=2, sort_keys=True)


def diff_groups(diff: dict) -> tuple[list[DiffGroup], int]:
    """build_diff's output as UI rows, capped (the rest: download the plan JSON)."""
    groups: list[DiffGroup] = []
    budget = MAX_DIFF_RESOURCES
    hidden = 0
    for g in diff.get("groups", []):
        resources = []
        for r in g["resources"]:
            if budget <= 0:
                hidden += 1
                continue
            budget -= 1
            attrs = []
            for a in r.get("attributes", [])[:MAX_DIFF_ATTRS]:
                flagged = bool(a.get("sensitive") or a.get("unknown"))
                attrs.append(
                    DiffAttr(
                        path=a["path"],
                        change=a["change"],
                        before=_shown(a.get("before"), flagged),
                        after=_shown(a.get("after"), flagged),
                        before_folded=bool(a.get("folded") and a.get("before_preview")),
                        after_folded=bool(a.get("folded") and a.get("after_preview")),
                        before_preview=a.get("before_preview") or "",
                        after_preview=a.get("after_preview") or "",
                        forces=bool(a.get("forces_replacement")),
                    )
                )
            total = len(r.get("attributes", []))
            resources.append(
                DiffResource(
                    address=(f"{r['unit']}: " if r.get("unit") else "") + r["address"],
                    action=r["action"],
                    reason=(r.get("reason") or "").replace("_", " "),
                    attrs=attrs,
                    attr_count=total,
                    hidden_attrs=max(0, total - MAX_DIFF_ATTRS),
                )
            )
        groups.append(DiffGroup(action=g["action"], count=len(g["resources"]), resources=resources))
    return groups, hidden


class RunsState(AuthState):
    rows: list[RunRow] = []
    count: int = 0
    status: str = ALL
    type: str = ALL
    stack_id: str = ""
    stack_name: str = ""
    stack_options: list[list[str]] = []  # [id, name] of the org's stacks (first 200 by name)
    offset: int = 0
    loading: bool = True

    @rx.var
    def stack_choice(self) -> str:
        return self.stack_id or ALL

    @rx.var
    def page_label(self) -> str:
        if self.count == 0:
            return "0 runs"
        return f"{self.offset + 1}-{min(self.offset + PAGE_SIZE, self.count)} of {self.count}"

    @rx.var
    def has_prev(self) -> bool:
        return self.offset > 0

    @rx.var
    def has_next(self) -> bool:
        return self.offset + PAGE_SIZE < self.count

    @rx.var
    def filtered(self) -> bool:
        return self.status != ALL or self.type != ALL or bool(self.stack_id)

    @rx.event
    async def load(self):
        params = self.router.url.query_parameters
        self.status = params.get("status", ALL) if params.get("status") in [*STATUSES, "active"] else ALL
        self.type = params.get("type", ALL) if params.get("type") in TYPES else ALL
        stack_id = params.get("stack_id", "")
        self.stack_id = stack_id if stack_id.startswith("stk-") and len(stack_id) <= 40 else ""
        try:
            self.offset = min(max(0, int(params.get("offset", "0"))), 1_000_000)
        except ValueError:
            self.offset = 0
        return await self._fetch()

    async def _fetch(self):
        self.loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        statuses = None if self.status == ALL else (ACTIVE if self.status == "active" else [self.status])
        query = service.RunQuery(
            stack_id=self.stack_id or None,
            statuses=statuses,
            type=None if self.type == ALL else self.type,
            limit=PAGE_SIZE,
            offset=self.offset,
        )
        stack_id = self.stack_id

        def _q(s):
            name = ""
            if stack_id:
                try:
                    name = stacks_service.get_stack(s, principal, stack_id).name
                except NotFound:
                    name = "(unknown stack)"
            stacks, _n = stacks_service.list_stacks(s, principal, stacks_service.StackQuery(limit=200))
            return service.list_runs(s, principal, query), name, [[st.id, st.name] for st in stacks]

        (data, count), name, options = await run_db(_q, readonly=True)
        if stack_id and stack_id not in {o[0] for o in options}:
            options.append([stack_id, name])
        self.rows = [run_row(r) for r in data]
        self.count, self.stack_name, self.stack_options, self.loading = count, name, options, False

    def _url(self) -> str:
        params = {}
        if self.status != ALL:
            params["status"] = self.status
        if self.type != ALL:
            params["type"] = self.type
        if self.stack_id:
            params["stack_id"] = self.stack_id
        if self.offset:
            params["offset"] = str(self.offset)
        return "/runs" + ("?" + urlencode(params) if params else "")

    async def _apply(self):
        yield rx.call_script(f"window.history.replaceState(null, '', {self._url()!r})")
        out = await self._fetch()
        if out is not None:
            yield out

    @rx.event
    async def set_status(self, value: str):
        self.status = value if value in [*STATUSES, "active"] else ALL
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_type(self, value: str):
        self.type = value if value in TYPES else ALL
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_stack(self, value: str):
        self.stack_id = value if value.startswith("stk-") and len(value) <= 40 else ""
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def clear_filters(self):
        self.status, self.type, self.stack_id, self.offset = ALL, ALL, "", 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def next_page(self):
        if self.offset + PAGE_SIZE < self.count:
            self.offset += PAGE_SIZE
        async for ev in self._apply():
            yield ev

    @rx.event
    async def prev_page(self):
        self.offset = max(0, self.offset - PAGE_SIZE)
        async for ev in self._apply():
            yield ev


HOOK_LABELS = {
    "trigger": "After the run",
    "pre_plan": "Before the plan",
    "post_plan": "On the plan",
    "approval": "Approval",
    "pre_apply": "Before apply",
}


@dataclasses.dataclass
class PolicyResultRow:
    hook: str = ""
    hook_label: str = ""
    policy_id: str = ""
    policy_name: str = ""
    version: int = 0
    outcome: str = ""
    deny: list[str] = dataclasses.field(default_factory=list)
    warn: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    required_approvals: int = 0
    duration: str = ""
    triggered: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ReviewRow:
    user: str = ""
    decision: str = ""
    comment: str = ""
    created_rel: str = ""
    created_exact: str = ""


def policy_result_rows(results: PolicyResultsPublic) -> list[PolicyResultRow]:
    return [
        PolicyResultRow(
            hook=r.hook,
            hook_label=HOOK_LABELS.get(r.hook, r.hook),
            policy_id=r.policy_id,
            policy_name=r.policy_name,
            version=r.policy_version,
            outcome=r.outcome,
            deny=list(r.deny),
            warn=list(r.warn),
            error=r.error or "",
            required_approvals=r.required_approvals if r.require_approval else 0,
            triggered=list(r.triggered),
            duration=f"{r.duration_ms:.0f} ms" if r.duration_ms >= 1 else "<1 ms",
        )
        for r in results.data
    ]


def review_rows(approvals: ApprovalsPublic) -> list[ReviewRow]:
    return [
        ReviewRow(
            user=a.user,
            decision=a.decision,
            comment=a.comment,
            created_rel=relative(a.created_at),
            created_exact=exact(a.created_at),
        )
        for a in approvals.data
    ]


@dataclasses.dataclass
class VcsFeedbackRow:
    """What the run told the VCS (webhook-made runs): its commit status and PR comment."""

    provider: str = ""
    repo: str = ""
    sha: str = ""
    pr_number: int = 0
    pr_url: str = ""
    status_sent: bool = False  # a status call was made (ok or not)
    status_ok: bool = False
    status_state: str = ""
    status_description: str = ""
    status_error: str = ""
    status_at_rel: str = ""
    status_at_exact: str = ""
    feedback_off: bool = False  # no provider/token on the stack: nothing is sent
    comment_sent: bool = False
    comment_ok: bool = False
    comment_url: str = ""
    comment_note: str = ""
    comment_error: str = ""
    attempts: int = 0
    next_attempt_rel: str = ""
    next_attempt_exact: str = ""
    done: bool = False


def _until(ts: str | None) -> str:
    """A future time as "in 3 min" ("now" once it passed)."""
    if not ts:
        return ""
    secs = int((as_utc(datetime.fromisoformat(ts.replace("Z", "+00:00"))) - utcnow()).total_seconds())
    if secs < 45:
        return "now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"in {secs // size} {unit}"
    return f"in {secs} s"


def vcs_feedback_row(fb: dict) -> VcsFeedbackRow:
    status = fb.get("status_result") or {}
    comment = fb.get("comment_result") or {}
    failing = bool(status and not status.get("ok")) or bool(comment and not comment.get("ok"))
    off = status.get("error") == FEEDBACK_OFF
    return VcsFeedbackRow(
        provider=fb.get("provider") or "",
        repo=fb.get("repo") or "",
        sha=(fb.get("sha") or "")[:8],
        pr_number=fb.get("pr_number") or 0,
        pr_url=fb.get("pr_url") or "",
        status_sent=bool(status) and not off,
        status_ok=bool(status.get("ok")),
        status_state=status.get("state") or "",
        status_description=status.get("description") or "",
        status_error="" if off else (status.get("error") or ""),
        status_at_rel=relative(status.get("at")),
        status_at_exact=exact(status.get("at")),
        feedback_off=off,
        comment_sent=bool(comment),
        comment_ok=bool(comment.get("ok")),
        comment_url=comment.get("url") or "",
        comment_note=comment.get("note") or "",
        comment_error=comment.get("error") or "",
        attempts=int(fb.get("attempts") or 0),
        next_attempt_rel=_until(fb.get("next_attempt_at")) if failing else "",
        next_attempt_exact=exact(fb.get("next_attempt_at")) if failing else "",
        done=bool(fb.get("done")),
    )


def _run_id_from_path(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) >= 2 and parts[0] == "runs" else ""


class RunDetailState(AuthState):
    run: RunRow = RunRow()
    branch: str = ""
    trigger: str = ""
    failure_reason: str = ""
    cancel_requested: bool = False
    env_names: list[str] = []
    retriggered_from: str = ""
    triggered_by: str = ""
    has_plan_json: bool = False
    extra_counts: dict[str, int] = {}
    steps: list[RailStep] = []
    actions: list[str] = []
    diff: list[DiffGroup] = []
    diff_hidden: int = 0
    diff_error: str = ""
    diff_loaded_for: str = ""
    loading: bool = True
    not_found: bool = False
    busy: str = ""  # the action in progress
    delete_open: bool = False
    delete_confirm: str = ""
    policy_results: list[PolicyResultRow] = []
    reviews: list[ReviewRow] = []
    required_approvals: int = 0
    approved: int = 0
    review_comment: str = ""
    has_vcs: bool = False  # a webhook-made run with VCS feedback to show
    vcs: VcsFeedbackRow = VcsFeedbackRow()
    vcs_refreshing: bool = False
    _watching: str = ""

    @rx.var
    def log_url(self) -> str:
        return f"/api/v1/runs/{self.run.id}/logs?follow=true" if self.run.id else ""

    @rx.var
    def plan_url(self) -> str:
        return f"/api/v1/runs/{self.run.id}/plan" if self.run.id else ""

    @rx.var
    def trigger_label(self) -> str:
        return TRIGGER_LABELS.get(self.trigger, self.trigger)

    @rx.var
    def is_terminal(self) -> bool:
        return self.run.status in [s.value for s in lc.TERMINAL]

    @rx.event
    async def load(self):
        self.loading, self.not_found, self.busy = True, False, ""
        self.delete_open, self.delete_confirm = False, ""
        self.run, self.steps, self.actions = RunRow(), [], []
        self.policy_results, self.reviews, self.review_comment = [], [], ""
        self.required_approvals, self.approved = 0, 0
        self.has_vcs, self.vcs, self.vcs_refreshing = False, VcsFeedbackRow(), False
        self.diff, self.diff_hidden, self.diff_error, self.diff_loaded_for = [], 0, "", ""
        run_id = _run_id_from_path(self.router.url.path)
        out = await self._refresh(run_id)
        if out is not None:
            return out
        if not self.not_found and not self.is_terminal:
            return RunDetailState.watch

    async def _refresh(self, run_id: str):
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            run = service.get_run(s, principal, run_id)  # authorizes the feedback read too
            return (
                run,
                reviews.policy_results(s, principal, run_id),
                reviews.list_approvals(s, principal, run_id),
                feedback_of(s, run_id) if run.trigger == "webhook" else None,
            )

        try:
            r, results, approvals, feedback = await run_db(_q, readonly=True)
        except NotFound:
            self.not_found, self.loading = True, False
            return None
        self._set_vcs(feedback)
        self.policy_results = policy_result_rows(results)
        self.reviews = review_rows(approvals)
        self.required_approvals, self.approved = approvals.required, approvals.approved
        self._fill(r)
        if r.has_plan_json and self.diff_loaded_for != r.id:
            await self._load_diff(principal, r.id)
        return None

    def _set_vcs(self, feedback: dict | None) -> None:
        self.has_vcs = feedback is not None
        self.vcs = vcs_feedback_row(feedback) if feedback is not None else VcsFeedbackRow()

    @rx.event
    async def refresh_vcs(self):
        """Feedback is sent after the run moves, also after it ended (the page stops polling)."""
        self.vcs_refreshing = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.vcs_refreshing = False
            return self._login_redirect()
        run_id = self.run.id

        def _q(s):
            service.get_run(s, principal, run_id)
            return feedback_of(s, run_id)

        try:
            self._set_vcs(await run_db(_q, readonly=True))
        except ServiceError as exc:
            self.vcs_refreshing = False
            return rx.toast.error(exc.message)
        self.vcs_refreshing = False
        return None

    async def _load_diff(self, principal, run_id: str) -> None:
        from backend.context import get_context
        from backend.runs.plandiff import PlanFormatError, build_diff

        ctx = get_context()

        def _q(s):
            run = service.load_run(s, principal, run_id)
            return run.artifacts.get("plan_json")

        def _diff(entry) -> dict:
            return build_diff(json.loads(ctx.objects.get(entry["key"])))

        self.diff_loaded_for = run_id
        try:
            entry = await run_db(_q, readonly=True)
            self.diff, self.diff_hidden = diff_groups(await asyncio.to_thread(_diff, entry))
            self.diff_error = ""
        except (PlanFormatError, ValueError, StorageError) as exc:
            self.diff, self.diff_error = [], f"this plan cannot be shown as a diff: {exc}"
        except ServiceError as exc:
            self.diff, self.diff_error = [], exc.message

    def _fill(self, r: RunPublic) -> None:
        self.run = run_row(r)
        self.branch = r.branch or ""
        self.trigger = r.trigger
        self.failure_reason = r.failure_reason or ""
        self.cancel_requested = r.cancel_requested_at is not None
        self.env_names = list(r.env_override_names)
        self.retriggered_from = r.retriggered_from or ""
        self.triggered_by = r.triggered_by or ""
        self.has_plan_json = r.has_plan_json
        summary = r.plan_summary.model_dump() if r.plan_summary else {}
        self.extra_counts = {
            k: int(v) for k, v in summary.items() if k not in ("add", "change", "destroy") and int(v)
        }
        self.steps = rail(r)
        self.actions = list(r.actions)
        self.loading = False

    @rx.event(background=True)
    async def watch(self):
        """Refresh the run's metadata every second while it moves and this page shows it."""
        async with self:
            run_id = self.run.id
            if not run_id or self._watching == run_id:
                return
            self._watching = run_id
        started = asyncio.get_running_loop().time()
        waiting = False
        try:
            while True:
                await asyncio.sleep(WAITING_WATCH_SECONDS if waiting else WATCH_SECONDS)
                if asyncio.get_running_loop().time() - started > WATCH_MAX_SECONDS:
                    return  # a tab left open for hours: a reload picks up from here
                async with self:
                    if self.run.id != run_id or _run_id_from_path(self.router.url.path) != run_id:
                        return
                    out = await self._refresh(run_id)
                    if out is not None or self.not_found or self.is_terminal:
                        return
                    waiting = self.run.status in WAITING_FOR_PEOPLE
        finally:
            async with self:
                if self._watching == run_id:
                    self._watching = ""

    async def _act(self, action: str, fn, success: str):
        self.busy = action
        try:
            principal = await self._principal()
        except SessionExpired:
            self.busy = ""
            return self._login_redirect()
        run_id = self.run.id
        try:
            r = await run_db(lambda s: fn(s, principal, run_id))
        except ServiceError as exc:
            self.busy = ""
            return rx.toast.error(exc.message)
        self.busy = ""
        if r.id != run_id:  # re-trigger made a new run
            return [rx.toast.success(success), rx.redirect(f"/runs/{r.id}")]
        self._fill(r)
        events = [rx.toast.success(success)]
        if not self.is_terminal:
            events.append(RunDetailState.watch)
        return events

    @rx.event
    async def confirm(self):
        return await self._act("confirm", service.confirm_run, "Confirmed: the plan will be applied")

    @rx.event
    def set_review_comment(self, value: str):
        self.review_comment = value[:1000]

    async def _review(self, action: str, fn, success: str):
        """Approve or reject with the comment; a refused review keeps the comment typed."""
        self.busy = action
        try:
            principal = await self._principal()
        except SessionExpired:
            self.busy = ""
            return self._login_redirect()
        run_id, comment = self.run.id, self.review_comment.strip()
        try:
            await run_db(lambda s: fn(s, principal, run_id, comment))
        except ServiceError as exc:
            self.busy = ""
            return rx.toast.error(exc.message)
        self.review_comment = ""
        out = await self._refresh(run_id)  # the run, its reviews and what comes next
        self.busy = ""
        if out is not None:
            return out
        events = [rx.toast.success(success)]
        if not self.is_terminal:
            events.append(RunDetailState.watch)
        return events

    @rx.event
    async def approve(self):
        return await self._review("approve", reviews.approve_run, "Approved")

    @rx.event
    async def reject(self):
        return await self._review("reject", reviews.reject_run, "Rejected: the run failed")

    @rx.event
    async def discard(self):
        return await self._act("discard", service.discard_run, "Plan discarded")

    @rx.event
    async def cancel(self):
        return await self._act("cancel", service.cancel_run, "Cancel requested")

    @rx.event
    async def force_cancel(self):
        return await self._act(
            "force_cancel", lambda s, p, rid: service.cancel_run(s, p, rid, force=True), "Run force-canceled"
        )

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open, self.delete_confirm = bool(value), ""

    @rx.event
    def set_delete_confirm(self, value: str):
        self.delete_confirm = value

    @rx.event
    async def delete_run(self):
        from backend.context import get_context

        if self.delete_confirm != self.run.id:
            return rx.toast.error("Type the run id exactly to confirm.")
        self.busy = "delete"
        try:
            principal = await self._principal()
        except SessionExpired:
            self.busy = ""
            return self._login_redirect()
        run_id, stack_id = self.run.id, self.run.stack_id
        ctx = get_context()
        try:
            keys = await run_db(lambda s: service.delete_run(s, principal, run_id))
        except ServiceError as exc:
            self.busy = ""
            return rx.toast.error(exc.message)
        for key in keys:
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(ctx.objects.delete, key)
        self.busy, self.delete_open = "", False
        return [rx.toast.success(f"Deleted run {run_id}"), rx.redirect(f"/stacks/{stack_id}")]

    @rx.event
    async def retrigger(self):
        from backend.context import get_context

        box = get_context().secret_box
        return await self._act(
            "retrigger", lambda s, p, rid: service.retrigger_run(s, p, box, rid), "Triggered a new run"
        )


class TriggerRunState(AuthState):
    """The "Trigger run" dialog on a stack page."""

    open: bool = False
    stack_id: str = ""
    run_type: str = "tracked"
    commit: str = ""
    message: str = ""
    env_text: str = ""
    error: str = ""
    errors: dict[str, str] = {}
    saving: bool = False

    @rx.event
    def open_for(self, stack_id: str):
        self.open, self.stack_id = True, stack_id
        self.run_type, self.commit, self.message, self.env_text = "tracked", "", "", ""
        self.errors, self.saving = {}, False

    @rx.event
    def set_open(self, value: bool):
        self.open = value

    @rx.event
    def set_field(self, field: str, value: str):
        if field in ("run_type", "commit", "message", "env_text"):
            setattr(self, field, value)
            self.errors.pop(field, None)

    def _env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for n, raw in enumerate(self.env_text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"line {n}: write NAME=value")
            env[name.strip()] = value
        return env

    @rx.event
    async def submit(self):
        self.saving, self.errors = True, {}
        try:
            principal = await self._principal()
        except SessionExpired:
            self.saving = False
            return self._login_redirect()
        try:
            env = self._env()
            body = RunCreate.model_validate(
                {"type": self.run_type, "commit": self.commit or None, "message": self.message, "env": env}
            )
        except ValueError as exc:  # ValidationError is a ValueError
            self.saving = False
            if isinstance(exc, ValidationError):
                for err in exc.errors():
                    field = {"type": "run_type", "env": "env_text"}.get(
                        str(err["loc"][0]), str(err["loc"][0])
                    )
                    self.errors.setdefault(field, err["msg"].removeprefix("Value error, "))
            else:
                self.errors = {"env_text": str(exc)}
            return rx.toast.error("Fix the highlighted fields.")
        from backend.context import get_context

        box, stack_id = get_context().secret_box, self.stack_id
        try:
            r = await run_db(lambda s: service.create_run(s, principal, box, stack_id, body, trigger="ui"))
        except ServiceError as exc:
            self.saving = False
            return rx.toast.error(exc.message)
        self.saving, self.open = False, False
        return [rx.toast.success(f"Triggered a {r.type.value} run"), rx.redirect(f"/runs/{r.id}")]
