"""Settings: members (admins add them) and API tokens (admins create, see once, revoke)."""

from __future__ import annotations

import reflex as rx

from components.layout import field_error, page, rel_time, table_skeleton, testid, token_status
from state.settings import ROLES, PasswordState, SettingsState

MUTED = rx.color("gray", 10)
ROLE_COLORS = [("admin", "teal"), ("member", "blue"), ("viewer", "gray")]


def role_badge(role, tid: str) -> rx.Component:
    return rx.badge(
        role, color_scheme=rx.match(role, *ROLE_COLORS, "gray"), variant="soft", custom_attrs=testid(tid)
    )


def _labelled(label: str, control: rx.Component, error: rx.Component, width: str = "auto") -> rx.Component:
    return rx.vstack(rx.text(label, size="2", weight="medium"), control, error, spacing="1", width=width)


def _role_select(value, on_change, tid: str, prefix: str) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(width="120px", custom_attrs=testid(tid)),
        rx.select.content(
            *[rx.select.item(r, value=r, custom_attrs=testid(f"{prefix}-role-option-{r}")) for r in ROLES]
        ),
        value=value,
        on_change=on_change,
    )


def _section(title: str, hint: str, *children: rx.Component, tid: str) -> rx.Component:
    return rx.vstack(
        rx.vstack(
            rx.heading(title, size="4", as_="h2"),
            rx.text(hint, size="2", color=MUTED),
            spacing="1",
        ),
        *children,
        spacing="3",
        width="100%",
        custom_attrs=testid(tid),
    )


# ------------------------------------------------------------------ members


def _member_form() -> rx.Component:
    s = SettingsState
    return rx.card(
        rx.form(
            rx.hstack(
                _labelled(
                    "Email",
                    rx.input(
                        name="email",
                        type="email",
                        value=s.member_email,
                        on_change=s.set_member_email,
                        placeholder="ops@example.com",
                        auto_complete="off",
                        width="100%",
                        color_scheme=rx.cond(s.member_errors.contains("email"), "red", "gray"),
                        custom_attrs=testid("settings-member-email-input"),
                    ),
                    field_error(s.member_errors, "email", "settings-member-email-error"),
                    width="280px",
                ),
                _labelled(
                    "Initial password",
                    rx.input(
                        name="password",
                        type="password",
                        placeholder="At least 10 characters",
                        auto_complete="new-password",
                        width="100%",
                        color_scheme=rx.cond(s.member_errors.contains("password"), "red", "gray"),
                        custom_attrs=testid("settings-member-password-input"),
                    ),
                    field_error(s.member_errors, "password", "settings-member-password-error"),
                    width="240px",
                ),
                _labelled(
                    "Role",
                    _role_select(
                        s.member_role, s.set_member_role, "settings-member-role-select", "settings-member"
                    ),
                    field_error(s.member_errors, "role", "settings-member-role-error"),
                ),
                rx.vstack(
                    rx.text("\u00a0", size="2"),
                    rx.button(
                        rx.icon("user-plus", size=14),
                        "Add member",
                        type="submit",
                        loading=s.member_saving,
                        custom_attrs=testid("settings-member-submit"),
                    ),
                    spacing="1",
                ),
                spacing="3",
                align="start",
                wrap="wrap",
            ),
            on_submit=s.add_member,
            id="settings-member-form",
            no_validate=True,  # the server's field messages, not the browser's bubbles
        ),
        width="100%",
    )


def _member_row(m) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.text(m.email, size="2", weight="medium", custom_attrs=testid("settings-member-email"))
        ),
        rx.table.cell(
            rx.hstack(
                role_badge(m.role, "settings-member-role"),
                rx.cond(m.disabled, rx.badge("disabled", color_scheme="red", variant="outline")),
                spacing="2",
            )
        ),
        rx.table.cell(rel_time(m.created_rel, m.created_exact)),
        custom_attrs={"data-testid": "settings-member-row", "data-member-email": m.email},
    )


def _members() -> rx.Component:
    s = SettingsState
    table = rx.table.root(
        rx.table.header(
            rx.table.row(
                rx.table.column_header_cell("Email"),
                rx.table.column_header_cell("Role"),
                rx.table.column_header_cell("Created"),
            )
        ),
        rx.table.body(rx.foreach(s.members, _member_row)),
        width="100%",
        variant="surface",
        size="1",
        custom_attrs=testid("settings-members-table"),
    )
    return _section(
        "Members",
        "People who can sign in to this organization. Viewers read, members change stacks, "
        "admins also manage members and tokens.",
        rx.cond(s.is_admin, _member_form()),
        rx.cond(s.members_loading, table_skeleton(3, 3), table),
        tid="settings-members",
    )


# ------------------------------------------------------------------ tokens


def _token_form() -> rx.Component:
    s = SettingsState
    return rx.card(
        rx.form(
            rx.hstack(
                _labelled(
                    "Name",
                    rx.input(
                        name="name",
                        value=s.token_name,
                        on_change=s.set_token_name,
                        placeholder="ci-pipeline",
                        auto_complete="off",
                        width="100%",
                        color_scheme=rx.cond(s.token_errors.contains("name"), "red", "gray"),
                        custom_attrs=testid("settings-token-name-input"),
                    ),
                    field_error(s.token_errors, "name", "settings-token-name-error"),
                    width="280px",
                ),
                _labelled(
                    "Role",
                    _role_select(
                        s.token_role, s.set_token_role, "settings-token-role-select", "settings-token"
                    ),
                    field_error(s.token_errors, "role", "settings-token-role-error"),
                ),
                rx.vstack(
                    rx.text("\u00a0", size="2"),
                    rx.button(
                        rx.icon("key-round", size=14),
                        "Create token",
                        type="submit",
                        loading=s.token_saving,
                        custom_attrs=testid("settings-token-submit"),
                    ),
                    spacing="1",
                ),
                spacing="3",
                align="start",
                wrap="wrap",
            ),
            on_submit=s.create_token,
        ),
        width="100%",
    )


def _token_row(t) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.text(
                t.name,
                size="2",
                weight="medium",
                font_family="monospace",
                custom_attrs=testid("settings-token-name"),
            )
        ),
        rx.table.cell(role_badge(t.role, "settings-token-role")),
        rx.table.cell(rel_time(t.created_rel, t.created_exact)),
        rx.table.cell(rel_time(t.last_used_rel, t.last_used_exact)),
        rx.table.cell(token_status(t.revoked, t.revoked_exact, "settings-token-status")),
        rx.table.cell(
            rx.cond(
                t.revoked,
                rx.fragment(),
                rx.button(
                    "Revoke",
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=SettingsState.ask_revoke(t.id),
                    custom_attrs=testid("settings-token-revoke"),
                ),
            ),
            text_align="right",
        ),
        custom_attrs={
            "data-testid": "settings-token-row",
            "data-token-name": t.name,
            "data-token-status": rx.cond(t.revoked, "revoked", "active"),
        },
    )


def _tokens_table() -> rx.Component:
    s = SettingsState
    return rx.cond(
        s.tokens.length() == 0,
        rx.text(
            "No API tokens yet. Create one for CI pipelines or scripts.",
            size="2",
            color=MUTED,
            custom_attrs=testid("settings-tokens-empty"),
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Name"),
                    rx.table.column_header_cell("Role"),
                    rx.table.column_header_cell("Created"),
                    rx.table.column_header_cell("Last used"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell("", width="90px"),
                )
            ),
            rx.table.body(rx.foreach(s.tokens, _token_row)),
            width="100%",
            variant="surface",
            size="1",
            custom_attrs=testid("settings-tokens-table"),
        ),
    )


def _new_token_dialog() -> rx.Component:
    s = SettingsState
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Token created: ", rx.text.span(s.new_token_name, font_family="monospace")),
            rx.alert_dialog.description("Use it as a Bearer token for the REST API and the CLI.", size="2"),
            rx.vstack(
                rx.callout(
                    "Copy it now: this token will not be shown again. "
                    "If you lose it, revoke it and create a new one.",
                    icon="triangle-alert",
                    color_scheme="amber",
                    size="1",
                    width="100%",
                ),
                rx.hstack(
                    rx.code(
                        s.new_token_value,
                        size="2",
                        variant="soft",
                        word_break="break-all",
                        padding="0.5rem",
                        flex="1",
                        custom_attrs=testid("settings-token-value"),
                    ),
                    rx.button(
                        rx.icon("copy", size=14),
                        "Copy",
                        variant="soft",
                        on_click=[rx.set_clipboard(s.new_token_value), SettingsState.token_copied],
                        custom_attrs=testid("settings-token-copy"),
                    ),
                    width="100%",
                    align="center",
                    spacing="2",
                ),
                rx.hstack(
                    rx.button("Done", on_click=s.close_new_token, custom_attrs=testid("settings-token-done")),
                    justify="end",
                    width="100%",
                ),
                spacing="4",
                width="100%",
                margin_top="1rem",
            ),
            max_width="600px",
            custom_attrs=testid("settings-token-dialog"),
        ),
        open=s.new_token_open,
        on_open_change=s.set_new_token_open,
    )


def _revoke_dialog() -> rx.Component:
    s = SettingsState
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Revoke API token"),
            rx.alert_dialog.description(
                rx.text(
                    "Revoke ",
                    rx.code(s.revoke_name),
                    "? Anything using it stops working at once. This cannot be undone.",
                ),
            ),
            rx.hstack(
                rx.alert_dialog.cancel(
                    rx.button(
                        "Cancel",
                        variant="soft",
                        color_scheme="gray",
                        custom_attrs=testid("settings-token-revoke-cancel"),
                    )
                ),
                rx.button(
                    "Revoke token",
                    color_scheme="red",
                    loading=s.revoking,
                    on_click=s.revoke,
                    custom_attrs=testid("settings-token-revoke-confirm"),
                ),
                justify="end",
                spacing="3",
                margin_top="1rem",
            ),
            custom_attrs=testid("settings-token-revoke-dialog"),
        ),
        open=s.revoke_open,
        on_open_change=s.set_revoke_open,
    )


def _tokens() -> rx.Component:
    s = SettingsState
    return _section(
        "API tokens",
        "Service-account tokens for the REST API and CLI, each with its own role.",
        rx.cond(
            s.user_role == "",  # the role is known once check_session ran
            table_skeleton(3, 5),
            rx.cond(
                s.is_admin,
                rx.vstack(
                    _token_form(),
                    rx.cond(s.tokens_loading, table_skeleton(3, 5), _tokens_table()),
                    _new_token_dialog(),
                    _revoke_dialog(),
                    spacing="3",
                    width="100%",
                ),
                rx.text(
                    "Only admins manage API tokens.",
                    size="2",
                    color=MUTED,
                    custom_attrs=testid("settings-tokens-admin-only"),
                ),
            ),
        ),
        tid="settings-tokens",
    )


def _password_input(name: str, placeholder: str, autocomplete: str) -> rx.Component:
    tid = name.replace("_", "-")
    return rx.input(
        name=name,
        type="password",
        placeholder=placeholder,
        auto_complete=autocomplete,
        width="100%",
        color_scheme=rx.cond(PasswordState.password_errors.contains(name), "red", "gray"),
        custom_attrs=testid(f"settings-{tid}-input"),
    )


def _account() -> rx.Component:
    p = PasswordState
    form = rx.card(
        rx.form(
            rx.hstack(
                _labelled(
                    "Current password",
                    _password_input("current_password", "", "current-password"),
                    field_error(p.password_errors, "current_password", "settings-current-password-error"),
                    width="220px",
                ),
                _labelled(
                    "New password",
                    _password_input("new_password", "At least 10 characters", "new-password"),
                    field_error(p.password_errors, "new_password", "settings-new-password-error"),
                    width="220px",
                ),
                _labelled(
                    "Repeat new password",
                    _password_input("confirm_password", "", "new-password"),
                    field_error(p.password_errors, "confirm_password", "settings-confirm-password-error"),
                    width="220px",
                ),
                rx.vstack(
                    rx.text("\u00a0", size="2"),
                    rx.button(
                        "Change password",
                        type="submit",
                        variant="soft",
                        loading=p.password_saving,
                        custom_attrs=testid("settings-password-submit"),
                    ),
                    spacing="1",
                ),
                spacing="3",
                align="start",
                wrap="wrap",
            ),
            on_submit=p.change_password,
            reset_on_submit=False,
            no_validate=True,
        ),
        width="100%",
    )
    return _section(
        "Your account",
        "Signed in as " + SettingsState.user_label + ". Changing the password ends all your sessions.",
        form,
        tid="settings-account",
    )


def settings_page() -> rx.Component:
    return page(
        "settings",
        "Settings",
        _account(),
        rx.separator(size="4"),
        _members(),
        rx.separator(size="4"),
        _tokens(),
    )
