"""The real Terraform CLI (and OpenTofu's, when it is installed) against the state endpoint.

A uvicorn server of the app on a loopback port, a project with one builtin ``terraform_data``
resource (no providers, no network), ``backend "http" {}`` configured with -backend-config as a
user would. A recorder in front of the app keeps every request the CLI sent, so the tests say
what this CLI version sends (methods, ?ID=, bodies) and what Crucible answered. Runs of stacks
use the same endpoint through the worker (test_state_runs.py); this is the hand-run CLI.

On SQLite + filesystem store and on PostgreSQL + S3 (moto's server).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from backend.api import create_api
from backend.state.models import StateLock, StateToken
from backend.timeutil import utcnow
from tests.integration.test_state_protocol import (
    TerraformClient,
    lock_info,
    new_token,
    paired_store_settings,
    serving,
    state_objects,
    versions,
)

CLI_TIMEOUT = 120  # seconds, per CLI call

BINARIES = [
    pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(
            shutil.which(name) is None, reason=f"{name} is not on PATH: install it to run these tests with it"
        ),
    )
    for name in ("terraform", "tofu")
]

MAIN_TF = """\
terraform {
  backend "http" {}
}

variable "word" {
  type = string
}

resource "terraform_data" "a" {
  input = var.word
}

output "word" {
  value = terraform_data.a.output
}
"""


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: bytes
    status: int
    answer: bytes = b""


class Recorder:
    """ASGI middleware that keeps every request it passes on, with the app's answer."""

    def __init__(self, app):
        self.app = app
        self.requests: list[Seen] = []
        self.url = ""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        seen: list[Seen] = []

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                query = scope["query_string"].decode()
                self.requests.append(
                    Seen(scope["method"], scope["path"], query, b"".join(chunks), message["status"])
                )
                seen.append(self.requests[-1])
            elif message["type"] == "http.response.body" and len(seen[0].answer) < 4096:
                seen[0].answer += message.get("body", b"")
            await send(message)

        await self.app(scope, recording_receive, recording_send)

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def clear(self) -> None:
        self.requests.clear()


@dataclass
class Cli:
    """One CLI in a project directory with a clean, offline environment."""

    binary: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.binary, *args],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"{self.binary} {' '.join(args)} took over {CLI_TIMEOUT}s:\n{exc.stdout}\n{exc.stderr}"
            )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, f"{self.binary} {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def fails(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode != 0, f"{self.binary} {args[0]} succeeded:\n{done.stdout}"
        return done.stdout + done.stderr


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, db_kind: str) -> dict[str, Any]:
    return paired_store_settings(request, db_kind)


@pytest.fixture
def stack_id(world) -> str:
    return world.stack(tool="terraform")["id"]


@pytest.fixture
def recorder(ctx) -> Iterator[Recorder]:
    """The API behind a Recorder on a loopback port (``recorder.url``)."""
    rec = Recorder(create_api(ctx))
    with serving(rec) as url:
        rec.url = url
        yield rec


@pytest.fixture
def live_http(recorder) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=recorder.url, timeout=30) as http:
        yield http


@pytest.fixture(params=BINARIES)
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    binary = shutil.which(request.param)
    assert binary is not None
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "cli.tfrc"
    config.write_text("# no credentials, no plugin cache, no mirrors\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.tf").write_text(MAIN_TF)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TF_CLI_CONFIG_FILE": str(config),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "TMPDIR": str(tmp_path),
    }
    return Cli(binary, project, env)


def init(cli: Cli, url: str, stack_id: str, password: str) -> subprocess.CompletedProcess[str]:
    address = f"{url}/api/v1/state/{stack_id}"
    return cli(
        "init",
        "-input=false",
        "-no-color",
        f"-backend-config=address={address}",
        f"-backend-config=lock_address={address}",
        f"-backend-config=unlock_address={address}",
        f"-backend-config=username={stack_id}",
        f"-backend-config=password={password}",
    )


def apply(cli: Cli, word: str) -> str:
    return cli.ok("apply", "-auto-approve", "-input=false", "-no-color", f"-var=word={word}")


def lock_row(world, stack_id: str) -> StateLock | None:
    with world.ctx.session() as s:
        return s.get(StateLock, stack_id)


# --------------------------------------------------------------------------- tests


def test_apply_keeps_every_version_in_crucible_and_reads_them_back(cli, recorder, live_http, world, stack_id):
    password = new_token(world, stack_id)
    done = init(cli, recorder.url, stack_id, password)
    assert done.returncode == 0, done.stdout + done.stderr

    recorder.clear()
    apply(cli, "one")
    (first,) = versions(world, stack_id)
    assert first.serial >= 1 and first.lineage and first.created_by == "stack-token:t-write"
    assert first.terraform_version and first.resource_count == 1
    # LOCK and UNLOCK (the default methods) around the reads and the write; the write and the
    # unlock carry the lock's ID.
    sent = recorder.methods()
    assert (sent[0], sent[-1], sent.count("POST")) == ("LOCK", "UNLOCK", 1), sent
    assert all(r.status in (200, 204) for r in recorder.requests), recorder.requests
    lock_id = json.loads(recorder.requests[0].body)["ID"]
    (write,) = [r for r in recorder.requests if r.method == "POST"]
    assert write.query == f"ID={lock_id}"
    assert json.loads(recorder.requests[-1].body)["ID"] == lock_id
    assert lock_row(world, stack_id) is None

    tf = TerraformClient(live_http, stack_id, password)
    served = tf.get()
    assert served.status_code == 200 and served.headers["x-crucible-state-serial"] == str(first.serial)
    doc = json.loads(served.content)
    assert (doc["serial"], doc["lineage"]) == (first.serial, first.lineage)
    assert doc["outputs"]["word"]["value"] == "one"

    apply(cli, "two")
    old, new = versions(world, stack_id)
    assert old.id == first.id and new.serial > first.serial and new.lineage == first.lineage
    assert json.loads(tf.get().content)["outputs"]["word"]["value"] == "two"
    assert len(state_objects(world, stack_id)) == 2

    # Read back through the backend by the CLI itself.
    recorder.clear()
    assert cli.ok("state", "list", "-no-color").split() == ["terraform_data.a"]
    outputs = json.loads(cli.ok("output", "-json", "-no-color"))
    assert outputs["word"]["value"] == "two"
    assert {(r.method, r.status) for r in recorder.requests} == {("GET", 200)}
    assert lock_row(world, stack_id) is None


def test_a_held_lock_stops_the_cli_which_names_the_holder(cli, recorder, live_http, world, stack_id):
    password = new_token(world, stack_id)
    assert init(cli, recorder.url, stack_id, password).returncode == 0
    holder = lock_info(who="ci@elsewhere", operation="OperationTypeApply")
    other = TerraformClient(live_http, stack_id, new_token(world, stack_id, name="ci"))
    assert other.lock(holder).status_code == 200

    recorder.clear()
    output = cli.fails("plan", "-lock-timeout=0s", "-input=false", "-no-color", "-var=word=one")
    assert "Error acquiring the state lock" in output
    assert holder["ID"] in output, output
    assert [(r.method, r.status) for r in recorder.requests if r.method == "LOCK"] == [("LOCK", 423)]
    assert lock_row(world, stack_id).lock_id == holder["ID"]

    # force-unlock with the holder's ID: Crucible's answer depends on what this CLI sends.
    recorder.clear()
    forced = cli("force-unlock", "-force", "-no-color", holder["ID"])
    (unlock,) = [r for r in recorder.requests if r.method == "UNLOCK"]
    if unlock.body.strip():  # a client that sends the ID ({"ID": ...}) proves it knows the lock
        assert json.loads(unlock.body)["ID"] == holder["ID"]
        assert unlock.status == 200 and forced.returncode == 0
        assert lock_row(world, stack_id) is None
    else:  # Terraform 1.11 sends an empty body (it has no LockInfo): 409, the lock stays
        assert unlock.status == 409 and json.loads(unlock.answer) == holder and forced.returncode != 0
        assert "Failed to unlock state: Unexpected HTTP response code 409" in forced.stderr, forced.stderr
        assert lock_row(world, stack_id).lock_id == holder["ID"]
        assert other.unlock().status_code == 200  # the holder (or an admin, over REST) unlocks

    # Unlocked: force-unlock has nothing to do (200), and the CLI works again.
    recorder.clear()
    cli.ok("force-unlock", "-force", "-no-color", holder["ID"])
    assert [(r.method, r.status) for r in recorder.requests] == [("UNLOCK", 200)]
    apply(cli, "one")
    assert len(versions(world, stack_id)) == 1 and lock_row(world, stack_id) is None


def test_a_wrong_or_revoked_password_fails_with_an_auth_error(cli, recorder, world, stack_id):
    password = new_token(world, stack_id)
    wrong = init(cli, recorder.url, stack_id, password[:-4] + "AAAA")  # init reads the state
    assert wrong.returncode != 0, wrong.stdout
    assert "HTTP remote state endpoint requires auth" in wrong.stdout + wrong.stderr, wrong.stderr
    assert {r.status for r in recorder.requests} == {401}
    assert versions(world, stack_id) == []

    shutil.rmtree(cli.workdir / ".terraform")
    (cli.workdir / ".terraform.lock.hcl").unlink(missing_ok=True)
    assert init(cli, recorder.url, stack_id, password).returncode == 0
    apply(cli, "one")
    with world.ctx.session() as s:
        tok = s.exec(select(StateToken).where(StateToken.stack_id == stack_id)).one()
        tok.revoked_at = utcnow()
        s.add(tok)
    recorder.clear()
    output = cli.fails("plan", "-input=false", "-no-color", "-var=word=two")
    assert "HTTP remote state endpoint requires auth" in output, output
    assert recorder.requests and {r.status for r in recorder.requests} == {401}
    assert len(versions(world, stack_id)) == 1
