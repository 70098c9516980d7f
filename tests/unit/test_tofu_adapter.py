"""The OpenTofu/Terraform adapter: its commands, reading recorded plans, and — whenever `tofu` or
`terraform` is on PATH — a real init/plan/show/apply/destroy through the local executor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.runs import plandiff
from runner.executors import local
from runner.executors.base import Phase
from runner.tools import adapter_for
from runner.tools.base import Step, ToolContext, ToolError, not_found_message
from runner.tools.opentofu import ENV, PLAN_FILE, PLAN_JSON, OpenTofuAdapter
from tests.aio import run_async

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tofu"


def context(tmp_path: Path, run_type: str = "tracked", tool: str = "opentofu") -> ToolContext:
    project, scratch = tmp_path / "repo", tmp_path / "scratch"
    project.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    return ToolContext(project_dir=project, scratch=scratch, run_type=run_type, tool=tool)


def recorded(ctx: ToolContext, fixture: str) -> Path:
    """Leave what the plan and show steps would have left in scratch."""
    (ctx.scratch / PLAN_FILE).write_bytes(b"PK\x03\x04 binary plan")
    shutil.copy(FIXTURES / fixture, ctx.scratch / PLAN_JSON)
    return ctx.scratch / PLAN_FILE


# --- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tool", "binary"), [("opentofu", "tofu"), ("terraform", "terraform")])
def test_the_tool_picks_the_binary(tmp_path, tool, binary):
    adapter = adapter_for(tool)
    assert isinstance(adapter, OpenTofuAdapter)
    assert adapter.binary == binary and adapter.name == tool
    ctx = context(tmp_path, tool=tool)
    steps = [*adapter.plan_steps(ctx), *adapter.apply_steps(ctx, ctx.scratch / PLAN_FILE)]
    assert {s.argv[0] for s in steps} == {binary}
    assert f"{binary} not found on PATH: install " in not_found_message(adapter, "on PATH")
    assert ("OpenTofu" if tool == "opentofu" else "Terraform") in adapter.install_hint


@pytest.mark.parametrize("run_type", ["tracked", "proposed", "drift"])
def test_plan_steps_for_ordinary_plans(tmp_path, run_type):
    ctx = context(tmp_path, run_type)
    init, plan, show = OpenTofuAdapter().plan_steps(ctx)
    plan_file = str(ctx.scratch / PLAN_FILE)
    assert (init.name, init.argv) == ("init", ["tofu", "init", "-input=false"])
    # drift is an ordinary (refreshing) plan whose changes get flagged, not -refresh-only
    assert (plan.name, plan.argv) == ("plan", ["tofu", "plan", "-input=false", "-out", plan_file])
    assert (show.name, show.argv) == ("show", ["tofu", "show", "-json", plan_file])
    assert show.stdout_file == ctx.scratch / PLAN_JSON  # the JSON never reaches the log
    assert init.stdout_file is None and plan.stdout_file is None
    for step in (init, plan, show):
        assert step.env == {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}
        assert "-no-color" not in step.argv


def test_destroy_plans_with_destroy(tmp_path):
    ctx = context(tmp_path, "destroy", tool="terraform")
    _, plan, _ = OpenTofuAdapter("terraform").plan_steps(ctx)
    assert plan.argv == [
        "terraform",
        "plan",
        "-input=false",
        "-out",
        str(ctx.scratch / PLAN_FILE),
        "-destroy",
    ]


def test_apply_applies_the_saved_plan(tmp_path):
    ctx = context(tmp_path)
    restored = tmp_path / "restored.tfplan"
    init, apply = OpenTofuAdapter().apply_steps(ctx, restored)
    assert init.argv == ["tofu", "init", "-input=false"]
    assert (apply.name, apply.argv) == ("apply", ["tofu", "apply", "-input=false", str(restored)])
    assert apply.env == ENV and apply.stdout_file is None
    with pytest.raises(ToolError, match="needs the saved plan"):
        OpenTofuAdapter().apply_steps(ctx, None)


def test_steps_do_not_share_env_dicts(tmp_path):
    steps = OpenTofuAdapter().plan_steps(context(tmp_path))
    steps[0].env["X"] = "1"
    assert "X" not in steps[1].env and "X" not in ENV


def test_other_tools_are_refused(tmp_path):
    with pytest.raises(ToolError, match="opentofu or terraform, not pulumi"):
        OpenTofuAdapter("pulumi")
    with pytest.raises(ToolError, match="not pulumi"):
        OpenTofuAdapter().plan_steps(context(tmp_path, tool="pulumi"))
    with pytest.raises(ToolError, match="cdktf adapter is not available"):
        adapter_for("cdktf")


# --- reading the plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "summary", "changes"),
    [
        ("plan-changes.json", {"add": 7, "change": 2, "destroy": 3}, True),
        ("plan-destroy.json", {"add": 0, "change": 0, "destroy": 6}, True),
        ("plan-no-changes.json", {"add": 0, "change": 0, "destroy": 0}, False),
    ],
)
def test_read_plan_on_recorded_plans(tmp_path, fixture, summary, changes):
    ctx = context(tmp_path)
    plan_file = recorded(ctx, fixture)
    outcome = OpenTofuAdapter().read_plan(ctx, ["Plan: this line is not parsed"])
    assert outcome.summary == summary
    assert outcome.has_changes is changes
    assert outcome.plan_file == plan_file
    assert outcome.plan_json == (FIXTURES / fixture).read_bytes()  # stored byte for byte


def test_missing_show_output_is_an_error(tmp_path):
    ctx = context(tmp_path)
    (ctx.scratch / PLAN_FILE).write_bytes(b"plan")
    with pytest.raises(ToolError, match=r"tofu show -json wrote no plan\.json: did the show step run\?"):
        OpenTofuAdapter().read_plan(ctx, [])


def test_missing_plan_file_is_an_error(tmp_path):
    ctx = context(tmp_path, tool="terraform")
    shutil.copy(FIXTURES / "plan-changes.json", ctx.scratch / PLAN_JSON)
    with pytest.raises(ToolError, match=r"terraform plan saved no plan file \(plan\.tfplan\)"):
        OpenTofuAdapter("terraform").read_plan(ctx, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format_version": "1.2", "planned_va', "did not print valid JSON"),
        (b"\xff\xfe not utf-8", "did not print valid JSON"),
        (b"", "did not print valid JSON"),
        (b'{"format_version": "1.0", "values": {}}', "unexpected: not a plan JSON document.*state file"),
        (b'{"format_version": "2.0", "planned_values": {}}', "unsupported plan JSON format_version 2.0"),
        (b"[1, 2]", "must be an object"),
    ],
)
def test_bad_show_output_is_a_tool_error(tmp_path, content, message):
    ctx = context(tmp_path)
    (ctx.scratch / PLAN_FILE).write_bytes(b"plan")
    (ctx.scratch / PLAN_JSON).write_bytes(content)
    with pytest.raises(ToolError, match=message):
        OpenTofuAdapter().read_plan(ctx, [])


# --- the real thing -------------------------------------------------------------------------------

CONFIG = """
variable "secret" {
  type      = string
  sensitive = true
  default   = "real-run-secret-value"
}
resource "terraform_data" "x" { input = "a" }
resource "terraform_data" "y" { input = { password = var.secret } }
output "x_out" { value = terraform_data.x.output }
"""


def run_step(step: Step, ctx: ToolContext, workspace: Path) -> list[str]:
    """Run one step through the local executor the way the worker does: stdout_file gets the
    command's stdout, everything else goes to the log."""
    argv = step.argv
    if step.stdout_file is not None:
        argv = ["sh", "-c", 'out="$1"; shift; exec "$@" > "$out"', "sh", str(step.stdout_file), *step.argv]
    lines: list[str] = []
    phase = Phase(argv=argv, cwd=ctx.project_dir, workspace=workspace, env=step.env, timeout=300)
    result = run_async(local.run(phase, lines.append, sandbox=False))
    assert result.exit_code == 0, f"{step.name} failed:\n" + "\n".join(lines)
    return lines


def run_all(steps: list[Step], ctx: ToolContext, workspace: Path) -> list[str]:
    lines: list[str] = []
    for step in steps:
        lines = run_step(step, ctx, workspace)
    return lines  # the last step's log, as the worker hands it to read_plan


@pytest.mark.parametrize(
    "tool",
    [
        pytest.param(
            "opentofu", marks=pytest.mark.skipif(shutil.which("tofu") is None, reason="tofu is not on PATH")
        ),
        pytest.param(
            "terraform",
            marks=pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
        ),
    ],
)
def test_real_plan_apply_and_destroy(tmp_path, tool):
    ctx = context(tmp_path, tool=tool)
    (ctx.project_dir / "main.tf").write_text(CONFIG)
    adapter = adapter_for(tool)

    log = run_all(adapter.plan_steps(ctx), ctx, tmp_path)
    assert not any('"format_version"' in line for line in log)  # show's JSON went to the file
    outcome = adapter.read_plan(ctx, log)
    assert outcome.summary == {"add": 2, "change": 0, "destroy": 0} and outcome.has_changes
    assert outcome.plan_file == ctx.scratch / PLAN_FILE and outcome.plan_file.stat().st_size > 0
    plan = json.loads(outcome.plan_json)
    diff = plandiff.build_diff(plan)
    assert [r["address"] for r in diff["groups"][0]["resources"]] == ["terraform_data.x", "terraform_data.y"]
    assert "real-run-secret-value" in outcome.plan_json.decode()  # stored as the tool wrote it ...
    assert "real-run-secret-value" not in json.dumps(diff)  # ... and never shown
    assert "real-run-secret-value" not in json.dumps(plandiff.redact_plan(plan))

    # apply the plan as restored from the object store, at another path
    restored = ctx.scratch / "restored.tfplan"
    shutil.copy(outcome.plan_file, restored)
    (ctx.scratch / PLAN_FILE).unlink()
    run_all(adapter.apply_steps(ctx, restored), ctx, tmp_path)
    state = json.loads((ctx.project_dir / "terraform.tfstate").read_text())
    assert sorted(r["name"] for r in state["resources"]) == ["x", "y"]
    assert state["outputs"]["x_out"]["value"] == "a"

    log = run_all(adapter.plan_steps(ctx), ctx, tmp_path)
    again = adapter.read_plan(ctx, log)
    assert again.summary == {"add": 0, "change": 0, "destroy": 0} and not again.has_changes

    destroy = context(tmp_path, "destroy", tool=tool)
    log = run_all(adapter.plan_steps(destroy), destroy, tmp_path)
    planned = adapter.read_plan(destroy, log)
    assert planned.summary == {"add": 0, "change": 0, "destroy": 2} and planned.has_changes
    run_all(adapter.apply_steps(destroy, planned.plan_file), destroy, tmp_path)
    state = json.loads((ctx.project_dir / "terraform.tfstate").read_text())
    assert state["resources"] == []
