"""The run lifecycle: legal paths, refusals that change nothing, and invariants under any
sequence of actions (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.runs import lifecycle as lc
from backend.runs.lifecycle import IllegalTransition, RunStatus, RunType

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def planned(run_type: RunType, **plan) -> lc.RunState:
    s = lc.new_run(run_type, at(0))
    s = lc.start_preparing(s, at(1))
    s = lc.start_planning(s, at(2))
    return lc.finish_planning(s, at(3), **{"has_changes": True, **plan})


def test_tracked_run_happy_path_records_every_state_once():
    s = planned(RunType.tracked)
    assert s.status is RunStatus.unconfirmed
    s = lc.confirm(s, at(4))
    s = lc.start_applying(s, at(5))
    s = lc.finish_applying(s, at(6))
    assert s.status is RunStatus.finished and s.is_terminal
    assert list(s.timestamps) == [
        RunStatus.queued, RunStatus.preparing, RunStatus.planning, RunStatus.unconfirmed,
        RunStatus.confirmed, RunStatus.applying, RunStatus.finished,
    ]  # fmt: skip
    assert s.timestamps[RunStatus.confirmed] == at(4)


@pytest.mark.parametrize("run_type", [RunType.proposed, RunType.drift])
def test_plan_only_runs_finish_after_planning(run_type):
    assert planned(run_type).status is RunStatus.finished


@pytest.mark.parametrize("run_type", [RunType.tracked, RunType.destroy])
def test_a_plan_without_changes_finishes_at_once(run_type):
    assert planned(run_type, has_changes=False).status is RunStatus.finished


def test_auto_apply_skips_unconfirmed():
    s = planned(RunType.tracked, auto_apply=True)
    assert s.status is RunStatus.confirmed
    assert RunStatus.unconfirmed not in s.timestamps


def test_approval_gate_waits_for_all_approvals_then_follows_auto_apply():
    s = planned(RunType.destroy, needs_approval=True)
    assert s.status is RunStatus.pending_approval
    assert lc.approve(s, at(4), approvals_complete=False) == s
    assert lc.approve(s, at(4), approvals_complete=True).status is RunStatus.unconfirmed
    assert lc.approve(s, at(4), approvals_complete=True, auto_apply=True).status is RunStatus.confirmed
    rejected = lc.reject(s, at(5))
    assert rejected.status is RunStatus.failed and "rejected" in rejected.failure_reason


def test_discard_only_while_waiting_for_a_human():
    assert lc.discard(planned(RunType.tracked), at(4)).status is RunStatus.discarded
    assert lc.discard(planned(RunType.tracked, needs_approval=True), at(4)).status is RunStatus.discarded
    with pytest.raises(IllegalTransition, match="cannot discard a run that is planning"):
        lc.discard(
            lc.start_planning(lc.start_preparing(lc.new_run(RunType.tracked, at(0)), at(1)), at(2)), at(3)
        )


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: lc.confirm(s, at(9)), "cannot confirm a run that is queued"),
        (lambda s: lc.start_applying(s, at(9)), "cannot apply a run that is queued"),
        (
            lambda s: lc.finish_planning(s, at(9), has_changes=True),
            "cannot finish planning a run that is queued",
        ),
        (lambda s: lc.approve(s, at(9), approvals_complete=True), "cannot approve a run that is queued"),
    ],
)
def test_illegal_actions_explain_themselves_and_change_nothing(action, message):
    s = lc.new_run(RunType.tracked, at(0))
    before = (s.status, dict(s.timestamps))
    with pytest.raises(IllegalTransition, match=message):
        action(s)
    assert (s.status, s.timestamps) == before


def test_queued_and_confirmed_runs_cancel_at_once():
    assert lc.cancel(lc.new_run(RunType.tracked, at(0)), at(1)).status is RunStatus.canceled
    confirmed = lc.confirm(planned(RunType.tracked), at(4))
    assert lc.cancel(confirmed, at(5)).status is RunStatus.canceled


def test_executing_run_cancels_gracefully_then_by_force_after_the_cool_off():
    s = lc.start_planning(lc.start_preparing(lc.new_run(RunType.tracked, at(0)), at(1)), at(2))
    with pytest.raises(IllegalTransition, match="gracefully first"):
        lc.cancel(s, at(3), force=True)
    asked = lc.cancel(s, at(3))
    assert asked.status is RunStatus.planning and asked.cancel_requested_at == at(3)
    assert lc.cancel(asked, at(4)) == asked  # asking twice is harmless
    with pytest.raises(IllegalTransition, match="still stopping"):
        lc.cancel(asked, at(5), force=True)
    cool = lc.FORCE_CANCEL_COOL_OFF.total_seconds()
    assert lc.cancel(asked, at(3 + cool), force=True).status is RunStatus.canceled
    assert lc.mark_canceled(asked, at(6)).status is RunStatus.canceled


def test_waiting_runs_are_discarded_not_canceled():
    with pytest.raises(IllegalTransition, match="discarded, not canceled"):
        lc.cancel(planned(RunType.tracked), at(4))


def test_failure_is_possible_from_any_live_state_and_keeps_the_reason():
    s = lc.start_preparing(lc.new_run(RunType.tracked, at(0)), at(1))
    failed = lc.fail(s, at(2), "git clone: repository not found")
    assert failed.status is RunStatus.failed and failed.failure_reason == "git clone: repository not found"
    with pytest.raises(IllegalTransition):
        lc.fail(failed, at(3), "again")
    assert lc.can_retrigger(failed) and lc.can_delete(failed)
    assert not lc.can_delete(s)


# ---------------------------------------------------------------- invariants

ACTIONS = {
    "start_preparing": lambda s, t: lc.start_preparing(s, t),
    "start_planning": lambda s, t: lc.start_planning(s, t),
    "plan_changes": lambda s, t: lc.finish_planning(s, t, has_changes=True),
    "plan_no_changes": lambda s, t: lc.finish_planning(s, t, has_changes=False),
    "plan_approval": lambda s, t: lc.finish_planning(s, t, has_changes=True, needs_approval=True),
    "plan_auto": lambda s, t: lc.finish_planning(s, t, has_changes=True, auto_apply=True),
    "approve_partial": lambda s, t: lc.approve(s, t, approvals_complete=False),
    "approve": lambda s, t: lc.approve(s, t, approvals_complete=True),
    "reject": lambda s, t: lc.reject(s, t),
    "confirm": lambda s, t: lc.confirm(s, t),
    "discard": lambda s, t: lc.discard(s, t),
    "start_applying": lambda s, t: lc.start_applying(s, t),
    "finish_applying": lambda s, t: lc.finish_applying(s, t),
    "fail": lambda s, t: lc.fail(s, t, "boom"),
    "cancel": lambda s, t: lc.cancel(s, t),
    "force_cancel": lambda s, t: lc.cancel(s, t, force=True),
    "mark_canceled": lambda s, t: lc.mark_canceled(s, t),
}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    run_type=st.sampled_from(list(RunType)),
    steps=st.lists(st.tuples(st.sampled_from(sorted(ACTIONS)), st.integers(0, 30)), max_size=25),
)
def test_any_sequence_of_actions_keeps_the_invariants(run_type, steps):
    s = lc.new_run(run_type, at(0))
    clock = 0
    for name, gap in steps:
        clock += gap
        before = s
        try:
            s = ACTIONS[name](s, at(clock))
        except IllegalTransition:
            assert s == before  # a refusal changes nothing
            continue
        if before.is_terminal:
            pytest.fail(f"{name} changed a terminal run ({before.status})")
        # Timestamps only ever grow, and each is recorded once.
        assert all(before.timestamps[k] == s.timestamps[k] for k in before.timestamps)
        assert list(s.timestamps.values()) == sorted(s.timestamps.values())
        assert s.status in s.timestamps
        if run_type in lc.PLAN_ONLY:
            assert s.status not in (RunStatus.unconfirmed, RunStatus.confirmed, RunStatus.applying)
