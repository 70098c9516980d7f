"""The "Trigger run" dialog (stack page)."""

from __future__ import annotations

import reflex as rx

from components.layout import field_error, testid
from state.runs import TYPES, TriggerRunState

TYPE_HINTS = {
    "tracked": "plan, then apply after confirmation",
    "proposed": "plan only",
    "destroy": "plan the destruction of everything, then apply after confirmation",
    "drift": "plan only, to find changes made outside Crucible",
}


def trigger_run_dialog() -> rx.Component:
    t = TriggerRunState
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Trigger a run"),
            rx.vstack(
                rx.text("Type", size="2", weight="medium"),
                rx.radio_group.root(
                    rx.vstack(
                        *[
                            rx.radio_group.item(
                                rx.text(rx.text.strong(k), " — ", TYPE_HINTS[k], size="2"),
                                value=k,
                                custom_attrs=testid(f"trigger-run-type-{k}"),
                            )
                            for k in TYPES
                        ],
                        spacing="2",
                    ),
                    value=t.run_type,
                    on_change=lambda v: t.set_field("run_type", v),
                ),
                field_error(t.errors, "run_type", "trigger-run-type-error"),
                rx.text("Commit (optional; default: the branch head)", size="2", weight="medium"),
                rx.input(
                    value=t.commit,
                    on_change=lambda v: t.set_field("commit", v),
                    placeholder="e.g. 3f9a0c1",
                    font_family="monospace",
                    width="100%",
                    custom_attrs=testid("trigger-run-commit-input"),
                ),
                field_error(t.errors, "commit", "trigger-run-commit-error"),
                rx.text("Message (optional)", size="2", weight="medium"),
                rx.input(
                    value=t.message,
                    on_change=lambda v: t.set_field("message", v),
                    placeholder="Why this run?",
                    width="100%",
                    custom_attrs=testid("trigger-run-message-input"),
                ),
                field_error(t.errors, "message", "trigger-run-message-error"),
                rx.text(
                    "Environment overrides for this run only (NAME=value per line)", size="2", weight="medium"
                ),
                rx.text_area(
                    value=t.env_text,
                    on_change=lambda v: t.set_field("env_text", v),
                    placeholder="TF_LOG=debug",
                    font_family="monospace",
                    rows="3",
                    width="100%",
                    custom_attrs=testid("trigger-run-env-input"),
                ),
                field_error(t.errors, "env_text", "trigger-run-env-error"),
                rx.hstack(
                    rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray")),
                    rx.button(
                        rx.cond(t.saving, rx.spinner(size="1"), rx.icon("play", size=14)),
                        "Trigger",
                        on_click=t.submit,
                        disabled=t.saving,
                        custom_attrs=testid("trigger-run-submit"),
                    ),
                    justify="end",
                    width="100%",
                    spacing="2",
                ),
                spacing="2",
                width="100%",
            ),
            max_width="520px",
            custom_attrs=testid("trigger-run-dialog"),
        ),
        open=t.open,
        on_open_change=t.set_open,
    )
