"""The stack page's Webhook tab: endpoint and secret, setup steps per provider, the stack's
filters and feedback settings, and the delivery log."""

from __future__ import annotations

import reflex as rx

from components.layout import pager, rel_time, table_skeleton, testid
from components.state_view import confirm_dialog, muted
from state.stack_webhook import ALL, OUTCOMES
from state.stack_webhook import StackWebhookState as S

OUTCOME_COLORS = {"created": "green", "skipped": "gray", "rejected": "red"}
MONO = {"font_family": "monospace", "size": "2", "word_break": "break-all"}

# Where each provider asks for what. ``fields`` are (the provider's label, what goes there):
# "url" is the payload URL, "secret" the webhook secret, anything else literal text.
SETUP = [
    {
        "key": "github",
        "label": "GitHub",
        "menu": "Repository → Settings → Webhooks → Add webhook",
        "fields": [
            ("Payload URL", "url"),
            ("Content type", "application/json"),
            ("Secret", "secret"),
            ("SSL verification", "Enable SSL verification"),
        ],
        "events": "Which events: “Let me select individual events” → Pushes and Pull requests.",
        "after": "Keep “Active” checked and save. GitHub sends a ping, listed below as skipped.",
    },
    {
        "key": "gitlab",
        "label": "GitLab",
        "menu": "Project → Settings → Webhooks → Add new webhook",
        "fields": [("URL", "url"), ("Secret token", "secret")],
        "events": "Trigger: Push events (all branches, or the stack's branch) and Merge request events.",
        "after": "GitLab always sends application/json. Save; “Test → Push events” sends a test delivery.",
    },
    {
        "key": "gitea",
        "label": "Gitea / Gogs",
        "menu": "Repository → Settings → Webhooks → Add webhook → Gitea (Forgejo: Forgejo; Gogs: Gogs)",
        "fields": [
            ("Target URL", "url"),
            ("HTTP method", "POST"),
            ("POST content type", "application/json"),
            ("Secret", "secret"),
        ],
        "events": "Trigger on: Custom events → Push and Pull request.",
        "after": "Keep “Active” checked and add the webhook; “Test delivery” sends one.",
    },
    {
        "key": "bitbucket",
        "label": "Bitbucket Cloud",
        "menu": "Repository settings → Webhooks → Add webhook",
        "fields": [("Title", "Crucible"), ("URL", "url"), ("Secret", "secret")],
        "events": "Triggers: “Choose from a full list of triggers” → Repository: Push; "
        "Pull Request: Created and Updated.",
        "after": "Bitbucket always sends application/json. Keep “Active” checked and save.",
    },
    {
        "key": "azure_devops",
        "label": "Azure DevOps",
        "menu": "Project settings → Service hooks → Create subscription → Web Hooks → Next",
        "fields": [
            ("URL", "url"),
            ("Basic authentication username", "crucible (any name works)"),
            ("Basic authentication password", "secret"),
            ("Resource details to send", "All"),
        ],
        "events": "Trigger on: “Code pushed” (pick the repository and branch). Make two more "
        "subscriptions the same way for “Pull request created” and “Pull request updated”.",
        "after": "Azure DevOps sends application/json. “Test” on the last page sends a delivery.",
    },
]


def copy_button(value, tid: str, what: str = "Copied") -> rx.Component:
    return rx.tooltip(
        rx.icon_button(
            rx.icon("copy", size=14),
            size="1",
            variant="ghost",
            color_scheme="gray",
            on_click=[rx.set_clipboard(value), rx.toast.success(what, duration=1500)],
            custom_attrs=testid(tid),
        ),
        content="Copy",
    )


def _card(title: str, hint, *children: rx.Component, tid: str, actions=None) -> rx.Component:
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
        custom_attrs=testid(tid),
    )


def _members_only(button: rx.Component, why: str) -> rx.Component:
    return rx.tooltip(button, content=why)


# ---------------------------------------------------------------------------- endpoint


def _secret_value() -> rx.Component:
    return rx.cond(
        S.revealed,
        rx.hstack(
            rx.code(S.secret, variant="ghost", **MONO, custom_attrs=testid("stack-webhook-secret")),
            copy_button(S.secret, "stack-webhook-secret-copy", "Secret copied"),
            rx.button(
                "Hide", size="1", variant="ghost", on_click=S.hide, custom_attrs=testid("stack-webhook-hide")
            ),
            align="center",
            spacing="2",
        ),
        rx.hstack(
            rx.text("••••••••••••••••", **MONO, custom_attrs=testid("stack-webhook-secret-hidden")),
            rx.cond(
                S.can_write,
                rx.button(
                    rx.icon("eye", size=14),
                    "Reveal",
                    size="1",
                    variant="soft",
                    loading=S.revealing,
                    on_click=S.reveal,
                    custom_attrs=testid("stack-webhook-reveal"),
                ),
                _members_only(
                    rx.button(
                        "Reveal",
                        size="1",
                        variant="soft",
                        disabled=True,
                        custom_attrs=testid("stack-webhook-reveal-disabled"),
                    ),
                    "Members and admins see the webhook secret",
                ),
            ),
            align="center",
            spacing="2",
        ),
    )


def _rotate() -> rx.Component:
    return rx.fragment(
        rx.cond(
            S.can_write,
            rx.button(
                rx.icon("refresh-cw", size=14),
                "Rotate secret",
                size="1",
                variant="soft",
                color_scheme="amber",
                on_click=S.open_rotate,
                custom_attrs=testid("stack-webhook-rotate-button"),
            ),
            _members_only(
                rx.button(
                    "Rotate secret",
                    size="1",
                    variant="soft",
                    disabled=True,
                    custom_attrs=testid("stack-webhook-rotate-disabled"),
                ),
                "Members and admins rotate the webhook secret",
            ),
        ),
        confirm_dialog(
            title="Rotate the webhook secret?",
            description=rx.cond(
                S.grace != "",
                rx.text(
                    "A new secret replaces the current one. Deliveries signed with the current "
                    "secret keep being accepted for ",
                    rx.text.strong(S.grace),
                    " (CRUCIBLE_WEBHOOK_SECRET_GRACE_HOURS): update the secret in your provider's "
                    "webhook settings within that time.",
                ),
                rx.text(
                    "A new secret replaces the current one, which stops verifying at once "
                    "(CRUCIBLE_WEBHOOK_SECRET_GRACE_HOURS is 0): deliveries are refused until the "
                    "provider has the new secret."
                ),
            ),
            confirm_label="Rotate secret",
            on_confirm=S.rotate,
            open=S.rotate_open,
            on_open_change=S.set_rotate_open,
            busy=S.rotating,
            tid="stack-webhook-rotate",
            color="amber",
        ),
    )


def _field_value(kind: str) -> rx.Component:
    if kind == "url":
        return rx.hstack(
            rx.code(S.url, variant="ghost", **MONO), copy_button(S.url, "stack-webhook-setup-url-copy")
        )
    if kind == "secret":
        return rx.cond(
            S.revealed,
            rx.hstack(
                rx.code(S.secret, variant="ghost", **MONO),
                copy_button(S.secret, "stack-webhook-setup-secret-copy", "Secret copied"),
            ),
            muted("the webhook secret (Reveal it above)", size="2"),
        )
    return rx.code(kind, variant="ghost", **MONO)


def _provider_steps(p: dict) -> rx.Component:
    return rx.vstack(
        rx.el.ol(
            rx.el.li(rx.text("Open ", rx.text.strong(p["menu"]), ".", size="2")),
            rx.el.li(
                rx.text("Fill in:", size="2"),
                rx.data_list.root(
                    *[
                        rx.data_list.item(rx.data_list.label(label), rx.data_list.value(_field_value(kind)))
                        for label, kind in p["fields"]
                    ],
                    size="1",
                    margin_y="0.5rem",
                ),
            ),
            rx.el.li(rx.text(p["events"], size="2")),
            rx.el.li(rx.text(p["after"], size="2")),
            padding_left="1.25rem",
            style={"list_style": "decimal", "display": "flex", "flex_direction": "column", "gap": "0.4rem"},
        ),
        width="100%",
        custom_attrs={"data-testid": "stack-webhook-setup-steps", "data-provider": p["key"]},
    )


def _setup() -> rx.Component:
    return rx.vstack(
        rx.text("Set it up", size="2", weight="medium"),
        rx.segmented_control.root(
            *[
                rx.segmented_control.item(
                    p["label"],
                    value=p["key"],
                    custom_attrs=testid(f"stack-webhook-setup-{p['key'].replace('_', '-')}"),
                )
                for p in SETUP
            ],
            value=S.setup_provider,
            on_change=S.set_setup_provider,
            size="1",
            custom_attrs=testid("stack-webhook-setup-provider"),
        ),
        rx.match(
            S.setup_provider, *[(p["key"], _provider_steps(p)) for p in SETUP], _provider_steps(SETUP[0])
        ),
        width="100%",
        spacing="2",
        custom_attrs=testid("stack-webhook-setup"),
    )


def _endpoint_card() -> rx.Component:
    return _card(
        "Endpoint",
        "Pushes to the stack's branch start tracked runs; pull/merge requests to it start proposed runs.",
        rx.data_list.root(
            rx.data_list.item(
                rx.data_list.label("Payload URL"),
                rx.data_list.value(
                    rx.hstack(
                        rx.code(S.url, variant="ghost", **MONO, custom_attrs=testid("stack-webhook-url")),
                        copy_button(S.url, "stack-webhook-url-copy", "URL copied"),
                        align="center",
                        spacing="2",
                    )
                ),
            ),
            rx.data_list.item(
                rx.data_list.label("Secret"),
                rx.data_list.value(
                    rx.vstack(
                        rx.hstack(_secret_value(), _rotate(), spacing="3", align="center", wrap="wrap"),
                        rx.cond(
                            S.previous_valid_until != "",
                            muted(
                                "The previous secret keeps working until ",
                                rx.text.span(
                                    S.previous_valid_until,
                                    custom_attrs=testid("stack-webhook-previous-valid-until"),
                                ),
                                ".",
                            ),
                        ),
                        rx.cond(
                            S.revealed,
                            muted("Every reveal is recorded in the audit log."),
                        ),
                        spacing="1",
                    )
                ),
            ),
        ),
        rx.cond(
            S.url_is_local,
            rx.callout(
                "This URL names this machine, so GitHub, GitLab and the others cannot reach it: set "
                "CRUCIBLE_BASE_URL to the address your VCS reaches Crucible at, and restart.",
                icon="triangle-alert",
                color_scheme="amber",
                size="1",
                custom_attrs=testid("stack-webhook-url-local"),
            ),
        ),
        rx.separator(size="4"),
        _setup(),
        tid="stack-webhook-endpoint",
    )


# ---------------------------------------------------------------------------- filters


def _list_value(items, empty: str, tid: str) -> rx.Component:
    return rx.cond(
        items.length() == 0,
        rx.text(empty, size="2", color=rx.color("gray", 10), custom_attrs=testid(tid)),
        rx.hstack(
            rx.foreach(items, lambda x: rx.code(x, size="1")),
            spacing="1",
            wrap="wrap",
            custom_attrs=testid(tid),
        ),
    )


def _kv(label: str, value: rx.Component) -> rx.Component:
    return rx.data_list.item(rx.data_list.label(label), rx.data_list.value(value))


def _filters_card() -> rx.Component:
    edit = rx.cond(
        S.can_write,
        rx.link(
            rx.button(rx.icon("pencil", size=14), "Edit", size="1", variant="soft"),
            href="/stacks/" + S.stack_id + "/edit",
            custom_attrs=testid("stack-webhook-edit"),
        ),
        _members_only(
            rx.button("Edit", size="1", variant="soft", disabled=True), "Members and admins edit stacks"
        ),
    )
    return _card(
        "Filters & feedback",
        "Which deliveries start runs, and where results are reported. Edit them in the stack settings.",
        rx.data_list.root(
            _kv("Trigger paths", _list_value(S.trigger_paths, "every change", "stack-webhook-trigger-paths")),
            _kv("Skip message patterns", _list_value(S.skip_messages, "none", "stack-webhook-skip-messages")),
            _kv("Skip actors", _list_value(S.skip_actors, "none", "stack-webhook-skip-actors")),
            _kv(
                "VCS provider",
                rx.text(S.vcs_provider_label, size="2", custom_attrs=testid("stack-webhook-vcs-provider")),
            ),
            _kv(
                "Base URL",
                rx.text(
                    S.base_url_label,
                    size="2",
                    font_family=rx.cond(S.vcs_base_url != "", "monospace", "inherit"),
                    color=rx.cond(S.vcs_base_url != "", rx.color("gray", 12), rx.color("gray", 10)),
                    custom_attrs=testid("stack-webhook-vcs-base-url"),
                ),
            ),
            _kv(
                "Token",
                rx.badge(
                    rx.cond(S.vcs_token_set, "set", "not set"),
                    color_scheme=rx.cond(S.vcs_token_set, "green", "gray"),
                    variant="soft",
                    custom_attrs=testid("stack-webhook-vcs-token"),
                ),
            ),
        ),
        rx.cond(
            S.feedback_off_reason != "",
            rx.callout(
                rx.text(
                    S.feedback_off_reason,
                    " Runs still start from webhooks; set the provider and a token in the stack "
                    "settings to get commit statuses and pull request comments.",
                ),
                icon="info",
                color_scheme="gray",
                size="1",
                width="100%",
                custom_attrs=testid("stack-webhook-feedback-off"),
            ),
        ),
        tid="stack-webhook-filters",
        actions=edit,
    )


# ---------------------------------------------------------------------------- deliveries


def _outcome_badge(outcome, tid: str = "stack-webhook-delivery-outcome") -> rx.Component:
    return rx.badge(
        outcome,
        color_scheme=rx.match(outcome, *OUTCOME_COLORS.items(), "gray"),
        variant="soft",
        custom_attrs={"data-testid": tid, "data-outcome": outcome},
    )


def _delivery_row(d) -> rx.Component:
    replay = rx.cond(
        S.can_write,
        rx.button(
            "Replay",
            size="1",
            variant="soft",
            loading=S.replaying == d.id,
            disabled=S.replaying != "",
            on_click=S.replay(d.id),
            custom_attrs=testid("stack-webhook-delivery-replay"),
        ),
        _members_only(
            rx.button("Replay", size="1", variant="soft", disabled=True),
            "Members and admins replay deliveries",
        ),
    )
    return rx.table.row(
        rx.table.cell(rel_time(d.received_rel, d.received_exact)),
        rx.table.cell(rx.text(d.provider, size="2")),
        rx.table.cell(rx.code(d.event, variant="ghost", size="1")),
        rx.table.cell(
            rx.hstack(
                _outcome_badge(d.outcome),
                rx.cond(
                    d.duplicates > 0,
                    rx.tooltip(
                        rx.badge(
                            d.duplicates,
                            rx.cond(d.duplicates == 1, " duplicate", " duplicates"),
                            variant="outline",
                            color_scheme="gray",
                            size="1",
                            custom_attrs=testid("stack-webhook-delivery-duplicates"),
                        ),
                        content="The provider sent this delivery again; it was processed once",
                    ),
                ),
                rx.cond(
                    d.replay_of != "",
                    rx.tooltip(
                        rx.badge(
                            rx.icon("rotate-ccw", size=11),
                            "replay",
                            variant="outline",
                            size="1",
                            custom_attrs=testid("stack-webhook-delivery-replay-of"),
                        ),
                        content="Replay of " + d.replay_of + " by " + d.replayed_by,
                    ),
                ),
                spacing="1",
                align="center",
                wrap="wrap",
            )
        ),
        rx.table.cell(
            rx.text(
                d.reason,
                size="1",
                color=rx.color("gray", 11),
                custom_attrs=testid("stack-webhook-delivery-reason"),
            ),
            max_width="360px",
        ),
        rx.table.cell(
            rx.cond(
                d.run_id != "",
                rx.link(
                    d.run_id,
                    href="/runs/" + d.run_id,
                    font_family="monospace",
                    size="1",
                    custom_attrs=testid("stack-webhook-delivery-run-link"),
                ),
                rx.text("—", size="1", color=rx.color("gray", 9)),
            )
        ),
        rx.table.cell(
            rx.hstack(
                rx.button(
                    "View",
                    size="1",
                    variant="ghost",
                    on_click=S.view(d.id),
                    custom_attrs=testid("stack-webhook-delivery-view"),
                ),
                rx.cond(
                    d.replayable,
                    replay,
                    _members_only(
                        rx.button("Replay", size="1", variant="soft", disabled=True),
                        "Refused before verification: its payload was not kept",
                    ),
                ),
                spacing="2",
                justify="end",
                align="center",
            )
        ),
        custom_attrs={
            "data-testid": "stack-webhook-delivery-row",
            "data-delivery-id": d.id,
            "data-outcome": d.outcome,
        },
    )


def _deliveries_table() -> rx.Component:
    return rx.vstack(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Received"),
                    rx.table.column_header_cell("Provider"),
                    rx.table.column_header_cell("Event"),
                    rx.table.column_header_cell("Outcome"),
                    rx.table.column_header_cell("Reason"),
                    rx.table.column_header_cell("Run"),
                    rx.table.column_header_cell(""),
                )
            ),
            rx.table.body(rx.foreach(S.rows, _delivery_row)),
            width="100%",
            size="1",
            variant="surface",
            custom_attrs=testid("stack-webhook-deliveries-table"),
        ),
        pager(
            S.page_label,
            tid="stack-webhook-deliveries",
            has_prev=S.has_prev,
            on_prev=S.prev_page,
            has_next=S.has_next,
            on_next=S.next_page,
            prev_text="Newer",
            next_text="Older",
            size="1",
        ),
        width="100%",
    )


def _deliveries_card() -> rx.Component:
    actions = rx.hstack(
        rx.select.root(
            rx.select.trigger(custom_attrs=testid("stack-webhook-deliveries-outcome-filter")),
            rx.select.content(
                rx.select.item(
                    "All outcomes",
                    value=ALL,
                    custom_attrs=testid("stack-webhook-deliveries-outcome-option-all"),
                ),
                *[
                    rx.select.item(
                        o, value=o, custom_attrs=testid(f"stack-webhook-deliveries-outcome-option-{o}")
                    )
                    for o in OUTCOMES
                ],
            ),
            value=S.outcome,
            on_change=S.set_outcome,
            size="1",
        ),
        rx.button(
            rx.icon("refresh-cw", size=14),
            "Refresh",
            size="1",
            variant="soft",
            loading=S.deliveries_loading,
            on_click=S.refresh,
            custom_attrs=testid("stack-webhook-deliveries-refresh"),
        ),
        spacing="2",
        align="center",
    )
    return _card(
        "Deliveries",
        "Every delivery to this endpoint, newest first, and what came of it.",
        rx.cond(
            S.count == 0,
            rx.text(
                rx.cond(
                    S.outcome == ALL,
                    "No deliveries yet — add the webhook to your repository (steps above).",
                    "No " + S.outcome + " deliveries.",
                ),
                size="2",
                color=rx.color("gray", 10),
                custom_attrs=testid("stack-webhook-deliveries-empty"),
            ),
            _deliveries_table(),
        ),
        _detail_dialog(),
        tid="stack-webhook-deliveries",
        actions=actions,
    )


def _detail_dialog() -> rx.Component:
    d = S.detail
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.hstack(rx.text("Delivery"), rx.code(d.id), spacing="2", align="center")),
            rx.cond(
                S.detail_loading,
                table_skeleton(4, 2),
                rx.vstack(
                    rx.hstack(
                        _outcome_badge(d.outcome, "stack-webhook-delivery-detail-outcome"),
                        rx.text(d.provider, " · ", d.event, " · HTTP ", d.status_code, size="2"),
                        rx.spacer(),
                        rx.text(d.received_exact, size="1", color=rx.color("gray", 10)),
                        width="100%",
                        align="center",
                        spacing="2",
                    ),
                    rx.text(d.reason, size="2"),
                    rx.text("Headers kept", size="2", weight="medium"),
                    rx.table.root(
                        rx.table.body(
                            rx.foreach(
                                d.headers,
                                lambda h: rx.table.row(
                                    rx.table.cell(rx.code(h[0], variant="ghost", size="1")),
                                    rx.table.cell(rx.text(h[1], **{**MONO, "size": "1"})),
                                ),
                            )
                        ),
                        size="1",
                        width="100%",
                        custom_attrs=testid("stack-webhook-delivery-headers"),
                    ),
                    rx.hstack(
                        rx.text("Payload", size="2", weight="medium"),
                        muted(d.size),
                        rx.spacer(),
                        rx.cond(d.has_payload, copy_button(d.payload, "stack-webhook-delivery-payload-copy")),
                        width="100%",
                        align="center",
                    ),
                    rx.cond(
                        d.has_payload,
                        rx.el.pre(
                            d.payload,
                            font_family="monospace",
                            font_size="12px",
                            white_space="pre",
                            overflow="auto",
                            max_height="50vh",
                            width="100%",
                            margin="0",
                            padding="0.75rem",
                            background=rx.color("gray", 3),
                            border_radius="6px",
                            custom_attrs=testid("stack-webhook-delivery-payload"),
                        ),
                        muted("Not kept: the delivery was refused before it was verified.", size="2"),
                    ),
                    rx.cond(
                        d.clipped,
                        rx.text(
                            "Clipped: showing the first 50 KB of ",
                            d.size,
                            ". The API returns the whole payload: GET /api/v1/webhooks/deliveries/",
                            d.id,
                            size="1",
                            color=rx.color("amber", 11),
                            custom_attrs=testid("stack-webhook-delivery-payload-clipped"),
                        ),
                    ),
                    spacing="3",
                    width="100%",
                    margin_top="0.5rem",
                ),
            ),
            rx.hstack(
                rx.dialog.close(
                    rx.button(
                        "Close",
                        variant="soft",
                        color_scheme="gray",
                        custom_attrs=testid("stack-webhook-delivery-close"),
                    )
                ),
                justify="end",
                width="100%",
                margin_top="1rem",
            ),
            max_width="860px",
            custom_attrs=testid("stack-webhook-delivery-dialog"),
        ),
        open=S.detail_open,
        on_open_change=S.set_detail_open,
    )


def webhook_tab(stack_id) -> rx.Component:
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
                    custom_attrs=testid("stack-webhook-error"),
                ),
                rx.vstack(
                    _endpoint_card(),
                    _filters_card(),
                    _deliveries_card(),
                    spacing="4",
                    width="100%",
                ),
            ),
        ),
        width="100%",
        custom_attrs=testid("stack-webhook-tab"),
    )
