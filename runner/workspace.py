"""A fresh workspace per run: the real `git` clones the stack's repository at its branch or an
exact commit, and the project root is resolved inside the checkout.

Git runs non-interactively (no prompts, no hooks, only https/http/ssh/git/file transports) and
asynchronously, so a slow clone never blocks the server's event loop.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

ALLOWED_PROTOCOLS = "https:http:ssh:git:file"
SHA_CHARS = set("0123456789abcdef")


class WorkspaceError(Exception):
    """Preparing the workspace failed; the message says why (git's own words where it spoke)."""


@dataclass(frozen=True)
class Workspace:
    root: Path  # the checkout
    project_dir: Path  # where the tool runs (root / project_root)
    commit_sha: str
    commit_message: str


def _git_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
        "GIT_ASKPASS": "true",
        "SSH_ASKPASS": "true",
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        "LC_ALL": "C",
    }
    env.update(extra or {})
    return env


async def _git(*args: str, cwd: Path | None, env: dict[str, str], timeout: float) -> str:
    cmd = ["git", "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false", *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise WorkspaceError("git not found on PATH: install git (apt-get install git)") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WorkspaceError(f"git {args[0]} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise WorkspaceError(f"git {args[0]} failed: {message}")
    return out.decode(errors="replace")


async def prepare(
    repository_url: str,
    dest: Path,
    *,
    branch: str,
    commit: str | None = None,
    project_root: str = "",
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
) -> Workspace:
    """Clone ``repository_url`` into the empty directory ``dest`` at ``branch`` (its head) or
    at ``commit`` (which must be reachable from the branch or fetchable by id)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise WorkspaceError(f"workspace {dest} is not empty")
    if commit is not None and (not 7 <= len(commit) <= 64 or not set(commit.lower()) <= SHA_CHARS):
        raise WorkspaceError(f"{commit!r} is not a commit id (7-64 hexadecimal characters)")
    genv = _git_env(env)
    await _git(
        "clone",
        "--quiet",
        "--no-tags",
        "--single-branch",
        "--branch",
        branch,
        "--",
        repository_url,
        str(dest),
        cwd=None,
        env=genv,
        timeout=timeout,
    )
    if commit is not None:
        try:
            await _git("checkout", "--quiet", "--detach", commit, cwd=dest, env=genv, timeout=timeout)
        except WorkspaceError:
            # Not on the branch's history: ask the server for that exact commit.
            try:
                await _git("fetch", "--quiet", "origin", commit, cwd=dest, env=genv, timeout=timeout)
                await _git(
                    "checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=dest, env=genv, timeout=timeout
                )
            except WorkspaceError as exc:
                raise WorkspaceError(f"commit {commit} not found in {repository_url} ({exc})") from None
    sha = (await _git("rev-parse", "HEAD", cwd=dest, env=genv, timeout=timeout)).strip()
    message = (await _git("log", "-1", "--format=%B", cwd=dest, env=genv, timeout=timeout)).strip()
    return Workspace(
        root=dest, project_dir=_project_dir(dest, project_root, sha), commit_sha=sha, commit_message=message
    )


def _project_dir(root: Path, project_root: str, sha: str) -> Path:
    real_root = root.resolve()
    target = (real_root / project_root).resolve() if project_root else real_root
    # A symlink in the repository must not lead the tool outside the checkout.
    if target != real_root and real_root not in target.parents:
        raise WorkspaceError(f"project root {project_root!r} points outside the repository")
    if not target.is_dir():
        raise WorkspaceError(f"project root {project_root!r} does not exist in the repository at {sha[:12]}")
    return target
