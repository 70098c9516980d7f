"""Audit log: filterable, keyset-paginated table with a details dialog and CSV/JSON export."""

from __future__ import annotations

import reflex as rx

from backend.audit.api import CATEGORIES
from components.layout import empty_state, page, rel_time, table_skeleton, testid
from state.audit import ALL, AuditState

MUTED = rx.color("gray", 10)


def _filters() -> rx.Component:
    s = AuditState
    return rx.hstack(
        rx.vstack(
            rx.text("Actor", size="1", color=MUTED),
            rx.select.root(
                rx.select.trigger(
                    placeholder="Actor", min_width="200px", custom_attrs=testid("audit-actor-filter")
                ),
                rx.select.content(
                    rx.select.item("All actors", value=ALL),
                    rx.foreach(s.actors, lambda a: rx.select.item(a, value=a)),
                ),
                value=s.actor,
                on_change=s.set_actor,
            ),
            spacing="1",
        ),
        rx.vstack(
            rx.text("Category", size="1", color=MUTED),
            rx.select.root(
                rx.select.trigger(
                    placeholder="Category", min_width="140px", custom_attrs=testid("audit-category-filter")
                ),
                rx.select.content(
                    rx.select.item("All categories", value=ALL),
                    *[
                        rx.select.item(c, value=c, custom_attrs=testid(f"audit-category-option-{c}"))
                        for c in CATEGORIES
                    ],
                ),
                value=s.category,
                on_change=s.set_category,
            ),
            spacing="1",
        ),
        rx.vstack(
            rx.text("Since (UTC)", size="1", color=MUTED),
            rx.input(
                type="date", value=s.since, on_change=s.set_since, custom_attrs=testid("audit-since-input")
            ),
            spacing="1",
        ),
        rx.vstack(
            rx.text("Until (UTC, inclusive)", size="1", color=MUTED),
            rx.input(
                type="date", value=s.until, on_change=s.set_until, custom_attrs=testid("audit-until-input")
            ),
            spacing="1",
        ),
        rx.cond(
            s.filtered,
            rx.button(
                "Clear", variant="ghost", on_click=s.clear_filters, custom_attrs=testid("audit-clear-filters")
            ),
        ),
        spacing="3",
        align="end",
        wrap="wrap",
    )


def _export_button(label: str, href, fmt: str) -> rx.Component:
    # A plain download link: the browser fetches the stream with the session cookie.
    return rx.button(
        rx.el.a(
            rx.icon("download", size=14),
            label,
            href=href,
            download=f"crucible-audit.{fmt}",
            reload_document=True,  # not a client-side route
            custom_attrs=testid(f"audit-export-{fmt}"),
        ),
        as_child=True,
        variant="soft",
        color_scheme="gray",
    )


def _resource(row) -> rx.Component:
    return rx.cond(
        row.resource_type != "",
        rx.hstack(
            rx.badge(row.resource_type, variant="soft", color_scheme="gray", size="1"),
            rx.text(row.resource_id, size="1", font_family="monospace", color=rx.color("gray", 11)),
            spacing="2",
            align="center",
        ),
        rx.text("—", size="2", color=MUTED),
    )


def _row(row) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rel_time(row.at_rel, row.at_exact), white_space="nowrap"),
        rx.table.cell(
            rx.hstack(
                rx.text(row.actor, size="2"),
                rx.cond(
                    row.actor_type != "user",
                    rx.badge(row.actor_type, variant="outline", size="1", color_scheme="gray"),
                ),
                spacing="2",
                align="center",
            )
        ),
        rx.table.cell(
            rx.code(row.action, variant="ghost", size="2", custom_attrs=testid("audit-row-action"))
        ),
        rx.table.cell(_resource(row)),
        rx.table.cell(
            rx.text(
                rx.cond(row.ip != "", row.ip, "—"),
                size="2",
                font_family="monospace",
                color=rx.color("gray", 11),
            )
        ),
        rx.table.cell(
            rx.button(
                "Details",
                size="1",
                variant="ghost",
                on_click=AuditState.open_details(row.id).stop_propagation,
                custom_attrs=testid("audit-row-details"),
            ),
            text_align="right",
        ),
        on_click=AuditState.open_details(row.id),
        cursor="pointer",
        _hover={"background": rx.color("gray", 2)},
        custom_attrs={"data-testid": "audit-row", "data-event-id": row.id, "data-action": row.action},
    )


def _pager() -> rx.Component:
    s = AuditState
    return rx.hstack(
        rx.text(s.count_label, size="2", weight="medium", custom_attrs=testid("audit-count")),
        rx.text(s.range_label, size="2", color=MUTED),
        rx.spacer(),
        rx.button(
            rx.icon("chevron-left", size=14),
            "Newer",
            variant="soft",
            disabled=~s.has_newer | s.loading,
            on_click=s.newer,
            custom_attrs=testid("audit-newer-page"),
        ),
        rx.button(
            "Older",
            rx.icon("chevron-right", size=14),
            variant="soft",
            disabled=~s.has_older | s.loading,
            on_click=s.older,
            custom_attrs=testid("audit-older-page"),
        ),
        width="100%",
        align="center",
        spacing="3",
    )


def _table() -> rx.Component:
    return rx.vstack(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Time", width="120px"),
                    rx.table.column_header_cell("Actor"),
                    rx.table.column_header_cell("Action"),
                    rx.table.column_header_cell("Resource"),
                    rx.table.column_header_cell("IP"),
                    rx.table.column_header_cell("", width="80px"),
                )
            ),
            rx.table.body(rx.foreach(AuditState.rows, _row)),
            width="100%",
            variant="surface",
            size="1",
            opacity=rx.cond(AuditState.loading, "0.6", "1"),
            custom_attrs=testid("audit-table"),
        ),
        _pager(),
        width="100%",
        spacing="3",
    )


def _kv(label: str, value, tid: str, mono: bool = False) -> rx.Component:
    return rx.data_list.item(
        rx.data_list.label(label, min_width="110px"),
        rx.data_list.value(
            rx.text(
                value,
                size="2",
                font_family="monospace" if mono else None,
                word_break="break-all",
                custom_attrs=testid(tid),
            ),
        ),
    )


def _json_block(title: str, value, tid: str) -> rx.Component:
    return rx.vstack(
        rx.text(title, size="2", weight="medium"),
        rx.cond(
            value != "",
            rx.el.pre(
                value,
                font_family="var(--code-font-family, monospace)",
                font_size="12px",
                line_height="1.5",
                padding="0.75rem",
                margin="0",
                background=rx.color("gray", 2),
                border=f"1px solid {rx.color('gray', 5)}",
                border_radius="6px",
                overflow="auto",
                max_height="260px",
                width="100%",
                white_space="pre",
                custom_attrs=testid(tid),
            ),
            rx.text("—", size="2", color=MUTED, custom_attrs=testid(tid)),
        ),
        spacing="1",
        width="100%",
        min_width="0",
    )


def _details_dialog() -> rx.Component:
    d = AuditState.detail
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(
                rx.hstack(rx.text("Audit event"), rx.code(d.action), spacing="2", align="center")
            ),
            rx.dialog.description(
                "Recorded in the hash-chained audit log; entries cannot be changed.", size="2", color=MUTED
            ),
            rx.vstack(
                rx.data_list.root(
                    _kv("Event", "#" + d.id.to_string(), "audit-details-id", mono=True),
                    _kv("Time", d.at_exact, "audit-details-time"),
                    _kv("Actor", d.actor + " (" + d.actor_type + ")", "audit-details-actor"),
                    _kv(
                        "Resource",
                        rx.cond(d.resource_type != "", d.resource_type + " " + d.resource_id, "—"),
                        "audit-details-resource",
                        mono=True,
                    ),
                    _kv("IP", rx.cond(d.ip != "", d.ip, "—"), "audit-details-ip", mono=True),
                    _kv(
                        "User agent",
                        rx.cond(d.user_agent != "", d.user_agent, "—"),
                        "audit-details-user-agent",
                    ),
                    size="2",
                ),
                rx.grid(
                    _json_block("Before", d.before, "audit-details-before"),
                    _json_block("After", d.after, "audit-details-after"),
                    columns=rx.breakpoints(initial="1", sm="2"),
                    spacing="3",
                    width="100%",
                ),
                rx.data_list.root(
                    _kv("Hash", d.hash, "audit-details-hash", mono=True),
                    _kv("Previous hash", d.prev_hash, "audit-details-prev-hash", mono=True),
                    size="1",
                ),
                rx.hstack(
                    rx.dialog.close(
                        rx.button(
                            "Close",
                            variant="soft",
                            color_scheme="gray",
                            custom_attrs=testid("audit-details-close"),
                        )
                    ),
                    justify="end",
                    width="100%",
                ),
                spacing="4",
                width="100%",
                margin_top="1rem",
            ),
            max_width="760px",
            custom_attrs=testid("audit-details-dialog"),
        ),
        open=AuditState.details_open,
        on_open_change=AuditState.set_details_open,
    )


def audit_page() -> rx.Component:
    s = AuditState
    body = rx.cond(
        s.loading & (s.rows.length() == 0),
        table_skeleton(8, 5),
        rx.cond(
            s.rows.length() == 0,
            rx.cond(
                s.filtered,
                empty_state(
                    "search-x",
                    "No audit events match these filters",
                    rx.cond(
                        s.invalid_range, "“Since” is after “until”.", "Change the filters or clear them."
                    ),
                    rx.button("Clear filters", variant="soft", on_click=s.clear_filters),
                    tid="audit-empty-filtered",
                ),
                empty_state(
                    "scroll-text",
                    "No audit events yet",
                    "Every sign-in and change is recorded here as it happens.",
                    tid="audit-empty",
                ),
            ),
            _table(),
        ),
    )
    actions = rx.hstack(
        _export_button("Export CSV", s.export_csv_url, "csv"),
        _export_button("Export JSON", s.export_json_url, "json"),
        spacing="2",
    )
    return page("audit", "Audit log", _filters(), body, _details_dialog(), actions=actions)
