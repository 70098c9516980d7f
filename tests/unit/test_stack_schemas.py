"""Stack field validators, table-driven: what is accepted (and how it is normalised), what is not."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydantic import ValidationError

from backend.stacks.schemas import StackCreate, StackUpdate, field_errors

BASE = {"name": "net", "repository_url": "https://github.com/acme/net.git", "tool": "opentofu"}


def create(**fields) -> StackCreate:
    return StackCreate(**{**BASE, **fields})


def rejected(field: str, value) -> str:
    """The message for `field`; fails if the value is accepted."""
    with pytest.raises(ValidationError) as excinfo:
        create(**{field: value})
    errors = field_errors(excinfo.value)
    assert list(errors) == [field], errors
    return errors[field]


# ----------------------------------------------------------------------------- name

NAMES_OK = [
    ("net", "net"),
    ("  padded  ", "padded"),
    ("Net Prod 2", "Net Prod 2"),
    ("a.b_c-d", "a.b_c-d"),
    ("9lives", "9lives"),
    ("x" * 100, "x" * 100),
]
NAMES_BAD = [
    "",
    "   ",
    "-leading",
    ".hidden",
    "_x",
    "a/b",
    "a\\b",
    "tab\there",
    "new\nline",
    "émoji",
    "a;b",
    "x" * 101,
    "<script>",
]


@pytest.mark.parametrize(("value", "expected"), NAMES_OK)
def test_name_accepted(value, expected):
    assert create(name=value).name == expected


@pytest.mark.parametrize("value", NAMES_BAD)
def test_name_rejected(value):
    assert rejected("name", value)


# ----------------------------------------------------------------------------- repository URL

URLS_OK = [
    "https://github.com/acme/infra.git",
    "HTTPS://GitHub.com/acme/infra",
    "http://git.local/x",
    "ssh://git@github.com:22/acme/infra.git",
    "git://git.example.com/infra",
    "git@github.com:acme/infra.git",
    "deploy@git.example.com:/srv/git/infra.git",
    "file:///srv/git/infra",
    "  https://x.test/r  ",
]
URLS_BAD = [
    "",
    "   ",
    "ftp://example.com/r.git",
    "javascript:alert(1)",
    "file://relative/path",
    "file:relative",
    "https://",
    "https:///path-only",
    "https://exa mple.com/r",
    "https://example.com/r\x00",
    "github.com/acme/r",
    "git@github.com",
    "git@:acme/r",
    "ext::sh -c touch% /tmp/pwned",
    "-oProxyCommand=x@host:path",
    "https:example.com",
    "/srv/git/infra",
    "ssh://-oProxyCommand=touch%20x/repo",
    "https://@/acme/r",
]


@pytest.mark.parametrize("value", URLS_OK)
def test_repository_url_accepted(value):
    assert create(repository_url=value).repository_url == value.strip()


@pytest.mark.parametrize("value", URLS_BAD)
def test_repository_url_rejected(value):
    assert "repository URL" in rejected("repository_url", value)


# ----------------------------------------------------------------------------- branch

BRANCHES_OK = ["main", "release/1.x", "feature/JIRA-12_fix", "v1.2.3", "a@b", "deps/bump-x.y", "x" * 255]
BRANCHES_BAD = [
    "",
    " ",
    "a..b",
    "-x",
    "/x",
    "x/",
    "x.",
    "x.lock",
    "a/b.lock",
    "a//b",
    "a b",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "a@{1}",
    "a\tb",
    "a\x7fb",
    "x" * 256,
    ".hidden",
    "feature/.hidden",
    "a/./b",
    "old.lock/b",
    "HEAD",
]


@pytest.mark.parametrize("value", BRANCHES_OK)
def test_branch_accepted(value):
    assert create(branch=value).branch == value


def test_branch_is_trimmed():
    assert create(branch="  dev  ").branch == "dev"


@pytest.mark.parametrize("value", BRANCHES_BAD)
def test_branch_rejected(value):
    assert rejected("branch", value)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_branch_tables_agree_with_git(tmp_path):
    """Keep the tables honest: git accepts every 'ok' name and rejects every 'bad' one."""

    def git_accepts(name: str) -> bool:
        done = subprocess.run(
            ["git", "check-ref-format", "--branch", name], capture_output=True, cwd=tmp_path
        )
        return done.returncode == 0

    assert [b for b in BRANCHES_OK if not git_accepts(b)] == []
    bad = [b.values[0] if hasattr(b, "values") else b for b in BRANCHES_BAD]
    assert [b for b in bad if b.strip() and len(b) < 256 and git_accepts(b)] == []


# ----------------------------------------------------------------------------- project root

ROOTS_OK = [
    ("", ""),
    (".", ""),
    ("./", ""),
    ("envs/prod", "envs/prod"),
    ("./envs/prod/", "envs/prod"),
    ("envs\\prod", "envs/prod"),
    ("  envs/prod  ", "envs/prod"),
    ("a/..b", "a/..b"),
    ("..hidden", "..hidden"),
    ("././x", "x"),
]
ROOTS_BAD = [
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "..\\x",
    "/abs",
    "//x",
    "\\abs",
    "x\x00y",
    "x" * 1025,
    "envs\nprod",
    "envs\tprod",
]


@pytest.mark.parametrize(("value", "expected"), ROOTS_OK)
def test_project_root_accepted_and_normalised(value, expected):
    assert create(project_root=value).project_root == expected


@pytest.mark.parametrize("value", ROOTS_BAD)
def test_project_root_rejected(value):
    assert rejected("project_root", value)


# ----------------------------------------------------------------------------- optional strings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("1.8.2", "1.8.2"),
        ("latest", "latest"),
        (" 1.6.0-rc1 ", "1.6.0-rc1"),
        ("1.5+ent", "1.5+ent"),
    ],
)
def test_tool_version_accepted(value, expected):
    assert create(tool_version=value).tool_version == expected


@pytest.mark.parametrize("value", ["1.0 beta", ">=1.5", "~1", "-1", ".1", "v" * 65])
def test_tool_version_rejected(value):
    assert rejected("tool_version", value)


@pytest.mark.parametrize(
    "value",
    [
        "ubuntu",
        "ubuntu:24.04",
        "ghcr.io/acme/runner:1.2",
        "localhost:5000/ns/img:tag",
        "registry.example.com/a/b/c",
        "img@sha256:" + "a" * 64,
        "img:tag@sha256:" + "0" * 64,
    ],
)
def test_runner_image_accepted(value):
    assert create(runner_image=value).runner_image == value


@pytest.mark.parametrize(
    "value", ["UPPER/x", "x:", "x::1", "a..b", "img@sha256:abc", "-x", "a b", "x:" + "t" * 129]
)
def test_runner_image_rejected(value):
    assert rejected("runner_image", value)


def test_description_allows_newlines_but_no_other_control_characters():
    assert create(description="line one\n\tline two").description == "line one\n\tline two"
    assert rejected("description", "bell\x07")
    assert rejected("description", "d" * 2001)


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], []),
        (["env:prod", "env:prod"], ["env:prod"]),
        ([" a ", "", "  "], ["a"]),
        (["team/net", "k=v", "a.b_c-d"], ["team/net", "k=v", "a.b_c-d"]),
        (["b", "a"], ["b", "a"]),
    ],
)
def test_labels_accepted(value, expected):
    assert create(labels=value).labels == expected


@pytest.mark.parametrize(
    "value", [["-x"], ["a b"], ["é"], ["x" * 65], [f"l{i}" for i in range(51)], "env", [1]]
)
def test_labels_rejected(value):
    assert rejected("labels", value)


# ----------------------------------------------------------------------------- enums, booleans, shape


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tool", "make"),
        ("tool", "OpenTofu"),
        ("runner", "k8s"),
        ("auto_apply", "true"),
        ("auto_apply", 1),
        ("auto_apply", None),
    ],
)
def test_strict_enums_and_booleans(field, value):
    assert rejected(field, value)


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError) as excinfo:
        StackCreate(**BASE, owner="me")
    assert list(field_errors(excinfo.value)) == ["owner"]


def test_field_errors_gives_one_readable_message_per_field():
    with pytest.raises(ValidationError) as excinfo:
        StackCreate(name="", repository_url="ftp://x", tool="make", labels=["-a", "-b"])
    errors = field_errors(excinfo.value)
    assert set(errors) == {"name", "repository_url", "tool", "labels"}
    assert errors["name"] == "name must not be empty"  # pydantic's "Value error, " prefix is gone
    assert not any(msg.startswith("Value error") for msg in errors.values())


def test_update_tells_unset_from_null():
    body = StackUpdate.model_validate({"tool_version": None, "branch": "dev"})
    assert body.model_dump(exclude_unset=True) == {"tool_version": None, "branch": "dev"}
    assert StackUpdate.model_validate({}).model_dump(exclude_unset=True) == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("branch", "a..b"),
        ("project_root", "/etc"),
        ("name", ""),
        ("repository_url", "ftp://x"),
        ("labels", ["-x"]),
    ],
)
def test_update_applies_the_same_validators(field, value):
    with pytest.raises(ValidationError) as excinfo:
        StackUpdate.model_validate({field: value})
    assert list(field_errors(excinfo.value)) == [field]


# ----------------------------------------------------------------------------- playbook


@pytest.mark.parametrize(
    ("value", "expected"),
    [("deploy.yml", "deploy.yml"), (" plays/site.yaml ", "plays/site.yaml"), ("", None), (None, None)],
)
def test_playbook_accepted(value, expected):
    assert create(playbook=value).playbook == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/etc/site.yml", "inside the project root"),
        ("../other/site.yml", "inside the project root"),
        ("site.txt", "YAML file"),
        ("a\x00.yml", "inside the project root"),
    ],
)
def test_playbook_rejected(value, message):
    assert message in rejected("playbook", value)
