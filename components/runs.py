"""Run pieces shared by the runs list, the run page, the stack page and the dashboard."""

from __future__ import annotations

import reflex as rx

from components.layout import rel_time, testid

STATUS_COLORS = {
    "queued": "gray",
    "preparing": "gray",
    "planning": "blue",
    "applying": "blue",
    "confirmed": "blue",
    "unconfirmed": "amber",
    "pending_approval": "amber",
    "finished": "green",
    "failed": "red",
    "discarded": "gray",
    "canceled": "gray",
}
MOVING = ("preparing", "planning", "applying", "confirmed")


def status_badge(status, tid: str = "run-status") -> rx.Component:
    return rx.badge(
        rx.cond(
            rx.Var.create(list(MOVING)).contains(status),
            rx.spinner(size="1"),
            rx.fragment(),
        ),
        status.to(str).replace("_", " "),
        color_scheme=rx.match(status, *[(k, v) for k, v in STATUS_COLORS.items()], "gray"),
        variant=rx.cond((status == "discarded") | (status == "canceled"), "outline", "soft"),
        custom_attrs={"data-testid": tid, "data-status": status},
    )


def plan_chips(row, tid: str = "run-plan-summary") -> rx.Component:
    """+N ~N -N with the plan's colours; "—" before there is a plan."""
    return rx.cond(
        row.has_summary,
        rx.hstack(
            rx.text("+", row.add, color=rx.color("green", 11), font_family="monospace", size="2"),
            rx.text("~", row.change, color=rx.color("amber", 11), font_family="monospace", size="2"),
            rx.text("-", row.destroy, color=rx.color("red", 11), font_family="monospace", size="2"),
            spacing="2",
            custom_attrs={
                "data-testid": tid,
                "data-add": row.add,
                "data-change": row.change,
                "data-destroy": row.destroy,
            },
        ),
        rx.text("—", color=rx.color("gray", 9), size="2"),
    )


def type_badge(run_type) -> rx.Component:
    return rx.badge(
        run_type,
        variant="outline",
        color_scheme=rx.match(
            run_type, ("destroy", "red"), ("drift", "violet"), ("proposed", "cyan"), "gray"
        ),
        custom_attrs=testid("run-type"),
    )


def runs_table(rows, *, show_stack: bool = True, tid: str = "runs-table") -> rx.Component:
    def row(r) -> rx.Component:
        cells = [
            rx.table.cell(
                rx.vstack(
                    rx.link(
                        rx.cond(
                            r.message != "",
                            r.message,
                            rx.cond(r.commit_message != "", r.commit_message, r.id),
                        ),
                        href="/runs/" + r.id,
                        weight="medium",
                        custom_attrs=testid("runs-row-link"),
                    ),
                    rx.text(r.id, size="1", color=rx.color("gray", 10), font_family="monospace"),
                    spacing="1",
                )
            ),
        ]
        if show_stack:
            cells.append(rx.table.cell(rx.link(r.stack_name, href="/stacks/" + r.stack_id, size="2")))
        cells += [
            rx.table.cell(type_badge(r.type)),
            rx.table.cell(status_badge(r.status, tid="runs-row-status")),
            rx.table.cell(plan_chips(r, tid="runs-row-plan")),
            rx.table.cell(rx.code(rx.cond(r.commit != "", r.commit, "—"), variant="ghost")),
            rx.table.cell(rel_time(r.created_rel, r.created_exact)),
        ]
        return rx.table.row(*cells, custom_attrs={"data-testid": "runs-row", "data-run-id": r.id})

    headers = ["Run"] + (["Stack"] if show_stack else []) + ["Type", "Status", "Plan", "Commit", "Created"]
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
        rx.table.body(rx.foreach(rows, row)),
        width="100%",
        variant="surface",
        custom_attrs=testid(tid),
    )


RAIL_ICON = {"done": "circle-check", "current": "circle-dot", "failed": "circle-x", "skipped": "circle-slash"}


def lifecycle_rail(steps) -> rx.Component:
    def step(s) -> rx.Component:
        color = rx.match(
            s.state,
            ("done", rx.color("green", 11)),
            ("current", rx.color("blue", 11)),
            ("failed", rx.color("red", 11)),
            rx.color("gray", 8),
        )
        return rx.hstack(
            rx.match(
                s.state,
                ("done", rx.icon("circle-check", size=18, color=color)),
                ("current", rx.icon("circle-dot", size=18, color=color)),
                ("failed", rx.icon("circle-x", size=18, color=color)),
                ("skipped", rx.icon("circle-slash", size=18, color=color)),
                rx.icon("circle", size=18, color=color),
            ),
            rx.vstack(
                rx.text(
                    s.label, size="2", weight=rx.cond(s.state == "current", "bold", "regular"), color=color
                ),
                rx.text(s.duration, size="1", color=rx.color("gray", 10)),
                spacing="0",
            ),
            align="center",
            spacing="2",
            flex="1",
            custom_attrs={"data-testid": "run-rail-step", "data-step": s.key, "data-state": s.state},
        )

    return rx.hstack(
        rx.foreach(steps, step),
        width="100%",
        padding="0.75rem 1rem",
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="8px",
        wrap="wrap",
        custom_attrs=testid("run-rail"),
    )
