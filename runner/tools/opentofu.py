"""OpenTofu and Terraform: one adapter, two binaries (`tofu` for opentofu, `terraform`).

Plan is `init`, `plan -out <scratch>/plan.tfplan` (`-destroy` for destroy runs) and
`show -json <planfile>`, whose stdout goes to `<scratch>/plan.json` so the JSON (which holds
sensitive values) never reaches the log. A drift run is an ordinary plan — refresh included, as
always — whose changes the worker flags; `-refresh-only` would report what changed outside the
tool but not what applying the configuration would do. Apply is `init` again (the apply may run
in a fresh checkout) and `apply <planfile>`: a saved plan never prompts and applies exactly what
was reviewed, or fails if the state moved on in between.

Colours stay on (the log viewer renders them): nothing here parses the log.
"""

from __future__ import annotations

import json
from pathlib import Path

from backend.runs.plandiff import PlanFormatError, count_actions, has_changes
from runner.tools.base import PlanOutcome, Step, ToolContext, ToolError

__all__ = ["BINARIES", "PLAN_FILE", "PLAN_JSON", "OpenTofuAdapter", "read_plan_json"]

BINARIES = {"opentofu": "tofu", "terraform": "terraform"}
PLAN_FILE = "plan.tfplan"
PLAN_JSON = "plan.json"
INSTALL_HINTS = {
    "opentofu": "install OpenTofu (https://opentofu.org/docs/intro/install/) "
    "or use a runner image that has it",
    "terraform": "install Terraform (https://developer.hashicorp.com/terraform/install) "
    "or use a runner image that has it",
}
ENV = {
    "TF_IN_AUTOMATION": "1",  # no "run terraform apply next" hints in the log
    "TF_INPUT": "0",
    "CHECKPOINT_DISABLE": "1",  # no version check calls home
}


def read_plan_json(path: Path, binary: str) -> tuple[bytes, dict]:
    """The raw bytes and the parsed document of a `show -json` output file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ToolError(f"{binary} show -json wrote no {path.name}: did the show step run?") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(
            f"{binary} show -json did not print valid JSON ({exc}); see the show step's log"
        ) from None
    return raw, doc


class OpenTofuAdapter:
    """``tool`` names the binary for the "not found" message; the steps follow ``ctx.tool``."""

    def __init__(self, tool: str = "opentofu"):
        if tool not in BINARIES:
            raise ToolError(f"the opentofu adapter runs opentofu or terraform, not {tool}")
        self.tool = tool
        self.name = tool
        self.binary = BINARIES[tool]
        self.install_hint = INSTALL_HINTS[tool]

    def _binary(self, ctx: ToolContext) -> str:
        tool = ctx.tool or self.tool
        if tool not in BINARIES:
            raise ToolError(f"the opentofu adapter runs opentofu or terraform, not {tool}")
        return BINARIES[tool]

    def _init(self, binary: str) -> Step:
        return Step("init", [binary, "init", "-input=false"], env=dict(ENV))

    def plan_steps(self, ctx: ToolContext) -> list[Step]:
        binary = self._binary(ctx)
        plan_file = ctx.scratch / PLAN_FILE
        # "-out PATH" rather than "-out=PATH": the path stays a whole argument, which is what an
        # executor that maps workspace paths (Docker) recognises most surely.
        plan = [binary, "plan", "-input=false", "-out", str(plan_file)]
        if ctx.run_type == "destroy":
            plan.append("-destroy")
        return [
            self._init(binary),
            Step("plan", plan, env=dict(ENV)),
            Step(
                "show",
                [binary, "show", "-json", str(plan_file)],
                env=dict(ENV),
                stdout_file=ctx.scratch / PLAN_JSON,
            ),
        ]

    def read_plan(self, ctx: ToolContext, plan_log: list[str]) -> PlanOutcome:
        binary = self._binary(ctx)
        plan_file = ctx.scratch / PLAN_FILE
        if not plan_file.is_file():
            raise ToolError(f"{binary} plan saved no plan file ({plan_file.name}); see the plan step's log")
        raw, doc = read_plan_json(ctx.scratch / PLAN_JSON, binary)
        try:
            summary = count_actions(doc)
            changes = has_changes(doc)
        except PlanFormatError as exc:
            raise ToolError(f"{binary} show -json printed something unexpected: {exc}") from None
        return PlanOutcome(summary=summary, has_changes=changes, plan_json=raw, plan_file=plan_file)

    def apply_steps(self, ctx: ToolContext, plan_file: Path | None) -> list[Step]:
        binary = self._binary(ctx)
        if plan_file is None:
            raise ToolError(f"{binary} apply needs the saved plan from the plan phase, and there is none")
        return [
            self._init(binary),
            Step("apply", [binary, "apply", "-input=false", str(plan_file)], env=dict(ENV)),
        ]
