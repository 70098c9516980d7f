"""Feedback to the VCS: the commit status of each webhook-made run and, for pull requests, the
one comment per stack that each re-plan edits in place.

``dispatch_once`` takes due ``run_vcs`` rows under a short lease (a conditional UPDATE, so
several processes can run it), makes the HTTP calls outside any transaction, then records what
came of them. A VCS that is down or refuses the token only ever costs a recorded error and a
later retry: nothing here changes a run, and one bad row never stops the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, text, update
from sqlmodel import Session, col, select

from backend.context import AppContext, get_context
from backend.crypto import DecryptionError
from backend.runs.lifecycle import PLAN_ONLY, TERMINAL
from backend.runs.models import Run, RunPolicyResult
from backend.stacks.models import Stack
from backend.stacks.service import token_aad
from backend.timeutil import as_utc, iso, utcnow
from backend.vcs.clients import ATTEMPTS, BACKOFF_SECONDS, Posted, VcsClient, VcsError, client_for
from backend.vcs.models import RunVcs, VcsComment

log = logging.getLogger("crucible.vcs.feedback")

BATCH = 20
LEASE_SECONDS = 60.0
MAX_ATTEMPTS = 6
RETRY_AFTER = (
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
)
FEEDBACK_OFF = "feedback is off: set the stack's VCS provider and token"
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
PLAN_ONLY_TYPES = frozenset(t.value for t in PLAN_ONLY)
# A proposed run's comment waits for its plan: nothing to say while it is queued or planning.
COMMENT_STATUSES = frozenset(
    {"unconfirmed", "pending_approval", "finished", "failed", "discarded", "canceled"}
)
CELL_MAX = 300
TABLE_ROWS_MAX = 50


# --------------------------------------------------------------------------- what to say


def _counts(run: Run) -> str | None:
    """``+a ~c -d``, or None when the run has no changes (or no plan yet)."""
    summary = run.plan_summary or {}
    counts = [int(summary.get(k) or 0) for k in ("add", "change", "destroy")]
    if run.has_changes is False or not any(counts):
        return None
    return "+{} ~{} -{}".format(*counts)


def _warnings(results: list[RunPolicyResult]) -> str:
    n = sum(1 for r in results if r.outcome == "warn")
    return f", {n} policy warning{'s' if n > 1 else ''}" if n else ""


def desired(run: Run, stack_name: str, results: list[RunPolicyResult]) -> tuple[str, str]:
    """The neutral state (pending, success, failure, canceled) and description the commit of
    ``run`` should show. ``stack_name`` names the stack where no status context does (failures)."""
    status, counts = run.status, _counts(run)
    plan = counts or "no changes"
    if status in ("queued", "preparing", "planning"):
        return "pending", "planning…"
    if status in ("confirmed", "applying"):
        return "pending", "applying…"
    if status == "pending_approval":
        return "pending", f"plan ready: {plan}, waiting for approval{_warnings(results)}"
    if status == "unconfirmed":
        return "pending", f"plan ready: {plan}, waiting for confirmation{_warnings(results)}"
    if status == "finished":
        if run.type in PLAN_ONLY_TYPES:
            return "success", (f"plan: {counts}" if counts else "no changes") + _warnings(results)
        return "success", (f"applied: {counts}" if counts else "no changes") + _warnings(results)
    if status == "failed":
        return "failure", _clip(run.failure_reason or f"{stack_name} failed", 140)
    return "canceled", status  # discarded, canceled


def context_name(stack_name: str) -> str:
    return f"crucible/{stack_name}"


def run_url(base_url: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}"


def _clip(value: str, limit: int) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _cell(value: str) -> str:
    """Table cells: one line, no column breaks, no markup that escapes the cell."""
    return _clip(value, CELL_MAX).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def comment_body(run: Run, stack_id: str, stack_name: str, results: list[RunPolicyResult], url: str) -> str:
    """The PR/MR comment: status, plan counts, policy results and the link. The hidden marker
    tells anyone reading the thread (or a future clean-up) which stack's comment this is."""
    summary = run.plan_summary or {}
    counts = " · ".join(f"{k} **{int(summary.get(k) or 0)}**" for k in ("add", "change", "destroy"))
    lines = [
        f"<!-- crucible:stack:{stack_id} -->",
        f"### Crucible · `{stack_name}`",
        "",
        f"**Run** [`{run.id}`]({url}) is **{run.status.replace('_', ' ')}**"
        + (f" at `{run.commit_sha[:12]}`" if run.commit_sha else ""),
        "",
    ]
    if run.status == "failed" and run.failure_reason:
        lines += [f"> {_cell(run.failure_reason)}", ""]
    if run.plan_summary is not None:
        lines += ["No changes." if _counts(run) is None else f"Plan: {counts}", ""]
    if results:
        lines += ["| Policy | Hook | Outcome | Messages |", "| --- | --- | --- | --- |"]
        for r in results[:TABLE_ROWS_MAX]:
            messages = [*r.deny, *r.warn, *([r.error] if r.error else [])]
            lines.append(
                f"| {_cell(r.policy_name)} | {r.hook} | {r.outcome} | {_cell('; '.join(messages)) or '—'} |"
            )
        if len(results) > TABLE_ROWS_MAX:
            lines.append(f"\n…and {len(results) - TABLE_ROWS_MAX} more on the run page.")
        lines.append("")
    lines.append(f"[View the run in Crucible]({url})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- dispatching


@dataclass
class _Job:
    """A claimed row and everything its calls need, read before any HTTP is made."""

    run_id: str
    lease_until: datetime
    status: str | None = None  # None: the run is gone
    config_error: str | None = None  # set: nothing to send, say why
    client: VcsClient | None = None
    repo: str = ""
    sha: str = ""
    state: str = ""
    description: str = ""
    url: str = ""
    context: str = ""
    pr_number: int | None = None
    comment: str | None = None  # the PR comment's body, when one is due
    superseded: bool = False  # a newer run of the same PR owns the comment
    existing: VcsComment | None = None


@dataclass
class _Outcome:
    status_result: dict[str, Any]
    comment_result: dict[str, Any] | None = None
    posted: Posted | None = None
    unreachable: bool = False  # the VCS did not answer at all (down, timeouts)

    @property
    def ok(self) -> bool:
        return bool(self.status_result["ok"]) and (self.comment_result is None or self.comment_result["ok"])


def _owed(now: datetime) -> tuple[Any, ...]:
    """A row owes a call when it is not done, its retry is due, nobody holds its lease and its
    run moved on since the last sync (or is gone). The claim re-checks all of it: a row another
    process has just synced must not be sent again."""
    run_status = select(Run.status).where(col(Run.id) == col(RunVcs.run_id)).scalar_subquery()
    return (
        text("NOT run_vcs.done"),  # spelled as the partial index is, so the scan uses it
        or_(col(RunVcs.next_attempt_at).is_(None), col(RunVcs.next_attempt_at) <= now),
        or_(col(RunVcs.lease_until).is_(None), col(RunVcs.lease_until) < now),
        or_(
            col(RunVcs.synced_status).is_(None), run_status.is_(None), run_status != col(RunVcs.synced_status)
        ),
    )


def _due(ctx: AppContext, now: datetime, limit: int) -> list[str]:
    with ctx.session(readonly=True) as s:
        # Fresh work first: rows that are retrying (a VCS that is down) never hold up the others.
        retrying = col(RunVcs.next_attempt_at).is_not(None)
        stmt = (
            select(RunVcs.run_id)
            .where(*_owed(now))
            .order_by(retrying, col(RunVcs.created_at), col(RunVcs.run_id))
        )
        return list(s.exec(stmt.limit(limit)).all())


def _claim(ctx: AppContext, run_id: str, now: datetime) -> _Job | None:
    """Lease one row just before working on it; of several processes that saw the row, only
    one gets rowcount 1. The lease outlasts the worst case of the calls (three requests of
    three attempts each), so a slow VCS never gets two senders."""
    worst = 3 * ATTEMPTS * ctx.settings.vcs_timeout_seconds + sum(BACKOFF_SECONDS) * 3
    lease_until = now + timedelta(seconds=max(LEASE_SECONDS, worst))
    with ctx.session() as s:
        claim = (
            update(RunVcs).where(col(RunVcs.run_id) == run_id, *_owed(now)).values(lease_until=lease_until)
        )
        taken = s.execute(claim).rowcount == 1
    return _Job(run_id, lease_until) if taken else None


def _prepare(ctx: AppContext, job: _Job, http: httpx.Client, sleep: Callable[[float], None]) -> None:
    """Read the run, stack, policy results and comment into ``job``; no HTTP yet."""
    with ctx.session(readonly=True) as s:
        row, run = s.get(RunVcs, job.run_id), s.get(Run, job.run_id)
        if row is None or run is None:
            return
        job.status = run.status
        stack = s.get(Stack, row.stack_id)
        if stack is None or not stack.vcs_provider or not stack.vcs_token_encrypted:
            job.config_error = FEEDBACK_OFF
            return
        try:
            token = ctx.secret_box.decrypt(stack.vcs_token_encrypted, token_aad(stack.id))
            job.client = client_for(
                stack.vcs_provider,
                http,
                token,
                stack.vcs_base_url,
                allowed_networks=ctx.settings.vcs_networks,
                sleep=sleep,
            )
        except DecryptionError as exc:
            job.config_error = f"the stack's VCS token does not decrypt ({exc.message}): set it again"
            return
        except VcsError as exc:
            job.config_error = exc.message
            return
        results = list(
            s.exec(
                select(RunPolicyResult)
                .where(RunPolicyResult.run_id == run.id)
                .order_by(col(RunPolicyResult.id))
            )
        )
        job.state, job.description = desired(run, stack.name, results)
        job.url = run_url(ctx.settings.base_url, run.id)
        job.context = context_name(stack.name)
        job.repo, job.sha, job.pr_number = row.repo, row.sha, row.pr_number
        if row.pr_number is not None and run.status in COMMENT_STATUSES:
            if _newer_run_on_pr(s, row):
                job.superseded = True
            else:
                job.comment = comment_body(run, stack.id, stack.name, results, job.url)
                job.existing = s.get(VcsComment, (row.stack_id, row.repo, row.pr_number))


def _send(job: _Job, now: datetime) -> _Outcome:
    """The commit status, then the comment; each call's failure is recorded, not raised."""
    assert job.client is not None
    at = iso(now)
    sent = {"state": job.state, "description": job.description, "at": at, "url": job.url}
    try:
        job.client.set_status(job.repo, job.sha, job.state, job.description, job.url, job.context)
        outcome = _Outcome({"ok": True, "error": None, **sent})
    except VcsError as exc:
        outcome = _Outcome({"ok": False, "error": exc.message, **sent}, unreachable=exc.status is None)
    if job.superseded:
        outcome.comment_result = {"ok": True, "error": None, "at": at, "note": "a newer run owns the comment"}
    elif job.comment is not None and job.pr_number is not None:
        try:
            outcome.posted = job.client.upsert_comment(job.repo, job.pr_number, job.comment, job.existing)
            outcome.comment_result = {"ok": True, "error": None, "at": at, "url": outcome.posted[2]}
        except VcsError as exc:
            outcome.comment_result = {"ok": False, "error": exc.message, "at": at}
            outcome.unreachable |= exc.status is None
    return outcome


def _newer_run_on_pr(s: Session, row: RunVcs) -> bool:
    """A re-plan of the same PR owns the comment: an older run that ends later must not put
    its stale plan back."""
    newer = s.exec(
        select(RunVcs.run_id).where(
            RunVcs.stack_id == row.stack_id,
            RunVcs.repo == row.repo,
            RunVcs.pr_number == row.pr_number,
            col(RunVcs.created_at) > row.created_at,
        )
    ).first()
    return newer is not None


def _leased(s: Session, job: _Job) -> RunVcs | None:
    """The row, if it is still ours: one another process re-leased meanwhile is left to it."""
    row = s.get(RunVcs, job.run_id)
    if row is None or row.lease_until is None or as_utc(row.lease_until) != as_utc(job.lease_until):
        return None
    return row


def _store(ctx: AppContext, job: _Job, outcome: _Outcome | None, now: datetime) -> None:
    """Record what the calls did, and what is owed next."""
    with ctx.session() as s:
        row = _leased(s, job)
        if row is None:
            return
        row.lease_until = None
        if job.status is None:  # the run is gone: nothing more to report
            row.done = True
        elif outcome is None:  # feedback is off or misconfigured: say so once, stop
            row.status_result = {"ok": False, "error": job.config_error, "at": iso(now)}
            row.synced_status, row.done = job.status, True
        else:
            if outcome.posted is not None:
                _keep_comment(s, row, outcome.posted, now)
            gave_up = not outcome.ok and row.attempts + 1 >= MAX_ATTEMPTS
            for result in (outcome.status_result, outcome.comment_result):
                if gave_up and result is not None and not result["ok"]:
                    result["error"] += f" (gave up after {MAX_ATTEMPTS} attempts)"
            row.status_result = outcome.status_result
            if outcome.comment_result is not None:
                row.comment_result = outcome.comment_result
            if outcome.ok or gave_up:  # this status is settled; the next change starts afresh
                row.synced_status, row.done = job.status, job.status in TERMINAL_STATUSES
                row.attempts, row.next_attempt_at = 0, None
            else:
                row.attempts += 1
                row.next_attempt_at = now + RETRY_AFTER[row.attempts - 1]
        s.add(row)


def _record_crash(ctx: AppContext, job: _Job, exc: Exception, now: datetime) -> None:
    """A bug or a database hiccup: shown on the run page and retried later, like a VCS error."""
    with ctx.session() as s:
        row = _leased(s, job)
        if row is None:
            return
        error = f"feedback failed: {type(exc).__name__}"
        row.attempts += 1
        if row.attempts >= MAX_ATTEMPTS:  # a bug that repeats: stop hammering, say so
            error += f" (gave up after {MAX_ATTEMPTS} attempts)"
            row.done, row.next_attempt_at = True, None
        else:
            row.next_attempt_at = now + RETRY_AFTER[row.attempts - 1]
        row.status_result = {"ok": False, "error": error, "at": iso(now)}
        row.lease_until = None
        s.add(row)


def _keep_comment(s: Session, row: RunVcs, posted: Posted, now: datetime) -> None:
    assert row.pr_number is not None
    comment_id, thread_id, url = posted
    kept = s.get(VcsComment, (row.stack_id, row.repo, row.pr_number)) or VcsComment(
        stack_id=row.stack_id, repo=row.repo, pr_number=row.pr_number, comment_id=comment_id
    )
    kept.comment_id, kept.thread_id, kept.url, kept.updated_at = comment_id, thread_id, url, now
    s.add(kept)


def dispatch_once(
    ctx: AppContext,
    now: datetime | None = None,
    limit: int = BATCH,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send what is due to the VCS; returns how many rows this call handled. ``now`` pins the
    clock (tests); ``sleep`` is the wait between a request's retries."""
    clock = (lambda: now) if now is not None else utcnow
    handled = 0
    down: set[str] = set()  # VCS bases that did not answer this round: their other rows wait
    with httpx.Client(timeout=ctx.settings.vcs_timeout_seconds, follow_redirects=False) as http:
        for run_id in _due(ctx, clock(), limit):
            job = _claim(ctx, run_id, clock())
            if job is None:  # another process took it
                continue
            handled += 1
            at = clock()
            try:
                _prepare(ctx, job, http, sleep)
                outcome = None
                if job.client is not None and job.client.base in down:
                    error = f"{job.client.base} did not answer a moment ago; retrying later"
                    outcome = _Outcome({"ok": False, "error": error, "at": iso(at)}, unreachable=True)
                elif job.client is not None:
                    outcome = _send(job, at)
                    if outcome.unreachable:
                        down.add(job.client.base)
                _store(ctx, job, outcome, clock())
            except Exception as exc:
                log.exception("VCS feedback failed", extra={"fields": {"run_id": run_id}})
                try:
                    _record_crash(ctx, job, exc, at)
                except Exception:  # the database is away: the lease runs out, the row comes back
                    log.exception("could not record the VCS feedback failure")
    return handled


def _dispatch() -> int:
    return dispatch_once(get_context())


async def vcs_feedback_task(interval_seconds: float = 1.0) -> None:
    """Keep commit statuses and PR comments in step with runs, every ``interval_seconds``
    (at once again after a full batch, so a backlog drains without waiting)."""
    while True:
        handled = 0
        try:
            handled = await asyncio.to_thread(_dispatch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("VCS feedback failed; retrying next round")
        if handled < BATCH:
            await asyncio.sleep(interval_seconds)


def feedback_of(session: Session, run_id: str) -> dict[str, Any] | None:
    """What the run page shows about the run's VCS feedback (None: not a webhook-made run)."""
    row = session.get(RunVcs, run_id)
    if row is None:
        return None
    return {
        "provider": row.provider,
        "repo": row.repo,
        "sha": row.sha,
        "pr_number": row.pr_number,
        "pr_url": row.pr_url,
        "status_result": row.status_result,
        "comment_result": row.comment_result,
        "synced_status": row.synced_status,
        "done": row.done,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at),
    }
