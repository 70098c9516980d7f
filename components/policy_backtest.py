"""The backtest panel of the policy editor: which past runs a draft would have denied, warned or
sent to approval, next to the current version. Self-contained: the editor page embeds
``backtest_panel(body, type_, policy_id)`` with its own state's vars, or ``backtest_panel()``
and fires ``PolicyBacktestState.run_backtest`` from its own button.

testids: ``backtest-panel``, ``backtest-run``, ``backtest-limit``, ``backtest-loading``,
``backtest-error`` (``data-line``/``data-column``, ``backtest-error-location``),
``backtest-summary``, ``backtest-note``, ``backtest-unsupported``, ``backtest-empty``,
``backtest-table``, ``backtest-row`` (``data-run-id``, ``data-changed``),
``backtest-run-link``, ``backtest-draft-outcome`` / ``backtest-current-outcome``
(``data-outcome``), ``backtest-messages``, ``backtest-skipped``.
"""

from __future__ import annotations

import reflex as rx

from components.layout import empty_state, rel_time, table_skeleton, testid
from components.runs import status_badge, type_badge
from state.policy_backtest import PolicyBacktestState as S

OUTCOME_COLORS = {
    "allow": "green",
    "warn": "amber",
    "deny": "red",
    "approval": "violet",
    "error": "crimson",
}
OUTCOME_ICONS = {
    "allow": "circle-check",
    "warn": "triangle-alert",
    "deny": "circle-x",
    "approval": "user-check",
    "error": "octagon-alert",
}


def outcome_badge(outcome, label, tid: str) -> rx.Component:
    """A decision's outcome; "—" where there is none (no saved version, or not evaluated)."""
    return rx.cond(
        outcome != "",
        rx.badge(
            rx.match(
                outcome,
                *[(k, rx.icon(v, size=12)) for k, v in OUTCOME_ICONS.items()],
                rx.fragment(),
            ),
            label,
            color_scheme=rx.match(outcome, *OUTCOME_COLORS.items(), "gray"),
            variant=rx.cond(outcome == "allow", "outline", "soft"),
            custom_attrs={"data-testid": tid, "data-outcome": outcome},
        ),
        rx.text(
            "—", color=rx.color("gray", 9), size="2", custom_attrs={"data-testid": tid, "data-outcome": ""}
        ),
    )


def _muted(*children, **props) -> rx.Component:
    return rx.text(*children, size=props.pop("size", "1"), color=rx.color("gray", 10), **props)


def _messages(lines, tid: str) -> rx.Component:
    return rx.vstack(
        rx.foreach(
            lines,
            lambda m: rx.text(
                m, size="1", font_family="monospace", white_space="pre-wrap", word_break="break-word"
            ),
        ),
        spacing="1",
        align="start",
        custom_attrs=testid(tid),
    )


def _error() -> rx.Component:
    return rx.callout.root(
        rx.callout.icon(rx.icon("circle-x", size=16)),
        rx.callout.text(
            rx.cond(
                S.error_line > 0,
                rx.text.span(
                    "Line ",
                    S.error_line,
                    rx.cond(S.error_column > 0, rx.text.span(", column ", S.error_column), rx.fragment()),
                    ": ",
                    weight="bold",
                    custom_attrs=testid("backtest-error-location"),
                ),
            ),
            S.error,
        ),
        color_scheme="red",
        variant="surface",
        size="1",
        width="100%",
        custom_attrs={
            "data-testid": "backtest-error",
            "data-line": S.error_line,
            "data-column": S.error_column,
        },
    )


def _row(r) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.link(
                    rx.text(r.run_id, font_family="monospace", size="2"),
                    href=r.run_href,
                    custom_attrs=testid("backtest-run-link"),
                ),
                rx.hstack(
                    rel_time(r.created_rel, r.created_exact),
                    rx.cond(r.commit_short != "", _muted(r.commit_short, font_family="monospace")),
                    spacing="2",
                    align="center",
                ),
                spacing="1",
                align="start",
            )
        ),
        rx.table.cell(rx.text(r.stack_name, size="2")),
        rx.table.cell(
            rx.hstack(
                type_badge(r.run_type),
                status_badge(r.run_status, tid="backtest-run-status"),
                spacing="1",
                wrap="wrap",
            )
        ),
        rx.table.cell(
            rx.cond(
                r.skipped != "",
                rx.badge(
                    "skipped", color_scheme="gray", variant="outline", custom_attrs=testid("backtest-skipped")
                ),
                outcome_badge(r.draft_outcome, r.draft_label, "backtest-draft-outcome"),
            )
        ),
        rx.cond(
            S.has_current,
            rx.table.cell(outcome_badge(r.current_outcome, r.current_label, "backtest-current-outcome")),
        ),
        rx.table.cell(
            rx.cond(
                r.skipped != "",
                _muted(r.skipped),
                rx.vstack(
                    _messages(r.messages, "backtest-messages"),
                    rx.cond(
                        S.has_current & (r.current_messages.length() > 0) & r.changed,
                        rx.el.details(
                            rx.el.summary(_muted("current version", as_="span"), cursor="pointer"),
                            _messages(r.current_messages, "backtest-current-messages"),
                        ),
                    ),
                    spacing="1",
                    align="start",
                ),
            ),
            max_width="28rem",
        ),
        background=rx.cond(r.changed, rx.color("amber", 2), "transparent"),
        custom_attrs={"data-testid": "backtest-row", "data-run-id": r.run_id, "data-changed": r.changed},
    )


def _table() -> rx.Component:
    return rx.box(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Run"),
                    rx.table.column_header_cell("Stack"),
                    rx.table.column_header_cell("Type"),
                    rx.table.column_header_cell("Draft"),
                    rx.cond(S.has_current, rx.table.column_header_cell("Current")),
                    rx.table.column_header_cell("Messages"),
                )
            ),
            rx.table.body(rx.foreach(S.rows, _row)),
            size="1",
            width="100%",
            custom_attrs=testid("backtest-table"),
        ),
        width="100%",
        overflow_x="auto",
    )


def _result() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.icon(rx.cond(S.budget_exceeded, "timer-off", "history"), size=16),
            rx.text(S.summary, size="2", weight="medium", custom_attrs=testid("backtest-summary")),
            rx.spacer(),
            _muted(S.engine, " · ", S.duration),
            width="100%",
            align="center",
            wrap="wrap",
        ),
        rx.foreach(
            S.notes,
            lambda n: rx.callout.root(
                rx.callout.icon(rx.icon("info", size=14)),
                rx.callout.text(n),
                size="1",
                color_scheme=rx.cond(S.budget_exceeded, "amber", "gray"),
                variant="surface",
                width="100%",
                custom_attrs=testid("backtest-note"),
            ),
        ),
        rx.cond(
            S.unsupported_builtins.length() > 0,
            rx.callout.root(
                rx.callout.icon(rx.icon("triangle-alert", size=14)),
                rx.callout.text(
                    "The active engine lacks builtins this draft calls: ",
                    rx.foreach(S.unsupported_builtins, lambda b: rx.code(b, margin_right="0.25rem")),
                ),
                size="1",
                color_scheme="amber",
                variant="surface",
                width="100%",
                custom_attrs=testid("backtest-unsupported"),
            ),
        ),
        rx.cond(
            S.is_empty,
            empty_state(
                "history",
                "No past runs to replay",
                "None of the stacks this policy applies to has a run with a stored plan yet (Ansible "
                "runs have none). Backtesting replays real plans: trigger a run first.",
                tid="backtest-empty",
            ),
            _table(),
        ),
        spacing="3",
        width="100%",
    )


def backtest_panel(body=None, type_=None, policy_id=None) -> rx.Component:
    """The panel. Given the editor's ``body``, ``type_`` and ``policy_id`` vars ("" for a new
    policy), it has its own "Backtest" button; without them the page triggers
    ``PolicyBacktestState.run_backtest(body, type_, policy_id)`` itself."""
    button = rx.fragment()
    if body is not None:
        button = rx.button(
            rx.icon("history", size=14),
            "Backtest",
            size="2",
            variant="soft",
            loading=S.loading,
            on_click=S.run_backtest(
                body, type_ if type_ is not None else "", policy_id if policy_id is not None else ""
            ),
            custom_attrs=testid("backtest-run"),
        )
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading("Backtest", size="3"),
                _muted("What this draft would have decided on the newest runs with a stored plan"),
                rx.spacer(),
                rx.hstack(
                    _muted("last"),
                    rx.select(
                        S.limits,
                        value=S.limit,
                        on_change=S.set_limit,
                        size="1",
                        custom_attrs=testid("backtest-limit"),
                    ),
                    _muted("runs"),
                    spacing="1",
                    align="center",
                ),
                button,
                width="100%",
                align="center",
                wrap="wrap",
                spacing="2",
            ),
            rx.cond(
                S.loading,
                rx.vstack(
                    rx.hstack(
                        rx.spinner(size="1"),
                        _muted("Replaying past plans: up to 30 s for many large plans"),
                        spacing="2",
                        align="center",
                    ),
                    table_skeleton(3, 5),
                    width="100%",
                    spacing="2",
                    custom_attrs=testid("backtest-loading"),
                ),
            ),
            rx.cond(S.error != "", _error()),
            rx.cond(S.has_result & ~S.loading, _result()),
            spacing="3",
            width="100%",
        ),
        width="100%",
        custom_attrs=testid("backtest-panel"),
    )
