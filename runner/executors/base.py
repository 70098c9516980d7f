"""What every executor (local subprocess, Docker container) takes and returns.

An executor runs one phase command inside a prepared workspace, streams its output line by
line (stdout and stderr interleaved) to a sink, honours a timeout and a cancel event, and
reports how it ended. It knows nothing about runs, tools or the database.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LineSink = Callable[[str], Awaitable[None] | None]
MAX_LINE = 1 << 20  # longer lines are split, never dropped
# The exit status a shell (and Docker's init) reports for "command not found".
NOT_FOUND_EXIT = 127


@dataclass(frozen=True)
class Phase:
    """One command. ``argv[0]`` is a bare binary name or a path; paths under ``workspace``
    (in ``argv``, ``cwd`` and ``env`` values) are valid inside the executor too: the Docker
    executor mounts the workspace at /workspace and rewrites them."""

    argv: list[str]
    cwd: Path
    workspace: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0


@dataclass(frozen=True)
class Result:
    exit_code: int | None
    timed_out: bool = False
    canceled: bool = False
    sandboxed: bool = False
    # Set when the executor itself could not start the command (image missing, engine down):
    # the run fails with this message.
    error: str | None = None


class Executor(Protocol):
    kind: str

    async def run(
        self, phase: Phase, on_line: LineSink, *, cancel: asyncio.Event | None = None
    ) -> Result: ...


async def emit(sink: LineSink, line: str) -> None:
    out = sink(line)
    if inspect.isawaitable(out):
        await out
