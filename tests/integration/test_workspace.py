"""Workspaces from real git repositories made in temp dirs (file:// URLs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.masking import Masker
from runner.workspace import WorkspaceError, prepare
from tests.aio import run_async as run


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> dict:
    """main: two commits (envs/prod exists from the first); feature: one more commit."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "--quiet", "--initial-branch=main")
    (src / "envs" / "prod").mkdir(parents=True)
    (src / "envs" / "prod" / "main.tf").write_text("# v1\n")
    git(src, "add", ".")
    git(src, "commit", "--quiet", "-m", "first: network")
    first = git(src, "rev-parse", "HEAD").strip()
    (src / "envs" / "prod" / "main.tf").write_text("# v2\n")
    git(src, "commit", "--quiet", "-am", "second: bump\n\nwith a body")
    second = git(src, "rev-parse", "HEAD").strip()
    git(src, "checkout", "--quiet", "-b", "feature")
    (src / "feature.txt").write_text("f\n")
    git(src, "add", ".")
    git(src, "commit", "--quiet", "-m", "feature work")
    feature = git(src, "rev-parse", "HEAD").strip()
    git(src, "checkout", "--quiet", "main")
    return {"url": f"file://{src}", "src": src, "first": first, "second": second, "feature": feature}


def test_branch_head_with_project_root(repo, tmp_path):
    ws = run(prepare(repo["url"], tmp_path / "ws", branch="main", project_root="envs/prod"))
    assert ws.commit_sha == repo["second"]
    assert ws.commit_message.startswith("second: bump")
    assert ws.project_dir == (tmp_path / "ws" / "envs" / "prod").resolve()
    assert (ws.project_dir / "main.tf").read_text() == "# v2\n"


def test_exact_commit_on_the_branch(repo, tmp_path):
    ws = run(prepare(repo["url"], tmp_path / "ws", branch="main", commit=repo["first"]))
    assert ws.commit_sha == repo["first"]
    assert (ws.root / "envs" / "prod" / "main.tf").read_text() == "# v1\n"


def test_exact_commit_from_another_branch_is_fetched_by_id(repo, tmp_path):
    subprocess.run(["git", "config", "uploadpack.allowAnySHA1InWant", "true"], cwd=repo["src"], check=True)
    ws = run(prepare(repo["url"], tmp_path / "ws", branch="main", commit=repo["feature"]))
    assert ws.commit_sha == repo["feature"] and (ws.root / "feature.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branch": "nope"}, "Remote branch nope not found"),
        ({"branch": "main", "commit": "0" * 40}, f"commit {'0' * 40} not found"),
        ({"branch": "main", "commit": "zz-not-a-sha"}, "is not a commit id"),
        ({"branch": "main", "project_root": "envs/staging"}, "project root 'envs/staging' does not exist"),
    ],
)
def test_failures_say_what_went_wrong(repo, tmp_path, kwargs, message):
    with pytest.raises(WorkspaceError, match=message):
        run(prepare(repo["url"], tmp_path / "ws", **kwargs))


def test_unreachable_repository_fails_with_gits_message(tmp_path):
    with pytest.raises(WorkspaceError, match=r"git clone failed: .+"):
        run(prepare(f"file://{tmp_path}/missing.git", tmp_path / "ws", branch="main"))


def test_a_symlinked_project_root_cannot_escape_the_checkout(repo, tmp_path):
    os.symlink("/etc", repo["src"] / "escape")
    git(repo["src"], "add", "escape")
    git(repo["src"], "commit", "--quiet", "-m", "symlink")
    with pytest.raises(WorkspaceError, match="points outside the repository"):
        run(prepare(repo["url"], tmp_path / "ws", branch="main", project_root="escape"))


def test_other_transports_are_refused(tmp_path):
    with pytest.raises(WorkspaceError, match="git clone failed"):
        run(prepare("ext::sh -c touch% /tmp/pwned", tmp_path / "ws", branch="main"))
    assert not Path("/tmp/pwned").exists()


def test_masker_hides_every_occurrence_longest_first():
    mask = Masker(["hunter2-secret", "hunter2", "ab", "line-one\nline-two"])
    assert mask("pw=hunter2-secret and hunter2") == "pw=*** and ***"
    assert mask("ab is too short to mask") == "ab is too short to mask"
    assert mask("got line-two from the file") == "got *** from the file"
