"""Pieces of the policies pages: type badges, the Rego/JSON source editor, read-only Rego and
unified diffs."""

from __future__ import annotations

import reflex as rx
from reflex.vars import Var

from components.layout import testid

TYPE_COLORS = {
    "pre_plan": "cyan",
    "post_plan": "teal",
    "pre_apply": "orange",
    "approval": "amber",
    "trigger": "violet",
    "login": "crimson",
    "validation": "green",
}
TYPE_LABELS = {
    "pre_plan": "pre-plan",
    "post_plan": "post-plan",
    "pre_apply": "pre-apply",
    "approval": "approval",
    "trigger": "trigger",
    "login": "login",
    "validation": "validation",
}
# The editor's gutter and text area share these metrics so line N sits at the same height.
LINE_PX = 20
PAD_PX = 8
FONT = {"font_family": "var(--code-font-family, monospace)", "font_size": "13px"}


def type_badge(type_, tid: str = "") -> rx.Component:
    return rx.badge(
        rx.match(type_, *TYPE_LABELS.items(), type_),
        color_scheme=rx.match(type_, *TYPE_COLORS.items(), "gray"),
        variant="soft",
        font_family="monospace",
        custom_attrs={"data-testid": tid, "data-type": type_} if tid else {"data-type": type_},
    )


def source_editor(
    *,
    default_value,
    key,
    gutter,
    rows,
    on_change=None,
    on_blur=None,
    error_line=0,
    tid: str,
    placeholder: str = "",
    max_height: str = "560px",
    read_only=False,
    max_length: int | None = None,
) -> rx.Component:
    """A monospace source editor with line numbers.

    The textarea is uncontrolled (``default_value`` + ``key``: bump the key to load new text),
    so typing never waits for the server. It is ``rows`` lines tall (the state keeps that a
    little above the text's line count), so it never scrolls itself: the surrounding box
    scrolls, which keeps the gutter and the text on the same lines without any script.
    ``error_line`` (1-based, 0 = none) is marked in the gutter and behind the text.
    testids: ``<tid>`` (the textarea), ``<tid>-gutter``, ``<tid>-error-line``.
    """
    line_css = {**FONT, "line_height": f"{LINE_PX}px"}
    marker = rx.cond(
        error_line > 0,
        rx.box(
            position="absolute",
            left="0",
            right="0",
            top=f"{PAD_PX + (error_line - 1) * LINE_PX}px",
            height=f"{LINE_PX}px",
            background=rx.color("red", 4),
            border_left=f"3px solid {rx.color('red', 9)}",
            pointer_events="none",
            custom_attrs={"data-testid": f"{tid}-error-line", "data-line": error_line},
        ),
    )
    return rx.box(
        rx.box(
            marker,
            rx.hstack(
                rx.el.pre(
                    gutter,
                    **line_css,
                    margin="0",
                    padding=f"{PAD_PX}px 0.6rem {PAD_PX}px 0.5rem",
                    text_align="right",
                    color=rx.color("gray", 9),
                    user_select="none",
                    min_width="3rem",
                    border_right=f"1px solid {rx.color('gray', 5)}",
                    background=rx.color("gray", 2),
                    position="relative",
                    custom_attrs=testid(f"{tid}-gutter"),
                ),
                rx.el.textarea(
                    default_value=default_value,
                    key=key,
                    on_change=on_change,
                    on_blur=on_blur,
                    rows=rows,
                    max_length=max_length,
                    wrap="off",
                    spell_check=False,
                    auto_complete="off",
                    auto_capitalize="off",
                    read_only=read_only,
                    placeholder=placeholder,
                    **line_css,
                    flex="1",
                    min_width="0",
                    padding=f"{PAD_PX}px 0.75rem",
                    border="none",
                    outline="none",
                    resize="none",
                    overflow_y="hidden",
                    overflow_x="auto",
                    white_space="pre",
                    tab_size="4",
                    background="transparent",
                    color=rx.color("gray", 12),
                    position="relative",
                    # Tab indents instead of leaving the editor (Rego is tab-indented by convention).
                    custom_attrs={
                        "data-testid": tid,
                        "onKeyDown": Var(
                            _js_expr=(
                                "(e) => { if (e.key === 'Tab' && !e.shiftKey && !e.ctrlKey && !e.metaKey) "
                                "{ e.preventDefault(); document.execCommand('insertText', false, '\\t'); } }"
                            )
                        ),
                    },
                ),
                spacing="0",
                align="start",
                width="100%",
            ),
            position="relative",
            width="100%",
        ),
        width="100%",
        max_height=max_height,
        overflow_y="auto",
        border=f"1px solid {rx.color('gray', 6)}",
        border_radius="6px",
        background=rx.color("gray", 1),
        _focus_within={"border_color": rx.color("teal", 8)},
    )


def rego_view(code, tid: str, max_height: str = "480px") -> rx.Component:
    """Read-only Rego with syntax highlighting and line numbers."""
    return rx.box(
        rx.code_block(
            code,
            language="rego",
            show_line_numbers=True,
            wrap_long_lines=False,
            font_size="12px",
            margin="0",
        ),
        width="100%",
        max_height=max_height,
        overflow="auto",
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="6px",
        custom_attrs=testid(tid),
    )


def diff_view(lines, tid: str) -> rx.Component:
    """A unified diff, line by line: ``lines`` is a list of objects with ``kind`` (add, del,
    hunk, meta, ctx) and ``text``."""
    return rx.box(
        rx.foreach(
            lines,
            lambda ln: rx.el.div(
                rx.cond(ln.text != "", ln.text, " "),
                white_space="pre",
                padding_x="0.75rem",
                color=rx.match(
                    ln.kind,
                    ("add", rx.color("green", 11)),
                    ("del", rx.color("red", 11)),
                    ("hunk", rx.color("cyan", 11)),
                    ("meta", rx.color("gray", 10)),
                    rx.color("gray", 12),
                ),
                background=rx.match(
                    ln.kind,
                    ("add", rx.color("green", 3)),
                    ("del", rx.color("red", 3)),
                    ("hunk", rx.color("cyan", 2)),
                    "transparent",
                ),
                custom_attrs={"data-kind": ln.kind},
            ),
        ),
        **FONT,
        line_height="1.55",
        width="100%",
        max_height="480px",
        overflow="auto",
        padding_y="0.5rem",
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="6px",
        background=rx.color("gray", 1),
        custom_attrs=testid(tid),
    )


def location_error(message, line, column, tid: str) -> rx.Component:
    """An error at a place in a source (Rego or JSON): "Line 4, column 9" and the message."""
    return rx.callout.root(
        rx.callout.icon(rx.icon("circle-x", size=16)),
        rx.callout.text(
            rx.cond(
                line > 0,
                rx.text.span(
                    "Line ",
                    line,
                    rx.cond(column > 0, rx.text.span(", column ", column), rx.fragment()),
                    ": ",
                    weight="bold",
                    custom_attrs=testid(f"{tid}-location"),
                ),
            ),
            message,
        ),
        color_scheme="red",
        variant="surface",
        size="1",
        width="100%",
        custom_attrs={"data-testid": tid, "data-line": line, "data-column": column},
    )
