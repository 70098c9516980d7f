"""The local executor: a subprocess on the host, sandboxed with bubblewrap when it is installed.

Inside the sandbox the host filesystem is read-only except the workspace, a private /tmp and the
paths the operator lists (CRUCIBLE_LOCAL_RUNNER_WRITABLE_PATHS); the network is shared (tools call
cloud APIs); bubblewrap always sets no-new-privileges. Without bubblewrap (or with
CRUCIBLE_LOCAL_RUNNER_SANDBOX=off) the command runs as a plain subprocess and the first log line
says so. Output (stdout and stderr interleaved) is streamed line by line; a timeout or a cancel
stops the whole process group gracefully, then by force.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.executors.base import MAX_LINE, NOT_FOUND_EXIT, LineSink, Phase, Result
from runner.executors.base import emit as _emit

__all__ = ["LocalExecutor", "Phase", "Result", "run", "sandbox_argv"]


def sandbox_argv(phase: Phase, writable_paths: list[Path], bwrap: str) -> list[str]:
    argv = [bwrap, "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]
    # The private /tmp must not hide the tools: an install under /tmp (a checkout's .venv, the
    # tool's own directory) is bound back, read-only.
    for path in sorted(_tool_dirs(phase.argv[0])):
        argv += ["--ro-bind", str(path), str(path)]
    # Binds after --tmpfs /tmp, or the tmpfs would hide those under /tmp.
    for path in [phase.workspace, *writable_paths]:
        argv += ["--bind", str(path), str(path)]
    argv += [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--chdir",
        str(phase.cwd),
        "--",
    ]
    return [*argv, *phase.argv]


def _tool_dirs(executable: str) -> set[Path]:
    candidates = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    found = shutil.which(executable)
    if found:
        candidates.add(Path(found).resolve().parent)
    return {p for p in candidates if p.is_relative_to("/tmp") and p.exists()}


async def run(
    phase: Phase,
    on_line: LineSink,
    *,
    sandbox: bool = True,
    writable_paths: list[Path] | None = None,
    cancel: asyncio.Event | None = None,
    grace: float = 10.0,
) -> Result:
    writable = [Path(p) for p in writable_paths or []]
    bwrap = shutil.which("bwrap") if sandbox else None
    if bwrap:
        argv = sandbox_argv(phase, writable, bwrap)
    else:
        why = "CRUCIBLE_LOCAL_RUNNER_SANDBOX=off" if not sandbox else "bubblewrap (bwrap) is not installed"
        await _emit(
            on_line,
            f"WARNING: running without a sandbox ({why}); the tool can write anywhere "
            "this server can. Install bubblewrap or use the docker runner.",
        )
        argv = phase.argv
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(phase.workspace), **phase.env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=phase.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        await _emit(on_line, f"ERROR: {phase.argv[0]} not found")
        return Result(exit_code=NOT_FOUND_EXIT, sandboxed=bool(bwrap))

    async def pump() -> None:
        assert proc.stdout is not None
        pending = b""
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                await _emit(on_line, raw.decode(errors="replace").rstrip("\r"))
            while len(pending) >= MAX_LINE:  # an endless line is passed on in pieces
                await _emit(on_line, pending[:MAX_LINE].decode(errors="replace"))
                pending = pending[MAX_LINE:]
        if pending:
            await _emit(on_line, pending.decode(errors="replace").rstrip("\r"))

    pumping = asyncio.create_task(pump())
    waiting = asyncio.create_task(proc.wait())
    stopper = asyncio.create_task(cancel.wait()) if cancel else None
    done, _ = await asyncio.wait(
        {waiting, *([stopper] if stopper else [])}, timeout=phase.timeout, return_when=asyncio.FIRST_COMPLETED
    )
    timed_out = not done
    canceled = stopper is not None and stopper in done and waiting not in done
    if timed_out or canceled:
        await _emit(on_line, "ERROR: timed out; stopping" if timed_out else "canceled; stopping")
        await _stop(proc, grace)
    await waiting
    await pumping
    if stopper:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    return Result(exit_code=proc.returncode, timed_out=timed_out, canceled=canceled, sandboxed=bool(bwrap))


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if wait is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue


@dataclass
class LocalExecutor:
    """The embedded default: run on this host, in bubblewrap when it is installed."""

    sandbox: bool = True
    writable_paths: list[Path] = field(default_factory=list)
    grace: float = 10.0
    kind: str = "local"

    async def run(self, phase: Phase, on_line: LineSink, *, cancel: asyncio.Event | None = None) -> Result:
        return await run(
            phase,
            on_line,
            sandbox=self.sandbox,
            writable_paths=self.writable_paths,
            cancel=cancel,
            grace=self.grace,
        )
