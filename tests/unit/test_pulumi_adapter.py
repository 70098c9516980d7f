"""The Pulumi adapter: its commands per run type, the summary from preview digests, and — when
`pulumi` is on PATH — a real preview/up against a local file backend through the local executor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.executors import local
from runner.executors.base import Phase
from runner.tools import adapter_for
from runner.tools.base import Step, ToolContext, ToolError
from runner.tools.pulumi import PREVIEW_JSON, PulumiAdapter, summarize_preview
from tests.aio import run_async

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pulumi"
ENV = {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_SKIP_CONFIRMATIONS": "true"}


def context(tmp_path: Path, run_type: str = "tracked", **options: str) -> ToolContext:
    project, scratch = tmp_path / "repo", tmp_path / "scratch"
    project.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    return ToolContext(
        project_dir=project, scratch=scratch, run_type=run_type, tool="pulumi", options=options
    )


# --- commands -------------------------------------------------------------------------------------


def test_registry_and_not_found_hint():
    adapter = adapter_for("pulumi")
    assert isinstance(adapter, PulumiAdapter)
    assert adapter.binary == "pulumi" and "Pulumi CLI" in adapter.install_hint


@pytest.mark.parametrize("run_type", ["tracked", "proposed"])
def test_plan_previews_once_for_the_log_and_once_as_json(tmp_path, run_type):
    ctx = context(tmp_path, run_type)
    readable, digest = PulumiAdapter().plan_steps(ctx)
    assert (readable.name, readable.argv) == (
        "preview",
        ["pulumi", "preview", "--non-interactive", "--diff", "--color", "always"],
    )
    assert readable.stdout_file is None
    assert (digest.name, digest.argv) == (
        "preview-json",
        ["pulumi", "preview", "--non-interactive", "--json"],
    )
    assert digest.stdout_file == ctx.scratch / PREVIEW_JSON
    assert readable.env == ENV and digest.env == ENV


def test_the_stack_option_selects_the_stack_everywhere(tmp_path):
    ctx = context(tmp_path, pulumi_stack="acme/prod")
    steps = [*PulumiAdapter().plan_steps(ctx), *PulumiAdapter().apply_steps(ctx, None)]
    for step in steps:
        i = step.argv.index("--stack")
        assert step.argv[i + 1] == "acme/prod"
    blank = context(tmp_path, pulumi_stack="  ")
    assert all("--stack" not in s.argv for s in PulumiAdapter().plan_steps(blank))


def test_drift_previews_with_refresh(tmp_path):
    steps = PulumiAdapter().plan_steps(context(tmp_path, "drift"))
    assert all("--refresh" in s.argv for s in steps)
    assert all("--refresh" not in s.argv for s in PulumiAdapter().plan_steps(context(tmp_path)))


def test_destroy_previews_and_applies_a_destroy(tmp_path):
    ctx = context(tmp_path, "destroy")
    readable, digest = PulumiAdapter().plan_steps(ctx)
    assert readable.argv[:4] == ["pulumi", "destroy", "--preview-only", "--non-interactive"]
    assert digest.argv == ["pulumi", "destroy", "--preview-only", "--non-interactive", "--json"]
    [apply] = PulumiAdapter().apply_steps(ctx, None)
    assert apply.argv == [
        "pulumi",
        "destroy",
        "--yes",
        "--non-interactive",
        "--skip-preview",
        "--color",
        "always",
    ]


def test_apply_is_up_without_a_plan_file(tmp_path):
    [apply] = PulumiAdapter().apply_steps(context(tmp_path), None)
    assert (apply.name, apply.argv) == (
        "up",
        ["pulumi", "up", "--yes", "--non-interactive", "--skip-preview", "--color", "always"],
    )
    assert apply.env == ENV


# --- reading the preview --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "summary", "changes"),
    [
        (
            "preview-changes.json",
            {"add": 2, "change": 1, "destroy": 2, "replace": 1, "import": 0, "same": 3},
            True,
        ),
        (
            "preview-no-changes.json",
            {"add": 0, "change": 0, "destroy": 0, "replace": 0, "import": 0, "same": 5},
            False,
        ),
        (
            "preview-destroy.json",
            {"add": 0, "change": 0, "destroy": 5, "replace": 0, "import": 0, "same": 0},
            True,
        ),
    ],
)
def test_read_plan_on_recorded_previews(tmp_path, fixture, summary, changes):
    ctx = context(tmp_path)
    shutil.copy(FIXTURES / fixture, ctx.scratch / PREVIEW_JSON)
    outcome = PulumiAdapter().read_plan(ctx, [])
    assert outcome.summary == summary
    assert outcome.has_changes is changes
    assert outcome.plan_file is None  # Pulumi has no saved plan; up plans again
    assert outcome.plan_json == (FIXTURES / fixture).read_bytes()


@pytest.mark.parametrize(
    ("ops", "changes"),
    [
        ({}, False),
        ({"same": 2, "read": 1, "refresh": 1}, False),
        ({"import": 1}, True),
        ({"same": 1, "update": 1}, True),
    ],
)
def test_which_operations_are_changes(ops, changes):
    summary, has = summarize_preview({"changeSummary": ops})
    assert has is changes
    assert summary["import"] == ops.get("import", 0)


def test_a_digest_without_a_change_summary_counts_nothing():
    assert summarize_preview({"steps": []}) == (
        {"add": 0, "change": 0, "destroy": 0, "replace": 0, "import": 0, "same": 0},
        False,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"changeSummary": {"create": 1', "did not print valid JSON"),
        (b"", "did not print valid JSON"),
        (b'["create"]', "printed a list, not a JSON object"),
        (b'{"changeSummary": {"create": "1"}}', "not a map of counts"),
        (b'{"changeSummary": [1]}', "not a map of counts"),
    ],
)
def test_bad_preview_output_is_a_tool_error(tmp_path, content, message):
    ctx = context(tmp_path)
    (ctx.scratch / PREVIEW_JSON).write_bytes(content)
    with pytest.raises(ToolError, match=message):
        PulumiAdapter().read_plan(ctx, [])


def test_missing_preview_output_is_a_tool_error(tmp_path):
    with pytest.raises(ToolError, match=r"wrote no preview\.json: did the preview-json step run\?"):
        PulumiAdapter().read_plan(context(tmp_path), [])


# --- the real thing -------------------------------------------------------------------------------


def run_step(step: Step, ctx: ToolContext, workspace: Path, env: dict[str, str]) -> list[str]:
    argv = step.argv
    if step.stdout_file is not None:
        argv = ["sh", "-c", 'out="$1"; shift; exec "$@" > "$out"', "sh", str(step.stdout_file), *step.argv]
    lines: list[str] = []
    phase = Phase(argv=argv, cwd=ctx.project_dir, workspace=workspace, env={**step.env, **env}, timeout=300)
    result = run_async(local.run(phase, lines.append, sandbox=False))
    assert result.exit_code == 0, f"{step.name} failed:\n" + "\n".join(lines)
    return lines


@pytest.mark.skipif(shutil.which("pulumi") is None, reason="pulumi is not on PATH")
def test_real_preview_and_up_on_a_local_backend(tmp_path):
    shutil.copytree(FIXTURES / "project", tmp_path / "repo")
    ctx = context(tmp_path, pulumi_stack="dev")
    backend = tmp_path / "backend"
    backend.mkdir()
    # what the stack's environment variables would provide
    env = {"PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE": "crucible-test"}
    run_step(Step("stack-init", ["pulumi", "stack", "init", "dev", "--non-interactive"]), ctx, tmp_path, env)
    adapter = PulumiAdapter()

    log: list[str] = []
    for step in adapter.plan_steps(ctx):
        log = run_step(step, ctx, tmp_path, env)
    outcome = adapter.read_plan(ctx, log)
    assert outcome.has_changes and outcome.summary["add"] == 1  # the stack resource itself
    assert json.loads(outcome.plan_json)["changeSummary"]["create"] == 1

    for step in adapter.apply_steps(ctx, outcome.plan_file):
        run_step(step, ctx, tmp_path, env)

    for step in adapter.plan_steps(ctx):
        log = run_step(step, ctx, tmp_path, env)
    again = adapter.read_plan(ctx, log)
    assert not again.has_changes and again.summary["same"] >= 1
