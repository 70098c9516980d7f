"""Terragrunt: `run-all plan` / `run-all apply` over every unit under the project directory.

Summary source — the units' plan JSON, not the log. Terragrunt writes one binary plan and one
`show -json` document per unit when given `--terragrunt-out-dir` and `--terragrunt-json-out-dir`
(`<dir>/<unit path>/tfplan.tfplan` and `tfplan.json`), so the summary is counted by the same
code as a single OpenTofu plan (``backend.runs.plandiff.count_actions``), sensitive values are
known by position, and the reviewer gets a real diff. Parsing "Plan: N to add, ..." lines instead
would be locale- and version-fragile, could not tell units apart in interleaved parallel output,
and would leave no plan to review or to apply exactly.

Artifacts. ``plan_json`` is a *plan set* — ``{"format": "crucible.plan-set/1", "tool":
"terragrunt", "units": {"<unit path>": <plan JSON>}}`` — which plandiff reads like one plan.
``plan_file`` is a tar of the units' binary plans (sorted, zero mtimes, so the bytes depend only
on the plans); ``apply_steps`` unpacks it into the scratch directory and `run-all apply
--terragrunt-out-dir` applies each unit's saved plan. A destroy run plans with `-destroy` and
applies the same way, as Terragrunt documents.

CLI spelling. Terragrunt's CLI redesign renamed `run-all` to `run --all` and dropped the
`--terragrunt-` prefix; the old spelling still works (with a deprecation warning) throughout the
0.x series. The old one is used unless the stack pins Terragrunt ≥ 1.0 (``tool_version``) or sets
the option ``terragrunt_cli=redesign``. The option ``terraform_binary`` (``tofu``/``terraform``)
chooses what Terragrunt runs; by default Terragrunt picks. Terragrunt initialises units itself.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from backend.runs.plandiff import PLAN_SET_FORMAT, PlanFormatError, count_actions, has_changes
from runner.tools.base import PlanOutcome, Step, ToolContext, ToolError
from runner.tools.opentofu import ENV as TF_ENV

__all__ = [
    "PLANS_ARCHIVE",
    "PLANS_DIR",
    "TerragruntAdapter",
    "pack_plans",
    "unpack_plans",
    "uses_redesigned_cli",
]

BINARY = "terragrunt"
INSTALL_HINT = (
    "install Terragrunt (https://terragrunt.gruntwork.io/docs/getting-started/install/) "
    "and OpenTofu or Terraform, or use a runner image that has them"
)
PLANS_DIR = "terragrunt-plans"  # under scratch: what `run-all plan` writes
APPLY_DIR = "terragrunt-apply-plans"  # under scratch: the stored plans, unpacked for apply
PLANS_ARCHIVE = "terragrunt-plans.tar"
PLAN_NAME = "tfplan.tfplan"
JSON_NAME = "tfplan.json"
ENV = dict(TF_ENV)  # Terragrunt passes these on to tofu/terraform

_MAJOR = re.compile(r"^v?(\d+)")


def uses_redesigned_cli(ctx: ToolContext) -> bool:
    choice = (ctx.options.get("terragrunt_cli") or "").strip().lower()
    if choice in ("redesign", "new", "v1"):
        return True
    if choice in ("legacy", "old", "run-all"):
        return False
    match = _MAJOR.match((ctx.tool_version or "").strip())
    return bool(match) and int(match.group(1)) >= 1


def _command(ctx: ToolContext, command: str, out_flags: list[str]) -> list[str]:
    """`terragrunt run-all <command> ...` in the stack's CLI spelling; tofu's own flags last."""
    tf_binary = ctx.options.get("terraform_binary") or ""
    if uses_redesigned_cli(ctx):
        argv = [BINARY, "run", "--all", command, "--non-interactive"]
        argv += [
            "--" + f.removeprefix("--terragrunt-") if f.startswith("--terragrunt-") else f for f in out_flags
        ]
        if tf_binary:
            argv += ["--tf-path", tf_binary]
    else:
        argv = [BINARY, "run-all", command, "--terragrunt-non-interactive", *out_flags]
        if tf_binary:
            argv += ["--terragrunt-tfpath", tf_binary]
    return [*argv, "-input=false"]


def pack_plans(plans_dir: Path, archive: Path) -> list[str]:
    """Tar every unit's binary plan under ``plans_dir``; returns the unit paths, sorted."""
    units = sorted(p.parent.relative_to(plans_dir).as_posix() for p in plans_dir.rglob(PLAN_NAME))
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for unit in units:
            data = (plans_dir / unit / PLAN_NAME).read_bytes()
            info = tarfile.TarInfo(f"{unit}/{PLAN_NAME}" if unit != "." else PLAN_NAME)
            info.size, info.mtime, info.mode = len(data), 0, 0o600
            tar.addfile(info, io.BytesIO(data))
    return units


def unpack_plans(archive: Path, into: Path) -> None:
    """Unpack a ``pack_plans`` archive into an empty ``into`` (refusing anything but plans)."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if not member.isfile() or name.name != PLAN_NAME or name.is_absolute() or ".." in name.parts:
                    raise ToolError(
                        f"the stored Terragrunt plan archive holds an unexpected entry: {member.name}"
                    )
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ToolError(f"the stored Terragrunt plan archive cannot be unpacked: {exc}") from None


class TerragruntAdapter:
    name = "terragrunt"
    binary = BINARY
    install_hint = INSTALL_HINT

    def plan_steps(self, ctx: ToolContext) -> list[Step]:
        out = str(ctx.scratch / PLANS_DIR)
        argv = _command(ctx, "plan", ["--terragrunt-out-dir", out, "--terragrunt-json-out-dir", out])
        if ctx.run_type == "destroy":
            argv.append("-destroy")
        return [Step("plan", argv, env=dict(ENV))]

    def read_plan(self, ctx: ToolContext, plan_log: list[str]) -> PlanOutcome:
        plans_dir = ctx.scratch / PLANS_DIR
        documents = sorted(plans_dir.rglob(JSON_NAME)) if plans_dir.is_dir() else []
        if not documents:
            raise ToolError(
                f"terragrunt wrote no unit plans under {PLANS_DIR}/: are there terragrunt.hcl units in "
                "the project directory, and is Terragrunt recent enough for --terragrunt-out-dir and "
                "--terragrunt-json-out-dir?"
            )
        units: dict[str, dict] = {}
        for path in documents:
            unit = path.parent.relative_to(plans_dir).as_posix()
            if not (path.parent / PLAN_NAME).is_file():
                raise ToolError(f"terragrunt wrote a JSON plan but no binary plan for unit {unit}")
            try:
                units[unit] = json.loads(path.read_bytes())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ToolError(f"the plan JSON of unit {unit} is not valid JSON ({exc})") from None
        plan_set = {"format": PLAN_SET_FORMAT, "tool": "terragrunt", "units": units}
        try:
            summary = count_actions(plan_set)
            changes = has_changes(plan_set)
        except PlanFormatError as exc:
            raise ToolError(f"terragrunt produced an unexpected plan: {exc}") from None
        archive = ctx.scratch / PLANS_ARCHIVE
        pack_plans(plans_dir, archive)
        return PlanOutcome(
            summary={**summary, "units": len(units)},
            has_changes=changes,
            plan_json=json.dumps(plan_set, separators=(",", ":")).encode(),
            plan_file=archive,
        )

    def apply_steps(self, ctx: ToolContext, plan_file: Path | None) -> list[Step]:
        if plan_file is None:
            raise ToolError(
                "terragrunt apply needs the saved unit plans from the plan phase, and there are none"
            )
        into = ctx.scratch / APPLY_DIR
        unpack_plans(plan_file, into)
        return [Step("apply", _command(ctx, "apply", ["--terragrunt-out-dir", str(into)]), env=dict(ENV))]
