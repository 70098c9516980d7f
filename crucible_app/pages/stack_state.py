"""The stack page's State tab: lock, version history, diff, resource explorer, outputs, tokens."""

from __future__ import annotations

import reflex as rx

from components.layout import empty_state, pager, rel_time, table_skeleton, testid, token_status
from components.plan_diff import STATE_LABELS, plan_diff
from components.state_view import code_block, confirm_dialog, json_value, muted
from state.stack_state import ALL, StackStateState

S = StackStateState


def _card(title: str, hint, *children: rx.Component, tid: str, actions=None, elem_id=None) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.vstack(
                    rx.heading(title, size="3"),
                    muted(hint) if hint is not None else rx.fragment(),
                    spacing="1",
                ),
                rx.spacer(),
                actions if actions is not None else rx.fragment(),
                width="100%",
                align="start",
                wrap="wrap",
            ),
            *children,
            spacing="3",
            width="100%",
        ),
        width="100%",
        id=elem_id,
        custom_attrs=testid(tid),
    )


def _serial_label(serial) -> rx.Var:
    return rx.cond(serial == S.current_serial, "serial " + serial + " · current", "serial " + serial)


def _serial_select(value, on_change, tid: str, *, with_none: bool = False) -> rx.Component:
    items = [rx.foreach(S.serial_options, lambda o: rx.select.item(_serial_label(o), value=o))]
    if with_none:
        # Only offered when the service found no earlier version: the diff shows everything added.
        items.insert(0, rx.cond(S.diff_from == "", rx.select.item("nothing (all added)", value="none")))
    return rx.select.root(
        rx.select.trigger(min_width="170px", font_family="monospace", custom_attrs=testid(tid)),
        rx.select.content(*items),
        value=value,
        on_change=on_change,
        size="2",
    )


# ---------------------------------------------------------------------------- lock


def _lock_value(label: str, value, tid: str, mono: bool = False) -> rx.Component:
    return rx.vstack(
        muted(label),
        rx.text(
            rx.cond(value != "", value, "—"),
            size="2",
            font_family="monospace" if mono else None,
            word_break="break-all",
            custom_attrs=testid(tid),
        ),
        spacing="1",
        min_width="0",
    )


def _lock_card() -> rx.Component:
    lock = S.lock
    status = rx.hstack(
        rx.center(
            rx.icon(rx.cond(S.locked, "lock", "lock-open"), size=18),
            color=rx.cond(S.locked, rx.color("amber", 11), rx.color("green", 11)),
            background=rx.cond(S.locked, rx.color("amber", 3), rx.color("green", 3)),
            border_radius="999px",
            width="34px",
            height="34px",
        ),
        rx.vstack(
            rx.hstack(
                rx.text(
                    rx.cond(S.locked, "Locked", "Unlocked"),
                    weight="bold",
                    size="3",
                    custom_attrs={"data-testid": "stack-state-lock-status", "data-locked": S.locked.to(str)},
                ),
                # Next to the status, clear of the toasts in the top-right corner.
                rx.tooltip(
                    rx.icon_button(
                        rx.icon("refresh-cw", size=12),
                        size="1",
                        variant="ghost",
                        color_scheme="gray",
                        on_click=S.refresh_lock,
                        custom_attrs=testid("stack-state-lock-refresh"),
                    ),
                    content="Refresh the lock status",
                ),
                spacing="2",
                align="center",
            ),
            muted(
                rx.cond(
                    S.locked,
                    "Terraform holds the lock while it plans or applies; writes need its lock ID.",
                    "No one holds the state lock.",
                )
            ),
            spacing="0",
        ),
        spacing="3",
        align="center",
    )
    unlock = rx.cond(
        S.locked & S.is_admin,
        rx.button(
            rx.icon("lock-open", size=14),
            "Force unlock",
            color_scheme="red",
            variant="soft",
            on_click=S.set_unlock_open(True),
            custom_attrs=testid("stack-state-force-unlock-button"),
        ),
    )
    details = rx.grid(
        _lock_value("Who", lock.who, "stack-state-lock-who"),
        _lock_value("Operation", lock.operation, "stack-state-lock-operation"),
        _lock_value("Lock ID", lock.lock_id, "stack-state-lock-id", mono=True),
        rx.vstack(
            muted("Since"),
            rx.box(rel_time(lock.age_rel, lock.locked_exact), custom_attrs=testid("stack-state-lock-age")),
            spacing="1",
        ),
        rx.cond(
            lock.run_id != "",
            rx.vstack(
                muted("Run"),
                rx.link(
                    lock.run_id,
                    href="/runs/" + lock.run_id,
                    size="2",
                    font_family="monospace",
                    custom_attrs=testid("stack-state-lock-run-link"),
                ),
                spacing="1",
            ),
            _lock_value("Info", lock.info, "stack-state-lock-info"),
        ),
        columns=rx.breakpoints(initial="2", md="5"),
        spacing="4",
        width="100%",
    )
    return rx.card(
        rx.vstack(
            rx.hstack(
                status,
                rx.spacer(),
                unlock,
                width="100%",
                align="center",
                spacing="3",
            ),
            rx.cond(S.locked, details),
            spacing="3",
            width="100%",
        ),
        width="100%",
        custom_attrs=testid("stack-state-lock"),
    )


def _unlock_dialog() -> rx.Component:
    return confirm_dialog(
        title="Force unlock the state",
        description=rx.text(
            "This removes the lock held by ",
            rx.text.span(rx.cond(S.lock.who != "", S.lock.who, "someone"), weight="bold"),
            " (lock ",
            rx.code(S.lock.lock_id),
            "). If that Terraform process is still running, its next write will be refused, and "
            "another writer could change the state at the same time. Only unlock a lock you know "
            "is stale.",
        ),
        confirm_label="Force unlock",
        on_confirm=S.force_unlock,
        open=S.unlock_open,
        on_open_change=S.set_unlock_open,
        busy=S.unlocking,
        tid="stack-state-force-unlock",
    )


# ---------------------------------------------------------------------------- history


def _by(v) -> rx.Component:
    return rx.cond(
        v.run_id != "",
        rx.link(
            "run ",
            v.run_id,
            href="/runs/" + v.run_id,
            size="2",
            font_family="monospace",
            custom_attrs=testid("stack-state-version-run-link"),
        ),
        rx.text(v.created_by, size="2", trim="both", custom_attrs=testid("stack-state-version-by")),
    )


def _row_action(icon: str, tip: str, on_click, tid: str) -> rx.Component:
    return rx.tooltip(
        rx.icon_button(
            rx.icon(icon, size=14),
            size="1",
            variant="ghost",
            color_scheme="gray",
            on_click=on_click,
            custom_attrs=testid(tid),
        ),
        content=tip,
    )


def _download(v) -> rx.Component:
    url = "/api/v1/stacks/" + S.stack_id + "/state/versions/" + v.serial.to(str) + "/download"
    button = rx.icon_button(rx.icon("download", size=14), size="1", variant="ghost", color_scheme="gray")
    return rx.cond(
        S.can_write,
        rx.tooltip(
            # A plain link: same origin, the session cookie authenticates; the server audits it.
            rx.el.a(
                button,
                href=url,
                custom_attrs={"download": "", "data-testid": "stack-state-version-download"},
            ),
            content="Download this version (it can contain secrets)",
        ),
        rx.tooltip(
            rx.icon_button(
                rx.icon("download", size=14),
                size="1",
                variant="ghost",
                disabled=True,
                custom_attrs=testid("stack-state-version-download-disabled"),
            ),
            content="Members and admins download state: it can contain secrets",
        ),
    )


def _version_row(v) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.hstack(
                rx.code(v.serial, weight="medium", custom_attrs=testid("stack-state-version-serial")),
                rx.cond(
                    v.current,
                    rx.badge(
                        "current",
                        color_scheme="teal",
                        variant="soft",
                        size="1",
                        custom_attrs=testid("stack-state-version-current"),
                    ),
                ),
                spacing="2",
                align="center",
            )
        ),
        rx.table.cell(
            rx.box(
                rel_time(v.created_rel, v.created_exact), custom_attrs=testid("stack-state-version-created")
            )
        ),
        rx.table.cell(_by(v)),
        rx.table.cell(
            rx.tooltip(
                rx.text(v.resources, size="2", custom_attrs=testid("stack-state-version-resources")),
                content=v.instances.to(str) + " instances",
            )
        ),
        rx.table.cell(
            rx.text(v.size, size="2", white_space="nowrap", custom_attrs=testid("stack-state-version-size"))
        ),
        rx.table.cell(
            rx.tooltip(
                rx.code(
                    v.sha_short, size="1", variant="ghost", custom_attrs=testid("stack-state-version-sha")
                ),
                content="SHA-256 " + v.sha256,
            )
        ),
        rx.table.cell(
            rx.hstack(
                rx.cond(v.forced, rx.badge("forced", color_scheme="red", variant="soft", size="1")),
                rx.cond(v.is_rollback, rx.badge("rollback", color_scheme="amber", variant="soft", size="1")),
                rx.cond(
                    v.note != "",
                    rx.text(v.note, size="1", color=rx.color("gray", 10), trim="both"),
                ),
                spacing="1",
                align="center",
                wrap="wrap",
                custom_attrs=testid("stack-state-version-note"),
            )
        ),
        rx.table.cell(
            rx.hstack(
                _row_action(
                    "git-compare",
                    "Diff with the version before",
                    S.diff_previous(v.serial),
                    "stack-state-version-diff",
                ),
                _row_action(
                    "list-tree",
                    "Browse resources and outputs",
                    S.browse(v.serial),
                    "stack-state-version-browse",
                ),
                _download(v),
                rx.cond(
                    S.is_admin & ~v.current,
                    _row_action(
                        "history",
                        "Roll back: a new version with this content",
                        S.ask_rollback(v.serial),
                        "stack-state-version-rollback",
                    ),
                ),
                spacing="1",
                justify="end",
            )
        ),
        custom_attrs={
            "data-testid": "stack-state-version-row",
            "data-serial": v.serial,
            "data-current": v.current.to(str),
        },
    )


def _history_card() -> rx.Component:
    table = rx.table.root(
        rx.table.header(
            rx.table.row(
                rx.table.column_header_cell("Serial"),
                rx.table.column_header_cell("Created"),
                rx.table.column_header_cell("By"),
                rx.table.column_header_cell("Resources"),
                rx.table.column_header_cell("Size"),
                rx.table.column_header_cell("SHA-256"),
                rx.table.column_header_cell("Note"),
                rx.table.column_header_cell(""),
            )
        ),
        rx.table.body(rx.foreach(S.versions, _version_row)),
        width="100%",
        size="1",
        variant="surface",
        custom_attrs=testid("stack-state-versions-table"),
    )
    versions_pager = pager(
        S.versions_label,
        tid="stack-state-versions",
        has_prev=S.versions_has_prev,
        on_prev=S.prev_versions,
        has_next=S.versions_has_next,
        on_next=S.next_versions,
        prev_text="Newer",
        next_text="Older",
        size="1",
        loading=S.versions_loading,
    )
    return _card(
        "Versions",
        "Every state Terraform wrote, newest first. Versions are immutable; a rollback adds a new one.",
        table,
        versions_pager,
        tid="stack-state-versions",
    )


def _rollback_dialog() -> rx.Component:
    return confirm_dialog(
        title="Roll back the state",
        description=rx.text(
            "This creates a new version with the content of serial ",
            rx.code(S.rollback_serial),
            " and makes it current (its serial becomes the highest + 1, so Terraform's next "
            "write fits). Nothing is deleted: the current version stays in the history. "
            "Real infrastructure is not changed: the next plan shows the difference.",
        ),
        confirm_label="Roll back",
        on_confirm=S.rollback,
        open=S.rollback_open,
        on_open_change=S.set_rollback_open,
        busy=S.rolling_back,
        tid="stack-state-rollback",
        color="amber",
    )


# ---------------------------------------------------------------------------- diff


def _chip(symbol: str, count, label: str, color: str, key: str) -> rx.Component:
    return rx.text(
        symbol,
        count,
        " ",
        label,
        size="2",
        font_family="monospace",
        color=rx.color(color, 11),
        custom_attrs=testid(f"stack-state-diff-{key}"),
    )


def _output_change(o) -> rx.Component:
    def value(text, folded, preview, tid: str) -> rx.Component:
        return rx.cond(text != "", json_value(text, o.sensitive, folded, preview, tid))

    return rx.table.row(
        rx.table.cell(
            rx.hstack(
                rx.text(
                    rx.match(o.action, ("create", "+"), ("delete", "-"), "~"),
                    color=rx.match(
                        o.action,
                        ("create", rx.color("green", 11)),
                        ("delete", rx.color("red", 11)),
                        rx.color("amber", 11),
                    ),
                    weight="bold",
                    font_family="monospace",
                ),
                rx.code(o.name, variant="ghost"),
                spacing="2",
            )
        ),
        rx.table.cell(value(o.before, o.before_folded, o.before_preview, "stack-state-diff-output-before")),
        rx.table.cell(value(o.after, o.after_folded, o.after_preview, "stack-state-diff-output-after")),
        custom_attrs={
            "data-testid": "stack-state-diff-output-row",
            "data-name": o.name,
            "data-change": o.change,
        },
    )


def _diff_card() -> rx.Component:
    selects = rx.hstack(
        muted("From", size="2"),
        _serial_select(S.diff_from_choice, S.set_diff_from, "stack-state-diff-from-select", with_none=True),
        rx.icon("arrow-right", size=14, color=rx.color("gray", 10)),
        muted("to", size="2"),
        _serial_select(S.diff_to, S.set_diff_to, "stack-state-diff-to-select"),
        rx.button(
            rx.cond(S.compare_open, "Hide", "Other serials"),
            variant="ghost",
            size="1",
            on_click=S.toggle_compare,
            custom_attrs=testid("stack-state-compare-toggle"),
        ),
        spacing="2",
        align="center",
        wrap="wrap",
    )
    compare = rx.cond(
        S.compare_open,
        rx.form(
            rx.hstack(
                muted("Serials", size="2"),
                rx.input(
                    name="from",
                    type="number",
                    min=0,
                    placeholder="the one before",
                    default_value=S.diff_from,
                    width="130px",
                    size="1",
                    custom_attrs=testid("stack-state-compare-from-input"),
                ),
                rx.icon("arrow-right", size=14, color=rx.color("gray", 10)),
                rx.input(
                    name="to",
                    type="number",
                    min=0,
                    placeholder="serial",
                    default_value=S.diff_to,
                    width="100px",
                    size="1",
                    custom_attrs=testid("stack-state-compare-to-input"),
                ),
                rx.button(
                    "Compare", type="submit", size="1", custom_attrs=testid("stack-state-compare-submit")
                ),
                rx.cond(
                    S.compare_error != "",
                    rx.text(
                        S.compare_error,
                        size="1",
                        color=rx.color("red", 11),
                        custom_attrs=testid("stack-state-compare-error"),
                    ),
                ),
                spacing="2",
                align="center",
                wrap="wrap",
            ),
            on_submit=S.compare_serials,
            reset_on_submit=False,
            custom_attrs=testid("stack-state-compare-form"),
        ),
    )
    selects = rx.vstack(selects, compare, spacing="2", width="100%")
    summary = rx.hstack(
        _chip("+", S.diff_added, "added", "green", "added"),
        _chip("~", S.diff_changed, "changed", "amber", "changed"),
        _chip("-", S.diff_removed, "removed", "red", "removed"),
        muted(S.diff_unchanged, " unchanged", size="2"),
        spacing="4",
        wrap="wrap",
        custom_attrs={
            "data-testid": "stack-state-diff-summary",
            "data-added": S.diff_added,
            "data-changed": S.diff_changed,
            "data-removed": S.diff_removed,
        },
    )
    outputs = rx.cond(
        S.diff_outputs.length() > 0,
        rx.vstack(
            rx.text("Outputs", weight="bold", size="2"),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Output"),
                        rx.table.column_header_cell("Before"),
                        rx.table.column_header_cell("After"),
                    )
                ),
                rx.table.body(rx.foreach(S.diff_outputs, _output_change)),
                size="1",
                width="100%",
            ),
            spacing="2",
            width="100%",
            custom_attrs=testid("stack-state-diff-outputs"),
        ),
    )
    body = rx.cond(
        S.diff_loading | ~S.diff_loaded,
        rx.box(table_skeleton(3, 3), custom_attrs=testid("stack-state-diff-loading"), width="100%"),
        rx.cond(
            S.diff_error != "",
            rx.callout(
                S.diff_error,
                icon="triangle-alert",
                color_scheme="amber",
                width="100%",
                custom_attrs=testid("stack-state-diff-error"),
            ),
            rx.vstack(
                summary,
                rx.cond(
                    S.diff_lineage_changed,
                    rx.callout(
                        "The two versions have different lineages: they are different states, not "
                        "one the other's successor (a forced upload or a rollback across lineages).",
                        icon="info",
                        color_scheme="blue",
                        size="1",
                        width="100%",
                        custom_attrs=testid("stack-state-diff-lineage"),
                    ),
                ),
                rx.cond(
                    S.diff_has_changes,
                    rx.vstack(
                        plan_diff(
                            S.diff,
                            S.diff_hidden,
                            labels=STATE_LABELS,
                            more_attributes=" more attributes: download the version to see them",
                        ),
                        outputs,
                        spacing="4",
                        width="100%",
                    ),
                    muted(
                        "No differences: the resources and outputs are the same in both versions.",
                        size="2",
                        custom_attrs=testid("stack-state-diff-empty"),
                    ),
                ),
                spacing="3",
                width="100%",
            ),
        ),
    )
    return _card(
        "Diff",
        "What changed between two versions. Sensitive values are hidden; click a resource to see "
        "its attributes.",
        selects,
        body,
        tid="stack-state-diff",
        elem_id="stack-state-diff",
    )


# ---------------------------------------------------------------------------- contents


def _resource_row(r) -> rx.Component:
    selected = S.selected_address == r.address
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.code(
                    r.address,
                    variant="ghost",
                    size="1",
                    word_break="break-all",
                    custom_attrs=testid("stack-state-resource-address"),
                ),
                rx.hstack(
                    rx.text(r.provider, size="1", color=rx.color("gray", 10)),
                    rx.cond(r.mode == "data", rx.badge("data", variant="outline", size="1")),
                    rx.cond(r.status != "", rx.badge(r.status, color_scheme="red", variant="soft", size="1")),
                    rx.cond(r.deposed != "", rx.badge("deposed ", r.deposed, color_scheme="gray", size="1")),
                    spacing="1",
                    align="center",
                ),
                spacing="1",
            )
        ),
        rx.table.cell(rx.code(r.type, variant="ghost", size="1", color_scheme="gray")),
        on_click=S.select_resource(r.address),
        cursor="pointer",
        background=rx.cond(selected, rx.color("teal", 3), "transparent"),
        _hover={"background": rx.cond(selected, rx.color("teal", 3), rx.color("gray", 3))},
        custom_attrs={
            "data-testid": "stack-state-resource-row",
            "data-address": r.address,
            "data-selected": selected.to(str),
        },
    )


def _attr_row(a) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.code(a.path, size="1", variant="ghost", word_break="break-all")),
        rx.table.cell(
            json_value(a.value, a.sensitive, a.folded, a.preview, "stack-state-resource-attr-value")
        ),
        custom_attrs={
            "data-testid": "stack-state-resource-attr",
            "data-path": a.path,
            "data-sensitive": a.sensitive.to(str),
        },
    )


def _resource_detail() -> rx.Component:
    r = S.selected
    return rx.cond(
        S.selected_address == "",
        rx.center(
            muted("Select an instance to see its attributes.", size="2"),
            padding="2rem",
            width="100%",
            border=f"1px dashed {rx.color('gray', 6)}",
            border_radius="8px",
            custom_attrs=testid("stack-state-resource-none"),
        ),
        rx.vstack(
            rx.hstack(
                rx.code(
                    S.selected_address,
                    weight="medium",
                    word_break="break-all",
                    custom_attrs=testid("stack-state-resource-detail-address"),
                ),
                rx.spacer(),
                rx.icon_button(
                    rx.icon("x", size=14),
                    size="1",
                    variant="ghost",
                    color_scheme="gray",
                    on_click=S.close_resource,
                    custom_attrs=testid("stack-state-resource-close"),
                ),
                width="100%",
                align="start",
            ),
            rx.cond(
                S.selected_loading,
                table_skeleton(4, 2),
                rx.vstack(
                    rx.hstack(
                        rx.badge(r.type, variant="soft", font_family="monospace"),
                        rx.badge(r.provider, variant="outline", color_scheme="gray"),
                        rx.cond(r.module != "", rx.badge(r.module, variant="outline", color_scheme="gray")),
                        rx.cond(r.status != "", rx.badge(r.status, color_scheme="red", variant="soft")),
                        muted(r.attr_count, " attributes"),
                        spacing="2",
                        wrap="wrap",
                        align="center",
                    ),
                    rx.table.root(
                        rx.table.body(rx.foreach(S.selected_attrs, _attr_row)),
                        size="1",
                        width="100%",
                    ),
                    rx.cond(
                        S.selected_hidden > 0,
                        muted(S.selected_hidden, " more attributes: download the version to see them"),
                    ),
                    spacing="3",
                    width="100%",
                ),
            ),
            spacing="2",
            width="100%",
            padding="0.75rem",
            border=f"1px solid {rx.color('gray', 5)}",
            border_radius="8px",
            max_height="70vh",
            overflow_y="auto",
            custom_attrs=testid("stack-state-resource-detail"),
        ),
    )


def _contents_card() -> rx.Component:
    filters = rx.hstack(
        rx.select.root(
            rx.select.trigger(
                placeholder="Type",
                min_width="180px",
                custom_attrs=testid("stack-state-resources-type-filter"),
            ),
            rx.select.content(
                rx.select.item("All types", value=ALL),
                rx.foreach(S.resource_types, lambda t: rx.select.item(t, value=t)),
            ),
            value=S.type_filter,
            on_change=S.set_type_filter,
        ),
        rx.debounce_input(
            rx.input(
                rx.input.slot(rx.icon("search", size=14)),
                placeholder="Address contains…",
                value=S.address_filter,
                on_change=S.set_address_filter,
                font_family="monospace",
                width="300px",
                custom_attrs=testid("stack-state-resources-address-input"),
            ),
            debounce_timeout=300,
        ),
        rx.cond(
            S.resources_filtered,
            rx.button(
                "Clear",
                variant="ghost",
                on_click=S.clear_filters,
                custom_attrs=testid("stack-state-resources-clear"),
            ),
        ),
        rx.spacer(),
        muted(S.resources_label, size="2", custom_attrs=testid("stack-state-resources-count")),
        width="100%",
        align="center",
        spacing="3",
        wrap="wrap",
    )
    listing = rx.vstack(
        rx.cond(
            S.resources_loading & (S.resources.length() == 0),
            table_skeleton(6, 2),
            rx.cond(
                S.resources.length() == 0,
                rx.center(
                    muted(
                        rx.cond(
                            S.resources_filtered,
                            "No instances match these filters.",
                            "This version holds no resources.",
                        ),
                        size="2",
                    ),
                    padding="2rem",
                    width="100%",
                    custom_attrs=testid("stack-state-resources-empty"),
                ),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            rx.table.column_header_cell("Instance"),
                            rx.table.column_header_cell("Type"),
                        )
                    ),
                    rx.table.body(rx.foreach(S.resources, _resource_row)),
                    size="1",
                    width="100%",
                    variant="surface",
                    opacity=rx.cond(S.resources_loading, "0.6", "1"),
                    custom_attrs=testid("stack-state-resources-table"),
                ),
            ),
        ),
        rx.cond(
            S.resources_has_prev | S.resources_has_next,
            pager(
                None,
                tid="stack-state-resources",
                has_prev=S.resources_has_prev,
                on_prev=S.prev_resources,
                has_next=S.resources_has_next,
                on_next=S.next_resources,
                size="1",
            ),
        ),
        width="100%",
        spacing="2",
        min_width="0",
    )
    body = rx.cond(
        S.contents_error != "",
        rx.callout(
            S.contents_error,
            icon="triangle-alert",
            color_scheme="amber",
            width="100%",
            custom_attrs=testid("stack-state-contents-error"),
        ),
        rx.vstack(
            filters,
            rx.grid(
                listing,
                rx.box(_resource_detail(), min_width="0"),
                columns=rx.breakpoints(initial="1", md="2"),
                spacing="4",
                width="100%",
                align="start",
            ),
            spacing="3",
            width="100%",
        ),
    )
    return _card(
        "Resources",
        "The instances in one version; sensitive attributes are hidden.",
        body,
        tid="stack-state-contents",
        elem_id="stack-state-contents",
        actions=rx.hstack(
            muted("Version", size="2"),
            _serial_select(S.contents_serial, S.set_contents_serial, "stack-state-contents-version-select"),
            spacing="2",
            align="center",
        ),
    )


def _output_row(o) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.code(o.name, variant="ghost", custom_attrs=testid("stack-state-output-name"))),
        rx.table.cell(rx.code(o.type, size="1", variant="ghost", color_scheme="gray")),
        rx.table.cell(json_value(o.value, o.sensitive, o.folded, o.preview, "stack-state-output-value")),
        custom_attrs={
            "data-testid": "stack-state-output-row",
            "data-name": o.name,
            "data-sensitive": o.sensitive.to(str),
        },
    )


def _outputs_card() -> rx.Component:
    return _card(
        "Outputs",
        rx.text.span("Root module outputs of serial ", S.contents_serial, "; sensitive ones stay hidden."),
        rx.cond(
            S.resources_loading & (S.outputs.length() == 0),
            table_skeleton(2, 3),
            rx.cond(
                S.outputs.length() == 0,
                muted(
                    "This version has no outputs.", size="2", custom_attrs=testid("stack-state-outputs-empty")
                ),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            rx.table.column_header_cell("Name"),
                            rx.table.column_header_cell("Type"),
                            rx.table.column_header_cell("Value"),
                        )
                    ),
                    rx.table.body(rx.foreach(S.outputs, _output_row)),
                    size="1",
                    width="100%",
                    variant="surface",
                    custom_attrs=testid("stack-state-outputs-table"),
                ),
            ),
        ),
        tid="stack-state-outputs",
    )


# ---------------------------------------------------------------------------- tokens


def _token_row(t) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.text(t.name, size="2", weight="medium", custom_attrs=testid("stack-state-token-name"))
        ),
        rx.table.cell(
            rx.badge(
                t.access,
                color_scheme=rx.cond(t.access == "write", "teal", "gray"),
                variant="soft",
                custom_attrs=testid("stack-state-token-access"),
            )
        ),
        rx.table.cell(rx.code(t.prefix, "…", size="1", variant="ghost")),
        rx.table.cell(
            rx.hstack(
                rel_time(t.created_rel, t.created_exact),
                rx.cond(t.created_by != "", muted("by ", t.created_by)),
                spacing="2",
                align="center",
            )
        ),
        rx.table.cell(rel_time(t.last_used_rel, t.last_used_exact)),
        rx.table.cell(token_status(t.revoked, t.revoked_exact, "stack-state-token-status")),
        rx.table.cell(
            rx.cond(
                S.can_write & ~t.revoked,
                rx.button(
                    "Revoke",
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=S.ask_revoke(t.id),
                    custom_attrs=testid("stack-state-token-revoke"),
                ),
            )
        ),
        custom_attrs={
            "data-testid": "stack-state-token-row",
            "data-token-name": t.name,
            "data-token-status": rx.cond(t.revoked, "revoked", "active"),
        },
    )


def _token_form() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.vstack(
                rx.text("Name", size="2", weight="medium"),
                rx.input(
                    value=S.token_name,
                    on_change=S.set_token_name,
                    placeholder="laptop, ci-pipeline…",
                    auto_complete="off",
                    width="240px",
                    color_scheme=rx.cond(S.token_errors.contains("name"), "red", "gray"),
                    custom_attrs=testid("stack-state-token-name-input"),
                ),
                rx.cond(
                    S.token_errors.contains("name"),
                    rx.text(
                        S.token_errors["name"],
                        size="1",
                        color=rx.color("red", 11),
                        custom_attrs=testid("stack-state-token-name-error"),
                    ),
                ),
                spacing="1",
            ),
            rx.vstack(
                rx.text("Access", size="2", weight="medium"),
                rx.select.root(
                    rx.select.trigger(width="200px", custom_attrs=testid("stack-state-token-access-select")),
                    rx.select.content(
                        rx.select.item(
                            "write: plan and apply",
                            value="write",
                            custom_attrs=testid("stack-state-token-access-option-write"),
                        ),
                        rx.select.item(
                            "read: read only",
                            value="read",
                            custom_attrs=testid("stack-state-token-access-option-read"),
                        ),
                    ),
                    value=S.token_access,
                    on_change=S.set_token_access,
                ),
                spacing="1",
            ),
            rx.vstack(
                rx.text("\u00a0", size="2"),
                rx.button(
                    rx.icon("key-round", size=14),
                    "Create token",
                    type="submit",
                    loading=S.token_saving,
                    custom_attrs=testid("stack-state-token-submit"),
                ),
                spacing="1",
            ),
            spacing="3",
            align="start",
            wrap="wrap",
        ),
        on_submit=S.create_token,
        no_validate=True,
        width="100%",
    )


def _tokens_card() -> rx.Component:
    table = rx.cond(
        S.tokens.length() == 0,
        muted(
            "No state tokens yet. Create one for each place that runs Terraform against this stack.",
            size="2",
            custom_attrs=testid("stack-state-tokens-empty"),
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Name"),
                    rx.table.column_header_cell("Access"),
                    rx.table.column_header_cell("Token"),
                    rx.table.column_header_cell("Created"),
                    rx.table.column_header_cell("Last used"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell(""),
                )
            ),
            rx.table.body(rx.foreach(S.tokens, _token_row)),
            size="1",
            width="100%",
            variant="surface",
            custom_attrs=testid("stack-state-tokens-table"),
        ),
    )
    return _card(
        "State access tokens",
        rx.text.span(
            "The password of this stack's Terraform http backend (username: ",
            rx.code(S.stack_id, size="1"),
            "). Read tokens can only read; write tokens lock and write.",
        ),
        rx.cond(
            S.can_write,
            _token_form(),
            muted(
                "Members and admins create and revoke state tokens.",
                size="2",
                custom_attrs=testid("stack-state-tokens-readonly"),
            ),
        ),
        table,
        rx.cond(
            S.run_tokens > 0,
            muted(
                S.run_tokens,
                " short-lived run token(s) of active runs are not listed: Crucible issues and "
                "revokes them itself.",
                custom_attrs=testid("stack-state-run-tokens"),
            ),
        ),
        # Without versions the empty state above shows the block already.
        rx.cond(
            S.has_versions,
            rx.el.details(
                rx.el.summary(
                    rx.text("Backend configuration", size="2", weight="medium", as_="span"),
                    cursor="pointer",
                    custom_attrs=testid("stack-state-backend-config-toggle"),
                ),
                rx.vstack(
                    muted("Add this to your configuration and set TF_HTTP_PASSWORD to a write token:"),
                    code_block(S.backend_snippet, "stack-state-backend-config", S.copied("Backend block")),
                    spacing="2",
                    width="100%",
                    padding_top="0.5rem",
                ),
                width="100%",
            ),
        ),
        tid="stack-state-tokens",
    )


def _new_token_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(
                "State token created: ", rx.text.span(S.new_token_name, font_family="monospace")
            ),
            rx.alert_dialog.description(
                "Terraform sends it as the HTTP basic password of this stack's state backend.", size="2"
            ),
            rx.vstack(
                rx.callout(
                    "Copy it now: this token will not be shown again. If you lose it, revoke it and "
                    "create a new one.",
                    icon="triangle-alert",
                    color_scheme="amber",
                    size="1",
                    width="100%",
                ),
                rx.hstack(
                    rx.code(
                        S.new_token_value,
                        size="2",
                        variant="soft",
                        word_break="break-all",
                        padding="0.5rem",
                        flex="1",
                        custom_attrs=testid("stack-state-token-value"),
                    ),
                    rx.button(
                        rx.icon("copy", size=14),
                        "Copy",
                        variant="soft",
                        on_click=[rx.set_clipboard(S.new_token_value), S.copied("Token")],
                        custom_attrs=testid("stack-state-token-copy"),
                    ),
                    width="100%",
                    align="center",
                    spacing="2",
                ),
                rx.text("1. The backend block, in your configuration:", size="2", weight="medium"),
                code_block(S.backend_snippet, "stack-state-token-snippet", S.copied("Backend block")),
                rx.text(
                    "2. The credentials, in the environment (then terraform init):", size="2", weight="medium"
                ),
                code_block(S.new_token_env, "stack-state-token-env", S.copied("Environment")),
                rx.hstack(
                    rx.button(
                        "Done", on_click=S.close_new_token, custom_attrs=testid("stack-state-token-done")
                    ),
                    justify="end",
                    width="100%",
                ),
                spacing="3",
                width="100%",
                margin_top="1rem",
            ),
            max_width="720px",
            custom_attrs=testid("stack-state-token-dialog"),
        ),
        open=S.new_token_open,
        on_open_change=S.set_new_token_open,
    )


def _revoke_dialog() -> rx.Component:
    return confirm_dialog(
        title="Revoke state token",
        description=rx.text(
            "Revoke ",
            rx.code(S.revoke_name),
            "? Terraform using it gets 401 from its next request on. This cannot be undone.",
        ),
        confirm_label="Revoke token",
        on_confirm=S.revoke,
        open=S.revoke_open,
        on_open_change=S.set_revoke_open,
        busy=S.revoking,
        tid="stack-state-token-revoke",
    )


# ---------------------------------------------------------------------------- the tab


def _no_state() -> rx.Component:
    return rx.vstack(
        empty_state(
            "database",
            "No state yet",
            "Point Terraform or OpenTofu at Crucible: add this backend block to the configuration, "
            "create a write token below, set TF_HTTP_PASSWORD to it and run terraform init "
            "(-migrate-state moves an existing state here). Runs of this stack use it on their own.",
            rx.box(
                code_block(S.backend_snippet, "stack-state-empty-backend-config", S.copied("Backend block")),
                width="100%",
                max_width="640px",
                text_align="left",
                padding_top="0.5rem",
            ),
            tid="stack-state-empty",
        ),
        width="100%",
    )


def state_tab(stack_id) -> rx.Component:
    """The tab's body; ``stack_id`` is the page's stack (the tab's data may be another's)."""
    ready = ~S.loading & (S.stack_id == stack_id)
    return rx.box(
        rx.cond(
            ~ready,
            table_skeleton(6, 4),
            rx.cond(
                S.error != "",
                rx.callout(
                    S.error,
                    icon="triangle-alert",
                    color_scheme="red",
                    width="100%",
                    custom_attrs=testid("stack-state-error"),
                ),
                rx.vstack(
                    _lock_card(),
                    rx.cond(
                        S.has_versions,
                        rx.vstack(
                            _history_card(),
                            _diff_card(),
                            _contents_card(),
                            # The explorer's error (e.g. too large) covers the outputs too.
                            rx.cond(S.contents_error == "", _outputs_card()),
                            spacing="4",
                            width="100%",
                        ),
                        _no_state(),
                    ),
                    _tokens_card(),
                    _unlock_dialog(),
                    _rollback_dialog(),
                    _new_token_dialog(),
                    _revoke_dialog(),
                    spacing="4",
                    width="100%",
                ),
            ),
        ),
        width="100%",
        custom_attrs=testid("stack-state-tab"),
    )
