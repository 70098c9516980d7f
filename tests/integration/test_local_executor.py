"""The local executor with real processes (and real bubblewrap, which `make test` installs)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import pytest

from runner.executors import local
from tests.aio import run_async as run


def execute(argv, workspace: Path, **kwargs) -> tuple[local.Result, list[str]]:
    lines: list[str] = []
    phase_kw = {k: kwargs.pop(k) for k in ("timeout", "env") if k in kwargs}
    phase = local.Phase(argv=argv, cwd=workspace, workspace=workspace, **phase_kw)
    return run(local.run(phase, lines.append, **kwargs)), lines


PY = sys.executable


def test_streams_stdout_and_stderr_in_order_and_reports_the_exit_code(tmp_path):
    script = "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nsys.exit(3)"
    result, lines = execute([PY, "-c", script], tmp_path, sandbox=False)
    assert result.exit_code == 3 and not result.sandboxed
    assert lines[0].startswith("WARNING: running without a sandbox (CRUCIBLE_LOCAL_RUNNER_SANDBOX=off)")
    assert lines[1:] == ["one", "two"]


def test_a_very_long_line_is_not_lost(tmp_path):
    result, lines = execute([PY, "-c", "print('x' * 3_000_000)"], tmp_path, sandbox=False)
    assert result.exit_code == 0 and sum(len(line) for line in lines[1:]) == 3_000_000


def test_timeout_stops_the_whole_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(c.pid))\n"
        "print('started', flush=True)\ntime.sleep(60)"
    )
    start = time.monotonic()
    result, lines = execute([PY, "-c", script], tmp_path, sandbox=False, timeout=2, grace=1)
    assert result.timed_out and "ERROR: timed out; stopping" in lines
    assert time.monotonic() - start < 20
    child = int(marker.read_text())
    time.sleep(0.5)
    assert (
        not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    )


def test_cancel_is_graceful_first(tmp_path):
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'cleaning up\\n'), os._exit(143)))\n"
        "os.write(1, b'working\\n')\ntime.sleep(60)"
    )

    async def scenario():
        cancel = asyncio.Event()
        lines: list[str] = []

        async def sink(line):
            lines.append(line)
            if line == "working":
                cancel.set()

        phase = local.Phase(argv=[PY, "-c", script], cwd=tmp_path, workspace=tmp_path)
        return await local.run(phase, sink, sandbox=False, cancel=cancel, grace=5), lines

    result, lines = run(scenario())
    assert result.canceled and result.exit_code == 143
    assert "cleaning up" in lines


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_sandbox_allows_only_the_workspace_tmp_and_listed_paths(tmp_path):
    workspace, allowed, forbidden = tmp_path / "ws", tmp_path / "managed", tmp_path / "elsewhere"
    for d in (workspace, allowed, forbidden):
        d.mkdir()
    script = (
        "import pathlib, sys\n"
        "def tryw(p):\n"
        "    try:\n"
        "        pathlib.Path(p).write_text('x'); return 'ok'\n"
        "    except OSError:\n"
        "        return 'denied'\n"
        f"print('ws', tryw({str(workspace / 'a')!r}))\n"
        f"print('allowed', tryw({str(allowed / 'a')!r}))\n"
        f"print('elsewhere', tryw({str(forbidden / 'a')!r}))\n"
        "print('tmp', tryw('/tmp/scratch'))\n"
        "print('etc', tryw('/etc/crucible-test'))\n"
    )
    result, lines = execute([PY, "-c", script], workspace, writable_paths=[allowed])
    assert result.sandboxed and result.exit_code == 0, lines
    assert lines == ["ws ok", "allowed ok", "elsewhere denied", "tmp ok", "etc denied"]
    assert not (forbidden / "a").exists() and not Path("/etc/crucible-test").exists()
    assert not Path("/tmp/scratch").exists()  # the sandbox's /tmp is private
