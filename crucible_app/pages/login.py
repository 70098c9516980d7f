"""Login: a real form POST to /api/v1/auth/login, which sets the httpOnly cookie and redirects."""

from __future__ import annotations

import reflex as rx

from components.layout import testid
from state.login import LoginState


def login_page() -> rx.Component:
    return rx.center(
        rx.card(
            rx.el.form(
                rx.vstack(
                    rx.hstack(
                        rx.image(src="/logo.svg", width="32px", height="32px", alt=""),
                        rx.heading("Sign in to Crucible", size="5"),
                        align="center",
                    ),
                    rx.cond(
                        LoginState.error != "",
                        rx.callout(
                            rx.text(
                                LoginState.error,
                                rx.cond(
                                    LoginState.retry_after != "",
                                    rx.text.span(" (retry in ", LoginState.retry_after, " s)"),
                                    "",
                                ),
                            ),
                            icon="triangle-alert",
                            color_scheme="red",
                            width="100%",
                            custom_attrs=testid("login-error"),
                        ),
                    ),
                    rx.cond(
                        LoginState.notice != "",
                        rx.callout(
                            LoginState.notice,
                            icon="circle-check",
                            color_scheme="green",
                            width="100%",
                            custom_attrs=testid("login-notice"),
                        ),
                    ),
                    rx.text("Email", size="2", weight="medium"),
                    rx.input(
                        name="email",
                        type="email",
                        required=True,
                        auto_complete="username",
                        width="100%",
                        auto_focus=True,
                        custom_attrs=testid("login-email-input"),
                    ),
                    rx.text("Password", size="2", weight="medium"),
                    rx.input(
                        name="password",
                        type="password",
                        required=True,
                        auto_complete="current-password",
                        width="100%",
                        custom_attrs=testid("login-password-input"),
                    ),
                    rx.el.input(type="hidden", name="next", value=LoginState.next_url),
                    rx.button(
                        "Sign in", type="submit", width="100%", size="3", custom_attrs=testid("login-submit")
                    ),
                    spacing="3",
                    width="100%",
                ),
                action="/api/v1/auth/login",
                method="post",
                on_submit=None,  # a real POST, so the response can set the httpOnly cookie
            ),
            width="380px",
            padding="1.5rem",
        ),
        height="100vh",
        background=rx.color("gray", 2),
    )
