"""Background tasks that run inside the server process (Reflex lifespan or `crucible api`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from backend.context import get_context
from backend.errors import ServiceError
from backend.timeutil import utcnow

log = logging.getLogger("crucible.tasks")


def _purge_once() -> dict[str, int]:
    """Expired browser sessions, and webhook deliveries past their retention."""
    from backend.vcs.service import purge_deliveries

    ctx = get_context()
    with ctx.session() as s:
        sessions = ctx.auth.purge_expired_sessions(s)
    days = ctx.settings.webhook_delivery_retention_days
    deliveries = 0
    if days > 0:
        with ctx.session() as s:
            deliveries = purge_deliveries(s, utcnow() - timedelta(days=days))
    return {"sessions": sessions, "deliveries": deliveries}


async def janitor(interval_seconds: float = 3600.0) -> None:
    """Every hour: delete expired sessions and old webhook deliveries."""
    while True:
        try:
            removed = await asyncio.to_thread(_purge_once)
            if any(removed.values()):
                log.info("purged expired rows", extra={"fields": removed})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("janitor failed; retrying next round")
        await asyncio.sleep(interval_seconds)


VALIDATION_TICK_SECONDS = 60.0


async def validation_scheduler(tick_seconds: float = VALIDATION_TICK_SECONDS) -> None:
    """Validate stacks against their current state (validation policies) on a schedule.

    A stack is due once its results are CRUCIBLE_VALIDATION_INTERVAL_SECONDS old (0 disables
    the schedule); looking every minute (or every interval, when shorter) validates each about
    that long after its last evaluation, whether that one was scheduled or clicked. The first
    look waits a tick, so a start-up is never slowed. On shutdown the pass in progress stops
    after the stack it is evaluating."""
    from backend.policies import validation

    ctx = get_context()
    interval = ctx.settings.validation_interval_seconds
    if interval <= 0:
        log.info("scheduled validation is off (CRUCIBLE_VALIDATION_INTERVAL_SECONDS=0)")
        return
    stop = threading.Event()
    unavailable = ""  # the engine problem last logged: said once, not every minute
    try:
        while True:
            await asyncio.sleep(min(float(interval), tick_seconds))
            try:
                done = await asyncio.to_thread(validation.run_scheduled, ctx, stop=stop)
                unavailable = ""
                if done:
                    log.info("validated stacks on schedule", extra={"fields": {"count": done}})
            except asyncio.CancelledError:
                raise
            except ServiceError as exc:  # no policy engine: a setting to fix
                if exc.message != unavailable:
                    log.error("scheduled validation cannot run: %s", exc.message)
                unavailable = exc.message
            except Exception:
                log.exception("scheduled validation failed; retrying next round")
    finally:
        stop.set()  # a pass still running in its thread ends after its current stack


async def vcs_feedback() -> None:
    """Commit statuses and PR comments for webhook-made runs (backend/vcs/feedback.py)."""
    from backend.vcs.feedback import vcs_feedback_task

    await vcs_feedback_task()


BACKGROUND_TASKS = (janitor, validation_scheduler, vcs_feedback)
