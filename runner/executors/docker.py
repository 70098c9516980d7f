"""The Docker executor: every phase runs in a fresh, hardened, throw-away container.

The container has a read-only root filesystem, no capabilities, ``no-new-privileges``, a non-root
user (``10001:10001`` by default), memory/CPU/pids limits, a private tmpfs ``/tmp`` (which is also
``HOME``) and Docker's init as PID 1 (signals reach the tool, zombies are reaped). The only other
writable place is the workspace, bind-mounted at ``/workspace``; paths under the host workspace in
``argv``, ``cwd`` and ``env`` values are rewritten to ``/workspace``. The network is ``none`` unless
the operator chooses ``host`` or a named Docker network. Images are never pulled unless ``pull``
is on: a missing image is a clear error. The container is removed however the phase ends
(success, failure, timeout, cancel, an exception, the task being cancelled); containers left by
a worker that died are removed by :func:`remove_orphans`.

Workspace ownership: the server creates the workspace (as root here), but the container's user
must write it. Before each phase the executor chowns the workspace tree to the container's
UID:GID when this process runs as root; a worker that is not root must run as that same UID
(then there is nothing to change), or the phase fails with a message saying so.

stdout and stderr are merged in the container (``/bin/sh -c 'exec "$@" 2>&1'``), because two
separate streams reach Docker through two pipes and lose their relative order (measured: ``echo a;
echo b >&2`` arrives as b, a). Images without ``/bin/sh`` need ``merge_stderr=False``.

All Docker SDK calls block, so they run in threads: short calls in the default executor, the two
calls that last as long as the container (the output stream and ``wait``) in dedicated threads, so
a handful of concurrent runs cannot starve the default pool that the server also uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests.exceptions

from runner.executors.base import MAX_LINE, NOT_FOUND_EXIT, LineSink, Phase, Result
from runner.executors.base import emit as _emit

__all__ = [
    "CONTAINER_WORKSPACE",
    "DEFAULT_IMAGE",
    "EXECUTOR_LABEL",
    "RUN_LABEL",
    "WORKER_LABEL",
    "DockerExecutor",
    "close_clients",
    "remove_containers_of",
    "remove_orphans",
    "translate",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "crucible-runner:current"
CONTAINER_WORKSPACE = "/workspace"
# Every container this executor creates carries EXECUTOR_LABEL; the worker adds WORKER_LABEL and
# RUN_LABEL, which crash recovery (remove_orphans) and operators (docker ps --filter) rely on.
EXECUTOR_LABEL = "crucible.executor"
WORKER_LABEL = "crucible.worker"
RUN_LABEL = "crucible.run"
_MERGE = ["/bin/sh", "-c", 'exec "$@" 2>&1', "sh"]
_QUEUE_SLOTS = 4096  # lines buffered between the stream thread and the sink (backpressure)
_DRAIN_AFTER_EXIT = 60.0  # the stream ends when the container exits; never wait forever for it
_ENGINE_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class _EngineError(Exception):
    """The phase cannot run: the message is the run's error."""


class DockerExecutor:
    """Runs each phase in an ephemeral hardened container (see the module docstring).

    ``network``: ``"none"`` (default, no network at all), ``"host"`` (the host's network stack),
    or the name of a Docker network. A daemon started with ``--bridge=none`` (as
    ``.ci/docker-engine.sh`` does) has no working ``"bridge"``: it silently means no network.

    ``labels`` go on every container (the worker passes ``{"crucible.worker": worker_id}``);
    :meth:`run` adds per-run labels (``{"crucible.run": run_id}``) and takes the stack's image.
    """

    kind = "docker"

    def __init__(
        self,
        *,
        image: str = DEFAULT_IMAGE,
        base_url: str | None = None,
        network: str = "none",
        mem_limit: str | int | None = "2g",
        cpus: float | None = 2.0,
        nano_cpus: int | None = None,
        pids_limit: int | None = 1024,
        tmpfs_size: str = "512m",
        user: str = "10001:10001",
        grace: float = 10.0,
        labels: Mapping[str, str] | None = None,
        pull: bool = False,
        merge_stderr: bool = True,
        api_timeout: float = 60.0,
    ) -> None:
        self.image = image
        self.base_url = base_url
        self.network = _check_network(network)
        self.mem_limit = mem_limit
        if nano_cpus is None and cpus is not None:
            nano_cpus = round(cpus * 1e9)
        self.nano_cpus = nano_cpus
        self.pids_limit = pids_limit
        self.tmpfs_size = tmpfs_size
        self.uid, self.gid = _parse_user(user)
        self.user = f"{self.uid}:{self.gid}"
        self.grace = grace
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.pull = pull
        self.merge_stderr = merge_stderr
        self.api_timeout = api_timeout

    # ------------------------------------------------------------------ public

    @property
    def engine(self) -> str:
        """Where the engine is, for messages."""
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def describe(self, image: str | None = None) -> str:
        """One line for the run log: what the phase runs in."""
        limits = [f"network {self.network}", f"user {self.user}"]
        if self.mem_limit:
            limits.append(f"memory {self.mem_limit}")
        if self.nano_cpus:
            limits.append(f"{self.nano_cpus / 1e9:g} CPUs")
        if self.pids_limit:
            limits.append(f"{self.pids_limit} pids")
        return f"docker image {image or self.image} ({', '.join(limits)})"

    async def check(self, image: str | None = None) -> str | None:
        """None when the engine answers and the image exists, else what is wrong (for start-up
        checks and health pages)."""
        image = image or self.image
        try:
            client = await asyncio.to_thread(self._get_client)
            await asyncio.to_thread(client.images.get, image)
        except _EngineError as exc:
            return str(exc)
        except docker.errors.ImageNotFound:
            return _image_missing(image)
        except (docker.errors.DockerException, *_ENGINE_ERRORS) as exc:
            return self._unreachable(exc)
        return None

    async def run(
        self,
        phase: Phase,
        on_line: LineSink,
        *,
        cancel: asyncio.Event | None = None,
        image: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Result:
        """Run ``phase`` in a new container of ``image`` (default: the executor's image) with
        the executor's labels plus ``labels``; the container is always removed."""
        image = image or self.image
        container = None
        stream = None
        pump: _Pump | None = None
        try:
            try:
                client = await asyncio.to_thread(self._get_client)
                spec = self._spec(phase, image, labels)
                await asyncio.to_thread(_own_workspace, phase.workspace, self.uid, self.gid)
                container = await self._create(client, spec, on_line)
                stream = await asyncio.to_thread(
                    container.attach, stream=True, stdout=True, stderr=True, logs=False
                )
                pump = _Pump(stream, asyncio.get_running_loop())
                await asyncio.to_thread(container.start)
            except _EngineError as exc:
                return Result(exit_code=None, sandboxed=True, error=str(exc))
            except docker.errors.APIError as exc:
                return Result(exit_code=None, sandboxed=True, error=self._refused(exc))
            except (docker.errors.DockerException, *_ENGINE_ERRORS) as exc:
                return Result(exit_code=None, sandboxed=True, error=self._unreachable(exc))
            except OSError as exc:  # after the engine errors: requests' errors are OSErrors too
                return Result(exit_code=None, sandboxed=True, error=f"cannot prepare the workspace: {exc}")
            return await self._supervise(phase, container, pump, on_line, cancel, image)
        finally:
            if pump is not None:
                pump.stop()
            if stream is not None:
                _close_stream(stream)
            if container is not None:
                # A thread finishes its job even when this task is cancelled meanwhile.
                removal = asyncio.ensure_future(asyncio.to_thread(_remove, container))
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(removal)

    async def remove_orphans(self, keep_worker_ids: Collection[str] | Callable[[str], bool]) -> list[str]:
        """See :func:`remove_orphans`; uses this executor's engine."""
        return await remove_orphans(keep_worker_ids, client=await asyncio.to_thread(self._get_client))

    async def remove_containers_of(self, worker_id: str) -> list[str]:
        """See :func:`remove_containers_of`; uses this executor's engine."""
        return await remove_containers_of(worker_id, client=await asyncio.to_thread(self._get_client))

    # ------------------------------------------------------------------ internals

    def _get_client(self) -> docker.DockerClient:
        try:
            return _shared_client(self.base_url, self.api_timeout)
        except docker.errors.DockerException as exc:
            raise _EngineError(self._unreachable(exc)) from exc

    def _unreachable(self, exc: BaseException) -> str:
        return (
            f"cannot reach the Docker engine at {self.engine} (DOCKER_HOST): {exc}. Start the engine, "
            "or point CRUCIBLE_DOCKER_HOST (else DOCKER_HOST) at a running one."
        )

    def _refused(self, exc: docker.errors.APIError) -> str:
        why = exc.explanation or str(exc)
        if exc.status_code == 404 and f"network {self.network} not found" in why:
            return (
                f"the Docker network {self.network} does not exist: create it (docker network create) "
                "or set the runner network to none or host"
            )
        return f"the Docker engine refused the run: {why}"

    def _spec(self, phase: Phase, image: str, labels: Mapping[str, str] | None) -> dict[str, Any]:
        workspace = Path(phase.workspace)
        if not workspace.is_absolute():
            raise _EngineError(f"the workspace must be an absolute path, not {workspace}")
        prefixes = _prefixes(workspace)
        cwd = translate(str(phase.cwd), prefixes)
        if not (cwd == CONTAINER_WORKSPACE or cwd.startswith(CONTAINER_WORKSPACE + "/")):
            raise _EngineError(f"the working directory {phase.cwd} is outside the workspace {workspace}")
        argv = [translate(arg, prefixes) for arg in phase.argv]
        env = {"HOME": "/tmp", **{k: translate(v, prefixes) for k, v in phase.env.items()}}
        spec: dict[str, Any] = {
            "image": image,
            "command": [*_MERGE, *argv] if self.merge_stderr else argv,
            "entrypoint": [],  # the stack's image may have one: the phase's argv is the command
            "name": f"crucible-{secrets.token_hex(6)}",
            "labels": {
                EXECUTOR_LABEL: "docker",
                **self.labels,
                **{str(k): str(v) for k, v in (labels or {}).items()},
            },
            "environment": env,
            "working_dir": str(PurePosixPath(cwd)),
            "user": self.user,
            "init": True,
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "tmpfs": {"/tmp": f"rw,size={self.tmpfs_size},nosuid,nodev"},
            "volumes": {str(workspace.resolve()): {"bind": CONTAINER_WORKSPACE, "mode": "rw"}},
            "network_mode": self.network,
            "stdin_open": False,
            "tty": False,
            # Output is read from the attach stream; nothing (secrets!) is written to the
            # engine's log files.
            "log_config": {"type": "none", "config": {}},
        }
        if self.mem_limit:
            spec["mem_limit"] = self.mem_limit
            spec["memswap_limit"] = self.mem_limit  # no swap on top of the limit
        if self.nano_cpus:
            spec["nano_cpus"] = self.nano_cpus
        if self.pids_limit:
            spec["pids_limit"] = self.pids_limit
        return spec

    async def _create(self, client: docker.DockerClient, spec: dict[str, Any], on_line: LineSink) -> Any:
        image = spec["image"]
        try:
            return await asyncio.to_thread(lambda: client.containers.create(**spec))
        except docker.errors.ImageNotFound:
            if not self.pull:
                raise _EngineError(_image_missing(image)) from None
        await _emit(on_line, f"pulling runner image {image}")
        try:
            await asyncio.to_thread(client.images.pull, image)
        except docker.errors.APIError as exc:
            raise _EngineError(f"runner image {image} not found and pulling it failed: {exc}") from exc
        return await asyncio.to_thread(lambda: client.containers.create(**spec))

    async def _supervise(
        self,
        phase: Phase,
        container: Any,
        pump: _Pump,
        on_line: LineSink,
        cancel: asyncio.Event | None,
        image: str,
    ) -> Result:
        loop = asyncio.get_running_loop()
        consumer = asyncio.create_task(pump.consume(on_line))
        waiting = _in_thread(container.wait)
        stopper = asyncio.create_task(cancel.wait()) if cancel else None
        watch: set[asyncio.Future[Any]] = {waiting, consumer, *([stopper] if stopper else [])}
        deadline = loop.time() + phase.timeout
        timed_out = canceled = False
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    timed_out = True
                    break
                done, _ = await asyncio.wait(watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if consumer in done:
                    consumer.result()  # the sink (or the stream) raised: propagate it
                    watch.discard(consumer)  # the output ended just before the exit
                if waiting in done:
                    break
                if stopper is not None and stopper in done:
                    canceled = True
                    break
            if timed_out or canceled:
                await _emit(on_line, "ERROR: timed out; stopping" if timed_out else "canceled; stopping")
                # SIGTERM to the tool (through init), SIGKILL after the grace period.
                await asyncio.to_thread(container.stop, timeout=max(1, round(self.grace)))
            status = await waiting
            finished, _ = await asyncio.wait({consumer}, timeout=_DRAIN_AFTER_EXIT)
            if not finished:
                pump.stop()
            await consumer
        except (docker.errors.DockerException, *_ENGINE_ERRORS) as exc:
            return Result(
                exit_code=None, sandboxed=True, error=f"lost the Docker engine at {self.engine}: {exc}"
            )
        finally:
            if not waiting.done():
                waiting.cancel()  # the thread's late answer is dropped
            for task in (consumer, stopper):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        exit_code = status.get("StatusCode")
        if status.get("Error"):
            await _emit(on_line, f"ERROR: the Docker engine reported: {status['Error']}")
        if exit_code == NOT_FOUND_EXIT and self.merge_stderr and pump.saw_missing_shell:
            return Result(
                exit_code=None,
                timed_out=timed_out,
                canceled=canceled,
                sandboxed=True,
                error=f"runner image {image} has no /bin/sh: use an image with a shell, or run "
                "this executor with merge_stderr off",
            )
        if exit_code not in (0, None) and not (timed_out or canceled):
            with contextlib.suppress(docker.errors.DockerException, *_ENGINE_ERRORS):
                await asyncio.to_thread(container.reload)
                if container.attrs.get("State", {}).get("OOMKilled"):
                    await _emit(
                        on_line,
                        f"ERROR: out of memory: the runner container hit its memory limit ({self.mem_limit})",
                    )
        return Result(exit_code=exit_code, timed_out=timed_out, canceled=canceled, sandboxed=True)


# ---------------------------------------------------------------------- crash recovery


async def remove_orphans(
    keep_worker_ids: Collection[str] | Callable[[str], bool],
    *,
    client: docker.DockerClient | None = None,
    base_url: str | None = None,
) -> list[str]:
    """Remove (force: running ones are killed) every container of this executor whose
    ``crucible.worker`` label names a worker that is not kept; return their names.

    ``keep_worker_ids`` is the set of live worker ids (e.g. those with a fresh heartbeat) or a
    predicate ``worker_id -> keep?``. Call it at worker start-up and from the reaper, with the
    live set read just before the call. Containers without a worker label are never touched.
    Each engine is cleaned separately: a reaper only reaches the engine it is configured for.
    """
    keep = keep_worker_ids if callable(keep_worker_ids) else frozenset(keep_worker_ids).__contains__
    if client is None:
        client = await asyncio.to_thread(_shared_client, base_url, 60.0)
    found = await asyncio.to_thread(
        client.containers.list,
        all=True,
        ignore_removed=True,
        filters={"label": [f"{EXECUTOR_LABEL}=docker", WORKER_LABEL]},
    )
    removed = []
    for container in found:
        worker = container.labels.get(WORKER_LABEL, "")
        if keep(worker):
            continue
        await asyncio.to_thread(_remove, container)
        removed.append(container.name)
        log.info("removed orphaned runner container %s of worker %s", container.name, worker)
    return removed


async def remove_containers_of(
    worker_id: str, *, client: docker.DockerClient | None = None, base_url: str | None = None
) -> list[str]:
    """Remove every container the worker ``worker_id`` left (the reaper, once it declared that
    worker dead)."""
    return await remove_orphans(lambda worker: worker != worker_id, client=client, base_url=base_url)


# ---------------------------------------------------------------------- helpers


def translate(value: str, prefixes: list[str]) -> str:
    """``value`` with every host workspace path (a whole path component) made /workspace."""
    for prefix in prefixes:
        value = re.sub(
            r"(?<![\w.~+@%-])" + re.escape(prefix) + r"(?![\w.~+@%-])",
            lambda _: CONTAINER_WORKSPACE,
            value,
        )
    return value


def _prefixes(workspace: Path) -> list[str]:
    spellings = {str(workspace).rstrip("/"), str(workspace.resolve()).rstrip("/")}
    return sorted((s for s in spellings if s), key=len, reverse=True)


# One client (one connection pool) per engine, shared by every executor in the process: the
# worker may make an executor per run. Thread-safe (requests' pool); created on first use.
_clients: dict[tuple[str | None, float], docker.DockerClient] = {}
_clients_lock = threading.Lock()


def _shared_client(base_url: str | None, timeout: float) -> docker.DockerClient:
    key = (base_url or os.environ.get("DOCKER_HOST"), timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            _probe(base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", timeout)
            # Contacts the engine (API version negotiation): blocking; fails fast when it is down.
            kwargs: dict[str, Any] = {"timeout": timeout, "max_pool_size": 32}
            if base_url:
                client = docker.DockerClient(base_url=base_url, **kwargs)
            else:
                client = docker.DockerClient.from_env(**kwargs)
            _clients[key] = client
        return client


def _probe(url: str, timeout: float) -> None:
    """Connect to a unix socket once ourselves: docker-py leaks the socket when that connect
    fails (a ResourceWarning), and this gives a plainer message."""
    if not url.startswith("unix://"):
        return
    path = url.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise docker.errors.DockerException(f"cannot connect to {path}: {exc.strerror or exc}") from None


async def close_clients() -> None:
    """Close the shared engine connections (at process shutdown; they reopen on next use)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        await asyncio.to_thread(client.close)


def _check_network(network: str) -> str:
    if not network or network.startswith("container:"):
        raise ValueError(f"network must be 'none', 'host' or a Docker network name, not {network!r}")
    return network


def _parse_user(user: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+):(\d+)", user.strip())
    if match is None:
        raise ValueError(f"user must be numeric UID:GID (e.g. 10001:10001), not {user!r}")
    uid, gid = int(match[1]), int(match[2])
    if uid == 0:
        raise ValueError("the Docker runner never runs as root (uid 0)")
    return uid, gid


def _image_missing(image: str) -> str:
    return (
        f"runner image {image} not found: build it (see docs/runners.md) or set the stack's "
        "runner image to one that exists"
    )


def _own_workspace(workspace: Path, uid: int, gid: int) -> None:
    """Give the container's user the workspace tree (see the module docstring)."""
    try:
        top = os.lstat(workspace)
    except FileNotFoundError:
        raise _EngineError(f"the workspace {workspace} does not exist") from None
    euid = os.geteuid()
    if euid != 0:
        if top.st_uid == uid == euid:
            return
        if uid == euid:
            raise _EngineError(
                f"the workspace {workspace} belongs to uid {top.st_uid}, not to this worker (uid {euid}, "
                "which the runner container runs as too): let the worker create its workspaces"
            )
        raise _EngineError(
            f"the runner container runs as {uid}:{gid}, and this worker (uid {euid}) is not root, so it "
            f"cannot hand the workspace over: run the worker as root or as uid {uid}, or set the Docker "
            f"runner's user to {euid}:{os.getegid()}"
        )
    for root, dirs, files in os.walk(workspace):
        for name in [".", *dirs, *files]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(path, uid, gid)


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def _close_stream(stream: Any) -> None:
    """Close an attach stream and its response (closing only the stream leaves the socket open
    until garbage collection: a ResourceWarning)."""
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def _in_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """``fn()`` in a dedicated daemon thread (for calls that last as long as the container)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:  # handed to the awaiting task
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="crucible-docker-wait", daemon=True).start()
    return future


class _EOF:
    pass


class _Pump:
    """Reads the container's output in a thread, splits it into lines, hands them to the loop.

    At most ``_QUEUE_SLOTS`` lines wait for the sink: a fast writer with a slow sink blocks in
    the pipe (as it would on a terminal) instead of filling this process's memory."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._queue: asyncio.Queue[str | _EOF | BaseException] = asyncio.Queue()
        self._slots = threading.Semaphore(_QUEUE_SLOTS)
        self._stopped = threading.Event()
        self.saw_missing_shell = False
        self._thread = threading.Thread(target=self._read, name="crucible-docker-output", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        _close_stream(self._stream)

    async def consume(self, on_line: LineSink) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _EOF):
                return
            if isinstance(item, BaseException):
                raise item
            self._slots.release()
            await _emit(on_line, item)

    def _hand_over(self, item: str | _EOF | BaseException) -> bool:
        if isinstance(item, str):
            while not self._slots.acquire(timeout=0.5):
                if self._stopped.is_set():
                    return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _line(self, raw: bytes) -> bool:
        line = raw.decode(errors="replace")
        if line.startswith("[FATAL tini") and "exec /bin/sh failed" in line:
            self.saw_missing_shell = True
        return self._hand_over(line)

    def _read(self) -> None:
        pending = b""
        try:
            for chunk in self._stream:
                if self._stopped.is_set():
                    return
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    if not self._line(raw.rstrip(b"\r")):
                        return
                while len(pending) >= MAX_LINE:  # an endless line is passed on in pieces
                    if not self._line(pending[:MAX_LINE]):
                        return
                    pending = pending[MAX_LINE:]
            if pending:
                self._line(pending.rstrip(b"\r"))
        except Exception as exc:
            if not self._stopped.is_set():
                self._hand_over(exc)
        finally:
            self._hand_over(_EOF())
