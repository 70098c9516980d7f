"""Pulumi: `pulumi preview` is the plan, `pulumi up` (or `pulumi destroy`) the apply.

Plan runs the preview twice: once with `--diff` for the log (adapters cannot write to the log, and
a reviewer wants to read the diff there), once with `--json` into `<scratch>/preview.json` for
the summary. The JSON digest's ``changeSummary`` counts operations (``create``, ``update``,
``delete``, ``replace``, ``same``, ...); a replace counts as one add and one destroy, as in
OpenTofu. Pulumi already prints secrets as "[secret]" in both. The cost is a second run of the
program; the two previews could in principle disagree if the cloud changes in between, and the
summary follows the JSON one.

There is no saved plan: Pulumi's `--save-plan`/`up --plan` are still experimental, so ``plan_file``
is None and the apply (`up --skip-preview`) plans again against the state of that moment. Drift
runs preview with `--refresh`, since a Pulumi preview does not read the cloud by default; destroy
runs preview with `destroy --preview-only`. The stack is the ``pulumi_stack`` option (`--stack`),
else the one Pulumi has selected in the project. Backend login, passphrase and cloud credentials
come from the stack's environment variables (PULUMI_BACKEND_URL, PULUMI_ACCESS_TOKEN,
PULUMI_CONFIG_PASSPHRASE, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.tools.base import PlanOutcome, Step, ToolContext, ToolError

__all__ = ["PREVIEW_JSON", "PulumiAdapter", "summarize_preview"]

BINARY = "pulumi"
INSTALL_HINT = (
    "install the Pulumi CLI (https://www.pulumi.com/docs/install/) or use a runner image that has it"
)
PREVIEW_JSON = "preview.json"
ENV = {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_SKIP_CONFIRMATIONS": "true"}
# Operations that change resources or what the state manages. "same", "read", "refresh" and
# "discard" (forgetting a read resource) do not.
CHANGE_OPS = frozenset(
    {
        "create",
        "update",
        "delete",
        "replace",
        "import",
        "create-replacement",
        "delete-replaced",
        "import-replacement",
    }
)


def summarize_preview(digest: object) -> tuple[dict[str, int], bool]:
    """The summary and has-changes of a `pulumi preview --json` digest."""
    if not isinstance(digest, dict):
        raise ToolError(f"pulumi preview --json printed a {type(digest).__name__}, not a JSON object")
    ops = digest.get("changeSummary") or {}
    if not isinstance(ops, dict) or not all(isinstance(v, int) for v in ops.values()):
        raise ToolError("pulumi preview --json printed a changeSummary that is not a map of counts")
    replace = ops.get("replace", 0)
    summary = {
        "add": ops.get("create", 0) + replace,
        "change": ops.get("update", 0),
        "destroy": ops.get("delete", 0) + replace,
        "replace": replace,
        "import": ops.get("import", 0),
        "same": ops.get("same", 0),
    }
    return summary, any(ops.get(op, 0) > 0 for op in CHANGE_OPS)


class PulumiAdapter:
    name = "pulumi"
    binary = BINARY
    install_hint = INSTALL_HINT

    def _stack(self, ctx: ToolContext) -> list[str]:
        stack = (ctx.options.get("pulumi_stack") or "").strip()
        return ["--stack", stack] if stack else []

    def _preview(self, ctx: ToolContext) -> list[str]:
        if ctx.run_type == "destroy":
            return [BINARY, "destroy", "--preview-only", "--non-interactive", *self._stack(ctx)]
        argv = [BINARY, "preview", "--non-interactive", *self._stack(ctx)]
        return [*argv, "--refresh"] if ctx.run_type == "drift" else argv

    def plan_steps(self, ctx: ToolContext) -> list[Step]:
        preview = self._preview(ctx)
        return [
            Step("preview", [*preview, "--diff", "--color", "always"], env=dict(ENV)),
            Step("preview-json", [*preview, "--json"], env=dict(ENV), stdout_file=ctx.scratch / PREVIEW_JSON),
        ]

    def read_plan(self, ctx: ToolContext, plan_log: list[str]) -> PlanOutcome:
        path = ctx.scratch / PREVIEW_JSON
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ToolError(
                f"pulumi preview --json wrote no {PREVIEW_JSON}: did the preview-json step run?"
            ) from None
        try:
            digest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ToolError(f"pulumi preview --json did not print valid JSON ({exc}); see its log") from None
        summary, changes = summarize_preview(digest)
        return PlanOutcome(summary=summary, has_changes=changes, plan_json=raw, plan_file=None)

    def apply_steps(self, ctx: ToolContext, plan_file: Path | None) -> list[Step]:
        command = "destroy" if ctx.run_type == "destroy" else "up"
        argv = [BINARY, command, "--yes", "--non-interactive", "--skip-preview", *self._stack(ctx)]
        return [Step(command, [*argv, "--color", "always"], env=dict(ENV))]
