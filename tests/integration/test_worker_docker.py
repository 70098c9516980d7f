"""Runs of `docker` stacks through the real worker: each phase in a locked-down container of the
locally built runner image, a real Ansible playbook, and crash recovery of runner containers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import docker
import pytest

from runner.executors import docker as dx
from runner.worker import Worker
from tests.aio import run_async
from tests.integration.runs_support import (
    GitRepo,
    WorkerThread,
    log_text,
    playbook,
    wait_for_log,
    wait_for_status,
)

pytestmark = pytest.mark.docker

SECRET = "container-secret-value"


@pytest.fixture
def settings_overrides(docker_engine: str) -> dict[str, Any]:
    return {
        "docker_host": docker_engine,
        "worker_heartbeat_seconds": 0.5,
        "worker_heartbeat_timeout_seconds": 15,
        "cancel_grace_seconds": 2,
    }


@pytest.fixture
def engine(docker_engine: str):
    client = docker.DockerClient(base_url=docker_engine)
    yield client
    client.close()


def _stack(world, tmp_path: Path, tasks: list[dict], **fields: Any) -> dict:
    repo = GitRepo.create(tmp_path / "repo", {"site.yml": playbook(*tasks)})
    return world.stack(tool="ansible", repository_url=repo.url, runner="docker", **fields)


def _containers(engine, run_id: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"crucible.run={run_id}"})


def test_a_docker_stack_plans_and_applies_in_containers(ctx, world, as_actor, admin, tmp_path, engine):
    # The playbook writes into the workspace (the only writable place besides /tmp) and proves
    # it runs as the runner user inside the container, with the secret in its environment.
    who = {"ansible.builtin.command": "id -u", "register": "me", "check_mode": False, "changed_when": False}
    show = {"ansible.builtin.debug": {"msg": "uid={{ me.stdout }} secret={{ lookup('env', 'TOKEN') }}"}}
    write = {"ansible.builtin.copy": {"dest": "{{ playbook_dir }}/out.txt", "content": "applied\n"}}
    tasks = [{"name": "who am i", **who}, {"name": "show it", **show}, {"name": "write", **write}]
    stack = _stack(world, tmp_path, tasks)
    api = as_actor(admin)
    assert (
        api.put(
            f"/api/v1/stacks/{stack['id']}/variables/TOKEN", json={"value": SECRET, "secret": True}
        ).status_code
        == 200
    )
    run = api.post(f"/api/v1/stacks/{stack['id']}/runs", json={"type": "tracked"}).json()
    with WorkerThread(ctx) as worker:
        planned = wait_for_status(ctx, run["id"], "unconfirmed", timeout=120, worker=worker)
        assert planned.plan_summary["change"] == 1
        text = log_text(ctx, run["id"])
        assert "(docker runner)" in text and "uid=10001 secret=***" in text and SECRET not in text
        assert _containers(engine, run["id"]) == []  # the plan's container is gone
        assert api.post(f"/api/v1/runs/{run['id']}/confirm").status_code == 200
        wait_for_status(ctx, run["id"], "finished", timeout=120, worker=worker)
    assert "changed: [localhost]" in wait_for_log(ctx, run["id"], "[crucible] applied")
    assert _containers(engine, run["id"]) == []


def test_a_missing_runner_image_fails_the_run_with_that_message(ctx, world, as_actor, admin, tmp_path):
    stack = _stack(
        world, tmp_path, [{"ansible.builtin.debug": {"msg": "hi"}}], runner_image="crucible-nope:missing"
    )
    run = as_actor(admin).post(f"/api/v1/stacks/{stack['id']}/runs", json={"type": "proposed"}).json()
    with WorkerThread(ctx) as worker:
        failed = wait_for_status(ctx, run["id"], "failed", timeout=60, worker=worker)
    assert "runner image crucible-nope:missing not found" in failed.failure_reason


def test_containers_of_a_dead_worker_are_removed_at_start_up(ctx, engine, docker_engine):
    """A worker of this host that died (its pid is gone) left a container behind."""
    dead = f"{socket.gethostname()[:60]}:4194304:dead00"  # above pid_max: never a live process
    container = engine.containers.create(
        "crucible-runner:current",
        ["sleep", "300"],
        labels={dx.WORKER_LABEL: dead, dx.EXECUTOR_LABEL: "docker"},
    )
    alive = engine.containers.create(
        "crucible-runner:current", ["sleep", "300"], labels={dx.WORKER_LABEL: "another-host:1:aaaaaa",
                                                             dx.EXECUTOR_LABEL: "docker"}
    )  # fmt: skip
    try:
        worker = Worker(ctx, concurrency=1)

        async def start_and_stop() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(1.5)
            stop.set()
            await task

        run_async(start_and_stop())
        names = {c.name for c in engine.containers.list(all=True)}
        assert container.name not in names, "the dead worker's container survived start-up"
        assert alive.name in names, "a container of a worker on another host must be left alone"
    finally:
        for c in (container, alive):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
