"""Run logs: live chunks in the database while a phase runs, one archived object per phase after.

Workers append masked lines in small batches (``append``). When a phase ends, ``archive`` moves
its chunks into the object store (``runs/<id>/<phase>.log``) and deletes them, in one
transaction, so the database holds only what is still live. Readers (``read_text``,
``follow``) stitch both together: a follower counts the lines it has sent per phase, so a phase
archived between two polls continues from the archive where the chunks left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlmodel import Session, col, select

from backend.runs import lifecycle as lc
from backend.runs.models import Run, RunLogChunk
from backend.storage import ObjectStore, StorageError

PHASES = ("plan", "apply")
TERMINAL_VALUES = frozenset(s.value for s in lc.TERMINAL)
POLL_SECONDS = 0.25


def log_key(run_id: str, phase: str) -> str:
    return f"runs/{run_id}/{phase}.log"


def append(session: Session, run_id: str, phase: str, lines: list[str]) -> None:
    if not lines:
        return
    session.add(RunLogChunk(run_id=run_id, phase=phase, body="\n".join(lines), line_count=len(lines)))


def archive(session: Session, objects: ObjectStore, run: Run, phase: str) -> None:
    """Move the phase's chunks to the object store; the caller's transaction deletes them."""
    chunks = session.exec(
        select(RunLogChunk.body)
        .where(RunLogChunk.run_id == run.id, RunLogChunk.phase == phase)
        .order_by(col(RunLogChunk.id))
    ).all()
    earlier = (run.artifacts or {}).get("logs", {}).get(phase)
    if earlier and not chunks:
        return  # archived already (by the reaper, when this worker was thought lost)
    text = "\n".join(chunks)
    data = (text + "\n").encode() if chunks else b""
    if earlier:  # a worker thought lost wrote more after the reaper archived: keep both
        data = objects.get(earlier["key"]) + data
    info = objects.put(log_key(run.id, phase), data)
    logs = dict((run.artifacts or {}).get("logs", {}))
    logs[phase] = {"key": info.key, "sha256": info.sha256, "size": info.size}
    run.artifacts = {**(run.artifacts or {}), "logs": logs}
    session.add(run)
    session.execute(
        delete(RunLogChunk).where(col(RunLogChunk.run_id) == run.id, col(RunLogChunk.phase) == phase)
    )


def archive_remaining(session: Session, objects: ObjectStore, run: Run) -> None:
    """Archive what a run's lost worker left in the database (reaper, start-up reconciliation)."""
    done = (run.artifacts or {}).get("logs", {})
    for phase in _phases_run(run):
        if phase not in done:
            archive(session, objects, run, phase)


def _archived(objects: ObjectStore, run: Run, phase: str) -> list[str] | None:
    entry = (run.artifacts or {}).get("logs", {}).get(phase)
    if not entry:
        return None
    try:
        data = objects.get(entry["key"]).decode(errors="replace")
    except StorageError as exc:
        return [f"[crucible] the archived {phase} log cannot be read: {exc}"]
    # Split exactly as the live chunks are ("\n" only): a line holding "\r" or other line
    # separators must read the same before and after archiving.
    if not data:
        return []
    return (data[:-1] if data.endswith("\n") else data).split("\n")


def read_lines(session: Session, objects: ObjectStore, run: Run) -> list[str]:
    """Everything logged so far, every phase in order."""
    out: list[str] = []
    for phase in PHASES:
        archived = _archived(objects, run, phase)
        if archived is not None:
            out.extend(archived)
            continue
        for body in session.exec(
            select(RunLogChunk.body)
            .where(RunLogChunk.run_id == run.id, RunLogChunk.phase == phase)
            .order_by(col(RunLogChunk.id))
        ).all():
            out.extend(body.split("\n"))
    return out


@dataclass
class _Cursor:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    # Per phase: SQLite may reuse the ids of a phase's archived (deleted) chunks for the next.
    last_chunk_id: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))


def _phases_run(run: Run) -> list[str]:
    """The phases this run executed (each ends with an archived log)."""
    stamps = run.status_timestamps or {}
    return [p for p, started in (("plan", "preparing"), ("apply", "applying")) if started in stamps]


def _poll(
    session: Session, objects: ObjectStore, run_id: str, cursor: _Cursor
) -> tuple[list[str], bool, bool]:
    """New lines since ``cursor``, whether the run is terminal, and whether its log is complete:
    terminal, and every phase it ran archived (a worker archives right after reporting the end,
    so lines written just before it are never cut off)."""
    run = session.get(Run, run_id)
    if run is None:
        return [], True, True
    out: list[str] = []
    archived_phases = set()
    for phase in PHASES:
        archived = _archived(objects, run, phase)
        if archived is not None:
            archived_phases.add(phase)
            out.extend(archived[cursor.sent[phase] :])
            cursor.sent[phase] = max(cursor.sent[phase], len(archived))
            continue
        rows = session.exec(
            select(RunLogChunk.id, RunLogChunk.body)
            .where(
                RunLogChunk.run_id == run_id,
                RunLogChunk.phase == phase,
                RunLogChunk.id > cursor.last_chunk_id[phase],
            )
            .order_by(col(RunLogChunk.id))
        ).all()
        for chunk_id, body in rows:
            lines = body.split("\n")
            out.extend(lines)
            cursor.sent[phase] += len(lines)
            cursor.last_chunk_id[phase] = max(cursor.last_chunk_id[phase], chunk_id)
    terminal = run.status in TERMINAL_VALUES
    return out, terminal, terminal and set(_phases_run(run)) <= archived_phases


async def follow(
    read: Callable[[Callable[[Session], object]], object],
    objects: ObjectStore,
    run_id: str,
    *,
    terminal_grace: float = 5.0,
) -> AsyncIterator[str]:
    """Yield text blocks (whole lines, each ending in a newline) until the run's log is complete.

    ``read(fn)`` runs ``fn(session)`` in a read transaction (AppContext.read)."""
    cursor = _Cursor()
    waiting_since: float | None = None
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    _subscribe(run_id, loop, event)
    try:
        # Some servers (granian) send the headers only with the first body bytes: an empty
        # chunk now lets the client know at once that the stream is live.
        yield ""
        while True:
            event.clear()
            lines, terminal, complete = await asyncio.to_thread(
                read, lambda s: _poll(s, objects, run_id, cursor)
            )
            if lines:
                yield "\n".join(lines) + "\n"
            if complete:
                return
            if terminal:
                waiting_since = waiting_since or loop.time()
                if loop.time() - waiting_since > terminal_grace:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), POLL_SECONDS)
    finally:
        _unsubscribe(run_id, event)


# In-process wake-ups: a follower in the same process as the worker hears of new lines at once;
# followers of runs executed elsewhere poll every POLL_SECONDS.
_subscribers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
_sub_lock = threading.Lock()


def _subscribe(run_id: str, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _sub_lock:
        _subscribers.setdefault(run_id, []).append((loop, event))


def _unsubscribe(run_id: str, event: asyncio.Event) -> None:
    with _sub_lock:
        subs = [(lp, ev) for lp, ev in _subscribers.get(run_id, []) if ev is not event]
        if subs:
            _subscribers[run_id] = subs
        else:
            _subscribers.pop(run_id, None)


def signal(run_id: str) -> None:
    """Wake this process's followers of ``run_id``; call after the transaction that wrote the
    lines (or changed the run) committed."""
    with _sub_lock:
        subs = list(_subscribers.get(run_id, []))
    for loop, event in subs:
        with contextlib.suppress(RuntimeError):  # that loop is closed
            loop.call_soon_threadsafe(event.set)
