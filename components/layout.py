"""Page chrome: grouped sidebar, header with breadcrumb and primary action, theme toggle."""

from __future__ import annotations

import reflex as rx

from state.base import AuthState

NAV = [
    (
        "Core",
        [
            ("Dashboard", "/", "layout-dashboard", "dashboard"),
            ("Stacks", "/stacks", "layers", "stacks"),
            ("Runs", "/runs", "play", "runs"),
        ],
    ),
    ("Config", [("Policies", "/policies", "shield-check", "policies")]),
    ("Ops", [("Audit", "/audit", "scroll-text", "audit")]),
]


def testid(name: str) -> dict:
    return {"data-testid": name}


def _nav_link(label: str, href: str, icon: str, key: str, current: str) -> rx.Component:
    active = current == key
    return rx.link(
        rx.hstack(rx.icon(icon, size=16), rx.text(label, size="2"), align="center", spacing="2"),
        href=href,
        underline="none",
        color=rx.cond(active, rx.color("teal", 11), rx.color("gray", 11)),
        background=rx.cond(active, rx.color("teal", 3), "transparent"),
        padding_x="0.75rem",
        padding_y="0.4rem",
        border_radius="6px",
        width="100%",
        _hover={"background": rx.color("gray", 3)},
        custom_attrs=testid(f"nav-{key}"),
    )


def sidebar(current: str) -> rx.Component:
    groups = []
    for group, links in NAV:
        groups.append(
            rx.vstack(
                rx.text(
                    group.upper(), size="1", color=rx.color("gray", 9), weight="bold", padding_x="0.75rem"
                ),
                *[_nav_link(*link, current=current) for link in links],
                spacing="1",
                width="100%",
            )
        )
    return rx.vstack(
        rx.hstack(
            rx.image(src="/logo.svg", width="28px", height="28px", alt="Crucible"),
            rx.heading("Crucible", size="4"),
            align="center",
            padding_x="0.75rem",
            padding_y="0.5rem",
        ),
        *groups,
        rx.spacer(),
        _nav_link("Settings", "/settings", "settings", "settings", current),
        rx.separator(),
        rx.hstack(
            rx.vstack(
                rx.text(AuthState.user_label, size="1", weight="medium", custom_attrs=testid("user-email")),
                rx.badge(AuthState.user_role, variant="soft", size="1", custom_attrs=testid("user-role")),
                spacing="1",
                align="start",
                min_width="0",
            ),
            rx.spacer(),
            rx.color_mode.button(size="1", variant="ghost", custom_attrs=testid("theme-toggle")),
            rx.el.form(
                rx.tooltip(
                    rx.icon_button(
                        rx.icon("log-out", size=14),
                        size="1",
                        variant="ghost",
                        type="submit",
                        custom_attrs=testid("logout-button"),
                    ),
                    content="Log out",
                ),
                action="/api/v1/auth/logout",
                method="post",
                on_submit=None,  # a real POST: the server clears the httpOnly cookie
            ),
            width="100%",
            align="center",
            padding_x="0.5rem",
        ),
        spacing="4",
        height="100vh",
        width="220px",
        min_width="220px",
        padding="0.75rem",
        border_right=f"1px solid {rx.color('gray', 5)}",
        background=rx.color("gray", 2),
        position="sticky",
        top="0",
        custom_attrs=testid("sidebar"),
    )


def mobile_bar(current: str) -> rx.Component:
    """Narrow screens: the sidebar folds into a menu button in a top bar."""
    links = [link for _group, group_links in NAV for link in group_links] + [
        ("Settings", "/settings", "settings", "settings")
    ]
    return rx.hstack(
        rx.image(src="/logo.svg", width="24px", height="24px", alt="Crucible"),
        rx.heading("Crucible", size="3"),
        rx.spacer(),
        rx.color_mode.button(size="1", variant="ghost"),
        rx.menu.root(
            rx.menu.trigger(
                rx.icon_button(
                    rx.icon("menu", size=16), variant="soft", custom_attrs=testid("nav-menu-button")
                )
            ),
            rx.menu.content(
                *[
                    rx.menu.item(
                        rx.hstack(rx.icon(icon, size=14), label, align="center", spacing="2"),
                        on_click=rx.redirect(href),
                        custom_attrs=testid(f"nav-menu-{key}"),
                    )
                    for label, href, icon, key in links
                ],
                rx.menu.separator(),
                rx.menu.item(rx.text(AuthState.user_label, size="1"), disabled=True),
                rx.el.form(
                    rx.button(
                        "Log out",
                        type="submit",
                        variant="ghost",
                        size="1",
                        custom_attrs=testid("nav-menu-logout"),
                    ),
                    action="/api/v1/auth/logout",
                    method="post",
                    on_submit=None,
                ),
            ),
        ),
        width="100%",
        align="center",
        padding="0.5rem 1rem",
        border_bottom=f"1px solid {rx.color('gray', 5)}",
        background=rx.color("gray", 2),
    )


def page(
    current: str,
    title: rx.Component | str,
    *children: rx.Component,
    breadcrumb: list[tuple[str, str]] | None = None,
    actions: rx.Component | None = None,
) -> rx.Component:
    crumbs = []
    for label, href in breadcrumb or []:
        crumbs += [
            rx.link(label, href=href, size="2", color=rx.color("gray", 11)),
            rx.text("/", size="2", color=rx.color("gray", 8)),
        ]
    header = rx.vstack(
        rx.hstack(*crumbs, spacing="2") if crumbs else rx.fragment(),
        rx.hstack(
            rx.heading(title, size="6", custom_attrs=testid("page-title")),
            rx.spacer(),
            actions or rx.fragment(),
            width="100%",
            align="center",
        ),
        spacing="1",
        width="100%",
    )
    return rx.hstack(
        rx.desktop_only(sidebar(current)),
        rx.box(
            rx.mobile_and_tablet(mobile_bar(current)),
            rx.box(
                rx.vstack(header, *children, spacing="5", width="100%", max_width="1200px"),
                padding=rx.breakpoints(initial="1rem", lg="1.5rem 2rem"),
            ),
            width="100%",
            min_width="0",
        ),
        spacing="0",
        align="start",
        width="100%",
        min_height="100vh",
    )


def empty_state(
    icon: str, title: str, hint: str, action: rx.Component | None = None, tid: str = ""
) -> rx.Component:
    return rx.center(
        rx.vstack(
            rx.icon(icon, size=32, color=rx.color("gray", 9)),
            rx.text(title, weight="bold"),
            rx.text(hint, size="2", color=rx.color("gray", 10)),
            action or rx.fragment(),
            align="center",
            spacing="2",
        ),
        padding="3rem",
        width="100%",
        border=f"1px dashed {rx.color('gray', 6)}",
        border_radius="8px",
        custom_attrs=testid(tid) if tid else {},
    )


def table_skeleton(rows: int = 5, cols: int = 4) -> rx.Component:
    return rx.vstack(
        *[
            rx.hstack(
                *[rx.skeleton(rx.box(height="18px", width="100%")) for _ in range(cols)],
                width="100%",
                spacing="4",
            )
            for _ in range(rows)
        ],
        width="100%",
        spacing="3",
        custom_attrs=testid("loading-skeleton"),
    )


TOOL_COLORS = {
    "opentofu": "amber",
    "terraform": "violet",
    "terragrunt": "cyan",
    "ansible": "red",
    "pulumi": "purple",
}


def pager(
    label,
    *,
    tid: str,
    has_prev,
    on_prev,
    has_next,
    on_next,
    prev_text: str = "Previous",
    next_text: str = "Next",
    size: str = "2",
    loading=None,
    prev_tid: str | None = None,
    next_tid: str | None = None,
) -> rx.Component:
    """A list's count label (``None``: none) and its previous/next page buttons. Test ids:
    ``{tid}-count``, ``{tid}-prev-page`` and ``{tid}-next-page`` unless named."""
    extra = {} if loading is None else {"loading": loading}
    count = (
        []
        if label is None
        else [rx.text(label, size="2", color=rx.color("gray", 10), custom_attrs=testid(f"{tid}-count"))]
    )
    return rx.hstack(
        *count,
        rx.spacer(),
        rx.button(
            prev_text,
            variant="soft",
            size=size,
            disabled=~has_prev,
            on_click=on_prev,
            custom_attrs=testid(prev_tid or f"{tid}-prev-page"),
            **extra,
        ),
        rx.button(
            next_text,
            variant="soft",
            size=size,
            disabled=~has_next,
            on_click=on_next,
            custom_attrs=testid(next_tid or f"{tid}-next-page"),
            **extra,
        ),
        width="100%",
        align="center",
    )


def tool_badge(tool) -> rx.Component:
    return rx.badge(
        tool,
        color_scheme=rx.match(tool, *[(k, v) for k, v in TOOL_COLORS.items()], "gray"),
        variant="soft",
        font_family="monospace",
    )


def rel_time(rel, exact) -> rx.Component:
    return rx.tooltip(rx.text(rel, size="2", color=rx.color("gray", 11)), content=exact)


def token_status(revoked, revoked_exact, tid: str) -> rx.Component:
    """An API or state token's status badge: active, or revoked (muted, with when on hover)."""
    return rx.cond(
        revoked,
        rx.tooltip(
            rx.badge("revoked", color_scheme="gray", variant="soft", custom_attrs=testid(tid)),
            content="Revoked " + revoked_exact,
        ),
        rx.badge("active", color_scheme="green", variant="soft", custom_attrs=testid(tid)),
    )


def field_error(errors, field: str, tid: str) -> rx.Component:
    """The server's message for one form field, under that field."""
    msg = errors.get(field, "")
    return rx.cond(msg != "", rx.text(msg, size="1", color=rx.color("red", 11), custom_attrs=testid(tid)))


def typed_delete_dialog(
    *,
    what: str,
    description: rx.Component,
    expected,
    value,
    on_change,
    on_submit,
    open,
    on_open_change,
    busy,
    tid: str,
    on_trigger=None,
) -> rx.Component:
    """A destructive action behind typed confirmation: the button stays disabled until the
    user typed ``expected`` exactly. testids: ``<tid>-button``, ``-confirm-input``,
    ``-cancel``, ``-submit``."""
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(
            rx.button(
                rx.icon("trash-2", size=14),
                "Delete",
                color_scheme="red",
                variant="soft",
                on_click=on_trigger,
                custom_attrs=testid(f"{tid}-button"),
            ),
        ),
        rx.alert_dialog.content(
            rx.alert_dialog.title(f"Delete {what}"),
            rx.alert_dialog.description(description),
            rx.input(
                value=value,
                on_change=on_change,
                placeholder=expected,
                margin_y="1rem",
                custom_attrs=testid(f"{tid}-confirm-input"),
            ),
            rx.hstack(
                rx.alert_dialog.cancel(
                    rx.button(
                        "Cancel", variant="soft", color_scheme="gray", custom_attrs=testid(f"{tid}-cancel")
                    )
                ),
                rx.button(
                    f"Delete {what}",
                    color_scheme="red",
                    disabled=(value != expected) | busy,
                    loading=busy,
                    on_click=on_submit,
                    custom_attrs=testid(f"{tid}-submit"),
                ),
                justify="end",
                spacing="3",
            ),
        ),
        open=open,
        on_open_change=on_open_change,
    )
