"""Starter library: cards of ready-made policies with their Rego and a one-click install."""

from __future__ import annotations

import reflex as rx

from components.layout import page, testid
from components.policy_widgets import rego_view, type_badge
from state.policies_library import PolicyLibraryState

S = PolicyLibraryState
MUTED = rx.color("gray", 10)


def _install_button(e) -> rx.Component:
    return rx.cond(
        S.is_admin,
        rx.button(
            rx.icon("download", size=14),
            "Install",
            size="2",
            on_click=S.open_install(e.slug),
            custom_attrs=testid("policy-library-install"),
        ),
        rx.tooltip(
            rx.button(
                rx.icon("download", size=14),
                "Install",
                size="2",
                disabled=True,
                custom_attrs=testid("policy-library-install"),
            ),
            content="Only admins install policies",
        ),
    )


def _card(e) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(e.name, size="3", custom_attrs=testid("policy-library-name")),
                rx.spacer(),
                type_badge(e.type, "policy-library-type"),
                width="100%",
                align="center",
                spacing="2",
            ),
            rx.box(
                rx.markdown(e.description),
                font_size="var(--font-size-2)",
                color=rx.color("gray", 11),
                custom_attrs=testid("policy-library-description"),
            ),
            rx.el.details(
                rx.el.summary(
                    rx.text.span("View Rego (", e.lines, " lines)"),
                    cursor="pointer",
                    font_size="var(--font-size-2)",
                    color=rx.color("teal", 11),
                    custom_attrs=testid("policy-library-view-rego"),
                ),
                rx.box(rego_view(e.body, "policy-library-rego", max_height="420px"), padding_top="0.5rem"),
                width="100%",
            ),
            rx.spacer(),
            rx.hstack(
                rx.cond(
                    e.installed_id != "",
                    rx.link(
                        rx.badge(
                            rx.icon("check", size=12),
                            "installed",
                            color_scheme="green",
                            variant="soft",
                        ),
                        href="/policies/" + e.installed_id,
                        custom_attrs=testid("policy-library-installed"),
                    ),
                ),
                rx.spacer(),
                _install_button(e),
                width="100%",
                align="center",
            ),
            spacing="3",
            height="100%",
            width="100%",
        ),
        width="100%",
        custom_attrs={"data-testid": "policy-library-card", "data-slug": e.slug},
    )


def _install_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Install ", S.install_title),
            rx.dialog.description(
                "Creates an enabled policy attached to no stack: it changes nothing until you attach it "
                "to stacks, give it labels or apply it to all stacks. You can edit the copy freely.",
                size="2",
            ),
            rx.vstack(
                rx.text("Name", size="2", weight="medium"),
                rx.input(
                    value=S.install_name,
                    on_change=S.set_install_name,
                    width="100%",
                    color_scheme=rx.cond(S.install_error != "", "red", "gray"),
                    custom_attrs=testid("policy-library-install-name"),
                ),
                rx.cond(
                    S.install_error != "",
                    rx.text(
                        S.install_error,
                        size="1",
                        color=rx.color("red", 11),
                        custom_attrs=testid("policy-library-install-error"),
                    ),
                ),
                spacing="1",
                width="100%",
                margin_top="1rem",
            ),
            rx.hstack(
                rx.dialog.close(
                    rx.button(
                        "Cancel",
                        variant="soft",
                        color_scheme="gray",
                        custom_attrs=testid("policy-library-install-cancel"),
                    )
                ),
                rx.button(
                    "Install",
                    loading=S.installing,
                    on_click=S.install,
                    custom_attrs=testid("policy-library-install-submit"),
                ),
                justify="end",
                spacing="3",
                margin_top="1rem",
            ),
            max_width="480px",
            custom_attrs=testid("policy-library-install-dialog"),
        ),
        open=S.install_open,
        on_open_change=S.set_install_open,
    )


def _skeleton() -> rx.Component:
    return rx.grid(
        *[rx.skeleton(rx.box(height="180px", width="100%")) for _ in range(6)],
        columns=rx.breakpoints(initial="1", md="2", xl="3"),
        spacing="4",
        width="100%",
        custom_attrs=testid("loading-skeleton"),
    )


def policies_library_page() -> rx.Component:
    body = rx.cond(
        S.loading,
        _skeleton(),
        rx.vstack(
            rx.text(
                "Ready-made guardrails, each tested on every policy engine. Each keeps its limits in named "
                "constants at the top: install it, then tune the copy in the editor.",
                size="2",
                color=MUTED,
            ),
            rx.grid(
                rx.foreach(S.entries, _card),
                columns=rx.breakpoints(initial="1", md="2", xl="3"),
                spacing="4",
                width="100%",
                custom_attrs=testid("policy-library-grid"),
            ),
            _install_dialog(),
            spacing="4",
            width="100%",
        ),
    )
    return page("policies", "Starter library", body, breadcrumb=[("Policies", "/policies")])
