"""Ansible as an IaC tool: `ansible-playbook --check --diff` is the plan, the real run the apply.

The playbook is the stack's setting, else `site.yml`, else `playbook.yml`; the inventory is
`inventory/`, `inventory.ini` or `hosts` in the project directory, else localhost with a local
connection. The PLAY RECAP gives the plan summary: `change` = tasks that would change.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from runner.tools.base import PlanOutcome, Step, ToolContext, ToolError

__all__ = ["AnsibleAdapter", "ToolError", "find_binary", "find_playbook", "inventory_args", "parse_recap"]

PLAYBOOK_CANDIDATES = ("site.yml", "playbook.yml")
INVENTORY_CANDIDATES = ("inventory", "inventory.ini", "hosts")
BINARY = "ansible-playbook"
INSTALL_HINT = "install ansible-core (pip install ansible-core) or use a runner image that has it"
# Colours are kept for the log viewer; the recap parser strips them.
ENV = {
    "ANSIBLE_FORCE_COLOR": "1",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOWS": "1",
    "PYTHONUNBUFFERED": "1",
}
# The interpreter that runs ansible-playbook also runs the modules on localhost.
LOCAL_INVENTORY = """all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
      ansible_remote_tmp: "{remote_tmp}"
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")
_COUNT = re.compile(r"(\w+)=(\d+)")


def find_binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        raise ToolError(f"{BINARY} not found on PATH: {INSTALL_HINT}")
    return path


def find_playbook(project_dir: Path, configured: str | None = None) -> str:
    candidates = (configured,) if configured else PLAYBOOK_CANDIDATES
    for name in candidates:
        if name and (project_dir / name).is_file():
            return name
    wanted = configured or " or ".join(PLAYBOOK_CANDIDATES)
    raise ToolError(f"no playbook: {wanted} not found in the project directory")


def inventory_args(project_dir: Path, scratch: Path) -> list[str]:
    for name in INVENTORY_CANDIDATES:
        if (project_dir / name).exists():
            return ["-i", name]
    local = scratch / "crucible-localhost.yml"
    # The runner's HOME may be read-only (sandbox, container): module temp files go to scratch.
    local.write_text(LOCAL_INVENTORY.replace("{remote_tmp}", str(scratch / "ansible-tmp")))
    return ["-i", str(local)]


def parse_recap(lines: list[str]) -> dict[str, int]:
    """Totals over the PLAY RECAP's hosts, as the run's plan summary."""
    totals = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0}
    in_recap = False
    seen = False
    for raw in lines:
        line = _ANSI.sub("", raw).strip()
        if line.startswith("PLAY RECAP"):
            in_recap, seen = True, True
            continue
        if not in_recap or not line:
            continue
        match = _RECAP_LINE.match(line)
        if match is None:
            in_recap = False
            continue
        for key, value in _COUNT.findall(match.group("counts")):
            if key in totals:
                totals[key] += int(value)
    if not seen:
        raise ToolError("ansible-playbook printed no PLAY RECAP (did it stop before running the play?)")
    changed = totals.pop("changed")
    return {"add": 0, "change": changed, "destroy": 0, **totals}


class AnsibleAdapter:
    name = "ansible"
    binary = BINARY
    install_hint = INSTALL_HINT

    def _env(self, ctx: ToolContext) -> dict[str, str]:
        # Ansible's own state (facts cache, collections, temp files) stays in the workspace.
        home = ctx.scratch / "ansible"
        return {**ENV, "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}

    def _base(self, ctx: ToolContext) -> list[str]:
        book = find_playbook(ctx.project_dir, ctx.options.get("playbook") or None)
        return [BINARY, *inventory_args(ctx.project_dir, ctx.scratch), book]

    def plan_steps(self, ctx: ToolContext) -> list[Step]:
        if ctx.run_type == "destroy":
            raise ToolError("Ansible has no destroy: write a playbook that removes what you manage")
        *head, book = self._base(ctx)
        return [Step("plan", [*head, "--check", "--diff", book], env=self._env(ctx))]

    def read_plan(self, ctx: ToolContext, plan_log: list[str]) -> PlanOutcome:
        summary = parse_recap(plan_log)
        return PlanOutcome(summary=summary, has_changes=summary["change"] > 0)

    def apply_steps(self, ctx: ToolContext, plan_file: Path | None) -> list[Step]:
        *head, book = self._base(ctx)
        return [Step("apply", [*head, "--diff", book], env=self._env(ctx))]
