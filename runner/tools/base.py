"""The contract between the worker and a tool adapter (OpenTofu/Terraform, Terragrunt, Ansible,
Pulumi).

An adapter turns a run into commands and reads the plan back; it never executes anything
itself. The worker runs each ``Step`` with the stack's executor (local or Docker), so commands
name a bare binary (``tofu``, ``ansible-playbook``) that the executor finds on its own PATH, and
every path they use lies inside the workspace (the project directory or the scratch directory),
which the Docker executor mounts into the container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ToolError(Exception):
    """The tool cannot run as configured, or its output makes no sense; the message says what
    to do. The run fails with it."""


@dataclass(frozen=True)
class ToolContext:
    project_dir: Path  # where the tool runs: the checkout / project root
    scratch: Path  # a private directory in the workspace, outside the checkout (plan files, ...)
    run_type: str  # tracked | proposed | destroy | drift
    tool: str  # the stack's tool (opentofu and terraform share one adapter)
    tool_version: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # per-stack settings, e.g. playbook


@dataclass(frozen=True)
class Step:
    name: str  # short and shown in the log: "init", "plan", "show", "apply"
    argv: list[str]  # argv[0] is a bare binary name
    env: dict[str, str] = field(default_factory=dict)
    # When set, the command's stdout goes to this file (under ``scratch``) instead of the log
    # (machine-readable output such as `tofu show -json`); stderr still goes to the log.
    stdout_file: Path | None = None


@dataclass(frozen=True)
class PlanOutcome:
    summary: dict[str, int]  # add, change, destroy (+ tool-specific counts)
    has_changes: bool
    plan_json: bytes | None = None  # the machine-readable plan, stored and shown as a diff
    plan_file: Path | None = None  # the binary plan that apply must use, byte for byte


class ToolAdapter(Protocol):
    name: str
    binary: str  # what must be on the executor's PATH
    install_hint: str  # how to get it, for the "not found" message

    def plan_steps(self, ctx: ToolContext) -> list[Step]: ...

    def read_plan(self, ctx: ToolContext, plan_log: list[str]) -> PlanOutcome:
        """After every plan step succeeded: the summary and artifacts. ``plan_log`` holds the
        (masked) lines the last plan step printed."""
        ...

    def apply_steps(self, ctx: ToolContext, plan_file: Path | None) -> list[Step]:
        """``plan_file`` is the stored binary plan, already restored and checksum-verified."""
        ...


def not_found_message(adapter: ToolAdapter, where: str) -> str:
    return f"{adapter.binary} not found {where}: {adapter.install_hint}"
