"""Policy editor: settings and Rego source (Editor tab), version history with source and diff
(Versions), the stacks it applies to with attach/detach (Stacks); delete behind typed
confirmation."""

from __future__ import annotations

import reflex as rx

from components.layout import (
    empty_state,
    field_error,
    page,
    pager,
    rel_time,
    table_skeleton,
    testid,
    tool_badge,
)
from components.layout import typed_delete_dialog as _typed_delete_dialog
from components.policy_backtest import backtest_panel
from components.policy_widgets import (
    TYPE_LABELS,
    diff_view,
    location_error,
    rego_view,
    source_editor,
    type_badge,
)
from state.policies import TYPE_HINTS, TYPES
from state.policies_editor import PolicyEditorState

S = PolicyEditorState
MUTED = rx.color("gray", 10)


def _muted(*children, **props) -> rx.Component:
    return rx.text(*children, size=props.pop("size", "1"), color=MUTED, **props)


def _labelled(label: str, control: rx.Component, *below: rx.Component) -> rx.Component:
    return rx.vstack(rx.text(label, size="2", weight="medium"), control, *below, spacing="1", width="100%")


def _error(field: str) -> rx.Component:
    return field_error(S.errors, field, f"policy-form-{field.replace('_', '-')}-error")


# ------------------------------------------------------------------ editor tab


def _settings_card() -> rx.Component:
    locked = ~S.is_admin
    return rx.card(
        rx.vstack(
            rx.heading("Settings", size="3"),
            _labelled(
                "Name",
                rx.input(
                    value=S.name,
                    on_change=S.set_name,
                    placeholder="no-destroy-outside-destroy-runs",
                    disabled=locked,
                    color_scheme=rx.cond(S.errors.contains("name"), "red", "gray"),
                    width="100%",
                    custom_attrs=testid("policy-form-name-input"),
                ),
                _error("name"),
            ),
            _labelled(
                "Type",
                rx.select.root(
                    rx.select.trigger(width="100%", custom_attrs=testid("policy-form-type-select")),
                    rx.select.content(
                        *[
                            rx.select.item(
                                TYPE_LABELS[t], value=t, custom_attrs=testid(f"policy-form-type-option-{t}")
                            )
                            for t in TYPES
                        ]
                    ),
                    value=S.type_,
                    on_change=S.set_type,
                    disabled=locked,
                ),
                _muted(
                    rx.match(S.type_, *TYPE_HINTS.items(), ""), custom_attrs=testid("policy-form-type-hint")
                ),
                _error("type"),
            ),
            _labelled(
                "Description",
                rx.text_area(
                    value=S.description,
                    on_change=S.set_description,
                    placeholder="What it guards against, and what to do when it denies",
                    disabled=locked,
                    rows="3",
                    width="100%",
                    custom_attrs=testid("policy-form-description-input"),
                ),
                _error("description"),
            ),
            rx.hstack(
                rx.switch(
                    checked=S.enabled,
                    on_change=S.set_enabled,
                    disabled=locked,
                    custom_attrs=testid("policy-form-enabled-switch"),
                ),
                rx.vstack(
                    rx.text("Enabled", size="2", weight="medium"),
                    _muted("Disabled policies stay attached but are not evaluated."),
                    spacing="0",
                ),
                align="start",
                spacing="2",
            ),
            _error("enabled"),
            rx.cond(
                S.org_only,
                rx.callout(
                    "This type applies to the whole organization: it attaches to no stack.",
                    icon="building-2",
                    size="1",
                    variant="surface",
                    custom_attrs=testid("policy-form-org-only"),
                ),
                rx.vstack(
                    rx.hstack(
                        rx.switch(
                            checked=S.applies_to_all,
                            on_change=S.set_applies_to_all,
                            disabled=locked,
                            custom_attrs=testid("policy-form-applies-to-all-switch"),
                        ),
                        rx.vstack(
                            rx.text("Applies to all stacks", size="2", weight="medium"),
                            _muted("Every stack of the organization, present and future."),
                            spacing="0",
                        ),
                        align="start",
                        spacing="2",
                    ),
                    _error("applies_to_all"),
                    _labelled(
                        "Labels",
                        rx.input(
                            value=S.labels,
                            on_change=S.set_labels,
                            placeholder="env:prod, team:network",
                            disabled=locked,
                            font_family="monospace",
                            color_scheme=rx.cond(S.errors.contains("labels"), "red", "gray"),
                            width="100%",
                            custom_attrs=testid("policy-form-labels-input"),
                        ),
                        _muted("Comma-separated. Applies to every stack with one of these labels."),
                        _error("labels"),
                    ),
                    spacing="3",
                    width="100%",
                ),
            ),
            spacing="4",
            width="100%",
        ),
        width="100%",
    )


def _save_bar() -> rx.Component:
    return rx.hstack(
        rx.cond(
            S.dirty & ~S.is_new,
            rx.badge(
                "unsaved changes", color_scheme="amber", variant="soft", custom_attrs=testid("policy-dirty")
            ),
        ),
        rx.spacer(),
        rx.cond(
            S.is_new,
            rx.link(
                rx.button(
                    "Cancel", variant="soft", color_scheme="gray", custom_attrs=testid("policy-cancel")
                ),
                href="/policies",
            ),
            rx.cond(
                S.dirty & S.is_admin,
                rx.button(
                    "Discard changes",
                    variant="soft",
                    color_scheme="gray",
                    on_click=S.discard_changes,
                    custom_attrs=testid("policy-discard"),
                ),
            ),
        ),
        rx.cond(
            S.is_admin,
            rx.button(
                rx.icon("save", size=14),
                rx.cond(S.is_new, "Create policy", "Save"),
                loading=S.saving,
                on_click=S.save,
                custom_attrs=testid("policy-save"),
            ),
            rx.tooltip(
                rx.button("Save", disabled=True, custom_attrs=testid("policy-save")),
                content="Only admins edit policies",
            ),
        ),
        width="100%",
        align="center",
        spacing="2",
    )


def _editor_card(backtest: rx.Component) -> rx.Component:
    return rx.vstack(
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("Rego", size="3"),
                    _muted(
                        "Rego v1 · package crucible · deny / warn / require_approval / required_approvals"
                    ),
                    rx.spacer(),
                    rx.cond(
                        S.is_new & S.is_admin,
                        rx.button(
                            rx.icon("rotate-ccw", size=12),
                            "Template",
                            size="1",
                            variant="ghost",
                            color_scheme="gray",
                            on_click=S.reset_template,
                            custom_attrs=testid("policy-reset-template"),
                        ),
                    ),
                    width="100%",
                    align="center",
                    wrap="wrap",
                ),
                source_editor(
                    default_value=S.body,
                    key=S.editor_key,
                    gutter=S.body_gutter,
                    rows=S.body_rows,
                    on_change=S.set_body,
                    error_line=S.compile_line,
                    read_only=~S.is_admin,
                    tid="policy-body-input",
                ),
                rx.cond(
                    S.compile_error != "",
                    location_error(S.compile_error, S.compile_line, S.compile_column, "policy-compile-error"),
                ),
                _error("body"),
                _save_bar(),
                spacing="3",
                width="100%",
            ),
            width="100%",
        ),
        backtest,
        spacing="4",
        width="100%",
        min_width="0",
    )


def _editor_tab(backtest: rx.Component) -> rx.Component:
    return rx.grid(
        _editor_card(backtest),
        _settings_card(),
        columns=rx.breakpoints(initial="1", lg="minmax(0, 2fr) minmax(280px, 1fr)"),
        spacing="4",
        width="100%",
    )


# ------------------------------------------------------------------ versions tab


def _version_row(v) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.hstack(
                rx.text("v", v.version, font_family="monospace", weight="medium", size="2"),
                rx.cond(
                    v.current,
                    rx.badge(
                        "current",
                        color_scheme="teal",
                        variant="soft",
                        custom_attrs=testid("policy-version-current"),
                    ),
                ),
                spacing="2",
                align="center",
            )
        ),
        rx.table.cell(type_badge(v.type)),
        rx.table.cell(
            rx.badge(
                rx.cond(v.enabled, "enabled", "disabled"),
                color_scheme=rx.cond(v.enabled, "green", "gray"),
                variant="soft",
            )
        ),
        rx.table.cell(rx.text(v.changed_by, size="2", custom_attrs=testid("policy-version-by"))),
        rx.table.cell(rel_time(v.created_rel, v.created_exact)),
        rx.table.cell(rx.text(v.size, size="1", color=MUTED, font_family="monospace")),
        rx.table.cell(
            rx.hstack(
                rx.button(
                    "View",
                    size="1",
                    variant="soft",
                    on_click=S.view(v.version, "source"),
                    custom_attrs=testid("policy-version-view"),
                ),
                rx.cond(
                    ~v.current,
                    rx.button(
                        "Diff",
                        size="1",
                        variant="soft",
                        color_scheme="gray",
                        on_click=S.view(v.version, "diff"),
                        custom_attrs=testid("policy-version-diff"),
                    ),
                ),
                spacing="2",
            )
        ),
        custom_attrs={"data-testid": "policy-version-row", "data-version": v.version},
    )


def _version_viewer() -> rx.Component:
    return rx.cond(
        S.view_version > 0,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading(
                        "Version ",
                        S.view_version,
                        size="3",
                        custom_attrs=testid("policy-version-viewer-title"),
                    ),
                    rx.segmented_control.root(
                        rx.segmented_control.item(
                            "Source", value="source", custom_attrs=testid("policy-version-mode-source")
                        ),
                        rx.segmented_control.item(
                            "Diff against current",
                            value="diff",
                            custom_attrs=testid("policy-version-mode-diff"),
                        ),
                        value=S.view_mode,
                        on_change=S.set_view_mode,
                        size="1",
                        custom_attrs=testid("policy-version-mode"),
                    ),
                    rx.spacer(),
                    rx.cond(
                        S.is_admin & (S.view_version != S.version),
                        rx.tooltip(
                            rx.button(
                                rx.icon("undo-2", size=14),
                                "Load into editor",
                                size="1",
                                variant="soft",
                                on_click=S.restore_into_editor,
                                custom_attrs=testid("policy-version-restore"),
                            ),
                            content="Puts this version's source in the editor; Save makes it a new version",
                        ),
                    ),
                    rx.icon_button(
                        rx.icon("x", size=14),
                        size="1",
                        variant="ghost",
                        color_scheme="gray",
                        on_click=S.close_view,
                        custom_attrs=testid("policy-version-close"),
                    ),
                    width="100%",
                    align="center",
                    spacing="3",
                    wrap="wrap",
                ),
                rx.cond(
                    S.view_mode == "source",
                    rego_view(S.view_body, "policy-version-body"),
                    rx.cond(
                        S.diff_lines.length() == 0,
                        _muted(
                            "Same source as the current version (the version differs in type, enabled or "
                            "description).",
                            size="2",
                            custom_attrs=testid("policy-version-diff-empty"),
                        ),
                        rx.vstack(
                            rx.hstack(
                                rx.text(
                                    "+",
                                    S.diff_added,
                                    color=rx.color("green", 11),
                                    font_family="monospace",
                                    size="2",
                                ),
                                rx.text(
                                    "-",
                                    S.diff_removed,
                                    color=rx.color("red", 11),
                                    font_family="monospace",
                                    size="2",
                                ),
                                _muted(
                                    "lines, version ", S.view_version, " → version ", S.version, " (current)"
                                ),
                                spacing="2",
                                align="center",
                                custom_attrs=testid("policy-version-diff-summary"),
                            ),
                            diff_view(S.diff_lines, "policy-version-diff-lines"),
                            width="100%",
                            spacing="2",
                        ),
                    ),
                ),
                spacing="3",
                width="100%",
            ),
            width="100%",
            custom_attrs={"data-testid": "policy-version-viewer", "data-version": S.view_version},
        ),
    )


def _versions_tab() -> rx.Component:
    return rx.vstack(
        _muted(
            "Every change to the source, type, enabled flag or description is a new version. Renames and "
            "where the policy applies are in the audit log.",
            size="2",
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Version"),
                    rx.table.column_header_cell("Type"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell("By"),
                    rx.table.column_header_cell("When"),
                    rx.table.column_header_cell("Size"),
                    rx.table.column_header_cell(""),
                )
            ),
            rx.table.body(rx.foreach(S.versions, _version_row)),
            width="100%",
            variant="surface",
            custom_attrs=testid("policy-versions-table"),
        ),
        pager(
            S.versions_label,
            tid="policy-versions",
            has_prev=S.versions_has_prev,
            on_prev=S.versions_prev,
            has_next=S.versions_has_next,
            on_next=S.versions_next,
            size="1",
            prev_tid="policy-versions-prev",
            next_tid="policy-versions-next",
        ),
        rx.cond(S.view_loading, table_skeleton(4, 1)),
        _version_viewer(),
        spacing="3",
        width="100%",
    )


# ------------------------------------------------------------------ stacks tab


def _attach_form() -> rx.Component:
    return rx.cond(
        S.is_admin & ~S.org_only,
        rx.hstack(
            rx.debounce_input(
                rx.input(
                    rx.input.slot(rx.icon("search", size=14)),
                    placeholder="Find a stack",
                    value=S.stack_search,
                    on_change=S.search_stacks,
                    width="220px",
                    custom_attrs=testid("policy-attach-search"),
                ),
                debounce_timeout=300,
            ),
            rx.select.root(
                rx.select.trigger(
                    placeholder=rx.cond(
                        S.stack_choices.length() == 0, "No stacks to attach", "Pick a stack…"
                    ),
                    min_width="240px",
                    custom_attrs=testid("policy-attach-select"),
                ),
                rx.select.content(
                    rx.foreach(
                        S.stack_choices,
                        lambda c: rx.select.item(
                            c.name, value=c.id, custom_attrs={"data-stack-name": c.name}
                        ),
                    )
                ),
                value=S.attach_stack_id,
                on_change=S.set_attach_stack,
                disabled=S.stack_choices.length() == 0,
            ),
            rx.tooltip(
                rx.button(
                    rx.icon("link", size=14),
                    "Attach",
                    on_click=S.attach,
                    loading=S.attaching,
                    disabled=S.attach_stack_id == "",
                    custom_attrs=testid("policy-attach-submit"),
                ),
                content="Attaches the policy to the stack picked on the left",
            ),
            spacing="2",
            align="center",
            wrap="wrap",
        ),
    )


def _stack_row(st) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.link(
                st.name,
                href="/stacks/" + st.stack_id,
                weight="medium",
                custom_attrs=testid("policy-stack-link"),
            )
        ),
        rx.table.cell(tool_badge(st.tool)),
        rx.table.cell(
            rx.hstack(
                rx.cond(st.direct, rx.badge("attached", color_scheme="teal", variant="soft")),
                rx.foreach(
                    st.labels,
                    lambda lb: rx.badge("label ", lb, variant="outline", font_family="monospace", size="1"),
                ),
                spacing="1",
                wrap="wrap",
                custom_attrs=testid("policy-stack-via"),
            )
        ),
        rx.table.cell(
            rx.cond(
                st.direct,
                rx.hstack(
                    rx.text(st.attached_by, size="2"),
                    rel_time(st.attached_rel, st.attached_exact),
                    spacing="2",
                    align="center",
                ),
                _muted("—"),
            )
        ),
        rx.table.cell(
            rx.cond(
                S.is_admin,
                rx.cond(
                    st.direct,
                    rx.button(
                        rx.icon("unlink", size=12),
                        "Detach",
                        size="1",
                        variant="soft",
                        color_scheme="red",
                        on_click=S.detach(st.stack_id),
                        custom_attrs=testid("policy-stack-detach"),
                    ),
                    rx.tooltip(
                        rx.icon("info", size=14, color=MUTED),
                        content="Applies through a label: change the policy's labels or the stack's labels",
                    ),
                ),
            )
        ),
        custom_attrs={
            "data-testid": "policy-stack-row",
            "data-stack-name": st.name,
            "data-direct": st.direct,
        },
    )


def _stacks_tab() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(S.reach_summary, size="2", custom_attrs=testid("policy-reach-summary")),
            rx.spacer(),
            _attach_form(),
            width="100%",
            align="center",
            wrap="wrap",
            spacing="3",
        ),
        rx.cond(
            S.stacks.length() == 0,
            rx.cond(
                ~S.org_only,
                empty_state(
                    "link-2-off",
                    "Not attached to any stack",
                    rx.cond(
                        S.applies_to_all,
                        "It applies to every stack anyway (Applies to all stacks is on).",
                        "Attach it to a stack here, or give it labels in the Editor tab.",
                    ),
                    tid="policy-stacks-empty",
                ),
            ),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Stack"),
                        rx.table.column_header_cell("Tool"),
                        rx.table.column_header_cell("How"),
                        rx.table.column_header_cell("Attached"),
                        rx.table.column_header_cell(""),
                    )
                ),
                rx.table.body(rx.foreach(S.stacks, _stack_row)),
                width="100%",
                variant="surface",
                custom_attrs=testid("policy-stacks-table"),
            ),
        ),
        rx.cond(S.reach_truncated, _muted("Showing the first 200 stacks.")),
        spacing="3",
        width="100%",
    )


# ------------------------------------------------------------------ page


def _delete_dialog() -> rx.Component:
    return _typed_delete_dialog(
        what="policy",
        description=rx.text(
            "This deletes the policy with all its versions and attachments. To keep its history, "
            "disable it instead. Type ",
            rx.code(S.saved_name),
            " to confirm.",
        ),
        expected=S.saved_name,
        value=S.delete_confirm,
        on_change=S.set_delete_confirm,
        on_submit=S.delete_policy,
        open=S.delete_open,
        on_open_change=S.set_delete_open,
        busy=S.deleting,
        tid="policy-delete",
        on_trigger=S.open_delete,
    )


def _actions() -> rx.Component:
    return rx.hstack(
        rx.cond(
            S.can_write,
            rx.cond(
                S.dirty,
                rx.tooltip(
                    rx.button(
                        rx.icon("flask-conical", size=14),
                        "Test draft in playground",
                        variant="soft",
                        on_click=S.open_playground,
                        custom_attrs=testid("policy-playground-button"),
                    ),
                    content="Opens the playground with the editor's unsaved source",
                ),
                rx.link(
                    rx.button(
                        rx.icon("flask-conical", size=14),
                        "Test in playground",
                        variant="soft",
                        custom_attrs=testid("policy-playground-button"),
                    ),
                    href="/policies/test?policy=" + S.policy_id,
                ),
            ),
        ),
        rx.cond(S.is_admin, _delete_dialog()),
        spacing="2",
    )


def _meta() -> rx.Component:
    return rx.hstack(
        type_badge(S.type_, "policy-type"),
        rx.text(
            "version ", S.version, size="2", font_family="monospace", custom_attrs=testid("policy-version")
        ),
        rx.hstack(
            _muted("updated", size="2"),
            rel_time(S.updated_rel, S.updated_exact),
            rx.cond(S.updated_by != "", _muted("by ", S.updated_by, size="2")),
            spacing="1",
            align="center",
        ),
        spacing="3",
        align="center",
        wrap="wrap",
    )


def _tabs(backtest: rx.Component) -> rx.Component:
    return rx.tabs.root(
        rx.tabs.list(
            rx.tabs.trigger("Editor", value="editor", custom_attrs=testid("policy-tab-editor")),
            rx.tabs.trigger(
                rx.text.span("Versions "),
                rx.badge(S.versions_count, variant="soft", size="1", radius="full"),
                value="versions",
                custom_attrs=testid("policy-tab-versions"),
            ),
            rx.tabs.trigger(
                rx.text.span("Stacks "),
                rx.badge(S.stacks.length(), variant="soft", size="1", radius="full"),
                value="stacks",
                custom_attrs=testid("policy-tab-stacks"),
            ),
            custom_attrs=testid("policy-tabs"),
        ),
        rx.tabs.content(_editor_tab(backtest), value="editor", padding_top="1rem"),
        rx.tabs.content(_versions_tab(), value="versions", padding_top="1rem"),
        rx.tabs.content(_stacks_tab(), value="stacks", padding_top="1rem"),
        value=S.tab,
        on_change=S.set_tab,
        width="100%",
    )


def _backtest_section() -> rx.Component:
    """Replays the editor's current draft (saved or not) on past plans, next to the saved version."""
    return rx.cond(
        S.can_write,
        backtest_panel(S.body, S.type_, S.policy_id),
    )


def policy_new_page() -> rx.Component:
    body = rx.cond(S.form_ready, _editor_tab(_backtest_section()), table_skeleton(8, 2))
    return page("policies", "New policy", body, breadcrumb=[("Policies", "/policies")])


def policy_detail_page() -> rx.Component:
    body = rx.cond(
        S.not_found,
        empty_state(
            "circle-help",
            "Policy not found",
            "It may have been deleted, or it belongs to another organization.",
            rx.link("Back to policies", href="/policies"),
            tid="policy-not-found",
        ),
        rx.cond(
            S.loading | ~S.form_ready,
            table_skeleton(8, 2),
            rx.vstack(_meta(), _tabs(_backtest_section()), spacing="4", width="100%"),
        ),
    )
    return page(
        "policies",
        rx.cond(
            S.loading,
            rx.skeleton(rx.text.span("Loading policy")),
            rx.text.span(S.saved_name, key=S.policy_id, custom_attrs=testid("policy-name")),
        ),
        body,
        breadcrumb=[("Policies", "/policies")],
        actions=rx.cond(S.not_found | S.loading, rx.fragment(), _actions()),
    )
