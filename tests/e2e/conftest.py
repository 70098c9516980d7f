"""End-to-end fixtures: the production build served by `crucible up`, driven by Debian chromium."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

# CI machines are small and busy: give assertions time, they still fail fast on a real bug.
expect.set_options(timeout=15_000)

REPO = Path(__file__).resolve().parents[2]
CRUCIBLE = REPO / ".venv" / "bin" / "crucible"
E2E_PORT = int(os.environ.get("CRUCIBLE_E2E_PORT", "3111"))
CHROMIUM = os.environ.get("CRUCIBLE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Start the full app once per session on a temp data dir; yield (base_url, admin creds)."""
    if not _port_free(E2E_PORT):
        pytest.fail(f"port {E2E_PORT} is busy; set CRUCIBLE_E2E_PORT to a free port")
    data = tmp_path_factory.mktemp("e2e-data")
    # What the tests' localhost playbooks manage: the sandbox lets runs write only here.
    managed = tmp_path_factory.mktemp("e2e-managed")
    base = f"http://localhost:{E2E_PORT}"
    env = {
        **os.environ,
        "CRUCIBLE_DATA_DIR": str(data),
        "CRUCIBLE_BASE_URL": base,
        "CRUCIBLE_LOG_FORMAT": "text",
        "CRUCIBLE_LOCAL_RUNNER_WRITABLE_PATHS": str(managed),
        "CRUCIBLE_CANCEL_GRACE_SECONDS": "3",
        # Every test signs in from 127.0.0.1, well over 30 times in the throttle's 5-minute window
        # once the suite is big enough: the per-IP limit would refuse the later tests' logins.
        # The throttle itself is tested in tests/integration/test_auth_api.py.
        "CRUCIBLE_LOGIN_MAX_ATTEMPTS_PER_IP": "100000",
    }
    log_path = data / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(CRUCIBLE), "up", "--port", str(E2E_PORT), "--host", "127.0.0.1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # a cold build installs the frontend's npm packages
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"crucible up exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not become healthy:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        text = log_path.read_text()
        match = re.search(r"email:\s+(\S+)\s+password:\s+(\S+)", text)
        assert match, f"first start did not print the admin login:\n{text[-2000:]}"
        yield {
            "base_url": base,
            "email": match.group(1),
            "password": match.group(2),
            "data_dir": data,
            "managed_dir": managed,
            "env": env,
        }
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `make test` installs Debian's chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(base_url=server["base_url"], viewport={"width": 1366, "height": 900})
    ctx.set_default_timeout(20_000)
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture
def login(page, server):
    """Log in through the real form (a native POST that sets the httpOnly cookie)."""

    def _login(password: str | None = None, email: str | None = None) -> None:
        page.goto("/login")
        page.get_by_test_id("login-email-input").fill(email or server["email"])
        page.get_by_test_id("login-password-input").fill(password or server["password"])
        page.get_by_test_id("login-submit").click()

    return _login
