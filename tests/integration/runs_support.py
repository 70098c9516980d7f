"""Helpers for run tests: real git repositories with Ansible playbooks, a real Worker in a thread
of its own, waiting for a run to reach a status, and driving a run's state the way a worker
reports it (for API tests that need a run in a given state without executing anything)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func
from sqlmodel import select

from backend.context import AppContext
from backend.runs import lifecycle as lc
from backend.runs import logs
from backend.runs.models import Run, RunLogChunk
from backend.runs.state import apply_state, state_of
from backend.timeutil import utcnow
from runner.worker import Worker

TERMINAL = {s.value for s in lc.TERMINAL}
FAKE_WORKER = "elsewhere.example:1:fake00"  # a worker on another host: never reconciled here


# --------------------------------------------------------------------------- git + playbooks


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@dataclass
class GitRepo:
    """A real repository in a temp dir, cloned by the worker over file://."""

    path: Path

    @classmethod
    def create(cls, path: Path, files: dict[str, str], message: str = "first") -> GitRepo:
        path.mkdir(parents=True)
        git(path, "init", "--quiet", "--initial-branch=main")
        repo = cls(path)
        repo.commit(files, message)
        return repo

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "-m", message)
        return git(self.path, "rev-parse", "HEAD").strip()


def playbook(*tasks: dict[str, Any]) -> str:
    """A localhost playbook (the adapter's default inventory) with these tasks."""
    return yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": list(tasks)}], sort_keys=False)


def env(name: str) -> str:
    """Jinja for an environment variable of the run (empty when unset)."""
    return "{{ lookup('env', '" + name + "') }}"


def copy_task(dest: Path, content: str) -> dict[str, Any]:
    return {"name": "write the managed file", "ansible.builtin.copy": {"dest": str(dest), "content": content}}


def sleep_task(token: str, seconds: int = 300, when: str | None = None) -> dict[str, Any]:
    """A long task that runs in the plan phase too (check mode would skip a plain command). The
    token in its command line lets a test find the process in /proc."""
    task: dict[str, Any] = {
        "name": "sleep",
        "ansible.builtin.command": {"argv": ["sh", "-c", f"sleep {seconds}; : {token}"]},
        "check_mode": False,
        "changed_when": False,
    }
    if when:
        task["when"] = when
    return task


def wait_for_file_task(path: Path, timeout: int = 120) -> dict[str, Any]:
    """Blocks the run until the test creates ``path``: a gate to look at a phase while it runs."""
    return {
        "name": "wait for the gate",
        "ansible.builtin.wait_for": {"path": str(path), "timeout": timeout},
        "check_mode": False,
    }


def processes_with(token: str) -> list[int]:
    """Pids whose command line contains ``token`` (sandboxed processes are visible here too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry.name))
    return found


def eventually(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- a worker in a thread


class _ObservedWorker(Worker):
    """The real Worker, telling the test when its start-up reconciliation is over (a test that
    kills another worker must not do so before: reconciliation would fail the run, not the
    reaper)."""

    def __init__(self, *args: Any, reconciled: threading.Event, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._reconciled = reconciled

    async def _reconcile(self) -> None:
        try:
            await super()._reconcile()
        finally:
            self._reconciled.set()


class WorkerThread:
    """A real ``runner.worker.Worker`` on an event loop of its own, in a background thread.

    ``with WorkerThread(ctx) as w:`` starts it and returns once its start-up reconciliation is
    done; leaving the block stops it (as SIGTERM does for `crucible worker`) and re-raises
    anything the loop died of."""

    def __init__(self, ctx: AppContext, *, concurrency: int = 2, worker_id: str | None = None):
        self.ctx = ctx
        self.concurrency = concurrency
        self.worker_id = worker_id
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-worker", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.worker = _ObservedWorker(
            self.ctx, concurrency=self.concurrency, worker_id=self.worker_id, reconciled=self._started
        )
        await self.worker.run(self._stop)

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        started = self._started.wait(30)
        if self._error is not None:
            raise self._error
        assert started, "the worker did not get through its start-up within 30 s"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the worker did not stop within 60 s"
        if self._error is not None:
            raise self._error

    @property
    def id(self) -> str:
        assert self.worker is not None
        return self.worker.id

    def busy_with(self, run_id: str) -> bool:
        """True while a job of that run is in this worker (it archives and cleans up last)."""
        return self.worker is not None and any(rid == run_id for rid, _phase in dict(self.worker.active))


# --------------------------------------------------------------------------- reading runs


def load(ctx: AppContext, run_id: str) -> Run | None:
    with ctx.session() as s:
        return s.get(Run, run_id)


def log_text(ctx: AppContext, run_id: str) -> str:
    with ctx.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return "\n".join(logs.read_lines(s, ctx.objects, run))


def live_chunks(ctx: AppContext, run_id: str) -> list[RunLogChunk]:
    with ctx.session() as s:
        return list(s.exec(select(RunLogChunk).where(RunLogChunk.run_id == run_id)).all())


def chunk_count(ctx: AppContext, run_id: str | None = None) -> int:
    with ctx.session() as s:
        stmt = select(func.count()).select_from(RunLogChunk)
        if run_id is not None:
            stmt = stmt.where(RunLogChunk.run_id == run_id)
        return int(s.exec(stmt).one())


def wait_for_status(
    ctx: AppContext,
    run_id: str,
    *statuses: str,
    timeout: float = 60,
    worker: WorkerThread | None = None,
) -> Run:
    """Wait until the run is in one of ``statuses`` (and, with ``worker``, that worker is done
    with it: log archived, workspace removed). Fails at once on another terminal status."""
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = load(ctx, run_id)
        assert run is not None, f"run {run_id} disappeared"
        if run.status in statuses:
            if worker is None or not worker.busy_with(run_id):
                return run
        elif run.status in TERMINAL:
            break
        time.sleep(0.1)
    status = run.status if run else "?"
    reason = run.failure_reason if run else None
    pytest.fail(
        f"run {run_id} is {status} (reason: {reason}), expected {' or '.join(statuses)} "
        f"within {timeout:.0f} s; its log:\n{log_text(ctx, run_id)}"
    )


def wait_for_log(ctx: AppContext, run_id: str, needle: str, timeout: float = 60) -> str:
    return eventually(
        lambda: (text := log_text(ctx, run_id)) and needle in text and text,
        timeout,
        f"{needle!r} in the log of {run_id}",
    )


# --------------------------------------------------------------------------- driving runs by hand


_PATH = {
    "preparing": [lc.start_preparing],
    "planning": [lc.start_preparing, lc.start_planning],
    "unconfirmed": [
        lc.start_preparing,
        lc.start_planning,
        lambda s, t: lc.finish_planning(s, t, has_changes=True),
    ],
    "finished": [
        lc.start_preparing,
        lc.start_planning,
        lambda s, t: lc.finish_planning(s, t, has_changes=False),
    ],
    "failed": [lc.start_preparing, lambda s, t: lc.fail(s, t, "the tool exited with code 1")],
}


def force_status(ctx: AppContext, run_id: str, target: str, *, worker_id: str = FAKE_WORKER) -> None:
    """Walk a queued run along the lifecycle to ``target``, as a worker's reports would (without
    the queue's admission: API tests only need the run in that state)."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        assert run is not None and run.status == "queued"
        now = utcnow()
        state = state_of(run)
        for step in _PATH[target]:
            state = step(state, now)
        apply_state(run, state, now)
        run.worker_id = worker_id if state.status in lc.EXECUTING else None
        run.heartbeat_at = now if state.status in lc.EXECUTING else None
        if target in ("unconfirmed", "finished"):
            run.plan_summary = {"add": 0, "change": 1 if target == "unconfirmed" else 0, "destroy": 0}
            run.has_changes = target == "unconfirmed"
        s.add(run)


def queued_run(session, stack_id: str, run_type: str = "tracked", at=None) -> Run:
    """A queued run added to ``session`` the way the run service makes one (without audit)."""
    from backend.runs.models import EXCLUSIVE_TYPES
    from backend.stacks.models import Stack
    from backend.timeutil import new_id

    now = at or utcnow()
    run = Run(
        id=new_id("run"),
        org_id=session.get(Stack, stack_id).org_id,
        stack_id=stack_id,
        type=run_type,
        exclusive=run_type in EXCLUSIVE_TYPES,
        created_at=now,
        updated_at=now,
    )
    apply_state(run, lc.new_run(lc.RunType(run_type), now), now)
    session.add(run)
    return run
