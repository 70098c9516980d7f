"""The Terragrunt adapter: its commands in both CLI spellings, the plan set read from the unit plans
Terragrunt leaves, the stored plan archive, and — when `terragrunt` and `tofu`/`terraform` are on
PATH — a real run-all plan/apply through the local executor."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from backend.runs import plandiff
from runner.executors import local
from runner.executors.base import Phase
from runner.tools import adapter_for
from runner.tools.base import ToolContext, ToolError
from runner.tools.terragrunt import (
    APPLY_DIR,
    PLANS_ARCHIVE,
    PLANS_DIR,
    TerragruntAdapter,
    pack_plans,
    unpack_plans,
)
from tests.aio import run_async

FIXTURES = Path(__file__).parents[1] / "fixtures"
TF_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}


def context(
    tmp_path: Path, run_type: str = "tracked", version: str | None = None, **options: str
) -> ToolContext:
    project, scratch = tmp_path / "repo", tmp_path / "scratch"
    project.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    return ToolContext(
        project_dir=project,
        scratch=scratch,
        run_type=run_type,
        tool="terragrunt",
        tool_version=version,
        options=options,
    )


def lay_out(ctx: ToolContext, units: dict[str, str]) -> dict[str, bytes]:
    """What `run-all plan` with both out dirs leaves: per unit a binary plan and its JSON."""
    binaries = {}
    for unit, fixture in units.items():
        where = ctx.scratch / PLANS_DIR / unit
        where.mkdir(parents=True)
        shutil.copy(FIXTURES / "tofu" / fixture, where / "tfplan.json")
        binaries[unit] = f"binary plan of {unit}".encode() + os.urandom(16)
        (where / "tfplan.tfplan").write_bytes(binaries[unit])
    return binaries


# --- commands -------------------------------------------------------------------------------------


def test_registry_and_not_found_hint():
    adapter = adapter_for("terragrunt")
    assert isinstance(adapter, TerragruntAdapter)
    assert adapter.binary == "terragrunt" and "Terragrunt" in adapter.install_hint


def test_plan_is_one_run_all_plan_that_saves_every_units_plan(tmp_path):
    ctx = context(tmp_path)
    [plan] = TerragruntAdapter().plan_steps(ctx)
    out = str(ctx.scratch / PLANS_DIR)
    assert plan.name == "plan"
    assert plan.argv == [
        "terragrunt", "run-all", "plan", "--terragrunt-non-interactive",
        "--terragrunt-out-dir", out, "--terragrunt-json-out-dir", out, "-input=false",
    ]  # fmt: skip
    assert plan.env == TF_ENV and plan.stdout_file is None
    [destroy] = TerragruntAdapter().plan_steps(context(tmp_path, "destroy"))
    assert destroy.argv == [*plan.argv, "-destroy"]
    [drift] = TerragruntAdapter().plan_steps(context(tmp_path, "drift"))
    assert drift.argv == plan.argv


def test_the_terraform_binary_option(tmp_path):
    [plan] = TerragruntAdapter().plan_steps(context(tmp_path, terraform_binary="tofu"))
    assert plan.argv[-3:] == ["--terragrunt-tfpath", "tofu", "-input=false"]


@pytest.mark.parametrize(
    ("version", "options", "redesigned"),
    [
        (None, {}, False),
        ("0.68.1", {}, False),
        ("v0.99.0", {}, False),
        ("1.0.0", {}, True),
        ("v1.2", {}, True),
        ("0.77.0", {"terragrunt_cli": "redesign"}, True),
        ("1.0.0", {"terragrunt_cli": "legacy"}, False),
    ],
)
def test_cli_spelling_follows_the_pinned_version_or_the_option(tmp_path, version, options, redesigned):
    ctx = context(tmp_path, version=version, terraform_binary="terraform", **options)
    [plan] = TerragruntAdapter().plan_steps(ctx)
    out = str(ctx.scratch / PLANS_DIR)
    if redesigned:
        assert plan.argv == [
            "terragrunt", "run", "--all", "plan", "--non-interactive", "--out-dir", out,
            "--json-out-dir", out, "--tf-path", "terraform", "-input=false",
        ]  # fmt: skip
    else:
        assert plan.argv[:4] == ["terragrunt", "run-all", "plan", "--terragrunt-non-interactive"]
        assert "--terragrunt-tfpath" in plan.argv and "--tf-path" not in plan.argv


# --- reading the plans ----------------------------------------------------------------------------


def test_read_plan_sums_the_units_and_stores_a_plan_set(tmp_path):
    ctx = context(tmp_path)
    lay_out(ctx, {"app": "plan-changes.json", "net/vpc": "plan-destroy.json"})
    outcome = TerragruntAdapter().read_plan(ctx, [])
    assert outcome.summary == {"add": 7, "change": 2, "destroy": 9, "units": 2}
    assert outcome.has_changes
    plan_set = json.loads(outcome.plan_json)
    assert plan_set["format"] == plandiff.PLAN_SET_FORMAT and plan_set["tool"] == "terragrunt"
    assert plan_set["units"]["app"] == json.loads((FIXTURES / "tofu" / "plan-changes.json").read_text())
    diff = plandiff.build_diff(plan_set)
    assert {r["unit"] for g in diff["groups"] for r in g["resources"]} == {"app", "net/vpc"}
    assert outcome.plan_file == ctx.scratch / PLANS_ARCHIVE


def test_units_without_changes(tmp_path):
    ctx = context(tmp_path)
    lay_out(ctx, {"app": "plan-no-changes.json", "net/vpc": "plan-no-changes.json"})
    outcome = TerragruntAdapter().read_plan(ctx, [])
    assert outcome.summary == {"add": 0, "change": 0, "destroy": 0, "units": 2} and not outcome.has_changes


def test_the_plan_archive_holds_each_units_binary_plan_and_nothing_else(tmp_path):
    ctx = context(tmp_path)
    binaries = lay_out(ctx, {"app": "plan-changes.json", "net/vpc": "plan-destroy.json"})
    outcome = TerragruntAdapter().read_plan(ctx, [])
    with tarfile.open(outcome.plan_file) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members == {"app/tfplan.tfplan": binaries["app"], "net/vpc/tfplan.tfplan": binaries["net/vpc"]}


def test_the_archive_depends_only_on_the_plans(tmp_path):
    ctx = context(tmp_path)
    lay_out(ctx, {"b": "plan-changes.json", "a": "plan-destroy.json"})
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    assert pack_plans(ctx.scratch / PLANS_DIR, first) == ["a", "b"]
    for path in (ctx.scratch / PLANS_DIR).rglob("*"):
        os.utime(path, (1, 1))
    pack_plans(ctx.scratch / PLANS_DIR, second)
    assert first.read_bytes() == second.read_bytes()


def test_apply_unpacks_the_stored_plans_and_applies_them(tmp_path):
    ctx = context(tmp_path)
    binaries = lay_out(ctx, {"app": "plan-changes.json", "net/vpc": "plan-destroy.json"})
    outcome = TerragruntAdapter().read_plan(ctx, [])
    stored = tmp_path / "restored.tar"  # as restored from the object store
    shutil.copy(outcome.plan_file, stored)
    shutil.rmtree(ctx.scratch)
    ctx.scratch.mkdir()
    [apply] = TerragruntAdapter().apply_steps(ctx, stored)
    into = ctx.scratch / APPLY_DIR
    assert apply.name == "apply"
    assert apply.argv == [
        "terragrunt", "run-all", "apply", "--terragrunt-non-interactive", "--terragrunt-out-dir", str(into),
        "-input=false",
    ]  # fmt: skip
    assert (into / "app" / "tfplan.tfplan").read_bytes() == binaries["app"]
    assert (into / "net" / "vpc" / "tfplan.tfplan").read_bytes() == binaries["net/vpc"]
    assert not list(into.rglob("*.json"))
    # a second apply attempt starts from a clean directory
    (into / "stale").mkdir()
    TerragruntAdapter().apply_steps(ctx, stored)
    assert not (into / "stale").exists()


def _archive(path: Path, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.type = len(data), kind
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name", ["../escape/tfplan.tfplan", "/abs/tfplan.tfplan", "app/evil.sh", "app/tfplan.json"]
)
def test_a_tampered_archive_is_refused_and_writes_nothing_outside(tmp_path, name):
    archive = _archive(tmp_path / "bad.tar", name)
    with pytest.raises(ToolError, match="Terragrunt plan archive"):
        unpack_plans(archive, tmp_path / "into")
    assert not (tmp_path / "escape").exists() and not Path("/abs/tfplan.tfplan").exists()
    assert not list((tmp_path / "into").rglob("*"))


def test_a_corrupt_archive_is_a_tool_error(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ToolError, match="cannot be unpacked"):
        unpack_plans(tmp_path / "junk.tar", tmp_path / "into")


def test_missing_or_broken_plans_are_tool_errors(tmp_path):
    ctx = context(tmp_path)
    adapter = TerragruntAdapter()
    with pytest.raises(ToolError, match="wrote no unit plans under terragrunt-plans/"):
        adapter.read_plan(ctx, [])
    lay_out(ctx, {"app": "plan-changes.json"})
    (ctx.scratch / PLANS_DIR / "app" / "tfplan.tfplan").unlink()
    with pytest.raises(ToolError, match="no binary plan for unit app"):
        adapter.read_plan(ctx, [])
    (ctx.scratch / PLANS_DIR / "app" / "tfplan.tfplan").write_bytes(b"plan")
    (ctx.scratch / PLANS_DIR / "app" / "tfplan.json").write_text('{"format_version": ')
    with pytest.raises(ToolError, match="plan JSON of unit app is not valid JSON"):
        adapter.read_plan(ctx, [])
    (ctx.scratch / PLANS_DIR / "app" / "tfplan.json").write_text('{"format_version": "1.0", "values": {}}')
    with pytest.raises(ToolError, match="unit 'app': not a plan JSON document"):
        adapter.read_plan(ctx, [])
    with pytest.raises(ToolError, match="needs the saved unit plans"):
        adapter.apply_steps(ctx, None)


# --- the real thing -------------------------------------------------------------------------------

TF_BINARY = next((b for b in ("tofu", "terraform") if shutil.which(b)), None)


def run_step(step, ctx: ToolContext, workspace: Path) -> list[str]:
    lines: list[str] = []
    phase = Phase(argv=step.argv, cwd=ctx.project_dir, workspace=workspace, env=step.env, timeout=300)
    result = run_async(local.run(phase, lines.append, sandbox=False))
    assert result.exit_code == 0, f"{step.name} failed:\n" + "\n".join(lines)
    return lines


@pytest.mark.skipif(shutil.which("terragrunt") is None, reason="terragrunt is not on PATH")
@pytest.mark.skipif(not TF_BINARY, reason="neither tofu nor terraform is on PATH")
def test_real_run_all_plan_and_apply(tmp_path):
    shutil.copytree(FIXTURES / "terragrunt" / "project", tmp_path / "repo")
    ctx = context(tmp_path, terraform_binary=TF_BINARY)
    adapter = TerragruntAdapter()
    [plan] = adapter.plan_steps(ctx)
    outcome = adapter.read_plan(ctx, run_step(plan, ctx, tmp_path))
    assert outcome.summary == {"add": 2, "change": 0, "destroy": 0, "units": 2} and outcome.has_changes
    assert set(json.loads(outcome.plan_json)["units"]) == {"app", "net/vpc"}

    stored = tmp_path / "stored.tar"
    shutil.copy(outcome.plan_file, stored)
    shutil.rmtree(ctx.scratch / PLANS_DIR)
    [apply] = adapter.apply_steps(ctx, stored)
    run_step(apply, ctx, tmp_path)
    for unit, name in (("app", "app"), ("net/vpc", "vpc")):
        state = json.loads((ctx.project_dir / unit / "terraform.tfstate").read_text())
        assert [r["name"] for r in state["resources"]] == [name]

    shutil.rmtree(ctx.scratch / PLANS_DIR)
    [plan] = adapter.plan_steps(ctx)
    again = adapter.read_plan(ctx, run_step(plan, ctx, tmp_path))
    assert not again.has_changes
