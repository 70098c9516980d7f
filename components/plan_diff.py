"""The plan diff on the run page: resources grouped by action, attributes before → after.

Native <details> elements fold each resource and each long value, so expanding costs no
round-trip to the server. The stack page's State tab renders state diffs (the same shape) with
its own wording: pass ``labels`` (action → group heading) and no ``download_url``.
"""

from __future__ import annotations

import reflex as rx

from components.layout import testid

ACTION_STYLE = {
    "create": ("+", "green", "to create"),
    "update": ("~", "amber", "to update in place"),
    "replace": ("±", "red", "to replace"),
    "delete": ("-", "red", "to destroy"),
    "forget": ("∅", "gray", "to forget (removed from state, not destroyed)"),
}


def _symbol(action) -> rx.Component:
    return rx.text(
        rx.match(action, *[(k, v[0]) for k, v in ACTION_STYLE.items()], "?"),
        color=rx.match(
            action, *[(k, rx.color(v[1], 11)) for k, v in ACTION_STYLE.items()], rx.color("gray", 11)
        ),
        weight="bold",
        font_family="monospace",
        width="1.2em",
    )


def _value(value, folded, preview, tid: str) -> rx.Component:
    mono = {"font_family": "monospace", "size": "1", "white_space": "pre-wrap", "word_break": "break-all"}
    return rx.cond(
        folded,
        rx.el.details(
            rx.el.summary(rx.text(preview, **mono, as_="span")),
            rx.text(value, **mono),
            custom_attrs=testid(f"{tid}-folded"),
        ),
        rx.text(value, **mono, custom_attrs=testid(tid)),
    )


def _attribute(a) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.hstack(
                rx.code(a.path, size="1", variant="ghost"),
                rx.cond(a.forces, rx.badge("forces replacement", color_scheme="red", size="1")),
                spacing="2",
            )
        ),
        rx.table.cell(_value(a.before, a.before_folded, a.before_preview, "plan-attr-before")),
        rx.table.cell(
            rx.cond(
                a.change != "removed", _value(a.after, a.after_folded, a.after_preview, "plan-attr-after")
            )
        ),
        custom_attrs={"data-testid": "plan-attr", "data-path": a.path, "data-change": a.change},
    )


def _resource(r, more: str = " more attributes: download the plan JSON") -> rx.Component:
    return rx.el.details(
        rx.el.summary(
            rx.hstack(
                _symbol(r.action),
                rx.code(r.address, variant="ghost", weight="medium"),
                rx.cond(r.reason != "", rx.text(r.reason, size="1", color=rx.color("gray", 10))),
                rx.text(r.attr_count, " attributes", size="1", color=rx.color("gray", 9)),
                spacing="2",
                align="center",
                display="inline-flex",
            ),
            cursor="pointer",
            padding="0.35rem 0",
        ),
        rx.box(
            rx.cond(
                r.attrs.length() == 0,
                rx.text("No attribute changes to show.", size="1", color=rx.color("gray", 10)),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            rx.table.column_header_cell("Attribute"),
                            rx.table.column_header_cell("Before"),
                            rx.table.column_header_cell("After"),
                        )
                    ),
                    rx.table.body(rx.foreach(r.attrs, _attribute)),
                    size="1",
                    width="100%",
                ),
            ),
            rx.cond(
                r.hidden_attrs > 0,
                rx.text(r.hidden_attrs, more, size="1"),
            ),
            padding_left="1.6em",
            padding_bottom="0.5rem",
        ),
        custom_attrs={"data-testid": "plan-resource", "data-address": r.address, "data-action": r.action},
    )


# What a state diff calls each group: the same actions, described as changes between versions.
STATE_LABELS = {"create": "added", "update": "changed", "delete": "removed"}


def plan_diff(
    groups,
    hidden_resources,
    download_url=None,
    labels: dict[str, str] | None = None,
    more_attributes: str = " more attributes: download the plan JSON",
) -> rx.Component:
    """``labels`` overrides the group headings (e.g. STATE_LABELS); without ``download_url``
    there is no plan download link; ``more_attributes`` ends the "N more attributes" note."""
    headings = {k: (labels or {}).get(k, v[2]) for k, v in ACTION_STYLE.items()}

    def group(g) -> rx.Component:
        return rx.vstack(
            rx.hstack(
                _symbol(g.action),
                rx.text(
                    g.count,
                    " ",
                    rx.match(g.action, *headings.items(), g.action),
                    weight="bold",
                    size="2",
                ),
                align="center",
                spacing="1",
            ),
            rx.vstack(
                rx.foreach(g.resources, lambda r: _resource(r, more_attributes)), spacing="0", width="100%"
            ),
            spacing="1",
            width="100%",
            custom_attrs={"data-testid": "plan-group", "data-action": g.action},
        )

    return rx.vstack(
        rx.foreach(groups, group),
        rx.cond(
            hidden_resources > 0,
            rx.text(
                hidden_resources, " more resources are not shown here.", size="2", color=rx.color("gray", 10)
            ),
        ),
        rx.link(
            "Download the plan JSON (sensitive values redacted)",
            href=download_url,
            size="2",
            is_external=True,
            custom_attrs=testid("plan-download"),
        )
        if download_url is not None
        else rx.fragment(),
        spacing="3",
        width="100%",
        custom_attrs=testid("plan-diff"),
    )
