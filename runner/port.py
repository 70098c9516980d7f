"""The one small port through which a worker talks to the control plane.

``InProcessPort`` calls the backend's execution use cases directly, each in its own transaction
on a thread (the server's event loop never blocks on the database). It serves the worker inside
the server and `crucible worker` processes, which reach the same database. A remote agent
would implement the same methods over HTTP.

On PostgreSQL a claim is one call on the port's own autocommit connection, on the event loop
(``backend.queue.async_claim``); only building the claimed run's job goes to a thread. So are
the reports of a run's hot path (planning started, plan stored, apply finished, failed): one
statement each, read off the same lifecycle steps as the ORM reports SQLite uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlmodel import Session

from backend.context import AppContext
from backend.policies import enforcement
from backend.policies.engine import PolicyEngine, PolicyEvalError, default_engine
from backend.queue.async_claim import AsyncClaimer
from backend.runs import execution, logs
from backend.runs.execution import Job
from backend.runs.models import Run
from backend.timeutil import utcnow

T = TypeVar("T")

log = logging.getLogger("crucible.worker.port")


class InProcessPort:
    def __init__(self, ctx: AppContext, worker_id: str):
        self.ctx = ctx
        self.worker_id = worker_id
        self._postgres = ctx.engine.dialect.name == "postgresql"
        self._claimer: AsyncClaimer | None = None  # created on the first PostgreSQL claim
        self._engine: PolicyEngine | None = None  # the Rego engine, on the first policy
        settings = ctx.settings
        self.state_backend = execution.StateBackend(
            url=settings.state_backend_url or settings.base_url,
            hasher=ctx.auth.hasher,
            token_seconds=settings.run_timeout_seconds,
        )

    async def _tx(self, fn: Callable[[Session], T]) -> T:
        def call() -> T:
            with self.ctx.session() as s:
                return fn(s)

        return await asyncio.to_thread(call)

    async def claim(self) -> Job | None:
        cap = self.ctx.settings.proposed_runs_per_stack
        if not self._postgres:
            return await self._tx(
                lambda s: execution.claim(
                    s, self.ctx.secret_box, self.worker_id, utcnow(), cap, self.state_backend
                )
            )
        claimer = self._queue_connection()
        await claimer.connect()  # before the clock is read (a no-op once connected)
        run_id = await claimer.claim(self.worker_id, utcnow(), cap)
        if run_id is None:
            return None
        try:
            return await self._tx(
                lambda s: execution.job_for(s, self.ctx.secret_box, run_id, utcnow(), self.state_backend)
            )
        except Exception as exc:
            # The claim has committed: a run left preparing (or applying) would hold its stack
            # with nobody working on it until the reaper noticed.
            log.exception("cannot build the job of claimed run %s; failing it", run_id)
            with contextlib.suppress(Exception):  # the database is gone: the reaper fails it
                await self.fail(run_id, f"cannot prepare the run: {exc}")
            raise

    async def close(self) -> None:
        """Release the claim connection (PostgreSQL). The port claims again after this."""
        claimer, self._claimer = self._claimer, None
        if claimer is not None:
            await claimer.close()

    async def append_logs(self, run_id: str, phase: str, lines: list[str]) -> None:
        await self._tx(lambda s: logs.append(s, run_id, phase, lines))
        logs.signal(run_id)

    async def archive_logs(self, run_id: str, phase: str) -> None:
        def archive(s: Session) -> None:
            run = s.get(Run, run_id)
            if run is not None:
                logs.archive(s, self.ctx.objects, run, phase)

        await self._tx(archive)
        logs.signal(run_id)

    async def start_planning(self, run_id: str, commit_sha: str, commit_message: str) -> str | None:
        if self._postgres:
            return await self._report_sql(
                run_id, execution.start_planning_report(utcnow(), commit_sha, commit_message)
            )
        return await self._report(
            lambda s: execution.start_planning(
                s, run_id, self.worker_id, utcnow(), commit_sha, commit_message
            ),
            run_id,
        )

    async def finish_planning(
        self,
        run_id: str,
        *,
        summary: dict[str, int],
        has_changes: bool,
        artifacts: dict[str, Any],
        required_approvals: int = 0,
    ) -> str | None:
        if self._postgres:
            report = execution.finish_planning_report(
                utcnow(),
                summary=summary,
                has_changes=has_changes,
                artifacts=artifacts,
                required_approvals=required_approvals,
            )
            return await self._report_sql(run_id, report)
        return await self._report(
            lambda s: execution.finish_planning(
                s,
                run_id,
                self.worker_id,
                utcnow(),
                summary=summary,
                has_changes=has_changes,
                artifacts=artifacts,
                required_approvals=required_approvals,
            ),
            run_id,
        )

    # ------------------------------------------------------------------ policies

    async def load_policies(self, run_id: str, phase: str) -> enforcement.PolicySet:
        return await self._tx(lambda s: enforcement.load(s, run_id, phase))

    async def check_policies(
        self, run_id: str, hooks: dict[str, list[enforcement.Check]], doc: dict[str, Any]
    ) -> dict[str, list[enforcement.Outcome]] | None:
        """Evaluate the policies of one or more hooks that share an input, in one pass (in a
        thread: the engine blocks), and store the results; None if the run is no longer this
        worker's."""
        checks = [c for hook_checks in hooks.values() for c in hook_checks]
        outcomes = await self.evaluate_policies(checks, doc)
        by_hook, start = {}, 0
        for hook, hook_checks in hooks.items():
            by_hook[hook] = outcomes[start : start + len(hook_checks)]
            start += len(hook_checks)

        def record(s: Session) -> bool:
            return all(
                execution.record_policy_results(s, run_id, self.worker_id, hook, found)
                for hook, found in by_hook.items()
            )

        return by_hook if await self._tx(record) else None

    async def evaluate_policies(
        self, checks: list[enforcement.Check], doc: dict[str, Any]
    ) -> list[enforcement.Outcome]:
        """Evaluate without storing (trigger policies: stored with the runs they make)."""
        settings = self.ctx.settings
        try:
            engine = self._engine or default_engine(settings)
            self._engine = engine
        except PolicyEvalError as exc:
            return enforcement.failed_engine(checks, exc.message)
        timeout = settings.policy_timeout_seconds
        return await asyncio.to_thread(enforcement.evaluate, engine, checks, doc, timeout)

    async def trigger_runs(self, run_id: str, outcomes: list[enforcement.Outcome]) -> None:
        await self._tx(lambda s: execution.trigger_runs(s, self.ctx.secret_box, run_id, outcomes))

    async def finish_applying(self, run_id: str) -> str | None:
        if self._postgres:
            return await self._report_sql(run_id, execution.finish_applying_report(utcnow()))
        return await self._report(
            lambda s: execution.finish_applying(s, run_id, self.worker_id, utcnow()), run_id
        )

    async def fail(self, run_id: str, reason: str) -> str | None:
        if self._postgres:
            return await self._report_sql(run_id, execution.fail_report(utcnow(), reason))
        return await self._report(
            lambda s: execution.fail(s, run_id, self.worker_id, utcnow(), reason), run_id
        )

    async def mark_canceled(self, run_id: str) -> str | None:
        return await self._report(
            lambda s: execution.mark_canceled(s, run_id, self.worker_id, utcnow()), run_id
        )

    async def heartbeat(self, run_ids: list[str]) -> set[str]:
        return await self._tx(lambda s: execution.heartbeat(s, self.worker_id, run_ids, utcnow()))

    async def reap(self, timeout: timedelta) -> list[tuple[str, str | None]]:
        reaped = await self._tx(lambda s: execution.reap(s, utcnow(), timeout))
        await self._archive_left_over([run_id for run_id, _ in reaped])
        return reaped

    async def reconcile(self, is_dead: Callable[[str], bool]) -> list[str]:
        def run(s: Session) -> list[str]:
            dead = {w for w in execution.worker_ids_in_flight(s) if w != self.worker_id and is_dead(w)}
            return execution.fail_runs_of_dead_workers(s, utcnow(), dead)

        failed = await self._tx(run)
        await self._archive_left_over(failed)
        return failed

    async def _archive_left_over(self, run_ids: list[str]) -> None:
        """The logs of runs whose worker is gone move to the object store like any other."""
        for run_id in run_ids:

            def archive(s: Session, run_id: str = run_id) -> None:
                run = s.get(Run, run_id)
                if run is not None:
                    logs.archive_remaining(s, self.ctx.objects, run)

            await self._tx(archive)
            logs.signal(run_id)

    async def put_object(self, key: str, data: bytes) -> dict[str, Any]:
        info = await asyncio.to_thread(self.ctx.objects.put, key, data)
        return {"key": info.key, "sha256": info.sha256, "size": info.size}

    async def get_object(self, key: str) -> bytes:
        return await asyncio.to_thread(self.ctx.objects.get, key)

    def _queue_connection(self) -> AsyncClaimer:
        if self._claimer is None:
            self._claimer = AsyncClaimer(self.ctx.engine.url)
        return self._claimer

    async def _report_sql(self, run_id: str, report: execution.Report) -> str | None:
        status = await self._queue_connection().report(run_id, self.worker_id, report)
        logs.signal(run_id)
        return status

    async def _report(self, fn: Callable[[Session], str | None], run_id: str) -> str | None:
        status = await self._tx(fn)
        logs.signal(run_id)  # followers notice the status change (e.g. the run ended) at once
        return status
