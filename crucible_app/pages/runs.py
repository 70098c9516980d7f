"""Runs: the list across stacks, and the run page (rail, plan, actions, live log)."""

from __future__ import annotations

import reflex as rx

from components.layout import empty_state, page, pager, rel_time, table_skeleton, testid, typed_delete_dialog
from components.log_viewer import log_viewer
from components.plan_diff import plan_diff
from components.runs import lifecycle_rail, plan_chips, runs_table, status_badge, type_badge
from state.runs import ALL, STATUSES, TYPES, RunDetailState, RunsState


def _filters() -> rx.Component:
    return rx.hstack(
        rx.select.root(
            rx.select.trigger(placeholder="Status", custom_attrs=testid("runs-status-filter")),
            rx.select.content(
                rx.select.item("All statuses", value=ALL),
                rx.select.item("Active (not ended)", value="active"),
                *[rx.select.item(s.replace("_", " "), value=s) for s in STATUSES],
            ),
            value=RunsState.status,
            on_change=RunsState.set_status,
        ),
        rx.select.root(
            rx.select.trigger(placeholder="Type", custom_attrs=testid("runs-type-filter")),
            rx.select.content(
                rx.select.item("All types", value=ALL), *[rx.select.item(t, value=t) for t in TYPES]
            ),
            value=RunsState.type,
            on_change=RunsState.set_type,
        ),
        rx.select.root(
            rx.select.trigger(placeholder="Stack", custom_attrs=testid("runs-stack-filter")),
            rx.select.content(
                rx.select.item("All stacks", value=ALL),
                rx.foreach(RunsState.stack_options, lambda o: rx.select.item(o[1], value=o[0])),
            ),
            value=RunsState.stack_choice,
            on_change=RunsState.set_stack,
        ),
        rx.cond(
            RunsState.filtered,
            rx.button(
                "Clear",
                variant="ghost",
                on_click=RunsState.clear_filters,
                custom_attrs=testid("runs-clear-filters"),
            ),
        ),
        spacing="3",
        align="center",
        wrap="wrap",
    )


def runs_page() -> rx.Component:
    r = RunsState
    body = rx.cond(
        r.loading & (r.rows.length() == 0),
        table_skeleton(cols=6),
        rx.cond(
            r.count == 0,
            rx.cond(
                r.filtered,
                empty_state(
                    "search-x",
                    "No runs match these filters",
                    "Change or clear the filters.",
                    tid="runs-empty",
                ),
                empty_state(
                    "play",
                    "No runs yet",
                    "Open a stack and trigger a run: Crucible plans it, you review, it applies.",
                    action=rx.link(rx.button("Go to stacks", variant="soft"), href="/stacks"),
                    tid="runs-empty",
                ),
            ),
            rx.vstack(
                runs_table(r.rows),
                pager(
                    r.page_label,
                    tid="runs",
                    has_prev=r.has_prev,
                    on_prev=r.prev_page,
                    has_next=r.has_next,
                    on_next=r.next_page,
                ),
                width="100%",
            ),
        ),
    )
    return page("runs", "Runs", _filters(), body)


# ---------------------------------------------------------------------------- run page


def _action_button(action: str, label: str, handler, *, color: str = "teal", variant: str = "solid"):
    d = RunDetailState
    return rx.cond(
        d.actions.contains(action),
        rx.button(
            rx.cond(d.busy == action, rx.spinner(size="1"), rx.fragment()),
            label,
            on_click=handler,
            disabled=d.busy != "",
            color_scheme=color,
            variant=variant,
            custom_attrs=testid(f"run-{action.replace('_', '-')}-button"),
        ),
    )


def _delete_dialog() -> rx.Component:
    d = RunDetailState
    return typed_delete_dialog(
        what="run",
        description=rx.text(
            "This deletes the run, its logs and its stored plan; the audit log keeps a record. Type ",
            rx.code(d.run.id),
            " to confirm.",
        ),
        expected=d.run.id,
        value=d.delete_confirm,
        on_change=d.set_delete_confirm,
        on_submit=d.delete_run,
        open=d.delete_open,
        on_open_change=d.set_delete_open,
        busy=d.busy == "delete",
        tid="run-delete",
    )


def _actions() -> rx.Component:
    d = RunDetailState
    return rx.hstack(
        _action_button("confirm", "Confirm", d.confirm),
        _action_button("discard", "Discard", d.discard, color="gray", variant="soft"),
        _action_button("cancel", "Cancel", d.cancel, color="red", variant="soft"),
        _action_button("force_cancel", "Force cancel", d.force_cancel, color="red"),
        _action_button("retrigger", "Re-trigger", d.retrigger, variant="soft"),
        rx.cond(d.actions.contains("delete"), _delete_dialog()),
        rx.cond(
            (d.run.status == "unconfirmed") & ~d.actions.contains("confirm"),
            rx.tooltip(
                rx.button("Confirm", disabled=True, custom_attrs=testid("run-confirm-disabled")),
                content="Admins confirm runs; ask one to review this plan",
            ),
        ),
        spacing="2",
    )


def _meta(label: str, value: rx.Component) -> rx.Component:
    return rx.vstack(rx.text(label, size="1", color=rx.color("gray", 10)), value, spacing="1")


def _header_card() -> rx.Component:
    d = RunDetailState
    return rx.card(
        rx.vstack(
            rx.hstack(
                status_badge(d.run.status),
                type_badge(d.run.type),
                rx.cond(
                    d.cancel_requested & ~d.is_terminal,
                    rx.badge(
                        "stopping…", color_scheme="red", variant="soft", custom_attrs=testid("run-stopping")
                    ),
                ),
                rx.cond(
                    (d.run.type == "drift") & d.run.has_summary,
                    rx.badge(
                        rx.cond(d.run.has_changes, "drift detected", "no drift"),
                        color_scheme=rx.cond(d.run.has_changes, "amber", "green"),
                        custom_attrs=testid("run-drift"),
                    ),
                ),
                rx.spacer(),
                plan_chips(d.run),
                width="100%",
                align="center",
            ),
            rx.grid(
                _meta(
                    "Stack",
                    rx.link(
                        d.run.stack_name,
                        href="/stacks/" + d.run.stack_id,
                        custom_attrs=testid("run-stack-link"),
                    ),
                ),
                _meta(
                    "Commit",
                    rx.hstack(
                        rx.code(
                            rx.cond(d.run.commit != "", d.run.commit, "not cloned yet"),
                            custom_attrs=testid("run-commit"),
                        ),
                        rx.text(
                            d.run.commit_message,
                            size="2",
                            trim="both",
                            custom_attrs=testid("run-commit-message"),
                        ),
                        spacing="2",
                        align="center",
                    ),
                ),
                _meta("Branch", rx.code(d.branch, variant="ghost")),
                _meta(
                    "Triggered",
                    rx.hstack(
                        rx.text(
                            d.run.created_by,
                            " via ",
                            d.trigger_label,
                            size="2",
                            custom_attrs=testid("run-trigger"),
                        ),
                        rel_time(d.run.created_rel, d.run.created_exact),
                        spacing="2",
                    ),
                ),
                columns=rx.breakpoints(initial="1", md="4"),
                spacing="4",
                width="100%",
            ),
            rx.cond(
                d.run.message != "",
                rx.text(d.run.message, size="2", custom_attrs=testid("run-message")),
            ),
            rx.cond(
                d.env_names.length() > 0,
                rx.hstack(
                    rx.text("Env overrides:", size="1", color=rx.color("gray", 10)),
                    rx.foreach(d.env_names, lambda n: rx.code(n, size="1")),
                    spacing="2",
                    wrap="wrap",
                ),
            ),
            rx.cond(
                d.extra_counts.length() > 0,
                rx.hstack(
                    rx.foreach(
                        d.extra_counts,
                        lambda kv: rx.badge(kv[0], ": ", kv[1], variant="outline", size="1"),
                    ),
                    spacing="2",
                    custom_attrs=testid("run-plan-extra"),
                ),
            ),
            rx.cond(
                d.failure_reason != "",
                rx.callout(
                    d.failure_reason,
                    icon="triangle-alert",
                    color_scheme="red",
                    width="100%",
                    custom_attrs=testid("run-failure-reason"),
                ),
            ),
            rx.cond(
                d.triggered_by != "",
                rx.text(
                    "Triggered by a policy after ",
                    rx.link(
                        d.triggered_by,
                        href="/runs/" + d.triggered_by,
                        font_family="monospace",
                        custom_attrs=testid("run-triggered-by"),
                    ),
                    size="1",
                    color=rx.color("gray", 10),
                ),
            ),
            rx.cond(
                d.retriggered_from != "",
                rx.text(
                    "Re-triggered from ",
                    rx.link(d.retriggered_from, href="/runs/" + d.retriggered_from, font_family="monospace"),
                    size="1",
                    color=rx.color("gray", 10),
                ),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


OUTCOME_COLORS = {
    "allow": "green",
    "warn": "amber",
    "deny": "red",
    "approval": "blue",
    "error": "red",
    "trigger": "blue",
}


def _message(text, color: str, tid: str) -> rx.Component:
    return rx.text(text, size="2", color=rx.color(color, 11), custom_attrs=testid(tid))


def _policy_result(r) -> rx.Component:
    return rx.box(
        rx.hstack(
            rx.badge(
                r.outcome,
                color_scheme=rx.match(r.outcome, *OUTCOME_COLORS.items(), "gray"),
                custom_attrs={"data-testid": "run-policy-outcome", "data-outcome": r.outcome},
            ),
            rx.link(
                r.policy_name,
                href="/policies/" + r.policy_id,
                weight="medium",
                size="2",
                custom_attrs=testid("run-policy-name"),
            ),
            rx.text("v", r.version, size="1", color=rx.color("gray", 10)),
            rx.text(r.hook_label, size="1", color=rx.color("gray", 10)),
            rx.cond(
                r.required_approvals > 0,
                rx.text("asks for ", r.required_approvals, " approval(s)", size="1"),
            ),
            rx.spacer(),
            rx.text(r.duration, size="1", color=rx.color("gray", 10)),
            width="100%",
            align="center",
            spacing="2",
        ),
        rx.foreach(r.deny, lambda m: _message(m, "red", "run-policy-deny")),
        rx.foreach(r.warn, lambda m: _message(m, "amber", "run-policy-warn")),
        rx.cond(r.error != "", rx.text(r.error, size="2", color=rx.color("red", 11))),
        rx.cond(
            r.triggered.length() > 0,
            rx.hstack(
                rx.text("Triggered:", size="2"),
                rx.foreach(
                    r.triggered,
                    lambda rid: rx.link(
                        rid,
                        href="/runs/" + rid,
                        font_family="monospace",
                        size="2",
                        custom_attrs=testid("run-policy-triggered"),
                    ),
                ),
                spacing="2",
                wrap="wrap",
            ),
        ),
        padding_y="6px",
        border_bottom=f"1px solid {rx.color('gray', 4)}",
        width="100%",
        custom_attrs=testid("run-policy-result"),
    )


def _policies_card() -> rx.Component:
    d = RunDetailState
    return rx.cond(
        d.policy_results.length() > 0,
        rx.card(
            rx.vstack(
                rx.heading("Policies", size="3"),
                rx.foreach(d.policy_results, _policy_result),
                width="100%",
                spacing="1",
            ),
            width="100%",
            custom_attrs=testid("run-policies-card"),
        ),
    )


def _review(r) -> rx.Component:
    return rx.hstack(
        rx.badge(
            rx.cond(r.decision == "approve", "approved", "rejected"),
            color_scheme=rx.cond(r.decision == "approve", "green", "red"),
        ),
        rx.text(r.user, size="2", weight="medium"),
        rx.cond(r.comment != "", rx.text("“", r.comment, "”", size="2")),
        rx.spacer(),
        rel_time(r.created_rel, r.created_exact),
        width="100%",
        align="center",
        custom_attrs=testid("run-review"),
    )


def _approval_card() -> rx.Component:
    d = RunDetailState
    can_review = d.actions.contains("approve")
    return rx.cond(
        (d.required_approvals > 0) | (d.reviews.length() > 0),
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("Approval", size="3"),
                    rx.badge(
                        d.approved,
                        " of ",
                        d.required_approvals,
                        " approvals",
                        color_scheme=rx.cond(d.approved >= d.required_approvals, "green", "amber"),
                        custom_attrs=testid("run-approvals-count"),
                    ),
                    align="center",
                    spacing="3",
                ),
                rx.cond(
                    d.reviews.length() > 0,
                    rx.foreach(d.reviews, _review),
                    rx.text("No reviews yet.", size="2", color=rx.color("gray", 10)),
                ),
                rx.cond(
                    can_review,
                    rx.vstack(
                        rx.text_area(
                            placeholder="Comment (optional; shown with your review)",
                            value=d.review_comment,
                            on_change=d.set_review_comment,
                            max_length=1000,
                            width="100%",
                            custom_attrs=testid("run-review-comment"),
                        ),
                        rx.hstack(
                            _action_button("approve", "Approve", d.approve, color="green"),
                            _action_button("reject", "Reject", d.reject, color="red", variant="soft"),
                            spacing="2",
                        ),
                        width="100%",
                        spacing="2",
                    ),
                    rx.cond(
                        d.run.status == "pending_approval",
                        rx.text(
                            "Admins and this stack's approvers review runs; each person approves once.",
                            size="1",
                            color=rx.color("gray", 10),
                        ),
                    ),
                ),
                width="100%",
                spacing="2",
            ),
            width="100%",
            custom_attrs=testid("run-approval-card"),
        ),
    )


VCS_STATE_COLORS = {
    "pending": "amber",
    "success": "green",
    "failure": "red",
    "error": "red",
    "canceled": "gray",
}


def _vcs_status() -> rx.Component:
    v = RunDetailState.vcs
    return rx.cond(
        v.feedback_off,
        rx.text(
            "Feedback is off: set the stack's VCS provider and token to report runs back.",
            size="2",
            color=rx.color("gray", 10),
            custom_attrs=testid("run-vcs-off"),
        ),
        rx.cond(
            ~v.status_sent,
            rx.text(
                "not sent yet",
                size="2",
                color=rx.color("gray", 10),
                custom_attrs=testid("run-vcs-status-pending"),
            ),
            rx.vstack(
                rx.hstack(
                    rx.cond(
                        v.status_state != "",
                        rx.badge(
                            v.status_state,
                            color_scheme=rx.match(v.status_state, *VCS_STATE_COLORS.items(), "gray"),
                            variant=rx.cond(v.status_ok, "soft", "outline"),
                            custom_attrs={
                                "data-testid": "run-vcs-status",
                                "data-state": v.status_state,
                                "data-ok": rx.cond(v.status_ok, "true", "false"),
                            },
                        ),
                    ),
                    rx.text(
                        v.status_description, size="2", custom_attrs=testid("run-vcs-status-description")
                    ),
                    rx.cond(v.status_at_rel != "", rel_time(v.status_at_rel, v.status_at_exact)),
                    spacing="2",
                    align="center",
                    wrap="wrap",
                ),
                rx.cond(
                    v.status_error != "",
                    rx.text(
                        v.status_error,
                        size="2",
                        color=rx.color("red", 11),
                        custom_attrs=testid("run-vcs-status-error"),
                    ),
                ),
                spacing="1",
            ),
        ),
    )


def _vcs_comment() -> rx.Component:
    v = RunDetailState.vcs
    return rx.cond(
        ~v.comment_sent,
        rx.text(
            "not posted yet",
            size="2",
            color=rx.color("gray", 10),
            custom_attrs=testid("run-vcs-comment-pending"),
        ),
        rx.cond(
            v.comment_ok,
            rx.cond(
                v.comment_url != "",
                rx.link(
                    "View comment",
                    rx.icon("external-link", size=12),
                    href=v.comment_url,
                    is_external=True,
                    size="2",
                    custom_attrs=testid("run-vcs-comment-link"),
                ),
                rx.text(
                    rx.cond(v.comment_note != "", v.comment_note, "posted"),
                    size="2",
                    color=rx.color("gray", 10),
                    custom_attrs=testid("run-vcs-comment-note"),
                ),
            ),
            rx.text(
                v.comment_error,
                size="2",
                color=rx.color("red", 11),
                custom_attrs=testid("run-vcs-comment-error"),
            ),
        ),
    )


def _vcs_card() -> rx.Component:
    d = RunDetailState
    v = d.vcs
    item = lambda label, value: rx.data_list.item(rx.data_list.label(label), rx.data_list.value(value))  # noqa: E731
    return rx.cond(
        (d.trigger == "webhook") & d.has_vcs,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("VCS feedback", size="3"),
                    rx.spacer(),
                    rx.button(
                        rx.icon("refresh-cw", size=14),
                        "Refresh",
                        size="1",
                        variant="soft",
                        loading=d.vcs_refreshing,
                        on_click=d.refresh_vcs,
                        custom_attrs=testid("run-vcs-refresh"),
                    ),
                    width="100%",
                    align="center",
                ),
                rx.data_list.root(
                    item("Provider", rx.text(v.provider, size="2", custom_attrs=testid("run-vcs-provider"))),
                    item(
                        "Repository",
                        rx.hstack(
                            rx.code(v.repo, variant="ghost", custom_attrs=testid("run-vcs-repo")),
                            rx.code(v.sha, variant="ghost", color=rx.color("gray", 10)),
                            spacing="2",
                        ),
                    ),
                    rx.cond(
                        v.pr_number > 0,
                        item(
                            "Pull request",
                            rx.cond(
                                v.pr_url != "",
                                rx.link(
                                    "#",
                                    v.pr_number,
                                    href=v.pr_url,
                                    is_external=True,
                                    size="2",
                                    custom_attrs=testid("run-vcs-pr-link"),
                                ),
                                rx.text("#", v.pr_number, size="2", custom_attrs=testid("run-vcs-pr")),
                            ),
                        ),
                    ),
                    item("Commit status", _vcs_status()),
                    rx.cond(v.pr_number > 0, item("Comment", _vcs_comment())),
                    rx.cond(
                        v.next_attempt_rel != "",
                        item(
                            "Retry",
                            rx.hstack(
                                rx.text(
                                    v.attempts,
                                    rx.cond(v.attempts == 1, " failed attempt", " failed attempts"),
                                    size="2",
                                    custom_attrs=testid("run-vcs-attempts"),
                                ),
                                rx.tooltip(
                                    rx.text(
                                        "next ",
                                        v.next_attempt_rel,
                                        size="2",
                                        color=rx.color("gray", 11),
                                        custom_attrs=testid("run-vcs-next-attempt"),
                                    ),
                                    content=v.next_attempt_exact,
                                ),
                                spacing="2",
                            ),
                        ),
                    ),
                    size="2",
                ),
                width="100%",
                spacing="3",
            ),
            width="100%",
            custom_attrs=testid("run-vcs-card"),
        ),
    )


def run_detail_page() -> rx.Component:
    d = RunDetailState
    body = rx.cond(
        d.not_found,
        empty_state(
            "circle-help",
            "Run not found",
            "It may have been deleted, or belongs to another organization.",
            tid="run-not-found",
        ),
        rx.cond(
            d.loading,
            table_skeleton(rows=4, cols=3),
            rx.vstack(
                _header_card(),
                lifecycle_rail(d.steps),
                _approval_card(),
                _vcs_card(),
                _policies_card(),
                rx.cond(
                    (d.diff.length() > 0) | (d.diff_error != ""),
                    rx.card(
                        rx.vstack(
                            rx.heading("Plan", size="3"),
                            rx.cond(
                                d.diff_error != "",
                                rx.callout(d.diff_error, icon="info", color_scheme="gray", width="100%"),
                                plan_diff(d.diff, d.diff_hidden, d.plan_url),
                            ),
                            width="100%",
                            spacing="3",
                        ),
                        width="100%",
                        custom_attrs=testid("run-plan-card"),
                    ),
                ),
                rx.vstack(
                    rx.heading("Log", size="3"),
                    log_viewer(d.log_url),
                    width="100%",
                    align="stretch",
                    spacing="2",
                ),
                width="100%",
                spacing="4",
            ),
        ),
    )
    return page(
        "runs",
        rx.cond(d.run.id != "", rx.text("Run ", rx.code(d.run.id, size="5")), "Run"),
        body,
        breadcrumb=[("Runs", "/runs")],
        actions=_actions(),
    )
