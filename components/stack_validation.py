"""The stack page's Validation card (overview tab): each validation policy's latest decision
about the stack's current state, and "Validate now" for members and admins."""

from __future__ import annotations

import reflex as rx

from components.layout import rel_time, testid
from state.stack_validation import StackValidationState as S

OUTCOME_COLORS = {"allow": "green", "warn": "amber", "deny": "red", "error": "red", "pending": "gray"}


def _message(text, color: str, kind: str) -> rx.Component:
    return rx.text(
        text,
        size="2",
        color=rx.color(color, 11),
        custom_attrs={"data-testid": "stack-validation-message", "data-kind": kind},
    )


def _row(r) -> rx.Component:
    return rx.box(
        rx.hstack(
            rx.badge(
                rx.cond(r.outcome == "pending", "not evaluated", r.outcome),
                color_scheme=rx.match(r.outcome, *OUTCOME_COLORS.items(), "gray"),
                variant=rx.cond(r.outcome == "pending", "outline", "soft"),
                custom_attrs=testid("stack-validation-outcome"),
            ),
            rx.link(r.policy_name, href="/policies/" + r.policy_id, weight="medium", size="2"),
            rx.text("v", r.version, size="1", color=rx.color("gray", 10)),
            rx.cond(
                r.stale,
                rx.tooltip(
                    rx.text("no longer applies", size="1", color=rx.color("gray", 10)),
                    content="Detached or disabled since: the next validation removes this result",
                ),
            ),
            rx.spacer(),
            rx.cond(
                r.outcome != "pending",
                rx.hstack(
                    rx.text(r.serial, size="1", font_family="monospace", color=rx.color("gray", 10)),
                    rel_time(r.evaluated_rel, r.evaluated_exact),
                    rx.text("by ", r.evaluated_by, size="1", color=rx.color("gray", 10)),
                    spacing="2",
                    align="center",
                ),
                rx.text("never evaluated", size="1", color=rx.color("gray", 10)),
            ),
            width="100%",
            align="center",
            spacing="2",
        ),
        rx.foreach(r.deny, lambda m: _message(m, "red", "deny")),
        rx.foreach(r.warn, lambda m: _message(m, "amber", "warn")),
        rx.cond(r.error != "", _message(r.error, "red", "error")),
        padding_y="6px",
        border_bottom=f"1px solid {rx.color('gray', 4)}",
        width="100%",
        custom_attrs={"data-testid": "stack-validation-row", "data-outcome": r.outcome},
    )


def _run_button() -> rx.Component:
    return rx.cond(
        S.can_write,
        rx.button(
            rx.icon("shield-check", size=14),
            "Validate now",
            size="1",
            variant="soft",
            loading=S.running,
            on_click=S.validate_now,
            custom_attrs=testid("stack-validation-run"),
        ),
        rx.tooltip(
            rx.button("Validate now", size="1", variant="soft", disabled=True),
            content="Members and admins validate stacks",
        ),
    )


def validation_card(stack_id) -> rx.Component:
    """Shown when a validation policy applies to the stack or results exist. ``stack_id`` is
    the page's stack: the card never shows the previous stack's results while this one loads."""
    return rx.cond(
        S.shown & ~S.loading & (S.stack_id == stack_id),
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("Validation", size="3"),
                    rx.text(S.schedule, size="1", color=rx.color("gray", 10)),
                    rx.spacer(),
                    _run_button(),
                    width="100%",
                    align="center",
                ),
                rx.cond(
                    S.error != "",
                    rx.text(S.error, size="2", color=rx.color("red", 11)),
                ),
                rx.cond(
                    S.never_evaluated,
                    rx.text(
                        "Not validated yet. Validate now evaluates these policies against the "
                        "current state; nothing is blocked, results are reported here.",
                        size="2",
                        color=rx.color("gray", 10),
                        custom_attrs=testid("stack-validation-empty"),
                    ),
                ),
                rx.vstack(rx.foreach(S.rows, _row), width="100%", spacing="0"),
                width="100%",
                spacing="2",
            ),
            width="100%",
            custom_attrs=testid("stack-validation-card"),
        ),
    )
