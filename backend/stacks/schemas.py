"""Stack request/response models (one family: Base → Create/Update/Public)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from backend.stacks.models import DEFAULT_SKIP_MESSAGES, RunnerKind, Tool, VcsProvider
from backend.vcs.clients import VcsError, check_base_url

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=-]*$")
VERSION_RE = re.compile(r"^(latest|[0-9A-Za-z][0-9A-Za-z.+_-]*)$")
# registry/namespace/name:tag@digest, the shapes `docker pull` accepts.
IMAGE_RE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
SCP_LIKE_RE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:[^\s]+$")  # git@host:org/repo.git
BAD_REF_CHARS = set(" ~^:?*[\\\x7f")


def _no_control(value: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("name must not be empty")
    if not NAME_RE.match(value):
        raise ValueError(
            "name may contain letters, digits, spaces, '.', '_' and '-', starting with a letter or digit"
        )
    return value


def _repository_url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("repository URL must not be empty")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError("repository URL must not contain spaces or control characters")
    lowered = value.lower()
    if lowered.startswith(("https://", "http://", "ssh://", "git://")):
        host = urlsplit(value).hostname or ""
        if not host:
            raise ValueError("repository URL needs a host, e.g. https://github.com/org/repo.git")
        if host.startswith("-"):
            raise ValueError("repository URL host must not start with '-'")
        return value
    if lowered.startswith("file://"):
        if not value[len("file://") :].startswith("/"):
            raise ValueError("file:// repository URLs need an absolute path, e.g. file:///srv/git/infra")
        return value
    if SCP_LIKE_RE.match(value) and not value.startswith("-") and "@-" not in value.split(":", 1)[0]:
        return value
    raise ValueError("repository URL must be https://, ssh://, git@host:path or file:///absolute/path")


def _branch(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("branch must not be empty")
    parts = value.split("/")
    if (
        value in ("HEAD", "@")
        or value.startswith("-")
        or ".." in value
        or "@{" in value
        or any(c in BAD_REF_CHARS or ord(c) < 32 for c in value)
        or value.endswith(".")
        or any(p == "" or p.startswith(".") or p.endswith(".lock") for p in parts)
    ):
        raise ValueError("branch is not a valid git branch name")
    return value


def _project_root(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("project root must not contain control characters")
    value = value.strip().replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    value = value.rstrip("/")
    if value in ("", "."):
        return ""
    if value.startswith("/"):
        raise ValueError("project root must be relative to the repository root, e.g. envs/prod")
    if any(part == ".." for part in value.split("/")):
        raise ValueError("project root must stay inside the repository ('..' is not allowed)")
    return value


def _tool_version(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not VERSION_RE.match(value):
        raise ValueError("tool version must look like 1.8.2 or 'latest'")
    return value


def _runner_image(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not IMAGE_RE.match(value):
        raise ValueError("runner image must be an image reference such as ghcr.io/acme/runner:1.2")
    return value


def _playbook(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip().replace("\\", "/")
    if any(ord(c) < 32 for c in value) or value.startswith("/") or ".." in value.split("/"):
        raise ValueError("playbook must be a path inside the project root, e.g. deploy.yml")
    if not value.endswith((".yml", ".yaml")):
        raise ValueError("playbook must be a YAML file (.yml or .yaml)")
    return value


def _labels(value: list[str]) -> list[str]:
    out: list[str] = []
    for raw in value:
        label = raw.strip()
        if not label:
            continue
        if not LABEL_RE.match(label):
            raise ValueError(
                f"label {label[:64]!r} may contain letters, digits and . _ : / = -, "
                "starting with a letter or digit"
            )
        if label not in out:
            out.append(label)
    return out


def _vcs_base_url(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    try:
        return check_base_url(value.strip())  # the rule the feedback sender applies, at save time
    except VcsError as exc:
        raise ValueError(exc.message) from None


def _vcs_token(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError("VCS token must not contain spaces or control characters")
    return value or None


def _patterns(what: str, max_len: int):
    def check(value: list[str]) -> list[str]:
        out: list[str] = []
        for raw in value:
            item = raw.strip()
            if not item:
                continue
            if any(ord(c) < 32 for c in item):
                raise ValueError(f"{what} must not contain control characters")
            if len(item) > max_len:
                raise ValueError(f"each of the {what} is at most {max_len} characters")
            if item not in out:
                out.append(item)
        return out

    return check


def _trigger_paths(value: list[str]) -> list[str]:
    out = _patterns("trigger paths", 256)(value)
    for glob in out:
        if glob.startswith("!"):
            raise ValueError(
                "trigger paths are globs that include files (e.g. envs/prod/**); '!' is not supported"
            )
        if ".." in glob.split("/"):
            raise ValueError("trigger paths are relative to the repository root ('..' is not allowed)")
    return out


Name = Annotated[str, Field(max_length=100), AfterValidator(_name)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_no_control)]
RepositoryUrl = Annotated[str, Field(max_length=2048), AfterValidator(_repository_url)]
Branch = Annotated[str, Field(max_length=255), AfterValidator(_branch)]
ProjectRoot = Annotated[str, Field(max_length=1024), AfterValidator(_project_root)]
ToolVersion = Annotated[str | None, Field(max_length=64), AfterValidator(_tool_version)]
RunnerImage = Annotated[str | None, Field(max_length=512), AfterValidator(_runner_image)]
Playbook = Annotated[str | None, Field(max_length=255), AfterValidator(_playbook)]
Labels = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=50), AfterValidator(_labels)]
VcsBaseUrl = Annotated[str | None, Field(max_length=2048), AfterValidator(_vcs_base_url)]
VcsToken = Annotated[
    str | None,
    Field(max_length=2048, description="Write-only: used for commit statuses and PR comments, never shown"),
    AfterValidator(_vcs_token),
]
TriggerPaths = Annotated[
    list[Annotated[str, Field(max_length=256)]],
    Field(max_length=50, description="Globs over changed files; empty: every change"),
    AfterValidator(_trigger_paths),
]
SkipMessages = Annotated[
    list[Annotated[str, Field(max_length=200)]],
    Field(max_length=50, description="Commit-message substrings (case-insensitive) that start no run"),
    AfterValidator(_patterns("skip message patterns", 200)),
]
SkipActors = Annotated[
    list[Annotated[str, Field(max_length=100)]],
    Field(max_length=100, description="VCS user names whose events start no run, e.g. renovate[bot]"),
    AfterValidator(_patterns("skip actors", 100)),
]


class StackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    repository_url: RepositoryUrl
    branch: Branch = "main"
    project_root: ProjectRoot = ""
    tool: Tool
    tool_version: ToolVersion = None
    runner: RunnerKind = RunnerKind.local
    runner_image: RunnerImage = None
    playbook: Playbook = None
    auto_apply: StrictBool = False
    labels: Labels = Field(default_factory=list)
    vcs_provider: VcsProvider | None = None
    vcs_base_url: VcsBaseUrl = None
    vcs_token: VcsToken = None
    trigger_paths: TriggerPaths = Field(default_factory=list)
    skip_message_patterns: SkipMessages = Field(default_factory=lambda: list(DEFAULT_SKIP_MESSAGES))
    skip_actors: SkipActors = Field(default_factory=list)


class StackUpdate(BaseModel):
    """PATCH body: only the fields present change. ``null`` clears the optional fields."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    repository_url: RepositoryUrl | None = None
    branch: Branch | None = None
    project_root: ProjectRoot | None = None
    tool: Tool | None = None
    tool_version: ToolVersion = None
    runner: RunnerKind | None = None
    runner_image: RunnerImage = None
    playbook: Playbook = None
    auto_apply: StrictBool | None = None
    labels: Labels | None = None
    vcs_provider: VcsProvider | None = None
    vcs_base_url: VcsBaseUrl = None
    vcs_token: VcsToken = None
    trigger_paths: TriggerPaths | None = None
    skip_message_patterns: SkipMessages | None = None
    skip_actors: SkipActors | None = None


NON_NULLABLE = (
    "name",
    "description",
    "repository_url",
    "branch",
    "project_root",
    "tool",
    "runner",
    "auto_apply",
    "labels",
    "trigger_paths",
    "skip_message_patterns",
    "skip_actors",
)


class StackPublic(BaseModel):
    id: str
    name: str
    description: str
    repository_url: str
    branch: str
    project_root: str
    tool: Tool
    tool_version: str | None
    runner: RunnerKind
    runner_image: str | None
    playbook: str | None
    auto_apply: bool
    labels: list[str]
    vcs_provider: VcsProvider | None = None
    vcs_base_url: str | None = None
    vcs_token_set: bool = False  # the token itself is write-only
    trigger_paths: list[str] = Field(default_factory=list)
    skip_message_patterns: list[str] = Field(default_factory=list)
    skip_actors: list[str] = Field(default_factory=list)
    created_by: str | None
    created_at: str
    updated_at: str


class StacksPublic(BaseModel):
    data: list[StackPublic]
    count: int


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Map a ValidationError to {field: message} for forms."""
    out: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "__root__"
        msg = err["msg"].removeprefix("Value error, ")
        out.setdefault(field, msg)
    return out
