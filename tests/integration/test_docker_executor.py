"""The Docker executor against a real engine started by .ci/docker-engine.sh (and the real runner
image, which has git, python3 and ansible-core).

The engine comes from the `docker_engine` fixture in tests/conftest.py: it skips with the
reason when the engine cannot run here, or fails when CRUCIBLE_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from runner.executors import docker as dx
from runner.executors.base import MAX_LINE, NOT_FOUND_EXIT, Phase
from tests.aio import run_async as run

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
# Every container these tests make carries this label, so each test can check none is left.
TEST_LABEL = "crucible.test"
SESSION_TAG = secrets.token_hex(4)
WORKER = f"test-worker-{SESSION_TAG}"


@pytest.fixture(scope="session")
def client(docker_engine: str) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=docker_engine)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _no_container_left(request: pytest.FixtureRequest) -> Iterator[None]:
    if "client" not in request.fixturenames and "make_executor" not in request.fixturenames:
        yield  # a test that needs no engine
        return
    client = request.getfixturevalue("client")
    yield
    left = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={SESSION_TAG}"})
    for container in left:
        container.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture(scope="session")
def _shared_clients() -> Iterator[None]:
    yield
    run(dx.close_clients())


@pytest.fixture
def make_executor(docker_engine: str, _shared_clients: None):
    def make(**kwargs) -> dx.DockerExecutor:
        kwargs.setdefault("base_url", docker_engine)
        kwargs.setdefault("labels", {TEST_LABEL: SESSION_TAG, dx.WORKER_LABEL: WORKER})
        return dx.DockerExecutor(**kwargs)

    return make


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    (ws / "project").mkdir(parents=True)
    return ws


def execute(executor, argv, workspace: Path, *, cwd: Path | None = None, **kwargs):
    lines: list[str] = []
    phase_kw = {k: kwargs.pop(k) for k in ("timeout", "env") if k in kwargs}
    phase = Phase(argv=argv, cwd=cwd or workspace, workspace=workspace, **phase_kw)
    return run(executor.run(phase, lines.append, **kwargs)), lines


def containers_of_run(client: docker.DockerClient, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{dx.RUN_LABEL}={run_id}"})


# --------------------------------------------------------------------------- output and exit


def test_streams_stdout_and_stderr_in_order_and_reports_the_exit_code(make_executor, workspace):
    script = "echo one; echo two >&2; echo three; printf 'no newline'; exit 3"
    result, lines = execute(make_executor(), ["sh", "-c", script], workspace)
    assert result.exit_code == 3 and result.sandboxed and result.error is None
    assert lines == ["one", "two", "three", "no newline"]


def test_many_lines_arrive_complete_and_in_order(make_executor, workspace):
    script = "import sys\nfor i in range(20000):\n    print(i, file=sys.stderr if i % 2 else sys.stdout)"
    result, lines = execute(make_executor(), ["python3", "-u", "-c", script], workspace)
    assert result.exit_code == 0
    assert lines == [str(i) for i in range(20000)]


def test_a_very_long_line_is_split_not_lost(make_executor, workspace):
    result, lines = execute(make_executor(), ["python3", "-c", "print('x' * 3_000_000)"], workspace)
    assert result.exit_code == 0
    assert all(len(line) <= MAX_LINE for line in lines) and sum(map(len, lines)) == 3_000_000


def test_stdout_can_go_to_a_workspace_file_while_stderr_stays_in_the_log(make_executor, workspace):
    # The form the worker uses for machine-readable output (Step.stdout_file).
    target = workspace / "scratch" / "show.json"
    target.parent.mkdir()
    tool = ["sh", "-c", 'echo \'{"ok": true}\'; echo "a warning" >&2']
    argv = ["sh", "-c", 'exec "$@" > "$0"', str(target), *tool]
    result, lines = execute(make_executor(), argv, workspace)
    assert result.exit_code == 0 and lines == ["a warning"]
    assert target.read_text() == '{"ok": true}\n'


def test_paths_in_argv_cwd_and_env_are_rewritten_to_the_mount(make_executor, workspace):
    script = workspace / "project" / "show.sh"
    script.write_text('echo "cwd=$(pwd) home=$HOME conf=$CONF arg=$1"\n')
    result, lines = execute(
        make_executor(),
        ["sh", str(script), f"--var-file={workspace}/project/x.tfvars"],
        workspace,
        cwd=workspace / "project",
        env={"CONF": f"{workspace}/project/a.conf:{workspace}"},
    )
    assert result.exit_code == 0, lines
    assert lines == [
        "cwd=/workspace/project home=/tmp conf=/workspace/project/a.conf:/workspace "
        "arg=--var-file=/workspace/project/x.tfvars"
    ]


def test_concurrent_runs_keep_their_output_apart(make_executor, tmp_path):
    executor = make_executor()

    async def one(i: int) -> tuple[int | None, list[str]]:
        ws = tmp_path / f"ws{i}"
        ws.mkdir()
        lines: list[str] = []
        script = f"for n in $(seq 200); do echo run{i}-$n; done"
        result = await executor.run(Phase(argv=["sh", "-c", script], cwd=ws, workspace=ws), lines.append)
        return result.exit_code, lines

    async def scenario():
        return await asyncio.gather(*(one(i) for i in range(6)))

    for i, (code, lines) in enumerate(run(scenario())):
        assert code == 0 and lines == [f"run{i}-{n}" for n in range(1, 201)]


def test_translate_only_replaces_whole_path_components():
    prefixes = ["/srv/ws"]
    assert dx.translate("/srv/ws", prefixes) == "/workspace"
    assert dx.translate("-chdir=/srv/ws/a b:/srv/ws", prefixes) == "-chdir=/workspace/a b:/workspace"
    assert dx.translate("/srv/ws2/a /srv/ws.bak /x/srv/ws", prefixes) == "/srv/ws2/a /srv/ws.bak /x/srv/ws"


def test_a_working_directory_outside_the_workspace_is_an_error(make_executor, workspace, tmp_path):
    result, _ = execute(make_executor(), ["true"], workspace, cwd=tmp_path)
    assert result.exit_code is None and "outside the workspace" in result.error


# --------------------------------------------------------------------------- isolation


def test_the_container_is_hardened_as_configured(make_executor, workspace, client):
    executor = make_executor(mem_limit="256m", cpus=0.5, pids_limit=128, tmpfs_size="32m")
    run_id = f"run-{secrets.token_hex(4)}"
    seen: dict = {}

    async def scenario():
        cancel = asyncio.Event()

        async def sink(line: str) -> None:
            if line == "ready":
                found = await asyncio.to_thread(containers_of_run, client, run_id)
                seen["attrs"] = found[0].attrs if len(found) == 1 else found
                cancel.set()

        phase = Phase(argv=["sh", "-c", "echo ready; sleep 60"], cwd=workspace, workspace=workspace)
        return await executor.run(phase, sink, cancel=cancel, labels={dx.RUN_LABEL: run_id})

    result = run(scenario())
    assert result.canceled
    attrs = seen["attrs"]
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert config["User"] == "10001:10001"
    assert host["Memory"] == 256 * 2**20 and host["MemorySwap"] == 256 * 2**20
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 128
    assert host["Tmpfs"] == {"/tmp": "rw,size=32m,nosuid,nodev"}
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert host["LogConfig"]["Type"] == "none"
    assert host["Binds"] == [f"{workspace.resolve()}:/workspace:rw"]
    assert config["WorkingDir"] == "/workspace"
    assert config["Labels"] == {
        dx.EXECUTOR_LABEL: "docker",
        TEST_LABEL: SESSION_TAG,
        dx.WORKER_LABEL: WORKER,
        dx.RUN_LABEL: run_id,
    }
    assert containers_of_run(client, run_id) == []


def test_inside_the_container_there_are_no_privileges_and_only_two_writable_places(make_executor, workspace):
    (workspace / "project" / "from-server.txt").write_text("written by the server\n")  # owned by root
    script = (
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -u; id -g\n"
        "touch /root-file 2>/dev/null && echo root-writable || echo root-read-only\n"
        "touch /etc/x 2>/dev/null && echo etc-writable || echo etc-read-only\n"
        "echo hi > /workspace/project/out.txt && echo workspace-writable\n"
        "echo more >> /workspace/project/from-server.txt && echo server-file-writable\n"
        "mkdir /workspace/project/newdir && echo mkdir-ok\n"
        "echo t > /tmp/t && echo tmp-writable\n"
        "grep -q ' /tmp tmpfs .*noexec' /proc/mounts && echo tmp-noexec\n"
        "ip link 2>/dev/null || cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '\n"
    )
    result, lines = execute(make_executor(), ["sh", "-c", script], workspace)
    assert result.exit_code == 0, lines
    assert lines[:5] == [
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",  # Docker's default profile
    ]
    assert lines[5:7] == ["10001", "10001"]
    assert lines[7:14] == [
        "root-read-only",
        "etc-read-only",
        "workspace-writable",
        "server-file-writable",
        "mkdir-ok",
        "tmp-writable",
        "tmp-noexec",
    ]
    assert lines[14:] == ["lo"]  # network "none": loopback only
    assert (workspace / "project" / "out.txt").read_text() == "hi\n"
    assert (workspace / "project" / "from-server.txt").read_text() == "written by the server\nmore\n"


def test_host_network_is_available_on_request(make_executor, workspace):
    result, lines = execute(
        make_executor(network="host"),
        ["sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"],
        workspace,
    )
    assert result.exit_code == 0 and len(lines) > 1 and "lo" in lines


def test_the_memory_limit_is_enforced_and_reported(make_executor, workspace):
    executor = make_executor(mem_limit="64m")
    result, lines = execute(
        executor, ["python3", "-c", "x = bytearray(512 * 2**20); print('survived')"], workspace
    )
    assert result.exit_code == 137 and "survived" not in lines
    assert "ERROR: out of memory: the runner container hit its memory limit (64m)" in lines


# --------------------------------------------------------------------------- stopping


def test_timeout_stops_the_container(make_executor, workspace, client):
    run_id = f"run-{secrets.token_hex(4)}"
    start = time.monotonic()
    result, lines = execute(
        make_executor(grace=1),
        ["sh", "-c", "echo started; sleep 300"],
        workspace,
        timeout=2,
        labels={dx.RUN_LABEL: run_id},
    )
    assert result.timed_out and not result.canceled and result.exit_code != 0
    assert lines == ["started", "ERROR: timed out; stopping"]
    assert time.monotonic() - start < 30
    assert containers_of_run(client, run_id) == []


def test_cancel_is_graceful_first_and_removes_the_container(make_executor, workspace, client):
    run_id = f"run-{secrets.token_hex(4)}"
    script = "trap 'echo cleaning up; exit 143' TERM; echo working; sleep 300 & wait"

    async def scenario():
        cancel = asyncio.Event()
        lines: list[str] = []

        def sink(line: str) -> None:
            lines.append(line)
            if line == "working":
                cancel.set()

        phase = Phase(argv=["sh", "-c", script], cwd=workspace, workspace=workspace)
        start = time.monotonic()
        result = await make_executor(grace=20).run(phase, sink, cancel=cancel, labels={dx.RUN_LABEL: run_id})
        return result, lines, time.monotonic() - start

    result, lines, took = run(scenario())
    assert result.canceled and not result.timed_out
    assert result.exit_code == 143  # the tool's own exit: it got SIGTERM and cleaned up
    assert lines == ["working", "canceled; stopping", "cleaning up"]
    assert took < 30
    assert containers_of_run(client, run_id) == []


def test_a_tool_that_ignores_sigterm_is_killed_after_the_grace_period(make_executor, workspace, client):
    run_id = f"run-{secrets.token_hex(4)}"

    async def scenario():
        cancel = asyncio.Event()

        def sink(line: str) -> None:
            if line == "stubborn":
                cancel.set()

        phase = Phase(
            argv=["sh", "-c", "trap '' TERM; echo stubborn; sleep 300"], cwd=workspace, workspace=workspace
        )
        start = time.monotonic()
        result = await make_executor(grace=1).run(phase, sink, cancel=cancel, labels={dx.RUN_LABEL: run_id})
        return result, time.monotonic() - start

    result, took = run(scenario())
    assert result.canceled and result.exit_code == 137
    assert took < 30
    assert containers_of_run(client, run_id) == []


def test_a_failing_sink_still_removes_the_container(make_executor, workspace, client):
    run_id = f"run-{secrets.token_hex(4)}"

    def sink(line: str) -> None:
        raise RuntimeError("log store down")

    phase = Phase(argv=["sh", "-c", "echo hello; sleep 300"], cwd=workspace, workspace=workspace)
    with pytest.raises(RuntimeError, match="log store down"):
        run(make_executor().run(phase, sink, labels={dx.RUN_LABEL: run_id}))
    assert containers_of_run(client, run_id) == []


def test_cancelling_the_task_removes_the_container(make_executor, workspace, client):
    run_id = f"run-{secrets.token_hex(4)}"

    async def scenario():
        started = asyncio.Event()

        def sink(line: str) -> None:
            started.set()

        phase = Phase(argv=["sh", "-c", "echo hello; sleep 300"], cwd=workspace, workspace=workspace)
        task = asyncio.create_task(make_executor().run(phase, sink, labels={dx.RUN_LABEL: run_id}))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert containers_of_run(client, run_id) == []


# --------------------------------------------------------------------------- failures


def test_a_missing_image_is_a_clear_error_and_nothing_is_pulled(make_executor, workspace):
    executor = make_executor()
    result, lines = execute(executor, ["true"], workspace, image="crucible-runner:does-not-exist")
    assert result.exit_code is None and lines == []
    assert result.error == (
        "runner image crucible-runner:does-not-exist not found: build it (see docs/runners.md) or set "
        "the stack's runner image to one that exists"
    )
    assert run(executor.check("crucible-runner:does-not-exist")) == result.error
    assert run(executor.check()) is None


def test_a_missing_binary_exits_127(make_executor, workspace):
    result, lines = execute(make_executor(), ["tofu", "plan"], workspace)
    assert result.exit_code == NOT_FOUND_EXIT and result.error is None
    assert lines == ["sh: 1: exec: tofu: not found"]


def test_an_unreachable_engine_names_docker_host(workspace, tmp_path):
    executor = dx.DockerExecutor(base_url=f"unix://{tmp_path}/nothing.sock")
    result, _ = execute(executor, ["true"], workspace)
    assert result.exit_code is None
    assert result.error.startswith(
        f"cannot reach the Docker engine at unix://{tmp_path}/nothing.sock (DOCKER_HOST)"
    )
    assert run(executor.check()) == result.error


def test_an_unknown_network_or_workspace_is_an_error(make_executor, workspace, tmp_path):
    result, _ = execute(make_executor(network="no-such-network"), ["true"], workspace)
    assert result.exit_code is None and result.error == (
        "the Docker network no-such-network does not exist: create it (docker network create) "
        "or set the runner network to none or host"
    )
    missing = tmp_path / "gone"
    result, _ = execute(make_executor(), ["true"], missing)
    assert result.error == f"the workspace {missing} does not exist"


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="UID:GID"):
        dx.DockerExecutor(user="runner")
    with pytest.raises(ValueError, match="root"):
        dx.DockerExecutor(user="0:0")
    with pytest.raises(ValueError, match="network"):
        dx.DockerExecutor(network="container:abc")


# --------------------------------------------------------------------------- images and tools


def test_the_stacks_image_is_used_per_run_and_its_entrypoint_is_ignored(make_executor, workspace, client):
    tag = f"crucible-test-entrypoint:{SESSION_TAG}"
    dockerfile = b'FROM crucible-runner:current\nENTRYPOINT ["/bin/false"]\nLABEL crucible.test.image=1\n'
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    try:
        run_id = f"run-{secrets.token_hex(4)}"
        seen: dict = {}

        async def sink(line: str) -> None:
            found = await asyncio.to_thread(containers_of_run, client, run_id)
            seen["image"] = found[0].attrs["Config"]["Image"]

        phase = Phase(argv=["echo", "from the stack image"], cwd=workspace, workspace=workspace)
        result = run(make_executor().run(phase, sink, image=tag, labels={dx.RUN_LABEL: run_id}))
        assert result.exit_code == 0 and seen["image"] == tag
    finally:
        client.images.remove(tag, force=True)


def test_an_image_without_a_shell_is_explained(make_executor, workspace, client):
    tag = f"crucible-test-noshell:{SESSION_TAG}"
    dockerfile = b"FROM crucible-runner:current\nUSER root\nRUN rm /usr/bin/sh\nUSER 10001:10001\n"
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    try:
        result, _ = execute(make_executor(), ["echo", "hi"], workspace, image=tag)
        assert result.exit_code is None
        assert result.error == (
            f"runner image {tag} has no /bin/sh: use an image with a shell, or run this executor "
            "with merge_stderr off"
        )
        result, lines = execute(make_executor(merge_stderr=False), ["echo", "hi"], workspace, image=tag)
        assert result.exit_code == 0 and lines == ["hi"]
    finally:
        client.images.remove(tag, force=True)


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write a file
      ansible.builtin.copy:
        dest: "{{ playbook_dir }}/out.txt"
        content: "hello\\n"
"""
INVENTORY = """\
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""


def test_ansible_playbook_check_runs_in_the_image(make_executor, workspace):
    project, scratch = workspace / "project", workspace / "scratch"
    scratch.mkdir()
    (project / "site.yml").write_text(PLAYBOOK)
    (scratch / "inventory.yml").write_text(INVENTORY)
    argv = ["ansible-playbook", "-i", str(scratch / "inventory.yml"), "site.yml", "--check", "--diff"]
    env = {"ANSIBLE_NOCOWS": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    result, lines = execute(make_executor(), argv, workspace, cwd=project, env=env, timeout=300)
    assert result.exit_code == 0, "\n".join(lines)
    recap = [line for line in lines if line.startswith("localhost")]
    assert recap and "changed=1" in recap[-1] and "failed=0" in recap[-1], lines
    assert not (project / "out.txt").exists()  # --check changed nothing
    # ...and the real run writes into the workspace.
    result, lines = execute(make_executor(), argv[:-2], workspace, cwd=project, env=env, timeout=300)
    assert result.exit_code == 0, "\n".join(lines)
    assert (project / "out.txt").read_text() == "hello\n"


# --------------------------------------------------------------------------- crash recovery


def _leftover(client: docker.DockerClient, worker: str) -> str:
    container = client.containers.create(
        "crucible-runner:current",
        ["sleep", "300"],
        labels={dx.EXECUTOR_LABEL: "docker", dx.WORKER_LABEL: worker, TEST_LABEL: SESSION_TAG},
        network_mode="none",
        init=True,
    )
    container.start()
    return container.name


def test_orphans_of_dead_workers_are_removed(make_executor, client):
    dead, alive = f"dead-{SESSION_TAG}", f"alive-{SESSION_TAG}"
    dead_names = {_leftover(client, dead), _leftover(client, dead)}
    alive_name = _leftover(client, alive)
    unrelated = client.containers.create(
        "crucible-runner:current", ["true"], labels={TEST_LABEL: SESSION_TAG}, network_mode="none"
    )
    executor = make_executor()

    def names() -> set[str]:
        return {
            c.name for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={SESSION_TAG}"})
        }

    # Only this session's workers count as "someone else's" here: keep every other worker id
    # (a developer's other runs on the same engine must survive this test).
    removed = run(executor.remove_orphans(lambda worker: not worker.endswith(SESSION_TAG) or worker == alive))
    assert set(removed) == dead_names
    assert names() == {alive_name, unrelated.name}

    removed = run(dx.remove_containers_of(alive, base_url=executor.base_url))
    assert removed == [alive_name]
    assert names() == {unrelated.name}

    # The set form: every worker id on the engine is live except the dead one.
    dead_name = _leftover(client, dead)
    labelled = client.containers.list(all=True, filters={"label": dx.WORKER_LABEL})
    live = {c.labels[dx.WORKER_LABEL] for c in labelled} - {dead}
    assert run(executor.remove_orphans(live)) == [dead_name]
    assert names() == {unrelated.name}
    unrelated.remove(force=True)
