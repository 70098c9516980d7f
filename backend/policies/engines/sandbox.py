"""Warm worker processes that run the embedded engines with a hard time and memory limit.

An embedded engine is native code running in our address space: a policy that recurses forever
or builds a huge comprehension would hold a worker thread (and the GIL-free native loop would
never notice a Python-level timeout). So evaluation happens in a child process:

- started with ``python -m backend.policies.engines.sandbox`` (not multiprocessing: nothing of
  the parent's ``__main__`` is re-imported, no fork of a threaded server);
- requests and replies are length-prefixed pickles on the child's stdin and on a duplicate of
  its stdout; fd 1 and 2 then point to /dev/null, so native libraries that print (rego-cpp
  does) cannot corrupt the channel;
- the parent waits for the reply with ``select`` up to the deadline, then SIGKILLs the worker
  and starts a fresh one on the next call;
- while it waits, every 20 ms it reads the worker's resident set size from /proc and kills
  the worker past the memory limit. (``RLIMIT_AS`` cannot do it: rego-cpp reserves 256 GiB of
  address space when it loads, and ``RLIMIT_DATA`` counts that reservation too.)

Workers are reused across calls (compiled policies are cached in them by digest), so the
per-call cost is one pipe round trip plus pickling the input JSON: bench/policy.py measures it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.policies.engine import PolicyCompileError, PolicyEvalError

_HEADER = struct.Struct("!Q")
_ROOT = Path(__file__).resolve().parents[3]


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _OverMemory(Exception):
    pass


_PAGE = os.sysconf("SC_PAGE_SIZE")
_WATCH_SECONDS = 0.02


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer instead of 64 KiB: a 12 MB plan then crosses in a dozen writes, not
    two hundred (measured: 92 ms of overhead down to a few ms on a 10,000-change plan)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        _, writable, _ = select.select([], [fd], [], remaining)
        if not writable:
            raise _Timeout
        try:
            n = os.write(fd, view[: 1 << 20])
        except (BrokenPipeError, OSError) as exc:
            raise _Died from exc
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise _Timeout
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise _Died
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Worker:
    """One child process. Not thread-safe: the pool hands it to one caller at a time."""

    def __init__(self, memory_limit_mb: int):
        self.memory_limit_mb = memory_limit_mb
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.policies.engines.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=str(_ROOT),
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        for fd in (self._in, self._out):
            _widen_pipe(fd)
        self.calls = 0

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/statm", "rb") as fh:
                return int(fh.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return 0

    def _wait_reply(self, deadline: float) -> None:
        limit = self.memory_limit_mb * 1024 * 1024
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            readable, _, _ = select.select([self._out], [], [], min(remaining, _WATCH_SECONDS))
            if readable:
                return
            if limit > 0 and self.rss_bytes() > limit:
                raise _OverMemory

    def call(self, request: tuple, timeout: float) -> Any:
        """Send ``request`` and return the reply; raise _Timeout, _OverMemory or _Died."""
        deadline = time.monotonic() + timeout
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        _write_all(self._in, _HEADER.pack(len(payload)) + payload, deadline)
        self._wait_reply(deadline)
        (size,) = _HEADER.unpack(_read_exact(self._out, _HEADER.size, deadline))
        # The reply has started: it is already computed, so read it to the end whatever the clock.
        reply = pickle.loads(_read_exact(self._out, size, None))
        self.calls += 1
        return reply

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]

    def exit_reason(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        code = self.proc.returncode
        if code is None:
            return "the policy worker stopped answering"
        if code < 0:
            sig = signal.Signals(-code).name
            if -code in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
                return (
                    f"the policy worker crashed ({sig}): the engine ran out of stack (deep "
                    "recursion) or memory"
                )
            return f"the policy worker was killed ({sig})"
        if code == 3:
            return "the policy worker ran out of memory"
        return f"the policy worker exited with status {code}"


class WorkerPool:
    """Up to ``size`` warm workers shared by every thread of the process."""

    def __init__(self, size: int | None = None, memory_limit_mb: int = 2048):
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self.memory_limit_mb = memory_limit_mb
        self._idle: list[Worker] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        atexit.register(self.close)

    def _acquire(self) -> Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise PolicyEvalError("the policy worker pool is shut down")
                if self._idle:
                    self._busy += 1
                    return self._idle.pop()
                if self._busy < self.size:
                    self._busy += 1
                    break
                self._cond.wait()
        try:
            return Worker(self.memory_limit_mb)
        except BaseException:
            self._release(None)
            raise

    def _release(self, worker: Worker | None) -> None:
        with self._cond:
            self._busy -= 1
            if worker is not None:
                if self._closed:
                    worker.kill()
                else:
                    self._idle.append(worker)
            self._cond.notify()

    def warm(self) -> None:
        """Start one worker now, so the first evaluation does not pay for the start-up."""
        worker = self._acquire()
        try:
            worker.call(("ping",), timeout=30)
        except (_Timeout, _Died):
            worker.kill()
            self._release(None)
            raise PolicyEvalError(worker.exit_reason()) from None
        self._release(worker)

    def run(self, request: tuple, timeout: float) -> Any:
        """Run ``request`` in a worker; the worker's reply ("ok", value) or its exception."""
        worker = self._acquire()
        try:
            reply = worker.call(request, timeout)
        except _Timeout:
            worker.kill()
            self._release(None)
            raise PolicyEvalError(f"policy evaluation exceeded {timeout:g} s") from None
        except _OverMemory:
            worker.kill()
            self._release(None)
            raise PolicyEvalError(
                f"policy evaluation used more than {self.memory_limit_mb} MiB of memory"
            ) from None
        except _Died:
            reason = worker.exit_reason()
            worker.kill()
            self._release(None)
            raise PolicyEvalError(reason) from None
        except BaseException:
            worker.kill()
            self._release(None)
            raise
        self._release(worker)
        status, value = reply
        if status == "ok":
            return value
        raise value

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


# ---------------------------------------------------------------------------- the child side


def _serve() -> None:
    channel = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    from backend.policies.engines import embedded

    backends: dict[str, Any] = {}

    def backend(name: str) -> Any:
        if name not in backends:
            backends[name] = embedded.BACKENDS[name]()
        return backends[name]

    # Load the engines now: the first evaluation should not pay for it.
    for name in embedded.BACKENDS:
        with contextlib.suppress(Exception):
            backend(name)

    handlers: dict[str, Callable[..., Any]] = {
        "ping": lambda: "pong",
        "compile": lambda engine, source: backend(engine).compile(source),
        "evaluate": lambda engine, source, input_json: backend(engine).evaluate(source, input_json),
        "evaluate_many": lambda engine, sources, doc: backend(engine).evaluate_many(sources, doc),
        "probe": lambda engine, names: backend(engine).probe(names),
    }
    stdin = sys.stdin.buffer.fileno()
    while True:
        try:
            (size,) = _HEADER.unpack(_read_exact(stdin, _HEADER.size, None))
            op, *args = pickle.loads(_read_exact(stdin, size, None))
        except _Died:
            return  # the parent went away
        try:
            reply: tuple = ("ok", handlers[op](*args))
        except (PolicyCompileError, PolicyEvalError) as exc:
            reply = ("error", exc)
        except MemoryError:
            os._exit(3)
        except Exception as exc:  # the engine's own failure, whatever its type
            reply = ("error", PolicyEvalError(f"{type(exc).__name__}: {exc}"))
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            os._exit(3)
        except Exception as exc:
            data = pickle.dumps(("error", PolicyEvalError(f"unpicklable result: {exc}")))
        os.write(channel, _HEADER.pack(len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(channel, view) :]
        del data, view, reply
        if op.startswith("evaluate") and args:  # idle now: free what the evaluation held
            with contextlib.suppress(Exception):
                release = getattr(backend(args[0]), "release", None)
                if release is not None:
                    release()


if __name__ == "__main__":
    _serve()
