"""Policies list: search by name, filter by type, paging; links to the editor, the playground
and the starter library."""

from __future__ import annotations

import reflex as rx

from components.layout import empty_state, page, pager, rel_time, table_skeleton, testid
from components.policy_widgets import TYPE_LABELS, type_badge
from state.policies import ALL, TYPES, PoliciesState

S = PoliciesState
LIBRARY_ROUTE = "/policies/library"
PLAYGROUND_ROUTE = "/policies/test"


def new_policy_button(tid: str = "policies-new-button") -> rx.Component:
    return rx.cond(
        S.is_admin,
        rx.link(
            rx.button(rx.icon("plus", size=16), "New policy", custom_attrs=testid(tid)), href="/policies/new"
        ),
        rx.tooltip(
            rx.button(rx.icon("plus", size=16), "New policy", disabled=True, custom_attrs=testid(tid)),
            content="Only admins create policies",
        ),
    )


def library_button(tid: str = "policies-library-button", variant: str = "soft") -> rx.Component:
    return rx.link(
        rx.button(
            rx.icon("library", size=16), "Browse starter library", variant=variant, custom_attrs=testid(tid)
        ),
        href=LIBRARY_ROUTE,
    )


def playground_button() -> rx.Component:
    return rx.link(
        rx.button(
            rx.icon("flask-conical", size=16),
            "Playground",
            variant="soft",
            color_scheme="gray",
            custom_attrs=testid("policies-playground-button"),
        ),
        href=PLAYGROUND_ROUTE,
    )


def _row(row) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.link(
                    row.name,
                    href="/policies/" + row.id,
                    weight="medium",
                    custom_attrs=testid("policies-row-link"),
                ),
                rx.cond(
                    row.description != "",
                    rx.text(row.description, size="1", color=rx.color("gray", 10), trim="both"),
                ),
                spacing="1",
                max_width="380px",
            )
        ),
        rx.table.cell(type_badge(row.type, "policies-row-type")),
        rx.table.cell(
            rx.badge(
                rx.cond(row.enabled, "enabled", "disabled"),
                color_scheme=rx.cond(row.enabled, "green", "gray"),
                variant="soft",
                custom_attrs=testid("policies-row-enabled"),
            )
        ),
        rx.table.cell(
            rx.text(
                row.applies,
                size="2",
                color=rx.cond(row.attached, rx.color("gray", 12), rx.color("gray", 9)),
                custom_attrs=testid("policies-row-applies"),
            )
        ),
        rx.table.cell(
            rx.text(
                "v",
                row.version,
                size="2",
                font_family="monospace",
                custom_attrs=testid("policies-row-version"),
            )
        ),
        rx.table.cell(
            rx.hstack(
                rel_time(row.updated_rel, row.updated_exact),
                rx.cond(row.updated_by != "", rx.text(row.updated_by, size="1", color=rx.color("gray", 9))),
                spacing="2",
                align="center",
            )
        ),
        custom_attrs={
            "data-testid": "policies-row",
            "data-policy-name": row.name,
            "data-policy-id": row.id,
            "data-type": row.type,
        },
    )


def _filters() -> rx.Component:
    return rx.hstack(
        rx.debounce_input(
            rx.input(
                rx.input.slot(rx.icon("search", size=14)),
                placeholder="Search by name",
                value=S.q,
                on_change=S.set_search,
                width="280px",
                custom_attrs=testid("policies-search-input"),
            ),
            debounce_timeout=300,
        ),
        rx.select.root(
            rx.select.trigger(placeholder="Type", custom_attrs=testid("policies-type-filter")),
            rx.select.content(
                rx.select.item("All types", value=ALL),
                *[
                    rx.select.item(TYPE_LABELS[t], value=t, custom_attrs=testid(f"policies-type-option-{t}"))
                    for t in TYPES
                ],
            ),
            value=S.type_filter,
            on_change=S.set_type_filter,
        ),
        rx.cond(
            S.filtered,
            rx.button(
                "Clear",
                variant="ghost",
                on_click=S.clear_filters,
                custom_attrs=testid("policies-clear-filters"),
            ),
        ),
        spacing="3",
        align="center",
        wrap="wrap",
    )


def _table() -> rx.Component:
    return rx.vstack(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Name"),
                    rx.table.column_header_cell("Type"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell("Applies to"),
                    rx.table.column_header_cell("Version"),
                    rx.table.column_header_cell("Updated"),
                )
            ),
            rx.table.body(rx.foreach(S.rows, _row)),
            width="100%",
            variant="surface",
            custom_attrs=testid("policies-table"),
        ),
        pager(
            S.page_label,
            tid="policies",
            has_prev=S.has_prev,
            on_prev=S.prev_page,
            has_next=S.has_next,
            on_next=S.next_page,
        ),
        width="100%",
    )


def policies_page() -> rx.Component:
    body = rx.cond(
        S.loading & (S.rows.length() == 0),
        table_skeleton(5, 6),
        rx.cond(
            S.count == 0,
            rx.cond(
                S.filtered,
                empty_state(
                    "search-x",
                    "No policies match these filters",
                    "Change the search or clear the filters.",
                    tid="policies-empty-filtered",
                ),
                empty_state(
                    "shield-check",
                    "No policies yet",
                    "Policies are Rego guardrails Crucible evaluates on your runs. "
                    "Write one, or start from the starter library.",
                    rx.hstack(
                        new_policy_button("policies-empty-new-button"),
                        library_button("policies-empty-library-button", variant="outline"),
                        spacing="3",
                    ),
                    tid="policies-empty",
                ),
            ),
            _table(),
        ),
    )
    actions = rx.hstack(playground_button(), library_button(), new_policy_button(), spacing="2")
    return page("policies", "Policies", _filters(), body, actions=actions)
