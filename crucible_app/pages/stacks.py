"""Stacks: list with search/filters, detail, create and edit."""

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
    typed_delete_dialog,
)
from components.runs import runs_table, status_badge
from components.stack_validation import validation_card
from components.stack_webhook import webhook_tab
from crucible_app.pages.stack_state import state_tab
from crucible_app.pages.trigger_run import trigger_run_dialog
from state.runs import TriggerRunState
from state.stacks import (
    ALL,
    NO_VCS,
    RUNNERS,
    TOOLS,
    VCS_PROVIDERS,
    StackDetailState,
    StackFormState,
    StacksState,
)


def _label_chips(labels) -> rx.Component:
    return rx.hstack(
        rx.foreach(labels, lambda lb: rx.badge(lb, variant="outline", size="1", font_family="monospace")),
        spacing="1",
        wrap="wrap",
    )


def _stack_row(row) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.link(
                    row.name,
                    href="/stacks/" + row.id,
                    weight="medium",
                    custom_attrs=testid("stacks-row-link"),
                ),
                rx.text(
                    row.repository_url,
                    size="1",
                    color=rx.color("gray", 10),
                    font_family="monospace",
                    trim="both",
                ),
                spacing="1",
            )
        ),
        rx.table.cell(tool_badge(row.tool)),
        rx.table.cell(
            rx.cond(
                row.last_run_id != "",
                rx.link(
                    status_badge(row.last_run_status, tid="stacks-row-last-run"),
                    href="/runs/" + row.last_run_id,
                ),
                rx.text("no runs", size="1", color=rx.color("gray", 9)),
            )
        ),
        rx.table.cell(rx.code(row.branch, variant="ghost")),
        rx.table.cell(_label_chips(row.labels)),
        rx.table.cell(rel_time(row.updated_rel, row.updated_exact)),
        custom_attrs={"data-testid": "stacks-row", "data-stack-name": row.name},
    )


def _filters() -> rx.Component:
    return rx.hstack(
        rx.debounce_input(
            rx.input(
                rx.input.slot(rx.icon("search", size=14)),
                placeholder="Search name, description or repository",
                value=StacksState.q,
                on_change=StacksState.set_search,
                width="320px",
                custom_attrs=testid("stacks-search-input"),
            ),
            debounce_timeout=300,
        ),
        rx.select.root(
            rx.select.trigger(placeholder="Tool", custom_attrs=testid("stacks-tool-filter")),
            rx.select.content(
                rx.select.item("All tools", value=ALL),
                *[rx.select.item(t, value=t, custom_attrs=testid(f"stacks-tool-option-{t}")) for t in TOOLS],
            ),
            value=StacksState.tool,
            on_change=StacksState.set_tool,
        ),
        rx.select.root(
            rx.select.trigger(placeholder="Label", custom_attrs=testid("stacks-label-filter")),
            rx.select.content(
                rx.select.item("All labels", value=ALL),
                rx.foreach(StacksState.labels_available, lambda lb: rx.select.item(lb, value=lb)),
            ),
            value=StacksState.label,
            on_change=StacksState.set_label,
        ),
        rx.cond(
            StacksState.filtered,
            rx.button(
                "Clear",
                variant="ghost",
                on_click=StacksState.clear_filters,
                custom_attrs=testid("stacks-clear-filters"),
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
                    rx.table.column_header_cell("Tool"),
                    rx.table.column_header_cell("Last run"),
                    rx.table.column_header_cell("Branch"),
                    rx.table.column_header_cell("Labels"),
                    rx.table.column_header_cell("Updated"),
                )
            ),
            rx.table.body(rx.foreach(StacksState.rows, _stack_row)),
            width="100%",
            variant="surface",
            custom_attrs=testid("stacks-table"),
        ),
        pager(
            StacksState.page_label,
            tid="stacks",
            has_prev=StacksState.has_prev,
            on_prev=StacksState.prev_page,
            has_next=StacksState.has_next,
            on_next=StacksState.next_page,
        ),
        width="100%",
    )


def _new_button(tid: str = "stacks-new-button") -> rx.Component:
    return rx.cond(
        StacksState.can_write,
        rx.link(
            rx.button(rx.icon("plus", size=16), "New stack", custom_attrs=testid(tid)), href="/stacks/new"
        ),
        rx.tooltip(rx.button("New stack", disabled=True), content="Members and admins create stacks"),
    )


def stacks_page() -> rx.Component:
    body = rx.cond(
        StacksState.loading & (StacksState.rows.length() == 0),
        table_skeleton(),
        rx.cond(
            StacksState.count == 0,
            rx.cond(
                StacksState.filtered,
                empty_state(
                    "search-x",
                    "No stacks match these filters",
                    "Change the search or clear the filters.",
                    tid="stacks-empty-filtered",
                ),
                empty_state(
                    "layers",
                    "No stacks yet",
                    "A stack connects a repository, a branch and a tool. Create one to get started.",
                    _new_button("stacks-empty-new-button"),
                    tid="stacks-empty",
                ),
            ),
            _table(),
        ),
    )
    return page("stacks", "Stacks", _filters(), body, actions=_new_button())


# ------------------------------------------------------------------ detail


def _field(label: str, value, tid: str, mono: bool = False) -> rx.Component:
    return rx.data_list.item(
        rx.data_list.label(label),
        rx.data_list.value(
            rx.text(value, font_family="monospace" if mono else None, size="2", custom_attrs=testid(tid))
        ),
    )


def _delete_dialog() -> rx.Component:
    s = StackDetailState
    return typed_delete_dialog(
        what="stack",
        description=rx.text(
            "This permanently deletes the stack and its settings. Type ",
            rx.code(s.stack.name),
            " to confirm.",
        ),
        expected=s.stack.name,
        value=s.delete_confirm,
        on_change=s.set_delete_confirm,
        on_submit=s.delete_stack,
        open=s.delete_open,
        on_open_change=s.set_delete_open,
        busy=s.deleting,
        tid="stack-delete",
        on_trigger=s.open_delete,
    )


def _variables() -> rx.Component:
    s = StackDetailState
    row = lambda v: rx.table.row(  # noqa: E731
        rx.table.cell(rx.code(v.name, variant="ghost")),
        rx.table.cell(
            rx.cond(
                v.secret,
                rx.badge("secret", color_scheme="amber", variant="soft", size="1"),
                rx.text(v.value, size="1", font_family="monospace", trim="both"),
            )
        ),
        rx.table.cell(rx.text(v.updated_by, " · ", v.updated_rel, size="1", color=rx.color("gray", 10))),
        rx.table.cell(
            rx.cond(
                s.can_write,
                rx.icon_button(
                    rx.icon("trash-2", size=14),
                    size="1",
                    variant="ghost",
                    color_scheme="red",
                    on_click=StackDetailState.delete_variable(v.name),
                    custom_attrs=testid("stack-variable-delete"),
                ),
            )
        ),
        custom_attrs={"data-testid": "stack-variable-row", "data-name": v.name},
    )
    form = rx.hstack(
        rx.input(
            placeholder="NAME",
            value=s.var_name,
            on_change=lambda v: s.set_var_field("var_name", v),
            font_family="monospace",
            width="200px",
            custom_attrs=testid("stack-variable-name-input"),
        ),
        rx.input(
            placeholder="value",
            value=s.var_value,
            type=rx.cond(s.var_secret, "password", "text"),
            on_change=lambda v: s.set_var_field("var_value", v),
            flex="1",
            custom_attrs=testid("stack-variable-value-input"),
        ),
        rx.hstack(
            rx.switch(
                checked=s.var_secret,
                on_change=lambda v: s.set_var_field("var_secret", v),
                custom_attrs=testid("stack-variable-secret-switch"),
            ),
            rx.text("secret", size="2"),
            align="center",
            spacing="1",
        ),
        rx.button(
            "Save",
            on_click=s.save_variable,
            loading=s.var_saving,
            custom_attrs=testid("stack-variable-save"),
        ),
        width="100%",
        align="center",
        spacing="2",
    )
    return rx.card(
        rx.vstack(
            rx.heading("Variables", size="3"),
            rx.text(
                "Environment variables of every run. Secret values are encrypted, never shown again "
                "and masked as *** in run logs.",
                size="1",
                color=rx.color("gray", 10),
            ),
            rx.cond(
                s.variables.length() == 0,
                rx.text(
                    "No variables yet.",
                    size="2",
                    color=rx.color("gray", 10),
                    custom_attrs=testid("stack-variables-empty"),
                ),
                rx.table.root(rx.table.body(rx.foreach(s.variables, row)), size="1", width="100%"),
            ),
            rx.cond(s.can_write, form),
            rx.cond(
                s.var_error != "",
                rx.text(
                    s.var_error,
                    size="1",
                    color=rx.color("red", 11),
                    custom_attrs=testid("stack-variable-error"),
                ),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        custom_attrs=testid("stack-variables"),
    )


def _approvers() -> rx.Component:
    s = StackDetailState
    return rx.card(
        rx.vstack(
            rx.heading("Approvers", size="3"),
            rx.text(
                "Besides admins, these people may confirm this stack's runs.",
                size="1",
                color=rx.color("gray", 10),
            ),
            rx.cond(
                s.approvers.length() == 0,
                rx.text(
                    "No approvers: only admins confirm.",
                    size="2",
                    color=rx.color("gray", 10),
                    custom_attrs=testid("stack-approvers-empty"),
                ),
                rx.vstack(
                    rx.foreach(
                        s.approvers,
                        lambda a: rx.hstack(
                            rx.text(a.email, size="2"),
                            rx.spacer(),
                            rx.cond(
                                s.is_admin,
                                rx.icon_button(
                                    rx.icon("x", size=14),
                                    size="1",
                                    variant="ghost",
                                    color_scheme="red",
                                    on_click=StackDetailState.remove_approver(a.user_id),
                                    custom_attrs=testid("stack-approver-remove"),
                                ),
                            ),
                            width="100%",
                            align="center",
                            custom_attrs={"data-testid": "stack-approver-row", "data-email": a.email},
                        ),
                    ),
                    width="100%",
                    spacing="1",
                ),
            ),
            rx.cond(
                s.is_admin & (s.approver_candidates.length() > 0),
                rx.select.root(
                    rx.select.trigger(
                        placeholder="Add an approver…", custom_attrs=testid("stack-approver-add")
                    ),
                    rx.select.content(
                        rx.foreach(
                            s.approver_candidates,
                            lambda m: rx.select.item(m.email, value=m.user_id),
                        )
                    ),
                    value="",
                    on_change=StackDetailState.add_approver,
                ),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        custom_attrs=testid("stack-approvers"),
    )


def _recent_runs() -> rx.Component:
    s = StackDetailState
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading("Recent runs", size="3"),
                rx.spacer(),
                rx.link(
                    "All runs →",
                    href="/runs?stack_id=" + s.stack.id,
                    size="2",
                    custom_attrs=testid("stack-all-runs"),
                ),
                width="100%",
            ),
            rx.cond(
                s.recent_runs.length() == 0,
                rx.text(
                    "No runs yet. Trigger one: Crucible plans it and waits for your confirmation.",
                    size="2",
                    color=rx.color("gray", 10),
                    custom_attrs=testid("stack-runs-empty"),
                ),
                runs_table(s.recent_runs, show_stack=False, tid="stack-runs-table"),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def _tabs(overview: rx.Component) -> rx.Component:
    """Tabs whose selection lives in the URL (?tab=state). Only tabs that work are shown."""
    s = StackDetailState
    return rx.tabs.root(
        rx.tabs.list(
            rx.tabs.trigger("Overview", value="overview", custom_attrs=testid("stack-tab-overview")),
            rx.cond(
                s.has_state_tab,
                rx.tabs.trigger("State", value="state", custom_attrs=testid("stack-tab-state")),
            ),
            rx.tabs.trigger("Webhook", value="webhook", custom_attrs=testid("stack-tab-webhook")),
            custom_attrs=testid("stack-tabs"),
        ),
        rx.tabs.content(overview, value="overview", padding_top="1rem"),
        rx.tabs.content(state_tab(s.stack.id), value="state", padding_top="1rem"),
        rx.tabs.content(webhook_tab(s.stack.id), value="webhook", padding_top="1rem"),
        value=s.tab,
        on_change=s.set_tab,
        width="100%",
    )


def stack_detail_page() -> rx.Component:
    s = StackDetailState
    actions = rx.hstack(
        rx.cond(
            s.can_write,
            rx.button(
                rx.icon("play", size=14),
                "Trigger run",
                on_click=TriggerRunState.open_for(s.stack.id),
                custom_attrs=testid("stack-trigger-run-button"),
            ),
            rx.tooltip(rx.button("Trigger run", disabled=True), content="Members and admins trigger runs"),
        ),
        trigger_run_dialog(),
        rx.cond(
            s.can_write,
            rx.link(
                rx.button(
                    rx.icon("pencil", size=14),
                    "Edit",
                    variant="soft",
                    custom_attrs=testid("stack-edit-button"),
                ),
                href="/stacks/" + s.stack.id + "/edit",
            ),
        ),
        rx.cond(s.is_admin, _delete_dialog()),
        spacing="2",
    )
    overview = rx.grid(
        rx.card(
            rx.vstack(
                rx.heading("Settings", size="3"),
                rx.data_list.root(
                    _field("Repository", s.stack.repository_url, "stack-repository-url", mono=True),
                    _field("Branch", s.stack.branch, "stack-branch", mono=True),
                    _field("Project root", s.project_root, "stack-project-root", mono=True),
                    rx.data_list.item(
                        rx.data_list.label("Tool"),
                        rx.data_list.value(
                            rx.hstack(
                                tool_badge(s.stack.tool),
                                rx.text(
                                    s.tool_version,
                                    size="2",
                                    font_family="monospace",
                                    custom_attrs=testid("stack-tool-version"),
                                ),
                                custom_attrs=testid("stack-tool"),
                            )
                        ),
                    ),
                    _field("Runner", s.runner, "stack-runner"),
                    _field("Runner image", s.runner_image, "stack-runner-image", mono=True),
                    rx.cond(
                        s.stack.tool == "ansible",
                        _field("Playbook", s.playbook, "stack-playbook", mono=True),
                    ),
                    rx.data_list.item(
                        rx.data_list.label("Auto-apply"),
                        rx.data_list.value(
                            rx.badge(
                                rx.cond(s.auto_apply, "on", "off"),
                                color_scheme=rx.cond(s.auto_apply, "amber", "gray"),
                                custom_attrs=testid("stack-auto-apply"),
                            )
                        ),
                    ),
                    _field("VCS", s.vcs_provider, "stack-vcs-provider"),
                    rx.data_list.item(
                        rx.data_list.label("Labels"),
                        rx.data_list.value(
                            rx.box(_label_chips(s.stack.labels), custom_attrs=testid("stack-labels"))
                        ),
                    ),
                    _field("Created", s.created_exact, "stack-created"),
                    _field("Created by", s.created_by, "stack-created-by"),
                ),
                spacing="3",
            )
        ),
        rx.card(
            rx.vstack(
                rx.heading("Activity", size="3"),
                rx.cond(
                    s.activity.length() == 0,
                    rx.text("No activity yet.", size="2", color=rx.color("gray", 10)),
                    rx.vstack(
                        rx.foreach(
                            s.activity,
                            lambda a: rx.hstack(
                                rx.code(a.action, variant="ghost"),
                                rx.text(a.actor, size="2"),
                                rx.spacer(),
                                rel_time(a.at_rel, a.at_exact),
                                width="100%",
                                custom_attrs=testid("stack-activity-row"),
                            ),
                        ),
                        width="100%",
                    ),
                ),
                rx.link("Full audit log →", href="/audit?category=stack", size="2"),
                spacing="3",
            )
        ),
        columns=rx.breakpoints(initial="1", md="2"),
        spacing="4",
        width="100%",
    )
    body = rx.cond(
        s.not_found,
        empty_state(
            "circle-help",
            "Stack not found",
            "It may have been deleted, or it belongs to another organization.",
            rx.link("Back to stacks", href="/stacks"),
            tid="stack-not-found",
        ),
        rx.cond(
            s.loading,
            table_skeleton(4, 2),
            rx.vstack(
                rx.cond(
                    s.stack.description != "",
                    rx.text(
                        s.stack.description,
                        color=rx.color("gray", 11),
                        custom_attrs=testid("stack-description"),
                    ),
                ),
                _tabs(
                    rx.vstack(
                        _recent_runs(),
                        validation_card(s.stack.id),
                        overview,
                        rx.grid(
                            _variables(),
                            _approvers(),
                            columns=rx.breakpoints(initial="1", md="2"),
                            spacing="4",
                            width="100%",
                        ),
                        width="100%",
                        spacing="4",
                    )
                ),
                width="100%",
                spacing="4",
            ),
        ),
    )
    return page(
        "stacks",
        # Unmounted while loading and keyed by id: React never patches one stack's name into
        # the text node of the previous one (seen as "network-proddns-staging" before).
        rx.cond(
            s.loading,
            rx.skeleton(rx.text.span("Loading stack")),
            rx.text.span(s.stack.name, key=s.stack.id, custom_attrs=testid("stack-name")),
        ),
        body,
        breadcrumb=[("Stacks", "/stacks")],
        actions=rx.cond(s.not_found | s.loading, rx.fragment(), actions),
    )


# ------------------------------------------------------------------ form


def _error(field: str) -> rx.Component:
    return field_error(StackFormState.errors, field, f"stack-form-{field.replace('_', '-')}-error")


def _text_field(
    field: str, label: str, hint: str = "", placeholder: str = "", mono: bool = False
) -> rx.Component:
    tid = field.replace("_", "-")
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.input(
            value=StackFormState.values[field],
            on_change=lambda v: StackFormState.set_value(field, v),
            placeholder=placeholder,
            font_family="monospace" if mono else None,
            color_scheme=rx.cond(StackFormState.errors.contains(field), "red", "gray"),
            width="100%",
            custom_attrs=testid(f"stack-form-{tid}-input"),
        ),
        rx.cond(hint != "", rx.text(hint, size="1", color=rx.color("gray", 10))) if hint else rx.fragment(),
        _error(field),
        spacing="1",
        width="100%",
    )


def _select_field(field: str, label: str, options: list[str]) -> rx.Component:
    tid = field.replace("_", "-")
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.select.root(
            rx.select.trigger(width="100%", custom_attrs=testid(f"stack-form-{tid}-select")),
            rx.select.content(
                *[
                    rx.select.item(o, value=o, custom_attrs=testid(f"stack-form-{tid}-option-{o}"))
                    for o in options
                ]
            ),
            value=StackFormState.values[field],
            on_change=lambda v: StackFormState.set_value(field, v),
        ),
        _error(field),
        spacing="1",
        width="100%",
    )


def _text_area(field: str, label: str, hint: str, placeholder: str = "", rows: str = "3") -> rx.Component:
    tid = field.replace("_", "-")
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.text_area(
            value=StackFormState.values[field],
            on_change=lambda v: StackFormState.set_value(field, v),
            placeholder=placeholder,
            rows=rows,
            font_family="monospace",
            color_scheme=rx.cond(StackFormState.errors.contains(field), "red", "gray"),
            width="100%",
            custom_attrs=testid(f"stack-form-{tid}-input"),
        ),
        rx.text(hint, size="1", color=rx.color("gray", 10)),
        _error(field),
        spacing="1",
        width="100%",
    )


def _vcs_token_field() -> rx.Component:
    f = StackFormState
    return rx.vstack(
        rx.text("Token", size="2", weight="medium"),
        rx.input(
            type="password",
            value=f.values["vcs_token"],
            on_change=lambda v: f.set_value("vcs_token", v),
            placeholder=rx.cond(f.vcs_token_set, "empty: keep the current one", ""),
            disabled=f.remove_token,
            auto_complete="new-password",
            font_family="monospace",
            color_scheme=rx.cond(f.errors.contains("vcs_token"), "red", "gray"),
            width="100%",
            custom_attrs=testid("stack-form-vcs-token-input"),
        ),
        rx.cond(
            f.is_edit & f.vcs_token_set,
            rx.hstack(
                rx.badge(
                    "a token is set",
                    color_scheme="green",
                    variant="soft",
                    size="1",
                    custom_attrs=testid("stack-form-vcs-token-set"),
                ),
                rx.checkbox(
                    "Remove token",
                    checked=f.remove_token,
                    on_change=f.set_remove_token,
                    size="1",
                    custom_attrs=testid("stack-form-vcs-remove-token-checkbox"),
                ),
                spacing="3",
                align="center",
            ),
            rx.text("Write-only: stored encrypted, never shown again.", size="1", color=rx.color("gray", 10)),
        ),
        _error("vcs_token"),
        spacing="1",
        width="100%",
    )


def _vcs_section() -> rx.Component:
    f = StackFormState
    return rx.vstack(
        rx.separator(size="4"),
        rx.heading("VCS", size="3"),
        rx.text(
            "Webhooks start runs from pushes and pull requests (see the stack's Webhook tab). "
            "With a provider and a token, Crucible reports back: a commit status and one pull "
            "request comment per stack.",
            size="1",
            color=rx.color("gray", 10),
        ),
        rx.grid(
            rx.vstack(
                rx.text("Provider", size="2", weight="medium"),
                rx.select.root(
                    rx.select.trigger(width="100%", custom_attrs=testid("stack-form-vcs-provider-select")),
                    rx.select.content(
                        *[
                            rx.select.item(
                                "none (no feedback)" if o == NO_VCS else o,
                                value=o,
                                custom_attrs=testid(f"stack-form-vcs-provider-option-{o.replace('_', '-')}"),
                            )
                            for o in VCS_PROVIDERS
                        ]
                    ),
                    value=f.values["vcs_provider"],
                    on_change=lambda v: f.set_value("vcs_provider", v),
                ),
                _error("vcs_provider"),
                spacing="1",
                width="100%",
            ),
            _text_field(
                "vcs_base_url",
                "Base URL",
                "Empty = the provider's public cloud; required for Gitea and Azure DevOps",
                "https://gitlab.example.com",
                mono=True,
            ),
            _vcs_token_field(),
            columns=rx.breakpoints(initial="1", md="3"),
            spacing="4",
            width="100%",
        ),
        rx.grid(
            _text_area(
                "trigger_paths",
                "Trigger paths",
                "Globs over changed files, one a line; empty = every change",
                "envs/prod/**\nmodules/**/*.tf",
            ),
            _text_area(
                "skip_message_patterns",
                "Skip message patterns",
                "Commit-message substrings (case-insensitive) that start no run, one a line",
            ),
            _text_area(
                "skip_actors",
                "Skip actors",
                "VCS user names whose events start no run; comma or newline separated",
                "renovate[bot], dependabot[bot]",
            ),
            columns=rx.breakpoints(initial="1", md="3"),
            spacing="4",
            width="100%",
        ),
        spacing="3",
        width="100%",
        custom_attrs=testid("stack-form-vcs"),
    )


def _form() -> rx.Component:
    f = StackFormState
    return rx.card(
        rx.vstack(
            rx.grid(
                _text_field("name", "Name", placeholder="network-prod"),
                _select_field("tool", "Tool", TOOLS),
                columns="2",
                spacing="4",
                width="100%",
            ),
            rx.vstack(
                rx.text("Description", size="2", weight="medium"),
                rx.text_area(
                    value=f.values["description"],
                    on_change=lambda v: f.set_value("description", v),
                    width="100%",
                    custom_attrs=testid("stack-form-description-input"),
                ),
                _error("description"),
                spacing="1",
                width="100%",
            ),
            _text_field(
                "repository_url",
                "Repository URL",
                "https://, ssh://, git@host:org/repo.git or file:///path",
                "https://github.com/acme/infrastructure.git",
                mono=True,
            ),
            rx.grid(
                _text_field("branch", "Branch", mono=True),
                _text_field(
                    "project_root",
                    "Project root",
                    "Folder inside the repository; empty = root",
                    "envs/prod",
                    mono=True,
                ),
                _text_field("tool_version", "Tool version", "Empty = latest", "1.8.2", mono=True),
                columns="3",
                spacing="4",
                width="100%",
            ),
            rx.grid(
                _select_field("runner", "Runner", RUNNERS),
                _text_field(
                    "runner_image", "Runner image", "Docker runner only", "ghcr.io/acme/runner:1.0", mono=True
                ),
                _text_field(
                    "playbook",
                    "Playbook",
                    "Ansible only; empty = site.yml, else playbook.yml",
                    "deploy.yml",
                    mono=True,
                ),
                columns="3",
                spacing="4",
                width="100%",
            ),
            _text_field("labels", "Labels", "Comma-separated, e.g. env:prod, team:network", mono=True),
            rx.hstack(
                rx.switch(
                    checked=f.auto_apply,
                    on_change=f.set_auto_apply,
                    custom_attrs=testid("stack-form-auto-apply-switch"),
                ),
                rx.text(
                    "Auto-apply: apply successful plans of tracked runs without waiting for confirmation",
                    size="2",
                ),
                align="center",
                spacing="2",
            ),
            _vcs_section(),
            rx.hstack(
                rx.link(
                    rx.button(
                        "Cancel",
                        variant="soft",
                        color_scheme="gray",
                        type="button",
                        custom_attrs=testid("stack-form-cancel"),
                    ),
                    href=rx.cond(f.is_edit, "/stacks/" + f.stack_id, "/stacks"),
                ),
                rx.button(
                    rx.cond(f.is_edit, "Save changes", "Create stack"),
                    loading=f.saving,
                    on_click=f.submit,
                    custom_attrs=testid("stack-form-submit"),
                ),
                justify="end",
                width="100%",
                spacing="3",
            ),
            spacing="4",
            width="100%",
        ),
        width="100%",
        max_width="820px",
    )


def stack_new_page() -> rx.Component:
    body = rx.cond(StackFormState.form_ready, _form(), table_skeleton(6, 2))
    return page("stacks", "New stack", body, breadcrumb=[("Stacks", "/stacks")])


def stack_edit_page() -> rx.Component:
    f = StackFormState
    body = rx.cond(
        f.not_found,
        empty_state(
            "circle-help",
            "Stack not found",
            "It may have been deleted.",
            rx.link("Back to stacks", href="/stacks"),
            tid="stack-not-found",
        ),
        rx.cond(f.loading | ~f.form_ready, table_skeleton(6, 2), _form()),
    )
    return page("stacks", "Edit stack", body, breadcrumb=[("Stacks", "/stacks")])
