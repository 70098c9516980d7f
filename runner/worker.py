"""The worker: claims runs from the queue and executes them, up to ``concurrency`` at a time.

The same loop runs inside the server (the embedded default, a lifespan task) and as
`crucible worker --concurrency N` on any number of hosts against one PostgreSQL. It:

- reconciles at start-up: runs held by a worker on this host whose process is gone fail at once
  (runs of workers elsewhere fail through the heartbeat timeout);
- claims when it has a free slot, and otherwise sleeps on the queue's wake-up (LISTEN/NOTIFY on
  PostgreSQL, in-process events plus polling on SQLite);
- heartbeats its runs, learns of cancel requests from the answer, and reaps runs of workers that
  stopped heartbeating, which unblocks their stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import timedelta

from backend.context import AppContext
from backend.queue.wakeup import Waiter
from backend.runs.execution import Job
from runner.executors.base import Executor
from runner.job import JobRunner
from runner.port import InProcessPort

log = logging.getLogger("crucible.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


def is_dead_local_worker(worker_id: str) -> bool:
    """A worker id of this host whose process no longer exists (or whose pid is ours now: a
    restarted container reuses pid 1)."""
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:60] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Worker:
    def __init__(self, ctx: AppContext, *, concurrency: int | None = None, worker_id: str | None = None):
        self.ctx = ctx
        self.settings = ctx.settings
        self.concurrency = concurrency or self.settings.worker_concurrency
        self.id = worker_id or new_worker_id()
        self.port = InProcessPort(ctx, self.id)
        # Keyed by (run id, phase): an auto-applied run's apply may start here while its plan job
        # is still archiving and cleaning up; both count against the concurrency.
        self.active: dict[tuple[str, str], tuple[asyncio.Task, JobRunner]] = {}
        self._slot_freed = asyncio.Event()
        self._background: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        await self._reconcile()
        beat = asyncio.create_task(self._heartbeat_loop())
        try:
            async with Waiter(self.ctx.engine) as waiter:
                while not stop.is_set():
                    claimed = await self._fill_slots()
                    if stop.is_set():
                        break
                    if len(self.active) >= self.concurrency:
                        self._slot_freed.clear()
                        await _first(self._slot_freed.wait(), stop.wait())
                    elif not claimed:
                        # A notification, the poll interval, a finished job or a stop request.
                        await _first(waiter.wait(), stop.wait(), self._slot_freed.wait())
                        self._slot_freed.clear()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self._shutdown()
            await self.port.close()

    async def _fill_slots(self) -> bool:
        claimed = False
        while len(self.active) < self.concurrency:
            try:
                job = await self.port.claim()
            except Exception:
                log.exception("claiming a run failed; retrying shortly")
                await asyncio.sleep(1)
                return claimed
            if job is None:
                return claimed
            claimed = True
            self._start(job)
        return claimed

    def _start(self, job: Job) -> None:
        cancel = asyncio.Event()
        try:
            executor = self._executor(job)
        except Exception as exc:  # bad runner settings fail this run, never the worker
            log.exception("cannot build the %s executor for %s", job.runner, job.run_id)
            task = asyncio.create_task(
                self.port.fail(job.run_id, f"cannot start the {job.runner} runner: {exc}")
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        runner = JobRunner(job, self.port, executor, self.settings, cancel)
        task = asyncio.create_task(runner.run(), name=f"run {job.run_id} {job.phase}")
        key = (job.run_id, job.phase)
        self.active[key] = (task, runner)
        log.info("claimed %s (%s of %s)", job.run_id, job.phase, job.stack_name)

        def done(t: asyncio.Task) -> None:
            if self.active.get(key, (None,))[0] is t:
                del self.active[key]
            self._slot_freed.set()
            if not t.cancelled() and t.exception() is not None:
                # Reporting itself failed (database down): the run goes stale and is reaped.
                log.error("run %s could not report its end: %s", job.run_id, t.exception())

        task.add_done_callback(done)

    def _executor(self, job: Job) -> Executor:
        if job.runner == "docker":
            from runner.executors.docker import DockerExecutor

            return DockerExecutor(
                image=job.runner_image or self.settings.runner_image,
                base_url=self.settings.docker_host,
                network=self.settings.docker_network,
                mem_limit=self.settings.docker_memory,
                cpus=self.settings.docker_cpus,
                pids_limit=self.settings.docker_pids_limit,
                grace=self.settings.cancel_grace_seconds,
                labels={"crucible.run": job.run_id, "crucible.worker": self.id},
            )
        from runner.executors.local import LocalExecutor

        return LocalExecutor(
            sandbox=self.settings.local_runner_sandbox != "off",
            writable_paths=self.settings.writable_paths,
            grace=self.settings.cancel_grace_seconds,
        )

    async def _reconcile(self) -> None:
        try:
            failed = await self.port.reconcile(is_dead_local_worker)
        except Exception:
            log.exception("start-up reconciliation failed; the heartbeat timeout will catch stale runs")
            return
        if failed:
            log.warning("failed %d run(s) left in flight by a stopped worker: %s", len(failed), failed)
        # Containers of workers of this host that are gone. Other hosts' workers may be alive:
        # theirs are removed once the reaper declares them dead.
        await self._remove_containers(lambda w: w != self.id and not is_dead_local_worker(w))

    async def _remove_containers(self, keep) -> None:
        """Crash recovery for the Docker executor, when a Docker engine is configured."""
        if not (self.settings.docker_host or os.environ.get("DOCKER_HOST")):
            return
        try:
            from runner.executors.docker import remove_orphans

            await remove_orphans(keep, base_url=self.settings.docker_host)
        except Exception as exc:  # no engine here: nothing to clean
            log.debug("runner container clean-up skipped: %s", exc)

    async def _heartbeat_loop(self) -> None:
        timeout = timedelta(seconds=self.settings.worker_heartbeat_timeout_seconds)
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_seconds)
            try:
                stop = await self.port.heartbeat(sorted({run_id for run_id, _phase in self.active}))
                for (run_id, phase), (_task, runner) in list(self.active.items()):
                    if run_id in stop and not runner.cancel.is_set():
                        log.info("stopping %s (%s; canceled)", run_id, phase)
                        runner.cancel.set()
                reaped = await self.port.reap(timeout)
                if reaped:
                    log.warning(
                        "failed %d run(s) whose worker stopped heartbeating: %s",
                        len(reaped),
                        [r for r, _ in reaped],
                    )
                    for worker_id in {w for _, w in reaped if w}:
                        await self._remove_containers(lambda w, dead=worker_id: w != dead)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed; retrying")

    async def _shutdown(self) -> None:
        """Stop what runs: each job's tool is signalled and its run fails with the reason."""
        for _task, runner in self.active.values():
            runner.shutting_down = True
            runner.cancel.set()
        tasks = [t for t, _ in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.cancel_grace_seconds + 5)


async def _first(*aws) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def embedded_worker() -> None:
    """Lifespan task of `crucible up` / `crucible api`: the in-process worker, unless
    CRUCIBLE_WORKER_ENABLED=false (then only `crucible worker` processes execute runs)."""
    from backend.context import get_context

    ctx = get_context()
    if not ctx.settings.worker_enabled:
        log.info("the embedded worker is disabled (CRUCIBLE_WORKER_ENABLED=false)")
        return
    while True:
        try:
            await Worker(ctx).run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the embedded worker crashed; restarting it in 5 s")
            await asyncio.sleep(5)
