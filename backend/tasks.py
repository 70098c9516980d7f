"""Background tasks that run inside the server process (Reflex lifespan or `crucible api`)."""

from __future__ import annotations

import asyncio
import logging

from backend.context import get_context

log = logging.getLogger("crucible.tasks")


def _purge_once() -> int:
    ctx = get_context()
    with ctx.session() as s:
        return ctx.auth.purge_expired_sessions(s)


async def session_janitor(interval_seconds: float = 3600.0) -> None:
    """Delete expired browser sessions every hour."""
    while True:
        try:
            removed = await asyncio.to_thread(_purge_once)
            if removed:
                log.info("purged expired sessions", extra={"fields": {"count": removed}})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session janitor failed; retrying next round")
        await asyncio.sleep(interval_seconds)


BACKGROUND_TASKS = (session_janitor,)
