"""Small helpers for page states: run service calls off the event loop, format times."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlmodel import Session

from backend.context import get_context
from backend.timeutil import as_utc, utcnow

T = TypeVar("T")


async def run_db(fn: Callable[[Session], T], readonly: bool = False) -> T:
    """Run ``fn(session)`` in one transaction on a worker thread (never block the UI loop).
    ``readonly`` for loads: no write lock on SQLite."""

    def _call() -> T:
        ctx = get_context()
        if readonly:
            return ctx.read(fn)
        with ctx.session() as s:
            return fn(s)

    return await asyncio.to_thread(_call)


def relative(ts: str | datetime | None) -> str:
    if ts is None or ts == "":
        return ""
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00")) if isinstance(ts, str) else ts
    secs = int((utcnow() - as_utc(dt)).total_seconds())
    if secs < 45:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return "just now"


def exact(ts: str | None) -> str:
    if not ts:
        return ""
    return ts.replace("T", " ").split(".")[0] + " UTC"


def human_size(size: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def stack_id_from_path(path: str) -> str:
    """The stack id of a /stacks/<id>/... page (empty elsewhere)."""
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) >= 2 and parts[0] == "stacks" else ""
