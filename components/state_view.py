"""Pieces of the stack page's State tab: confirmation dialogs, copyable code, JSON values."""

from __future__ import annotations

import reflex as rx

from components.layout import testid

MONO = {"font_family": "monospace", "size": "1", "white_space": "pre-wrap", "word_break": "break-all"}


def confirm_dialog(
    *,
    title: str,
    description: rx.Component,
    confirm_label: str,
    on_confirm,
    open,
    on_open_change,
    busy,
    tid: str,
    color: str = "red",
) -> rx.Component:
    """A controlled confirmation (opened by the page's own button through state).
    testids: ``<tid>-dialog``, ``<tid>-confirm``, ``<tid>-cancel``."""
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(title),
            rx.alert_dialog.description(description, size="2"),
            rx.hstack(
                rx.alert_dialog.cancel(
                    rx.button(
                        "Cancel", variant="soft", color_scheme="gray", custom_attrs=testid(f"{tid}-cancel")
                    )
                ),
                rx.button(
                    confirm_label,
                    color_scheme=color,
                    loading=busy,
                    on_click=on_confirm,
                    custom_attrs=testid(f"{tid}-confirm"),
                ),
                justify="end",
                spacing="3",
                margin_top="1rem",
            ),
            max_width="520px",
            custom_attrs=testid(f"{tid}-dialog"),
        ),
        open=open,
        on_open_change=on_open_change,
    )


def code_block(text, tid: str, on_copy=None) -> rx.Component:
    """Monospace text with a copy button in its corner (``<tid>`` and ``<tid>-copy``)."""
    return rx.box(
        rx.el.pre(
            text,
            font_family="monospace",
            font_size="12px",
            line_height="1.5",
            white_space="pre",
            overflow_x="auto",
            margin="0",
            padding="0.75rem 3rem 0.75rem 0.75rem",
            custom_attrs=testid(tid),
        ),
        rx.tooltip(
            rx.icon_button(
                rx.icon("copy", size=14),
                size="1",
                variant="soft",
                color_scheme="gray",
                on_click=[rx.set_clipboard(text), *([on_copy] if on_copy is not None else [])],
                position="absolute",
                top="0.5rem",
                right="0.5rem",
                custom_attrs=testid(f"{tid}-copy"),
            ),
            content="Copy",
        ),
        position="relative",
        width="100%",
        background=rx.color("gray", 3),
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="6px",
    )


def sensitive_badge(tid: str) -> rx.Component:
    return rx.badge(
        rx.icon("lock", size=11),
        "sensitive",
        color_scheme="amber",
        variant="soft",
        size="1",
        custom_attrs=testid(tid),
    )


def json_value(value, sensitive, folded, preview, tid: str) -> rx.Component:
    """A value from the state: hidden when sensitive, folded behind its preview when long."""
    return rx.cond(
        sensitive,
        sensitive_badge(tid),
        rx.cond(
            folded,
            rx.el.details(
                rx.el.summary(rx.text(preview, **MONO, as_="span"), cursor="pointer"),
                rx.text(value, **MONO),
                custom_attrs=testid(tid),
            ),
            rx.text(value, **MONO, custom_attrs=testid(tid)),
        ),
    )


def muted(*children, **props) -> rx.Component:
    return rx.text(*children, size=props.pop("size", "1"), color=rx.color("gray", 10), **props)
