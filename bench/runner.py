#!/usr/bin/env python3
"""Runner overhead: from the moment a worker claims a run to the tool's first output line.

For the local executor it is compared with a bare subprocess running the same tool command
in an existing checkout (so the difference is what Crucible adds: the claim's bookkeeping,
the git clone, variables, the bubblewrap sandbox, the log pump); for the Docker executor with
`docker run --rm <image> true` and with a bare `docker run --rm <image> ansible-playbook ...`
to its first line, all measured in the same run, rounds interleaved.

    python bench/runner.py [--rounds 10] [--no-docker]

Prints medians, p90s and ratios, and writes bench/results/runner.json (git-ignored). It uses a
temporary SQLite database and data dir, removed at the end; the Docker engine is the one
`.ci/docker-engine.sh .cache/docker` starts (skipped with the reason if it cannot run here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This directory holds bench/queue.py: off the path, or it shadows the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.auth.principal import system_principal  # noqa: E402
from backend.config import load_settings  # noqa: E402
from backend.context import build_context, set_context  # noqa: E402
from backend.db import migrate  # noqa: E402
from backend.runs import service as runs_service  # noqa: E402
from backend.runs.schemas import RunCreate  # noqa: E402
from backend.stacks import service as stacks_service  # noqa: E402
from backend.stacks.schemas import StackCreate  # noqa: E402
from runner import job as job_module  # noqa: E402
from runner.port import InProcessPort  # noqa: E402
from runner.tools import ansible  # noqa: E402
from runner.worker import Worker  # noqa: E402

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: hello
"""
INVENTORY = "localhost ansible_connection=local\n"
DOCKER_STATE = ROOT / ".cache" / "docker"
IMAGE = "crucible-runner:current"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=b@b", "-c", "user.name=bench", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(PLAYBOOK)
    (repo / "inventory.ini").write_text(INVENTORY)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "bench")
    return repo


def first_line_seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Spawn ``argv`` and time its first non-empty output line."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    elapsed = None
    for line in proc.stdout:
        if line.strip() and elapsed is None:
            elapsed = time.perf_counter() - start
    proc.wait()
    if proc.returncode != 0 or elapsed is None:
        raise RuntimeError(f"{argv[0]} failed with {proc.returncode}")
    return elapsed


def wall_seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


class Probe:
    """Times claim → the first line the tool itself printed (not Crucible's own lines)."""

    def __init__(self) -> None:
        self.first: float | None = None
        original = job_module.LogPump.line

        def line(pump, text: str) -> None:
            if self.first is None and text.strip() and not text.startswith("[crucible]"):
                self.first = time.perf_counter()
            original(pump, text)

        job_module.LogPump.line = line  # type: ignore[method-assign]


async def crucible_once(ctx, worker: Worker, principal, stack_id: str, probe: Probe) -> float:
    with ctx.session() as s:
        runs_service.create_run(s, principal, ctx.secret_box, stack_id, RunCreate(type="proposed"))
    port: InProcessPort = worker.port
    job = await port.claim()
    claimed = time.perf_counter()
    assert job is not None, "the run was not claimable"
    probe.first = None
    runner = job_module.JobRunner(job, port, worker._executor(job), ctx.settings, asyncio.Event())
    await runner.run()
    with ctx.session(readonly=True) as s:
        status = runs_service.get_run(s, principal, job.run_id)
    if status.status.value != "finished" or probe.first is None:
        raise RuntimeError(f"run {job.run_id} ended {status.status.value}: {status.failure_reason}")
    return probe.first - claimed


def docker_engine() -> str | None:
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "docker-engine.sh"), str(DOCKER_STATE)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"Docker engine unavailable, skipping the Docker cases: {(proc.stdout + proc.stderr)[-500:]}")
        return None
    return f"unix://{DOCKER_STATE / 'docker.sock'}"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median_ms": statistics.median(ordered) * 1000, "p90_ms": p90 * 1000, "n": len(ordered)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="crucible-bench-runner-"))
    try:
        docker_url = None if args.no_docker else docker_engine()
        repo = make_repo(base)
        checkout = base / "checkout"
        _git(base, "clone", "-q", str(repo), str(checkout))
        settings = load_settings(
            data_dir=base / "data",
            secret_key="bench-secret-key-" + "x" * 32,
            docker_host=docker_url,
            log_level="WARNING",
        )
        migrate(settings)
        ctx = build_context(settings)
        set_context(ctx)
        with ctx.session() as s:
            org = ctx.auth.ensure_default_org(s)
            principal = system_principal(org.id)
            local = stacks_service.create_stack(
                s, principal, StackCreate(name="bench-local", repository_url=f"file://{repo}", tool="ansible")
            )
            dock = stacks_service.create_stack(
                s,
                principal,
                StackCreate(
                    name="bench-docker", repository_url=f"file://{repo}", tool="ansible", runner="docker"
                ),
            )
        worker = Worker(ctx, concurrency=1)
        probe = Probe()
        # The bare run gets the environment the Ansible adapter gives the tool.
        env = {
            **os.environ,
            **ansible.ENV,
            "PATH": job_module._local_path(None),
            "HOME": str(base),
            "ANSIBLE_HOME": str(base / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(base / "ansible" / "tmp"),
        }
        denv = {**os.environ, "DOCKER_HOST": docker_url or ""}
        bare_argv = ["ansible-playbook", "-i", "inventory.ini", "--check", "site.yml"]
        cases: dict[str, list[float]] = {"bare subprocess": [], "crucible local": []}
        if docker_url:
            cases.update({"docker run --rm true": [], "docker run ansible": [], "crucible docker": []})
        sandboxed = shutil.which("bwrap") is not None
        # Warm-up: page caches, Python bytecode, the image's layers.
        first_line_seconds(bare_argv, checkout, env)
        await crucible_once(ctx, worker, principal, local.id, probe)
        for i in range(args.rounds):
            order = list(cases)
            order = order[i % len(order) :] + order[: i % len(order)]  # rotate: noise hits all cases
            for case in order:
                if case == "bare subprocess":
                    cases[case].append(first_line_seconds(bare_argv, checkout, env))
                elif case == "crucible local":
                    cases[case].append(await crucible_once(ctx, worker, principal, local.id, probe))
                elif case == "docker run --rm true":
                    cases[case].append(
                        wall_seconds(["docker", "run", "--rm", "--network", "none", IMAGE, "true"], denv)
                    )
                elif case == "docker run ansible":
                    argv = ["docker", "run", "--rm", "--network", "none", "-v", f"{checkout}:/w:ro",
                            "-w", "/w", "-e", "ANSIBLE_LOCAL_TEMP=/tmp/a", "-e", "ANSIBLE_HOME=/tmp/a",
                            IMAGE, *bare_argv]  # fmt: skip
                    cases[case].append(first_line_seconds(argv, checkout, denv))
                else:
                    cases[case].append(await crucible_once(ctx, worker, principal, dock.id, probe))
        stats = {name: summary(values) for name, values in cases.items()}
        print(f"\nRunner overhead, {args.rounds} rounds (bubblewrap sandbox: {'on' if sandboxed else 'off'})")
        print(f"{'case':28} {'median':>10} {'p90':>10}")
        for name, st in stats.items():
            print(f"{name:28} {st['median_ms']:8.0f}ms {st['p90_ms']:8.0f}ms")
        ratios = {
            "crucible local / bare subprocess": stats["crucible local"]["median_ms"]
            / stats["bare subprocess"]["median_ms"]
        }
        if docker_url:
            ratios["crucible docker / docker run --rm true"] = (
                stats["crucible docker"]["median_ms"] / stats["docker run --rm true"]["median_ms"]
            )
            ratios["crucible docker / docker run ansible"] = (
                stats["crucible docker"]["median_ms"] / stats["docker run ansible"]["median_ms"]
            )
        for name, value in ratios.items():
            print(f"{name:45} {value:5.2f}x (median)")
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "runner.json").write_text(json.dumps({"stats": stats, "ratios": ratios}, indent=2))
        ctx.engine.dispose()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
