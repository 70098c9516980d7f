"""Backtesting (POST /policies/backtest) on real recorded plans of runs of two stacks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from policy_support import PLAN_CHANGES, PLAN_DESTROY, PLAN_NO_CHANGES, planned_run
from starlette.testclient import TestClient

from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.policies import backtest, library
from backend.policies.engine import default_engine
from backend.policies.models import PolicyType
from backend.policies.schemas import BacktestRequest
from backend.runs import lifecycle as lc
from backend.runs.models import Run
from backend.runs.state import apply_state, state_of
from backend.timeutil import utcnow

BACKTEST = "/api/v1/policies/backtest"
POLICIES = "/api/v1/policies"

DENY_DELETES = """package crucible

deny contains msg if {
\tsome rc in input.resource_changes
\t"delete" in rc.change.actions
\tmsg := sprintf("%s would be deleted", [rc.address])
}
"""

# Line 4: an assignment without a right-hand side.
BROKEN = """package crucible

deny contains msg if {
\tmsg :=
}
"""

# Divides by the destroy count: an evaluation error on every run that destroys nothing.
DIVIDES = """package crucible

deny contains msg if {
\tx := 12 / input.crucible.counts.destroy
\tmsg := sprintf("ratio %v", [x])
}
"""

# Too slow for any time limit (as tests/unit/test_policy_engines.py's ENDLESS).
ENDLESS = """package crucible

deny contains "never" if {
\tsome i in numbers.range(1, 100000)
\tsome j in numbers.range(1, 100000)
\ti == j + 1000000
}
"""

APPROVE_ADDS = """package crucible

require_approval if input.crucible.counts.add > 5

required_approvals := 2 if input.crucible.counts.add > 5
"""


@dataclass
class History:
    a: str  # stack ids
    b: str
    a_changes: str  # run ids, oldest first
    a_no_changes: str
    b_destroy: str
    b_no_changes: str
    a_ansible_like: str
    b_changes: str

    @property
    def newest_first(self) -> list[str]:
        """The runs with a plan, newest first."""
        return [self.b_changes, self.b_no_changes, self.b_destroy, self.a_no_changes, self.a_changes]

    @property
    def deleting(self) -> set[str]:
        return {self.a_changes, self.b_destroy, self.b_changes}


@pytest.fixture
def history(world) -> History:
    a = world.stack(name="network", labels=["env:prod"])["id"]
    b = world.stack(name="database")["id"]
    t0 = utcnow() - timedelta(hours=2)
    at = iter(t0 + timedelta(minutes=n) for n in range(100))
    ctx = world.ctx
    return History(
        a=a,
        b=b,
        a_changes=planned_run(ctx, a, PLAN_CHANGES, at=next(at)),
        a_no_changes=planned_run(ctx, a, PLAN_NO_CHANGES, run_type="proposed", at=next(at)),
        b_destroy=planned_run(ctx, b, PLAN_DESTROY, run_type="destroy", at=next(at)),
        b_no_changes=planned_run(ctx, b, PLAN_NO_CHANGES, at=next(at)),
        a_ansible_like=planned_run(ctx, a, None, run_type="proposed", at=next(at)),
        b_changes=planned_run(ctx, b, PLAN_CHANGES, run_type="proposed", at=next(at)),
    )


def _walk(ctx, run_id: str, *steps) -> None:
    """Move a run along the lifecycle, as the workers' reports would."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        state = state_of(run)
        for step in steps:
            state = step(state, utcnow())
        apply_state(run, state, utcnow())
        s.add(run)


def applied_run(ctx, stack_id: str, fixture: str, *, at=None, fails: bool = False) -> str:
    """A tracked run that planned ``fixture``, was confirmed and applied (or failed while
    applying, as a pre_apply deny makes it)."""
    run_id = planned_run(ctx, stack_id, fixture, at=at, keep_holding=True)
    end = (lambda st, now: lc.fail(st, now, "denied at pre_apply")) if fails else lc.finish_applying
    _walk(ctx, run_id, lc.confirm, lc.start_applying, end)
    return run_id


@pytest.fixture
def api(as_actor, member) -> TestClient:
    return as_actor(member)


@pytest.fixture
def admin_api(as_actor, admin) -> TestClient:
    return as_actor(admin)


def _post(api: TestClient, **payload) -> dict:
    response = api.post(BACKTEST, json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def _by_run(result: dict) -> dict[str, dict]:
    return {row["run_id"]: row for row in result["runs"]}


def _install_no_destroy(admin_api: TestClient, name: str | None = None, **changes) -> dict:
    response = admin_api.post(
        f"{POLICIES}/library/no_destroy_outside_destroy_runs/install", json={"name": name} if name else None
    )
    assert response.status_code == 201, response.text
    policy = response.json()
    if changes:
        response = admin_api.put(f"{POLICIES}/{policy['id']}", json=changes)
        assert response.status_code == 200, response.text
        policy = response.json()
    return policy


# ----------------------------------------------------------------------------- the draft alone


def test_a_draft_that_denies_deletes_flags_exactly_the_runs_whose_plans_delete(api, history):
    result = _post(api, body=DENY_DELETES, type="post_plan")
    assert [row["run_id"] for row in result["runs"]] == history.newest_first
    denied = {row["run_id"] for row in result["runs"] if row["draft"]["outcome"] == "deny"}
    assert denied == history.deleting
    rows = _by_run(result)
    tracked = rows[history.a_changes]
    assert tracked["stack_id"] == history.a and tracked["stack_name"] == "network"
    assert tracked["run_type"] == "tracked" and tracked["run_status"] == "discarded"
    assert len(tracked["commit_sha"]) == 40 and tracked["created_at"].endswith("Z")
    # plan-changes.json deletes one resource and replaces two (both ways round)
    assert tracked["draft"]["deny"] == [
        "terraform_data.blue would be deleted",
        "terraform_data.db would be deleted",
        "terraform_data.gone would be deleted",
    ]
    assert tracked["draft"]["deny_count"] == 3 and tracked["draft"]["error"] is None
    assert rows[history.b_destroy]["draft"]["deny_count"] == 6
    for run_id in (history.a_no_changes, history.b_no_changes):
        assert rows[run_id]["draft"]["outcome"] == "allow" and rows[run_id]["changed"] is False
    assert all(row["current"] is None and row["skipped"] is None for row in result["runs"])
    # Without a saved policy, the baseline is no policy: every deny is a change.
    assert {row["run_id"] for row in result["runs"] if row["changed"]} == history.deleting
    assert result["summary"] == {
        "evaluated": 5,
        "would_deny": 3,
        "would_warn": 0,
        "would_require_approval": 0,
        "errors": 0,
        "runs": 5,
        "skipped": 0,
        "changed": 3,
        "current": None,
    }
    assert result["policy_id"] is None and result["version"] is None and result["stack_ids"] is None
    assert result["type"] == "post_plan" and result["engine"] == "opa-eval" and result["limit"] == 20
    assert result["budget_exceeded"] is False and result["notes"] == []
    assert result["unsupported_builtins"] == []


def test_explicit_stacks_and_limit(api, history):
    only_b = _post(api, body=DENY_DELETES, type="post_plan", stack_ids=[history.b])
    assert [r["run_id"] for r in only_b["runs"]] == [
        history.b_changes,
        history.b_no_changes,
        history.b_destroy,
    ]
    assert only_b["stack_ids"] == [history.b]
    newest = _post(api, body=DENY_DELETES, type="post_plan", limit=2)
    assert [r["run_id"] for r in newest["runs"]] == history.newest_first[:2] and newest["limit"] == 2
    both = _post(
        api, body=DENY_DELETES, type="post_plan", stack_ids=[history.a, history.b, history.a], limit=4
    )
    assert [r["run_id"] for r in both["runs"]] == history.newest_first[:4]
    assert both["stack_ids"] == [history.a, history.b]


# ----------------------------------------------------------------------------- against the current version


def test_comparison_with_the_current_version(api, admin_api, history):
    # The library policy spares destroy runs; the draft denies every delete.
    policy = _install_no_destroy(admin_api)
    assert (
        admin_api.post(f"/api/v1/stacks/{history.a}/policies", json={"policy_id": policy["id"]}).status_code
        == 201
    )

    # By default: the stacks the policy applies to (attached to network only).
    attached = _post(api, body=DENY_DELETES, policy_id=policy["id"])
    assert attached["stack_ids"] == [history.a] and attached["type"] == "post_plan"
    assert attached["policy_id"] == policy["id"] and attached["version"] == 1 and attached["policy_enabled"]
    assert [r["run_id"] for r in attached["runs"]] == [history.a_no_changes, history.a_changes]

    result = _post(api, body=DENY_DELETES, policy_id=policy["id"], stack_ids=[history.a, history.b])
    rows = _by_run(result)
    for run_id in history.newest_first:
        assert rows[run_id]["current"] is not None
    current_denied = {r["run_id"] for r in result["runs"] if r["current"]["outcome"] == "deny"}
    assert current_denied == {history.a_changes, history.b_changes}
    assert rows[history.b_destroy]["current"]["outcome"] == "allow"
    assert rows[history.b_destroy]["draft"]["outcome"] == "deny"
    assert {r["run_id"] for r in result["runs"] if r["changed"]} == {history.b_destroy}
    # Same outcome, other words: not a change of outcome, but the messages differ.
    assert rows[history.a_changes]["changed"] is False and rows[history.a_changes]["messages_changed"] is True
    assert "only destroy runs may delete" in rows[history.a_changes]["current"]["deny"][0]
    summary = result["summary"]
    assert (summary["evaluated"], summary["would_deny"], summary["changed"]) == (5, 3, 1)
    assert summary["current"] == {
        "evaluated": 5,
        "would_deny": 2,
        "would_warn": 0,
        "would_require_approval": 0,
        "errors": 0,
    }

    # The draft identical to the current version changes nothing.
    same = _post(api, body=policy["body"], policy_id=policy["id"], stack_ids=[history.a, history.b])
    assert same["summary"]["changed"] == 0
    assert not any(r["messages_changed"] for r in same["runs"])


def test_default_stacks_follow_where_the_policy_applies(api, admin_api, history, world):
    by_label = _install_no_destroy(admin_api, labels=["env:prod"])
    assert _post(api, body=DENY_DELETES, policy_id=by_label["id"])["stack_ids"] == [history.a]
    everywhere = _install_no_destroy(admin_api, name="everywhere", applies_to_all=True)
    result = _post(api, body=DENY_DELETES, policy_id=everywhere["id"])
    assert result["stack_ids"] is None and len(result["runs"]) == 5  # every stack of the org
    nowhere = _install_no_destroy(admin_api, name="nowhere", enabled=False)
    result = _post(api, body=DENY_DELETES, policy_id=nowhere["id"])
    assert result["stack_ids"] == [] and result["runs"] == [] and result["summary"]["runs"] == 0
    assert result["policy_enabled"] is False and result["version"] == 2
    assert any("applies to no stack" in n for n in result["notes"])
    assert any("is disabled" in n for n in result["notes"])
    # Another organization's runs never count, even for an applies-to-all policy.
    planned_run(world.ctx, world.stack(world.new_org())["id"], PLAN_CHANGES)
    assert len(_post(api, body=DENY_DELETES, policy_id=everywhere["id"])["runs"]) == 5


def test_no_runs_with_plans_yet(api, world):
    stack = world.stack()["id"]
    planned_run(world.ctx, stack, None, run_type="proposed")
    result = _post(api, body=DENY_DELETES, type="post_plan", stack_ids=[stack])
    assert result["runs"] == [] and result["summary"]["evaluated"] == 0
    assert result["notes"] == ["no past run of these stacks has a stored plan yet"]


# ----------------------------------------------------------------------------- types and inputs


def test_approval_drafts_count_approvals_and_pre_plan_drafts_see_no_plan(api, history):
    result = _post(api, body=APPROVE_ADDS, type="approval")
    rows = _by_run(result)
    # plan-changes.json adds 7 resources; the destroy plan adds none.
    assert rows[history.a_changes]["draft"]["outcome"] == "approval"
    assert rows[history.a_changes]["draft"]["required_approvals"] == 2
    assert rows[history.b_destroy]["draft"]["outcome"] == "allow"
    assert result["summary"]["would_require_approval"] == 1 and result["summary"]["would_deny"] == 0
    # Before the plan there are no resource changes (and no counts) to deny.
    pre_plan = _post(api, body=DENY_DELETES, type="pre_plan")
    assert pre_plan["summary"]["evaluated"] == 5 and pre_plan["summary"]["would_deny"] == 0


def test_approval_drafts_skip_the_runs_enforcement_would_not_hold(api, history):
    """Runs evaluate approval policies only when they would apply (runner/job.py): tracked and
    destroy runs whose plan has changes. Plan-only runs and plans without changes are skipped
    with the reason, not counted as approvals that could never have happened."""
    result = _post(api, body=APPROVE_ADDS, type="approval")
    rows = _by_run(result)
    assert {run_id: rows[run_id]["skipped"] for run_id in history.newest_first} == {
        history.b_changes: "not held: plan-only run",  # proposed, and it adds 7
        history.a_no_changes: "not held: plan-only run",
        history.b_no_changes: "not held: no changes",  # tracked
        history.b_destroy: None,
        history.a_changes: None,
    }
    for run_id in (history.b_changes, history.a_no_changes, history.b_no_changes):
        row = rows[run_id]
        assert row["draft"] is None and row["current"] is None and row["changed"] is False
    summary = result["summary"]
    assert (summary["runs"], summary["evaluated"], summary["skipped"]) == (5, 2, 3)
    assert (summary["would_require_approval"], summary["changed"]) == (1, 1)
    assert result["notes"] == [
        "3 of 5 runs were skipped: runs evaluate approval policies only when they would apply "
        "(tracked and destroy runs whose plan has changes)"
    ]
    # The same runs, at post_plan: every one is judged.
    post_plan = _post(api, body=APPROVE_ADDS, type="post_plan")
    assert post_plan["summary"]["skipped"] == 0 and post_plan["notes"] == []


def test_approval_drafts_skip_drift_runs(api, world):
    stack = world.stack()["id"]
    drift = planned_run(world.ctx, stack, PLAN_CHANGES, run_type="drift")
    result = _post(api, body=APPROVE_ADDS, type="approval", stack_ids=[stack])
    assert [(r["run_id"], r["skipped"]) for r in result["runs"]] == [(drift, "not held: plan-only run")]
    assert result["summary"]["evaluated"] == 0 and result["summary"]["would_require_approval"] == 0


def test_pre_apply_drafts_judge_only_runs_that_reached_their_apply(api, world):
    """pre_apply policies are evaluated in the apply phase only: a run that was discarded,
    never confirmed or plan-only never met them."""
    stack = world.stack()["id"]
    t0 = utcnow() - timedelta(hours=1)
    applied = applied_run(world.ctx, stack, PLAN_CHANGES, at=t0)
    failed = applied_run(world.ctx, stack, PLAN_DESTROY, at=t0 + timedelta(minutes=1), fails=True)
    discarded = planned_run(world.ctx, stack, PLAN_CHANGES, at=t0 + timedelta(minutes=2))
    finished = planned_run(world.ctx, stack, PLAN_NO_CHANGES, at=t0 + timedelta(minutes=3))
    proposed = planned_run(world.ctx, stack, PLAN_CHANGES, run_type="proposed", at=t0 + timedelta(minutes=4))
    result = _post(api, body=DENY_DELETES, type="pre_apply", stack_ids=[stack])
    rows = _by_run(result)
    assert [r["run_id"] for r in result["runs"]] == [proposed, finished, discarded, failed, applied]
    for run_id in (proposed, finished, discarded):
        assert rows[run_id]["skipped"] == "never applied" and rows[run_id]["draft"] is None
    assert rows[applied]["draft"]["outcome"] == "deny" and rows[applied]["skipped"] is None
    assert rows[failed]["draft"]["outcome"] == "deny" and rows[failed]["run_status"] == "failed"
    summary = result["summary"]
    assert (summary["evaluated"], summary["skipped"], summary["would_deny"]) == (2, 3, 2)
    assert result["notes"] == [
        "3 of 5 runs were skipped: runs evaluate pre_apply policies only when they reach their apply"
    ]


def test_a_current_version_its_hook_would_not_judge_decides_nothing(api, admin_api, history):
    """A draft whose type differs from the saved policy's: where the saved version's hook would
    not have judged a run, the draft is compared with no policy."""
    response = admin_api.post(f"{POLICIES}/library/approval_above_n_changes/install")
    assert response.status_code == 201, response.text
    saved = response.json()
    result = _post(
        api, body=DENY_DELETES, type="post_plan", policy_id=saved["id"], stack_ids=[history.a, history.b]
    )
    rows = _by_run(result)
    assert all(rows[r]["skipped"] is None and rows[r]["draft"] is not None for r in history.newest_first)
    # b_changes is a proposed run: no approval there, the draft's deny is a change from nothing.
    assert rows[history.b_changes]["current"] is None and rows[history.b_changes]["changed"] is True
    # a_changes is tracked and changes 12 resources: the saved version holds it for one approval.
    assert rows[history.a_changes]["current"]["outcome"] == "approval"
    assert rows[history.a_changes]["current"]["required_approvals"] == 1
    assert result["summary"]["current"]["evaluated"] == 2  # a_changes and b_destroy


def test_an_evaluation_error_is_recorded_in_its_row(api, history):
    result = _post(api, body=DIVIDES, type="post_plan")
    rows = _by_run(result)
    for run_id in (history.a_no_changes, history.b_no_changes):
        assert rows[run_id]["draft"]["outcome"] == "error"
        # Worded as the run records it (enforcement.error_text).
        assert rows[run_id]["draft"]["error"].startswith("could not be evaluated:")
        assert rows[run_id]["changed"] is True  # a policy that errors fails the run
    assert rows[history.b_destroy]["draft"]["deny"] == ["ratio 2"]
    assert result["summary"]["errors"] == 2 and result["summary"]["would_deny"] == 3


def test_inputs_are_redacted_so_a_draft_cannot_read_secrets(api, history):
    leak = """package crucible

warn contains msg if {
\tsome rc in input.resource_changes
\tmsg := json.marshal(rc.change.after)
}
"""
    response = api.post(BACKTEST, json={"body": leak, "type": "post_plan", "stack_ids": [history.a]})
    assert response.status_code == 200, response.text
    assert "s3cr3t-rotated-value" not in response.text and "(sensitive)" in response.text


def test_a_run_whose_plan_is_gone_is_skipped_with_the_reason(api, history, world):
    with world.ctx.session() as s:
        world.ctx.objects.delete(s.get(Run, history.b_destroy).artifacts["plan_json"]["key"])
    result = _post(api, body=DENY_DELETES, type="post_plan")
    row = _by_run(result)[history.b_destroy]
    assert row["draft"] is None and "missing from the object store" in row["skipped"]
    assert result["summary"]["skipped"] == 1 and result["summary"]["evaluated"] == 4
    assert result["budget_exceeded"] is False


def test_the_time_budget_stops_evaluating_and_marks_the_rest_skipped(world, history):
    member = Principal(kind="user", id="usr-m", label="m@x.test", org_id=world.org_id, role=Role.member)
    request = BacktestRequest(body=ENDLESS, type="post_plan")
    engine = default_engine(None)
    # Warm engine workers: the budget counts from the request's start, compiling included.
    assert engine.evaluate('package crucible\nwarn contains "ok" if true\n', {}).warn == ["ok"]
    result = backtest.backtest(
        world.ctx.session,
        world.ctx.objects,
        member,
        engine,
        request,
        timeout_seconds=1,
        budget_seconds=0.8,
    )
    evaluated = [r for r in result.runs if r.draft is not None]
    skipped = [r for r in result.runs if r.skipped]
    assert len(evaluated) == backtest.CONCURRENCY and len(skipped) == 5 - backtest.CONCURRENCY
    assert all(r.draft.outcome == "error" and "exceeded 1 s" in (r.draft.error or "") for r in evaluated)
    assert all("budget was spent" in (r.skipped or "") for r in skipped)
    assert result.budget_exceeded and result.summary.skipped == 3 and result.summary.errors == 2
    assert any("stopped after its 0.8 s budget: 3 of 5 runs" in n for n in result.notes)


# ----------------------------------------------------------------------------- bad requests and roles


def test_rego_that_does_not_compile_is_422_with_line_and_column(api):
    response = api.post(BACKTEST, json={"body": BROKEN, "type": "post_plan"})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "body"] and detail["type"] == "rego_compile_error"
    assert detail["line"] == 4 and detail["column"] >= 1
    assert detail["msg"].startswith("the policy does not compile")


@pytest.mark.parametrize(
    ("payload", "loc", "words"),
    [
        ({"body": DENY_DELETES}, ["body", "type"], "give the draft's type"),
        ({"body": DENY_DELETES, "type": "login"}, ["body", "type"], "not evaluated on runs' plans"),
        ({"body": DENY_DELETES, "type": "validation"}, ["body", "type"], "backtesting covers"),
        ({"type": "post_plan"}, ["body", "body"], ""),
        ({"body": "   ", "type": "post_plan"}, ["body", "body"], "Rego source"),
        ({"body": DENY_DELETES, "type": "post_plan", "limit": 0}, ["body", "limit"], ""),
        ({"body": DENY_DELETES, "type": "post_plan", "limit": 101}, ["body", "limit"], ""),
        ({"body": DENY_DELETES, "type": "post_plan", "limit": "5"}, ["body", "limit"], ""),
        ({"body": DENY_DELETES, "type": "post_plan", "stack_ids": []}, ["body", "stack_ids"], ""),
        ({"body": DENY_DELETES, "type": "post_plan", "stack_ids": ["net"]}, ["body", "stack_ids"], ""),
        ({"body": DENY_DELETES, "type": "post_plan", "input": {}}, ["body", "input"], ""),
        ({"body": DENY_DELETES, "policy_id": "pol-1"}, ["body", "policy_id"], ""),
    ],
)
def test_bad_requests_are_422(api, payload, loc, words):
    response = api.post(BACKTEST, json=payload)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][: len(loc)] == loc and words in detail["msg"], detail


def test_unknown_stacks_and_policies_are_404(api, as_actor, world, history, other_org):
    theirs = world.stack(other_org)["id"]
    for stack_id in ("stk-00000000000000aa", theirs):
        response = api.post(
            BACKTEST, json={"body": DENY_DELETES, "type": "post_plan", "stack_ids": [history.a, stack_id]}
        )
        assert response.status_code == 404 and response.json()["detail"] == f"stack {stack_id} not found"
    their_policy = (
        as_actor(world.user(Role.admin, other_org)).post(f"{POLICIES}/library/blast_radius/install").json()
    )
    for policy_id in ("pol-00000000000000aa", their_policy["id"]):
        response = api.post(BACKTEST, json={"body": DENY_DELETES, "policy_id": policy_id})
        assert response.status_code == 404 and response.json()["detail"] == f"policy {policy_id} not found"


def test_viewers_may_not_backtest(as_actor, viewer, admin, world, history):
    refused = as_actor(viewer).post(BACKTEST, json={"body": DENY_DELETES, "type": "post_plan"})
    assert refused.status_code == 403 and "member" in refused.json()["detail"]
    assert (
        as_actor(world.token(Role.viewer))
        .post(BACKTEST, json={"body": BROKEN, "type": "post_plan"})
        .status_code
        == 403
    )
    assert as_actor(world.actor("anonymous", None)).post(BACKTEST, json={}).status_code in (401, 422)
    assert as_actor(admin).post(BACKTEST, json={"body": DENY_DELETES, "type": "post_plan"}).status_code == 200


def test_every_library_policy_backtests_cleanly_on_real_plans(api, history, world):
    applied = applied_run(world.ctx, history.a, PLAN_CHANGES)
    # What each hook judges of the 6 runs: every run after the plan, the 2 tracked or destroy
    # runs with changes for approvals, the one applied run before its apply.
    judged = {PolicyType.post_plan: 6, PolicyType.approval: 3, PolicyType.pre_apply: 1}
    for item in library.LIBRARY:
        result = _post(api, body=item.body, type=item.type.value)
        assert result["summary"]["errors"] == 0, (item.slug, result["runs"])
        assert result["summary"]["evaluated"] == judged[item.type], item.slug
        assert result["summary"]["skipped"] == 6 - judged[item.type], item.slug
    hours = _post(api, body=library.source("business_hours_applies"), type="pre_apply")
    assert [r["run_id"] for r in hours["runs"] if r["draft"] is not None] == [applied]


# ----------------------------------------------------------------------------- the editor's panel


def test_the_panel_summarises_and_lists_a_real_result(world, history, as_actor, admin):
    from state.policy_backtest import row_view, summary_line

    policy = _install_no_destroy(as_actor(admin))
    member = Principal(kind="user", id="usr-m", label="m@x.test", org_id=world.org_id, role=Role.member)
    request = BacktestRequest(body=DENY_DELETES, policy_id=policy["id"], stack_ids=[history.a, history.b])
    result = backtest.backtest(
        world.ctx.session, world.ctx.objects, member, default_engine(None), request, timeout_seconds=5
    )
    assert summary_line(result) == (
        "This draft would have denied 3 of 5 past runs; the current version denies 2. 1 run would change."
    )
    views = {v.run_id: v for v in map(row_view, result.runs)}
    destroy = views[history.b_destroy]
    assert destroy.run_href == f"/runs/{history.b_destroy}" and destroy.stack_name == "database"
    assert (destroy.draft_outcome, destroy.current_outcome, destroy.changed) == ("deny", "allow", True)
    assert destroy.messages[0] == "deny: module.net.terraform_data.vpc would be deleted"
    assert len(destroy.messages) == 6 and destroy.current_messages == []
    assert len(destroy.commit_short) == 7 and destroy.created_exact.endswith(" UTC")

    approval = backtest.backtest(
        world.ctx.session,
        world.ctx.objects,
        member,
        default_engine(None),
        BacktestRequest(body=APPROVE_ADDS, type="approval"),
        timeout_seconds=5,
    )
    assert (
        summary_line(approval) == "This draft would have sent 1 of 2 past runs to approval. 3 not evaluated."
    )
    assert {row_view(r).draft_label for r in approval.runs} == {"approval (2)", "allow", ""}
    assert {row_view(r).skipped for r in approval.runs} == {
        "",
        "not held: plan-only run",
        "not held: no changes",
    }
